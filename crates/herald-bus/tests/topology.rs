//! Provisioning against a real nats-server: idempotent, applies changed settings, survives
//! races, and refuses what NATS cannot change in place.

// Tests fail by panicking; unwrap keeps them readable.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use futures::StreamExt as _;
use herald_bus::{Ensured, ProvisionOptions, RetryTiers, Topology, TopologyError, names};
use herald_testkit::NatsServer;

#[tokio::test]
async fn provisioning_creates_everything_once() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let js = nats.jetstream().await?;
    let opts = ProvisionOptions::development();

    let first = Topology::provision(&js, &opts).await?;
    assert!(
        first.items.iter().all(|(_, e)| *e == Ensured::Created),
        "{first:?}"
    );
    let expected_streams = [
        "EVENTS",
        "HERALD_DELIVERIES",
        "HERALD_RETRY_5S",
        "HERALD_RETRY_5M",
        "HERALD_RETRY_30M",
        "HERALD_RETRY_2H",
        "HERALD_RETRY_5H",
        "HERALD_RETRY_10H",
        "HERALD_LANES",
        "HERALD_OUTCOMES",
        "HERALD_DEAD",
        "KV_herald-webhooks",
    ];
    for name in expected_streams {
        assert_eq!(first.get(name), Some(Ensured::Created), "{name}");
        let info = js.get_stream(name).await?.cached_info().clone();
        assert_eq!(info.config.storage, stream::StorageType::File, "{name}");
    }
    for name in [
        "EVENTS/herald-router",
        "HERALD_DELIVERIES/herald-sender",
        "HERALD_RETRY_5S/herald-retry-5s",
        "HERALD_RETRY_10H/herald-retry-10h",
        "HERALD_OUTCOMES/herald-outcomes",
    ] {
        assert_eq!(first.get(name), Some(Ensured::Created), "{name}");
    }

    let second = Topology::provision(&js, &opts).await?;
    assert!(
        !second.changed(),
        "second run changed something: {second:?}"
    );
    assert_eq!(second.items.len(), first.items.len());
    Ok(())
}

#[tokio::test]
async fn changed_settings_are_applied_to_existing_consumers_and_streams() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let js = nats.jetstream().await?;
    let mut opts = ProvisionOptions::development();
    Topology::provision(&js, &opts).await?;

    opts.sender.ack_wait = Duration::from_secs(90);
    opts.sender.max_ack_pending = 123;
    opts.outcomes_max_age = Duration::from_secs(3600);
    let report = Topology::provision(&js, &opts).await?;
    assert_eq!(
        report.get("HERALD_DELIVERIES/herald-sender"),
        Some(Ensured::Updated)
    );
    assert_eq!(report.get("HERALD_OUTCOMES"), Some(Ensured::Updated));
    let changed: Vec<_> = report
        .items
        .iter()
        .filter(|(_, e)| *e != Ensured::Unchanged)
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(
        changed,
        ["HERALD_DELIVERIES/herald-sender", "HERALD_OUTCOMES"]
    );

    let mut sender = Topology::sender_consumer(&js).await?;
    let config = &sender.info().await?.config;
    assert_eq!(config.ack_wait, Duration::from_secs(90));
    assert_eq!(config.max_ack_pending, 123);
    let outcomes = js.get_stream("HERALD_OUTCOMES").await?;
    assert_eq!(
        outcomes.cached_info().config.max_age,
        Duration::from_secs(3600)
    );

    assert!(!Topology::provision(&js, &opts).await?.changed());
    Ok(())
}

#[tokio::test]
async fn a_consumer_made_again_from_a_resume_point_still_takes_changed_settings()
-> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let js = nats.jetstream().await?;
    let mut opts = ProvisionOptions::development();
    Topology::provision(&js, &opts).await?;
    // Deleted from under the workers, then made again from where one had got to: its start
    // position is a sequence now, where provisioning asks for the whole stream.
    js.get_stream(names::EVENTS_STREAM)
        .await?
        .delete_consumer(names::ROUTER_CONSUMER)
        .await?;
    Topology::open_router(&js, &opts, Some(7)).await?;

    // A changed setting is applied, at start-up and when the router opens its consumer again,
    // and the start position is left as it was (NATS refuses to change it).
    opts.router.ack_wait = Duration::from_secs(75);
    let report = Topology::provision(&js, &opts).await?;
    assert_eq!(report.get("EVENTS/herald-router"), Some(Ensured::Updated));
    opts.router.max_ack_pending = 77;
    let mut router = Topology::open_router(&js, &opts, Some(9)).await?;
    let config = &router.info().await?.config;
    assert_eq!(config.ack_wait, Duration::from_secs(75));
    assert_eq!(config.max_ack_pending, 77);
    assert_eq!(
        config.deliver_policy,
        async_nats::jetstream::consumer::DeliverPolicy::ByStartSequence { start_sequence: 7 }
    );
    Ok(())
}

