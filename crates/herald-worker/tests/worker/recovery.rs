//! What the worker must recover from by itself: a consumer deleted from under it, delay lines of
//! an earlier retry schedule, and a NATS restart (saying it waits for NATS meanwhile).

use std::time::{Duration, Instant};

use chrono::Utc;
use herald_bus::names::{DELIVERIES_STREAM, EVENTS_STREAM, ROUTER_CONSUMER, SENDER_CONSUMER};
use herald_bus::{
    Outgoing, Persistence, ProvisionOptions, Publisher, RetryTier, RetryTiers, Topology,
};
use herald_core::{DeliveryId, WebhookId};
use herald_proto::deliveries::v1::{DeliveryTask, Trigger};
use herald_testkit::Response;

use crate::common::{Harness, WAIT, ms, wait_counters};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_deleted_from_under_the_worker_are_created_again() {
    let h = Harness::start().await;
    let worker = h.worker().await;
    let spec = h.spec("/back", &[]);
    h.put_indexed(&worker, &[&spec]).await;
    h.publish(&h.event("booking.created")).await;
    h.receiver
        .wait_for_requests("/back", 1, WAIT)
        .await
        .unwrap();

    for (stream, consumer) in [
        (EVENTS_STREAM, ROUTER_CONSUMER),
        (DELIVERIES_STREAM, SENDER_CONSUMER),
    ] {
        h.js.get_stream(stream)
            .await
            .unwrap()
            .delete_consumer(consumer)
            .await
            .unwrap();
    }
    let after = h.event("booking.created");
    h.publish(&after).await;
    let requests = h
        .receiver
        .wait_for_requests("/back", 2, WAIT)
        .await
        .unwrap();
    let webhook = WebhookId::parse(&spec.id).unwrap();
    let expected = DeliveryId::derive(&after.id, &webhook);
    assert!(
        requests
            .iter()
            .any(|r| r.header("webhook-id") == Some(expected.as_str())),
        "the event published after the deletion is delivered"
    );
    // The router's consumer came back where the worker was, not at the stream's start: the
    // first event was not routed again.
    wait_counters(&worker, |c| c.events_routed == 2).await;
    assert_eq!(worker.counters().tasks_duplicate, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_line_of_an_earlier_schedule_is_drained() {
    let h = Harness::start().await;
    // An earlier schedule had a 700 ms line, and a retry waits in it.
    let earlier = RetryTier::new(ms(700)).unwrap();
    Topology::provision(
        &h.js,
        &ProvisionOptions {
            retry_tiers: RetryTiers::new(vec![earlier.delay()]).unwrap(),
            ..ProvisionOptions::development()
        },
    )
    .await
    .unwrap();
    let spec = h.spec("/earlier", &[]);
    h.put(&spec).await;
    let event = h.event("booking.created");
    let webhook = WebhookId::parse(&spec.id).unwrap();
    let delivery_id = DeliveryId::derive(&event.id, &webhook);
    let task = DeliveryTask {
        delivery_id: delivery_id.to_string(),
        webhook_id: spec.id.clone(),
        event: Some(herald_proto::encode_event(&event)),
        attempt: 2,
        not_before: Some(herald_proto::timestamp(Utc::now())),
        trigger: Trigger::Event as i32,
    };
    let waiting = Outgoing::protobuf(
        earlier.subject(),
        &format!("{delivery_id}.2"),
        herald_proto::encode(&task).into(),
    );
    herald_bus::publish(&h.js, &waiting, Persistence::BRIEF)
        .await
        .unwrap();

    // The worker's schedule (100 ms, 200 ms) has no 700 ms line.
    let worker = h.worker().await;
    let requests = h
        .receiver
        .wait_for_requests("/earlier", 1, WAIT)
        .await
        .unwrap();
    assert_eq!(requests[0].header("webhook-id"), Some(delivery_id.as_str()));
    wait_counters(&worker, |c| c.delivered == 1 && c.retries_released == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_resume_within_seconds_of_a_nats_restart() {
    let mut h = Harness::start().await;
    let mut config = h.config();
    // Production ack waits: nothing may wait for one to run out.
    config.router_ack_wait = Duration::from_secs(30);
    config.sender_ack_wait = Duration::from_secs(30);
    config.delay_ack_wait = Duration::from_secs(30);
    let worker = h.worker_with(config).await;
    let spec = h.spec("/steady", &[]);
    h.put_indexed(&worker, &[&spec]).await;
    h.receiver.respond("/steady", Response::ok().delay(ms(50)));

    let before: Vec<_> = (0..30).map(|_| h.event("booking.created")).collect();
    for event in &before {
        h.publish(event).await;
    }
    h.receiver
        .wait_for_requests("/steady", 3, WAIT)
        .await
        .unwrap();
    tokio::task::block_in_place(|| {
        h.nats.stop().unwrap();
        h.nats.restart().unwrap();
    });
    let back = Instant::now();
    let after = h.event("booking.created");
    tokio::time::timeout(WAIT, async {
        while Publisher::new(h.js.clone()).publish(&after).await.is_err() {}
    })
    .await
    .expect("publishing works again after the restart");

    let webhook = WebhookId::parse(&spec.id).unwrap();
    let expected: Vec<String> = before
        .iter()
        .chain([&after])
        .map(|event| DeliveryId::derive(&event.id, &webhook).to_string())
        .collect();
    crate::common::wait_until_received(&h, "/steady", &expected, Duration::from_secs(40)).await;
    let took = back.elapsed();
    eprintln!("deliveries resumed {took:?} after NATS was back");
    // Before: events held by the router during the restart waited for its 30 s ack wait.
    assert!(
        took < Duration::from_secs(10),
        "deliveries took {took:?} to resume after NATS was back; counters: {:#?}",
        worker.counters()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_index_neither_acks_events_as_unmatched_nor_drops_tasks() {
    let h = Harness::start().await;
    let worker = h.worker().await;
    // The bucket is being read again after its watch broke, and a webhook created meanwhile
    // is not in the index yet.
    worker.index().set_current(false);
    let spec = h.spec("/new", &[]);
    let routed = h.event("booking.created");
    h.publish(&routed).await;
    // A task another replica, which knows the webhook, made already.
    let sent = h.event("booking.created");
    let webhook = WebhookId::parse(&spec.id).unwrap();
    let delivery_id = DeliveryId::derive(&sent.id, &webhook);
    let task = DeliveryTask {
        delivery_id: delivery_id.to_string(),
        webhook_id: spec.id.clone(),
        event: Some(herald_proto::encode_event(&sent)),
        attempt: 1,
        not_before: None,
        trigger: Trigger::Event as i32,
    };
    let message = Outgoing::protobuf(
        herald_bus::names::delivery_subject(&webhook),
        delivery_id.as_str(),
        herald_proto::encode(&task).into(),
    );
    herald_bus::publish(&h.js, &message, Persistence::BRIEF)
        .await
        .unwrap();

    // Both are handed back, again and again: more often than a task of a missing webhook is
    // delivered before it is dropped.
    wait_counters(&worker, |c| c.nacked >= 8).await;
    let counters = worker.counters();
    assert_eq!((counters.events_unmatched, counters.dropped), (0, 0));

    h.put_indexed(&worker, &[&spec]).await;
    worker.index().set_current(true);
    let requests = h.receiver.wait_for_requests("/new", 2, WAIT).await.unwrap();
    let mut ids: Vec<_> = requests
        .iter()
        .filter_map(|r| r.header("webhook-id"))
        .collect();
    ids.sort_unstable();
    let mut expected = vec![
        DeliveryId::derive(&routed.id, &webhook).to_string(),
        delivery_id.to_string(),
    ];
    expected.sort();
    assert_eq!(ids, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_waits_for_nats_while_it_is_away() {
    let mut h = Harness::start().await;
    let worker = h.worker().await;
    assert_eq!(worker.waiting_for(), None, "ready once started");
    tokio::task::block_in_place(|| h.nats.stop().unwrap());
    herald_testkit::wait_until(WAIT, || async {
        worker
            .waiting_for()
            .is_some_and(|reason| reason.starts_with("NATS is not connected"))
    })
    .await
    .expect("a worker without NATS says it waits for it");
    tokio::task::block_in_place(|| h.nats.restart().unwrap());
    herald_testkit::wait_until(WAIT, || async { worker.waiting_for().is_none() })
        .await
        .expect("ready again once NATS is back");
}
