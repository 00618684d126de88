//! A real registry per test: its own nats-server, its own database (SQLite,
//! or PostgreSQL with HERALD_TEST_DATABASE=postgres), listening on port 0.

#![allow(dead_code)] // Not every test uses every helper.

use std::time::Duration;

use herald_registry::{Config, Registry};
use herald_testkit::{NatsServer, TestDatabase};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub const ADMIN_KEY: &str = "test-admin-key-0123456789";
pub const WAIT: Duration = Duration::from_secs(10);

/// The encryption key of every test registry unless the test sets its own: secrets are sealed
/// as in production.
pub const KEY: [u8; 32] = [21; 32];

/// The `index`th signing secret of a projected spec, opened as a worker holding [`KEY`] would.
pub fn projected_secret(spec: &herald_proto::webhooks::v1::WebhookSpec, index: usize) -> String {
    use secrecy::ExposeSecret as _;
    let sealed = &spec.signing_keys[index].secret;
    assert!(sealed.starts_with("v2:"), "not sealed: {sealed}");
    herald_core::Keyring::from_keys(&[KEY])
        .open(sealed, spec.id.as_bytes())
        .unwrap()
        .expose_secret()
        .to_owned()
}

pub struct TestRegistry {
    pub base: String,
    pub http: reqwest::Client,
    pub nats: NatsServer,
    pub db: TestDatabase,
    pub shutdown: CancellationToken,
    pub server: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub store: herald_registry::store::Store,
    pub projector: herald_registry::projection::Projector,
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestRegistry {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let nats = NatsServer::start().unwrap();
        let db = TestDatabase::from_env().await.unwrap();
        let mut config = Config::for_local(db.url(), &nats.url(), ADMIN_KEY);
        config.keyring = herald_core::Keyring::from_keys(&[KEY]);
        adjust(&mut config);
        let registry = Registry::build(config).await.unwrap();
        let store = registry.store().clone();
        let projector = registry.projector().clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(registry.serve(listener, shutdown.clone()));
        Self {
            base,
            http: reqwest::Client::new(),
            nats,
            db,
            shutdown,
            server,
            store,
            projector,
        }
    }

    pub fn request(&self, method: Method, path: &str, key: Option<&str>) -> RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path, Some(ADMIN_KEY))
    }

    /// The JSON of an admin's GET of `path`, which must answer 200.
    pub async fn admin_get(&self, path: &str) -> Value {
        expect(
            self.admin(Method::GET, path).send().await.unwrap(),
            StatusCode::OK,
        )
        .await
    }

    pub async fn create_account(&self, name: &str) -> String {
        let response = self
            .admin(Method::POST, "/v1/accounts")
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap();
        let body = expect(response, StatusCode::CREATED).await;
        body["id"].as_str().unwrap().to_owned()
    }

    pub async fn create_key(&self, account: &str) -> String {
        let response = self
            .admin(Method::POST, &format!("/v1/accounts/{account}/api-keys"))
            .json(&json!({ "name": "test key" }))
            .send()
            .await
            .unwrap();
        let body = expect(response, StatusCode::CREATED).await;
        body["key"].as_str().unwrap().to_owned()
    }

    /// Creates a webhook with `body` merged over sensible defaults.
    pub async fn create_webhook(&self, account: &str, key: &str, body: Value) -> Value {
        let mut full = json!({ "name": "hook", "url": "https://example.com/hook" });
        if let (Some(full), Some(extra)) = (full.as_object_mut(), body.as_object()) {
            for (k, v) in extra {
                full.insert(k.clone(), v.clone());
            }
        }
        let response = self
            .request(
                Method::POST,
                &format!("/v1/accounts/{account}/webhooks"),
                Some(key),
            )
            .json(&full)
            .send()
            .await
            .unwrap();
        expect(response, StatusCode::CREATED).await
    }

    pub async fn js(&self) -> async_nats::jetstream::Context {
        let client = async_nats::connect(self.nats.url()).await.unwrap();
        async_nats::jetstream::new(client)
    }

    pub async fn bucket(&self) -> herald_bus::WebhookBucket {
        herald_bus::WebhookBucket::open(&self.js().await)
            .await
            .unwrap()
    }
}

/// Asserts the status and returns the JSON body (Null when empty).
pub async fn expect(response: Response, status: StatusCode) -> Value {
    let actual = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.unwrap();
    assert_eq!(actual, status, "unexpected status; body: {text}");
    if actual.is_client_error() || actual.is_server_error() {
        assert_eq!(
            content_type, "application/problem+json",
            "errors are problem+json: {text}"
        );
    }
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    }
}

/// Asserts a problem+json response naming `field`; returns the body.
pub async fn expect_field_error(response: Response, status: StatusCode, field: &str) -> Value {
    let body = expect(response, status).await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert!(
        fields.contains(&field),
        "expected an error on {field}, got {body}"
    );
    body
}