#[tokio::test]
async fn racing_provisioners_both_succeed() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let opts = ProvisionOptions::development();
    let racers: Vec<_> = (0..3)
        .map(|_| {
            let url = nats.url();
            let opts = opts.clone();
            tokio::spawn(async move {
                let js = jetstream::new(async_nats::connect(url).await?);
                Topology::provision(&js, &opts).await?;
                anyhow::Ok(())
            })
        })
        .collect();
    for racer in racers {
        racer.await??;
    }
    let js = nats.jetstream().await?;
    assert!(!Topology::provision(&js, &opts).await?.changed());
    Ok(())
}

#[tokio::test]
async fn production_requires_the_events_stream_and_leaves_it_alone() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let js = nats.jetstream().await?;
    let opts = ProvisionOptions::default();
    assert!(!opts.create_events_stream);

    let err = Topology::provision(&js, &opts).await.unwrap_err();
    assert!(matches!(err, TopologyError::MissingEventsStream), "{err:?}");
    assert!(err.to_string().contains("does not exist"), "{err}");

    // The platform's own stream, with settings Herald would not choose.
    js.create_stream(stream::Config {
        name: names::EVENTS_STREAM.into(),
        subjects: vec![names::EVENTS_SUBJECTS.into()],
        max_age: Duration::from_secs(60 * 60),
        ..Default::default()
    })
    .await?;
    let report = Topology::provision(&js, &opts).await?;
    assert_eq!(report.get("EVENTS"), None);
    assert_eq!(report.get("EVENTS/herald-router"), Some(Ensured::Created));
    let events = js.get_stream("EVENTS").await?;
    assert_eq!(
        events.cached_info().config.max_age,
        Duration::from_secs(60 * 60)
    );
    Ok(())
}

#[tokio::test]
async fn a_stream_with_another_retention_is_refused_not_replaced() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let js = nats.jetstream().await?;
    js.create_stream(stream::Config {
        name: names::DELIVERIES_STREAM.into(),
        subjects: vec![names::DELIVERIES_SUBJECTS.into()],
        ..Default::default()
    })
    .await?;
    let err = Topology::provision(&js, &ProvisionOptions::development())
        .await
        .unwrap_err();
    match &err {
        TopologyError::IncompatibleStream { stream, field, .. } => {
            assert_eq!(stream, "HERALD_DELIVERIES");
            assert_eq!(*field, "retention");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(err.to_string().contains("delete the stream"), "{err}");
    Ok(())
}

#[tokio::test]
async fn custom_retry_tiers_get_their_own_lines() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let js = nats.jetstream().await?;
    let tiers = RetryTiers::new(vec![Duration::from_secs(1), Duration::from_secs(2)])?;
    let opts = ProvisionOptions {
        retry_tiers: tiers.clone(),
        ..ProvisionOptions::development()
    };
    let report = Topology::provision(&js, &opts).await?;
    assert_eq!(report.get("HERALD_RETRY_1S"), Some(Ensured::Created));
    assert_eq!(
        report.get("HERALD_RETRY_2S/herald-retry-2s"),
        Some(Ensured::Created)
    );
    assert_eq!(report.get("HERALD_RETRY_5S"), None);

    // A task published to a line comes out of that line's consumer.
    let tier = tiers.for_delay(Duration::from_millis(1500));
    js.publish(tier.subject(), "task".into()).await?.await?;
    let consumer = Topology::retry_consumer(&js, tier).await?;
    let mut batch = consumer.fetch().max_messages(1).messages().await?;
    let message = batch.next().await.unwrap().unwrap();
    assert_eq!(message.subject.as_str(), "herald.retry.1s");
    message.ack().await.unwrap();
    Ok(())
}

#[tokio::test]
async fn delivery_tasks_leave_the_work_queue_once_acknowledged() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let js = nats.jetstream().await?;
    Topology::provision(&js, &ProvisionOptions::development()).await?;
    let webhook = herald_core::WebhookId::new();

    let subject = names::delivery_subject(&webhook);
    for attempt in [1, 1, 2] {
        let msg_id = names::delivery_msg_id("dlv_x", attempt);
        let publish = jetstream::message::PublishMessage::build()
            .message_id(msg_id)
            .payload("task".into());
        js.send_publish(subject.clone(), publish).await?.await?;
    }
    let mut deliveries = js.get_stream(names::DELIVERIES_STREAM).await?;
    // The repeated first attempt is dropped; the second attempt is not.
    assert_eq!(deliveries.info().await?.state.messages, 2);

    let sender = Topology::sender_consumer(&js).await?;
    let mut batch = sender.fetch().max_messages(2).messages().await?;
    while let Some(message) = batch.next().await {
        message.unwrap().double_ack().await.unwrap();
    }
    assert_eq!(deliveries.info().await?.state.messages, 0);
    Ok(())
}
