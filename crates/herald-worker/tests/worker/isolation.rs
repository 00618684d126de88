//! A dead endpoint trips its circuit breaker, and a slow one with a backlog waits in its lane:
//! neither holds up healthy ones.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use herald_core::{DeliveryId, WebhookId};
use herald_proto::deliveries::v1::DeliveryStatus;
use herald_proto::webhooks::v1::WebhookSpec;
use herald_testkit::{Response, wait_until};
use herald_worker::Worker;

use crate::common::{Harness, WAIT, ms, status, wait_counters};

/// A worker whose breaker opens at one failure and stays open 10 s, with a webhook at `path`
/// answering 500 whose breaker one event has opened.
async fn a_tripped_breaker(h: &Harness, path: &str) -> (Worker, WebhookSpec) {
    let mut config = h.config();
    config.breaker.failures_to_open = 1;
    config.breaker.cool_down = Duration::from_secs(10);
    config.breaker.max_cool_down = Duration::from_secs(10);
    let worker = h.worker_with(config).await;
    let spec = h.spec(path, &[]);
    h.put_indexed(&worker, &[&spec]).await;
    h.receiver.respond(path, 500);
    h.publish(&h.event("booking.created")).await;
    wait_until(WAIT, || async { worker.open_breakers() == 1 })
        .await
        .unwrap();
    (worker, spec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_opens_its_breaker_while_a_healthy_one_keeps_delivering() {
    let h = Harness::start().await;
    let mut config = h.config();
    config.breaker.failures_to_open = 3;
    config.per_webhook_in_flight = 2;
    let worker = h.worker_with(config).await;
    let dead = h.spec("/dead", &[]);
    let healthy = h.spec("/healthy", &[]);
    h.put_indexed(&worker, &[&dead, &healthy]).await;
    // Slow failures, as from an overloaded endpoint.
    h.receiver
        .respond("/dead", Response::status(500).delay(ms(100)));

    for _ in 0..20 {
        h.publish(&h.event("booking.created")).await;
    }
    h.receiver
        .wait_for_requests("/healthy", 20, WAIT)
        .await
        .unwrap();
    wait_counters(&worker, |c| c.deferred > 0).await;
    wait_until(WAIT, || async { worker.open_breakers() == 1 })
        .await
        .expect("the dead endpoint's breaker is open");
    let dead_requests = h.receiver.requests_to("/dead").len();
    // Without the breaker each of the 20 deliveries would have been attempted; with it, the
    // endpoint sees the failures that opened it, those already in flight, and probes.
    assert!(
        dead_requests < 20,
        "the dead endpoint got {dead_requests} requests"
    );
    assert_eq!(h.receiver.requests_to("/healthy").len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_endpoint_gets_its_deferred_deliveries() {
    let h = Harness::start().await;
    let mut config = h.config();
    config.breaker.failures_to_open = 2;
    config.per_webhook_in_flight = 1;
    let worker = h.worker_with(config).await;
    let spec = h.spec("/recovering", &[]);
    h.put_indexed(&worker, &[&spec]).await;
    h.receiver.respond("/recovering", 500);

    for _ in 0..6 {
        h.publish(&h.event("booking.created")).await;
    }
    wait_counters(&worker, |c| c.deferred > 0).await;
    h.receiver.respond("/recovering", 200);
    // Deferrals used no attempt, so every delivery still gets through once the probe succeeds.
    wait_counters(&worker, |c| c.delivered + c.exhausted == 6).await;
    wait_until(WAIT, || async { worker.open_breakers() == 0 })
        .await
        .expect("the breaker closes");
    assert!(worker.counters().delivered >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferral_ends_once_an_event_is_older_than_the_retry_span() {
    let h = Harness::start().await;
    let (worker, spec) = a_tripped_breaker(&h, "/never").await;
    wait_counters(&worker, |c| c.deferred > 0).await;

    // An event from an hour ago: past the retry span (0.3 s) plus the longest rest (10 s), so
    // its delivery runs its schedule to exhaustion despite the open breaker.
    let mut old = h.event("booking.created");
    old.timestamp -= chrono::Duration::hours(1);
    h.publish(&old).await;
    let delivery_id = DeliveryId::derive(&old.id, &WebhookId::parse(&spec.id).unwrap());
    let outcomes = h
        .wait_outcomes(|o| {
            o.iter()
                .any(|o| o.delivery_id == delivery_id.as_str() && o.attempt == 3)
        })
        .await;
    let last = outcomes
        .iter()
        .find(|o| o.delivery_id == delivery_id.as_str() && o.attempt == 3)
        .unwrap();
    assert_eq!(status(last), DeliveryStatus::Exhausted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_with_a_backlog_does_not_hold_up_healthy_ones() {
    let h = Harness::start().await;
    let mut config = h.config();
    config.per_webhook_in_flight = 2;
    // The shared consumer's budget, scaled down with the backlog: 120 waiting tasks are to 30
    // what a burst of 10,000 is to the default.
    config.sender_max_ack_pending = 30;
    let worker = h.worker_with(config).await;
    // Slow, but it answers, so its breaker never opens.
    let slow = h.spec("/slow", &["booking.created"]);
    let healthy: Vec<_> = (0..4)
        .map(|n| h.spec(&format!("/healthy/{n}"), &["payment.succeeded"]))
        .collect();
    let mut specs = vec![&slow];
    specs.extend(&healthy);
    h.put_indexed(&worker, &specs).await;
    h.receiver.respond("/slow", Response::ok().delay(ms(300)));

    let backlog: Vec<_> = (0..120).map(|_| h.event("booking.created")).collect();
    for event in &backlog {
        h.publish(event).await;
    }
    h.receiver
        .wait_for_requests("/slow", 2, WAIT)
        .await
        .unwrap();

    // Healthy traffic beside the backlog, at 20 events/s.
    let mut published = HashMap::new();
    let mut pace = tokio::time::interval(ms(50));
    for _ in 0..30 {
        pace.tick().await;
        let event = h.event("payment.succeeded");
        h.publish(&event).await;
        published.insert(event.id.to_string(), Instant::now());
    }
    let paths: Vec<String> = (0..4).map(|n| format!("/healthy/{n}")).collect();
    let all_healthy = wait_until(WAIT, || async {
        paths
            .iter()
            .all(|path| h.receiver.requests_to(path).len() >= 30)
    })
    .await;
    let slow_so_far = h.receiver.requests_to("/slow").len();
    if all_healthy.is_err() {
        panic!(
            "healthy deliveries stalled beside the slow backlog: {:?} of 30 each arrived; \
             counters: {:#?}",
            paths
                .iter()
                .map(|path| h.receiver.requests_to(path).len())
                .collect::<Vec<_>>(),
            worker.counters()
        );
    }
    let mut slowest = Duration::ZERO;
    for path in &paths {
        for request in h.receiver.requests_to(path) {
            let id = request.body_json().unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned();
            slowest = slowest.max(request.received_at - published[&id]);
        }
    }
    // Bounded: a healthy delivery waits for no slow one (the bound is generous for a loaded
    // machine; `herald bench --scenario isolation` measures the real figures).
    assert!(
        slowest < Duration::from_secs(2),
        "a healthy delivery took {slowest:?} beside the slow backlog"
    );
    assert!(
        slow_so_far < backlog.len(),
        "the backlog was gone before the healthy traffic was measured"
    );
    assert!(worker.counters().laned > 0);

    // The backlog waited in its lane, and none of it is lost.
    h.receiver.respond("/slow", Response::ok());
    wait_until(WAIT, || async {
        h.receiver.requests_to("/slow").len() >= backlog.len()
    })
    .await
    .unwrap_or_else(|err| {
        panic!(
            "{err}: {} of {} slow deliveries arrived; counters: {:#?}",
            h.receiver.requests_to("/slow").len(),
            backlog.len(),
            worker.counters()
        )
    });
    wait_until(WAIT, || async { worker.open_lanes() == 0 })
        .await
        .expect("an empty lane closes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_webhooks_breaker_is_forgotten() {
    let h = Harness::start().await;
    let (worker, spec) = a_tripped_breaker(&h, "/broken").await;

    h.bucket.delete(&spec.id).await.unwrap();
    wait_until(WAIT, || async { worker.open_breakers() == 0 })
        .await
        .expect("the breaker of a deleted webhook is forgotten");
}
