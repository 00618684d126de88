//! `herald status` reads what the streams and consumers hold from a real nats-server.

// Tests fail by panicking; unwrap keeps them readable.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use futures::StreamExt as _;
use herald_bus::{ProvisionOptions, Topology, names, status};
use herald_testkit::NatsServer;

#[tokio::test]
async fn status_counts_what_waits_and_what_is_handed_out() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let js = nats.jetstream().await?;
    Topology::provision(&js, &ProvisionOptions::development()).await?;

    let empty = status(&js).await?;
    // Delay lines in the order of their delays.
    let order: Vec<&str> = empty.streams.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        order,
        [
            "EVENTS",
            "HERALD_DELIVERIES",
            "HERALD_RETRY_5S",
            "HERALD_RETRY_14S",
            "HERALD_RETRY_39S",
            "HERALD_RETRY_108S",
            "HERALD_RETRY_5M",
            "HERALD_RETRY_12M",
            "HERALD_RETRY_30M",
            "HERALD_RETRY_1H",
            "HERALD_RETRY_2H",
            "HERALD_RETRY_5H",
            "HERALD_RETRY_10H",
            "HERALD_LANES",
            "HERALD_OUTCOMES",
            "HERALD_DEAD",
            "KV_herald-webhooks",
        ]
    );
    let events = empty.stream(names::EVENTS_STREAM).unwrap();
    assert_eq!((events.messages, events.oldest_age_seconds), (0, None));

    for n in 0..3 {
        js.publish(format!("events.acct_1.booking.created.{n}"), "{}".into())
            .await?
            .await?;
    }
    // The router takes one and has not acknowledged it yet.
    let router = Topology::router_consumer(&js).await?;
    let mut taken = router
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(1))
        .messages()
        .await?;
    let held = taken.next().await.unwrap().unwrap();

    let now = status(&js).await?;
    let events = now.stream(names::EVENTS_STREAM).unwrap();
    assert_eq!(events.messages, 3);
    assert!(events.oldest_age_seconds.is_some_and(|age| age < 60));
    assert_eq!(events.replicas, 1);
    let router = events.consumer(names::ROUTER_CONSUMER).unwrap();
    assert_eq!((router.pending, router.ack_pending), (2, 1), "{router:?}");

    // Lane consumers (one per busy webhook) are summed into one line.
    let lanes = js.get_stream(names::LANES_STREAM).await?;
    for webhook in ["wh_a", "wh_b"] {
        lanes
            .create_consumer(pull::Config {
                durable_name: Some(format!("{}{webhook}", names::LANE_CONSUMER_PREFIX)),
                filter_subject: format!("{}{webhook}", names::LANE_SUBJECT_PREFIX),
                ..Default::default()
            })
            .await?;
    }
    let now = status(&js).await?;
    let lanes = now.stream(names::LANES_STREAM).unwrap();
    assert_eq!(lanes.consumers.len(), 1, "{lanes:?}");
    assert_eq!(lanes.consumers[0].consumers, 2);

    held.ack().await.unwrap();
    Ok(())
}
