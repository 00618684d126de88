//! A dead endpoint trips its circuit breaker and does not hold up healthy ones.

use std::time::Duration;

use herald_core::{DeliveryId, WebhookId};
use herald_proto::deliveries::v1::DeliveryStatus;
use herald_testkit::{Response, wait_until};

use crate::common::{Harness, WAIT, ms, status, wait_counters};

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
    let mut config = h.config();
    config.breaker.failures_to_open = 1;
    config.breaker.cool_down = Duration::from_secs(10);
    config.breaker.max_cool_down = Duration::from_secs(10);
    let worker = h.worker_with(config).await;
    let spec = h.spec("/never", &[]);
    h.put_indexed(&worker, &[&spec]).await;
    h.receiver.respond("/never", 500);

    h.publish(&h.event("booking.created")).await;
    wait_until(WAIT, || async { worker.open_breakers() == 1 })
        .await
        .unwrap();
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
