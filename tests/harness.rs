//! Starts the registry and workers in-process against one nats-server.

use std::time::Duration;

use herald_core::{Keyring, RetrySchedule};
use herald_registry::{Config, Registry};
use herald_testkit::{NatsServer, Receiver, Recorded, TestDatabase};
use herald_worker::{Worker, WorkerConfig};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub const ADMIN: &str = "e2e-admin-key-0123456789";
pub const WAIT: Duration = Duration::from_secs(20);

/// Checks a received request's Standard Webhooks signature with `secret`, as a receiver
/// does; panics (fails the test) when it does not verify.
pub fn assert_signed(secret: &str, request: &Recorded) {
    let header = |name: &str| {
        request
            .header(name)
            .unwrap_or_else(|| panic!("the request has no {name} header"))
    };
    let secret = herald_core::SigningSecret::parse(secret).expect("a whsec_ secret");
    herald_core::verify(
        &[secret],
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
        &request.body,
        chrono::Utc::now().timestamp(),
        herald_core::DEFAULT_TOLERANCE,
    )
    .expect("the signature verifies with the webhook's secret");
}

/// The encryption key every test's registry and worker share unless a test changes it, so
/// that every delivery goes through sealed secrets as in production.
pub const KEY: [u8; 32] = [42; 32];

#[derive(Debug)]
pub struct Herald {
    pub nats: NatsServer,
    pub db: TestDatabase,
    pub receiver: Receiver,
    pub api: String,
    pub http: reqwest::Client,
    registry: Option<(
        CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    )>,
    port: u16,
    pub worker: Option<Worker>,
    /// The keys the next registry and worker started are given.
    pub keyring: Keyring,
}

impl Herald {
    /// A registry, one worker whose retries wait `retry` between attempts
    /// (`attempts` in all), and a receiver.
    pub async fn start(retry: Duration, attempts: usize) -> Self {
        let nats = NatsServer::start().unwrap();
        let db = TestDatabase::from_env().await.unwrap();
        let receiver = Receiver::start().await.unwrap();
        let port = herald_testkit::free_port().unwrap();
        let mut herald = Self {
            nats,
            db,
            receiver,
            api: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            registry: None,
            port,
            worker: None,
            keyring: Keyring::from_keys(&[KEY]),
        };
        herald.start_worker(retry, attempts).await;
        herald.start_registry().await;
        herald
    }

    pub async fn start_worker(&mut self, retry: Duration, attempts: usize) {
        self.start_worker_with(retry, attempts, |_| {}).await;
    }

    /// As [`start_worker`](Self::start_worker), with `configure` applied last.
    pub async fn start_worker_with(
        &mut self,
        retry: Duration,
        attempts: usize,
        configure: impl FnOnce(&mut WorkerConfig),
    ) {
        let mut config = WorkerConfig::for_local(&self.nats.url());
        config.keyring = self.keyring.clone();
        config.retry_schedule = RetrySchedule::new(vec![retry; attempts - 1]).unwrap();
        config.request_timeout = Duration::from_secs(2);
        configure(&mut config);
        self.worker = Some(
            Worker::start(config, CancellationToken::new())
                .await
                .unwrap(),
        );
    }

    pub async fn start_registry(&mut self) {
        let mut config = Config::for_local(self.db.url(), &self.nats.url(), ADMIN);
        config.keyring = self.keyring.clone();
        config.address_policy.allow = vec!["127.0.0.0/8".parse().unwrap()];
        let registry = Registry::build(config).await.unwrap();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        let token = CancellationToken::new();
        let task = tokio::spawn(registry.serve(listener, token.clone()));
        self.registry = Some((token, task));
    }

    /// Stops the worker and waits until it has.
    pub async fn stop_worker(&mut self) {
        if let Some(worker) = self.worker.take() {
            worker.stop();
            worker.wait().await.unwrap();
        }
    }

    /// Stops the registry and waits until it has let go of its port.
    pub async fn stop_registry(&mut self) {
        if let Some((token, task)) = self.registry.take() {
            token.cancel();
            task.await.unwrap().unwrap();
        }
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(ADMIN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap()
            },
        )
    }

    pub async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, body) = self.call(method, path, body).await;
        assert!((200..300).contains(&status), "{status}: {body}");
        body
    }

    pub async fn account(&self) -> String {
        let account = self
            .ok(
                Method::POST,
                "/v1/accounts",
                Some(json!({ "name": "Cool Account" })),
            )
            .await;
        account["id"].as_str().unwrap().to_owned()
    }

    /// Creates a webhook to the receiver's `path`; returns (id, secret).
    pub async fn webhook(&self, account: &str, path: &str, events: Value) -> (String, String) {
        let body = json!({ "name": path, "url": self.receiver.url(path), "events": events });
        let hook = self
            .ok(
                Method::POST,
                &format!("/v1/accounts/{account}/webhooks"),
                Some(body),
            )
            .await;
        (
            hook["id"].as_str().unwrap().to_owned(),
            hook["secret"].as_str().unwrap().to_owned(),
        )
    }

    /// Waits until the worker holds webhook `id` at `version` or later.
    pub async fn wait_for_spec(&self, id: &str, version: u64) {
        let worker = self.worker.as_ref().unwrap();
        let id = herald_core::WebhookId::parse(id).unwrap();
        herald_testkit::wait_until(WAIT, || async {
            worker
                .index()
                .get(&id)
                .is_some_and(|s| s.version >= version)
        })
        .await
        .unwrap();
    }

    pub async fn publish(&self, account: &str, kind: &str, data: Value) -> herald_core::EventId {
        let event = herald_core::Event {
            id: herald_core::EventId::generate(),
            event_type: herald_core::EventType::parse(kind).unwrap(),
            account: herald_core::AccountId::parse(account).unwrap(),
            timestamp: chrono::Utc::now(),
            data: herald_core::EventData::parse(&data.to_string()).unwrap(),
        };
        let client = self.nats.client().await.unwrap();
        herald_bus::Publisher::new(async_nats::jetstream::new(client))
            .publish(&event)
            .await
            .unwrap();
        event.id
    }

    /// Waits until the delivery log entry satisfies `check`.
    pub async fn wait_for_delivery(
        &self,
        account: &str,
        id: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let path = format!("/v1/accounts/{account}/deliveries/{id}");
        let found = herald_testkit::wait_for(WAIT, || {
            let (path, check) = (&path, &check);
            async move {
                let (status, body) = self.call(Method::GET, path, None).await;
                (status == 200 && check(&body)).then_some(body)
            }
        })
        .await;
        match found {
            Ok(body) => body,
            Err(e) => panic!("{e}: {:?}", self.call(Method::GET, &path, None).await),
        }
    }
}
