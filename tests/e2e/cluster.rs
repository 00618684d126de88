//! Herald on a three-node NATS cluster with every stream replicated three ways: the leader of
//! the streams is killed with SIGKILL mid-run and restarted, then a worker is killed, while
//! events keep coming. Every event must reach the receiver; duplicates are counted and
//! reported (delivery is at least once).

use std::collections::HashMap;
use std::time::Duration;

use herald_core::{AccountId, Event, EventData, EventId, EventType, Keyring, RetrySchedule};
use herald_registry::{Config, Registry};
use herald_testkit::{NatsCluster, Receiver, TestDatabase};
use herald_worker::{Worker, WorkerConfig};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::harness::{ADMIN, KEY};

const EVENTS: usize = 300;
/// Long enough for the cluster to elect new leaders and every worker to reconnect.
const DRAIN: Duration = Duration::from_secs(90);

fn worker_config(url: &str) -> WorkerConfig {
    let mut config = WorkerConfig::for_local(url);
    config.stream_replicas = 3;
    config.keyring = Keyring::from_keys(&[KEY]);
    config.retry_schedule = RetrySchedule::new(vec![Duration::from_millis(500); 20]).unwrap();
    config.request_timeout = Duration::from_secs(2);
    // What a killed worker held is handed to the other after these.
    config.sender_ack_wait = Duration::from_secs(4);
    config.router_ack_wait = Duration::from_secs(3);
    config.delay_ack_wait = Duration::from_secs(3);
    config
}

