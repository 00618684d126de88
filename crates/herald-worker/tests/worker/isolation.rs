//! A dead endpoint trips its circuit breaker and does not hold up healthy ones.

use herald_testkit::{Response, wait_until};

use crate::common::{Harness, WAIT, ms, wait_counters};

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
