//! Graceful shutdown: requests in flight finish; what cannot finish in time is handed back at
//! once rather than after the ack wait.

use std::time::{Duration, Instant};

use herald_proto::deliveries::v1::DeliveryStatus;
use herald_testkit::Response;

use crate::common::{Harness, WAIT, ms, status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_finishes_deliveries_in_flight() {
    let h = Harness::start().await;
    let worker = h.worker().await;
    let spec = h.spec("/slow", &[]);
    h.put_indexed(&worker, &[&spec]).await;
    h.receiver.respond("/slow", Response::ok().delay(ms(800)));

    for _ in 0..3 {
        h.publish(&h.event("booking.created")).await;
    }
    h.receiver
        .wait_for_requests("/slow", 3, WAIT)
        .await
        .unwrap();
    assert!(
        worker.counters().delivered < 3,
        "requests are still in flight"
    );
    let counters = worker.shared_counters();
    worker.stop();
    tokio::time::timeout(WAIT, worker.wait())
        .await
        .expect("the worker stops")
        .expect("the worker stops cleanly");

    assert_eq!(counters.snapshot().delivered, 3);
    let outcomes = h.outcomes().await;
    assert_eq!(
        outcomes.len(),
        3,
        "every finished delivery's outcome is stored"
    );
    assert!(
        outcomes
            .iter()
            .all(|o| status(o) == DeliveryStatus::Delivered)
    );
    assert_eq!(h.receiver.requests_to("/slow").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_still_running_at_the_deadline_are_handed_back() {
    let h = Harness::start().await;
    let mut config = h.config();
    config.shutdown_deadline = ms(300);
    config.request_timeout = Duration::from_secs(5);
    config.sender_ack_wait = Duration::from_secs(20);
    let worker = h.worker_with(config.clone()).await;
    let spec = h.spec("/stuck", &[]);
    h.put_indexed(&worker, &[&spec]).await;
    h.receiver
        .respond("/stuck", Response::ok().delay(Duration::from_secs(4)));

    h.publish(&h.event("booking.created")).await;
    h.receiver
        .wait_for_requests("/stuck", 1, WAIT)
        .await
        .unwrap();
    let counters = worker.shared_counters();
    worker.stop();
    let stopping = Instant::now();
    worker.wait().await.unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "stopped in {:?}",
        stopping.elapsed()
    );
    assert_eq!(counters.snapshot().delivered, 0);
    assert!(counters.snapshot().nacked >= 1);

    // The task was handed back, so a new worker gets it long before the 20 s ack wait.
    h.receiver.respond("/stuck", Response::ok());
    let restarted = Instant::now();
    let next = h.worker_with(config).await;
    h.receiver
        .wait_for_requests("/stuck", 2, WAIT)
        .await
        .unwrap();
    assert!(restarted.elapsed() < Duration::from_secs(10));
    let requests = h.receiver.requests_to("/stuck");
    assert_eq!(
        requests[0].header("webhook-id"),
        requests[1].header("webhook-id")
    );
    drop(next);
}