async fn api(http: &reqwest::Client, base: &str, method: Method, path: &str, body: Value) -> Value {
    let response = http
        .request(method, format!("{base}{path}"))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

/// Publishes `event` until the cluster stores it, as the platform would through a failover;
/// the event id makes a repeat a no-op.
async fn publish(publisher: &herald_bus::Publisher, event: &Event) {
    let deadline = tokio::time::Instant::now() + DRAIN;
    loop {
        match publisher.publish(event).await {
            Ok(_) => return,
            Err(err) if tokio::time::Instant::now() < deadline => {
                eprintln!("publish of {} failed, trying again: {err}", event.id);
            }
            Err(err) => panic!("event {} never stored: {err}", event.id),
        }
    }
}

/// The leader of the streams the next deliveries go through.
async fn leader_of(js: &async_nats::jetstream::Context, stream: &str) -> String {
    let status = herald_bus::status(js).await.unwrap();
    status
        .stream(stream)
        .and_then(|stream| stream.leader.clone())
        .unwrap_or_else(|| panic!("{stream} has no leader: {status:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_loses_no_delivery_when_its_leader_and_a_worker_are_killed() {
    let started = std::time::Instant::now();
    let mut cluster = NatsCluster::start(3).await.unwrap();
    eprintln!("cluster up after {:?}", started.elapsed());
    let url = cluster.url();
    let db = TestDatabase::from_env().await.unwrap();
    let receiver = Receiver::start().await.unwrap();

    let first = Worker::start(worker_config(&url), CancellationToken::new())
        .await
        .unwrap();
    let second = Worker::start(worker_config(&url), CancellationToken::new())
        .await
        .unwrap();
    let mut config = Config::for_local(db.url(), &url, ADMIN);
    config.stream_replicas = 3;
    config.keyring = Keyring::from_keys(&[KEY]);
    config.address_policy.allow = vec!["127.0.0.0/8".parse().unwrap()];
    let registry = Registry::build(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop_registry = CancellationToken::new();
    let serving = tokio::spawn(registry.serve(listener, stop_registry.clone()));

    let http = reqwest::Client::new();
    let account = api(
        &http,
        &base,
        Method::POST,
        "/v1/accounts",
        json!({"name": "Cool"}),
    )
    .await;
    let account = account["id"].as_str().unwrap().to_owned();
    let hook = api(
        &http,
        &base,
        Method::POST,
        &format!("/v1/accounts/{account}/webhooks"),
        json!({ "name": "cluster", "url": receiver.url("/in") }),
    )
    .await;
    let hook = herald_core::WebhookId::parse(hook["id"].as_str().unwrap()).unwrap();
    for worker in [&first, &second] {
        herald_testkit::wait_until(DRAIN, || async { worker.index().get(&hook).is_some() })
            .await
            .unwrap();
    }

    eprintln!(
        "registry, two workers and a webhook up after {:?}",
        started.elapsed()
    );
    let client = cluster.client().await.unwrap();
    let js = async_nats::jetstream::new(client);
    let streams = herald_bus::status(&js).await.unwrap();
    for stream in &streams.streams {
        assert_eq!(stream.replicas, 3, "{} is not replicated", stream.name);
    }
    let publisher = herald_bus::Publisher::new(js.clone());
    let account = AccountId::parse(&account).unwrap();
    let events: Vec<Event> = (0..EVENTS)
        .map(|n| Event {
            id: EventId::generate(),
            event_type: EventType::parse("booking.created").unwrap(),
            account: account.clone(),
            timestamp: chrono::Utc::now(),
            data: EventData::parse(&json!({ "n": n }).to_string()).unwrap(),
        })
        .collect();

    let mut first = Some(first);
    let mut killed_node = None;
    let mut pace = tokio::time::interval(Duration::from_millis(10));
    for (n, event) in events.iter().enumerate() {
        pace.tick().await;
        publish(&publisher, event).await;
        if n == EVENTS / 3 {
            let leader = leader_of(&js, herald_bus::names::DELIVERIES_STREAM).await;
            eprintln!("killing {leader}, the leader of the deliveries stream, with SIGKILL");
            cluster.node(&leader).unwrap().kill().unwrap();
            killed_node = Some(leader);
        }
        if n == EVENTS / 2 {
            let name = killed_node.take().unwrap();
            eprintln!("restarting {name}");
            let node = cluster.node(&name).unwrap();
            // Same port and store: it catches up from the others.
            node.restart().unwrap();
        }
        if n == 2 * EVENTS / 3 {
            eprintln!("killing a worker (no graceful shutdown)");
            drop(first.take());
        }
    }

    eprintln!("{EVENTS} events published after {:?}", started.elapsed());
    // Every event reaches the receiver at least once, whichever node or worker handled it.
    let expected: HashMap<String, usize> = events
        .iter()
        .map(|event| {
            let id = herald_core::DeliveryId::derive(&event.id, &hook).to_string();
            (id, 0)
        })
        .collect();
    let arrived = herald_testkit::wait_for(DRAIN, || async {
        let mut seen = expected.clone();
        for request in receiver.requests_to("/in") {
            if let Some(count) = request.header("webhook-id").and_then(|id| seen.get_mut(id)) {
                *count += 1;
            }
        }
        seen.values().all(|count| *count > 0).then_some(seen)
    })
    .await;
    let seen = match arrived {
        Ok(seen) => seen,
        Err(err) => {
            let got = receiver.requests_to("/in").len();
            panic!("{err}: {got} requests for {EVENTS} events");
        }
    };
    let duplicates: usize = seen.values().map(|count| count - 1).sum();
    eprintln!(
        "cluster run: {EVENTS} events, {EVENTS} delivered, {duplicates} duplicates \
         (at least once: requests in flight when a node or worker died are sent again)"
    );
    assert_eq!(seen.len(), EVENTS);
    eprintln!("all delivered after {:?}", started.elapsed());

    // The delivery log, fed through the replicated outcomes stream, records each one.
    let stats = format!("{base}/v1/accounts/{account}/webhooks/{hook}/stats");
    let logged = herald_testkit::wait_for(DRAIN, || async {
        let stats: Value = http
            .get(&stats)
            .bearer_auth(ADMIN)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (stats["delivered"] == EVENTS).then_some(stats)
    })
    .await;
    assert!(logged.is_ok(), "the log never recorded {EVENTS} deliveries");
    eprintln!("all logged after {:?}", started.elapsed());

    stop_registry.cancel();
    serving.await.unwrap().unwrap();
    drop(second);
}
