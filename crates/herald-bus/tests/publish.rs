//! The event publisher and dead-lettering against a real nats-server: at-least-once hand-off,
//! de-duplication by event id, the content type contract and trace propagation.

// Tests fail by panicking; unwrap keeps them readable.
#![allow(clippy::unwrap_used)]

use async_nats::jetstream;
use bytes::Bytes;
use herald_bus::{
    DeadSource, ProvisionOptions, PublishError, Publisher, Topology, dead_letter, headers, names,
};
use herald_core::{AccountId, Event, EventData, EventId, EventType};
use herald_testkit::NatsServer;

fn event() -> Event {
    Event {
        id: EventId::generate(),
        event_type: EventType::parse("booking.created").unwrap(),
        account: AccountId::new(),
        timestamp: "2026-11-27T10:00:00.250Z".parse().unwrap(),
        data: EventData::parse(r#"{"booking":{"id":"bk_1","total":120}}"#).unwrap(),
    }
}

async fn provisioned(nats: &NatsServer) -> anyhow::Result<jetstream::Context> {
    let js = nats.jetstream().await?;
    Topology::provision(&js, &ProvisionOptions::development()).await?;
    Ok(js)
}

#[tokio::test]
async fn an_event_is_stored_once_however_often_it_is_published() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let js = provisioned(&nats).await?;
    let publisher = Publisher::new(js.clone());
    let event = event();

    let first = publisher.publish(&event).await?;
    assert!(!first.duplicate);
    let again = publisher.publish(&event).await?;
    assert!(again.duplicate);
    assert_eq!(again.sequence, first.sequence);

    let other = publisher.publish(&self::event()).await?;
    assert!(!other.duplicate);
    assert_eq!(other.sequence, first.sequence + 1);

    let mut events = js.get_stream(names::EVENTS_STREAM).await?;
    assert_eq!(events.info().await?.state.messages, 2);
    Ok(())
}

#[tokio::test]
async fn events_are_protobuf_on_their_subject_with_id_and_content_type() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let js = provisioned(&nats).await?;
    let event = event();
    Publisher::new(js.clone()).publish(&event).await?;

    let subject = names::event_subject(&event.account, &event.event_type);
    assert_eq!(
        subject,
        format!("events.{}.booking.created", event.account.as_str())
    );
    let stored = js
        .get_stream(names::EVENTS_STREAM)
        .await?
        .get_last_raw_message_by_subject(&subject)
        .await?;
    assert_eq!(headers::msg_id(&stored.headers), Some(event.id.as_str()));
    assert_eq!(
        headers::content_type(&stored.headers),
        Some("application/protobuf")
    );
    let decoded = herald_proto::decode_event(
        headers::content_type(&stored.headers),
        &stored.payload,
        chrono::Utc::now(),
    )?;
    assert_eq!(decoded, event);
    Ok(())
}

#[tokio::test]
async fn json_events_and_trace_context_round_trip() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let js = provisioned(&nats).await?;
    let publisher = Publisher::new(js.clone());
    let event = event();
    let json = Bytes::from(event.webhook_body());

    let receipt = publisher
        .publish_json(&event.account, &event.event_type, &event.id, json.clone())
        .await?;
    assert!(!receipt.duplicate);
    let subject = names::event_subject(&event.account, &event.event_type);
    let stored = js
        .get_stream(names::EVENTS_STREAM)
        .await?
        .get_last_raw_message_by_subject(&subject)
        .await?;
    assert_eq!(
        headers::content_type(&stored.headers),
        Some("application/json")
    );
    assert_eq!(stored.payload, json);
    // JSON and protobuf forms of one event share its id, so either deduplicates the other.
    assert!(publisher.publish(&event).await?.duplicate);

    let traced = self::event();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut extra = async_nats::HeaderMap::new();
    headers::set_traceparent(&mut extra, traceparent);
    publisher.publish_with_headers(&traced, extra).await?;
    let stored = js
        .get_stream(names::EVENTS_STREAM)
        .await?
        .get_last_raw_message_by_subject(&names::event_subject(&traced.account, &traced.event_type))
        .await?;
    assert_eq!(headers::traceparent(&stored.headers), Some(traceparent));
    Ok(())
}

#[tokio::test]
async fn publishing_without_the_events_stream_says_so() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let publisher = Publisher::new(nats.jetstream().await?);
    let err = publisher.publish(&event()).await.unwrap_err();
    assert!(matches!(err, PublishError::NoStream { .. }), "{err:?}");
    assert!(err.to_string().contains("provision"), "{err}");
    Ok(())
}

#[tokio::test]
async fn dead_letters_keep_the_message_its_headers_and_a_reason() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let js = provisioned(&nats).await?;
    let mut original = async_nats::HeaderMap::new();
    original.insert(names::header::MSG_ID, "evt_bad");
    original.insert(names::header::CONTENT_TYPE, "text/plain");

    let reason = "unsupported content type `text/plain`\nsend application/json";
    let first = dead_letter(
        &js,
        DeadSource::Events,
        reason,
        "events.acct_x.booking.created",
        Some(&original),
        Bytes::from_static(b"not an event"),
    )
    .await?;
    assert!(!first.duplicate);
    // A crash between dead-lettering and acking redelivers the message; the copy is dropped.
    let again = dead_letter(
        &js,
        DeadSource::Events,
        reason,
        "events.acct_x.booking.created",
        Some(&original),
        Bytes::from_static(b"not an event"),
    )
    .await?;
    assert!(again.duplicate);

    let stored = js
        .get_stream(names::DEAD_STREAM)
        .await?
        .get_last_raw_message_by_subject("herald.dead.events")
        .await?;
    assert_eq!(stored.payload.as_ref(), b"not an event");
    assert_eq!(
        headers::dead_reason(&stored.headers),
        Some("unsupported content type `text/plain` send application/json")
    );
    assert_eq!(
        stored
            .headers
            .get(names::header::DEAD_SUBJECT)
            .map(|v| v.as_str()),
        Some("events.acct_x.booking.created")
    );
    assert_eq!(headers::content_type(&stored.headers), Some("text/plain"));
    Ok(())
}

#[tokio::test]
async fn a_dead_letter_too_large_for_the_server_keeps_its_reason_without_the_payload()
-> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let js = provisioned(&nats).await?;
    let max = js.client().server_info().max_payload;
    let mut original = async_nats::HeaderMap::new();
    original.insert(names::header::MSG_ID, "evt_huge");
    let stored = dead_letter(
        &js,
        DeadSource::Events,
        "too large to deliver",
        "events.acct_x.booking.created",
        Some(&original),
        Bytes::from(vec![b'x'; max]),
    )
    .await?;
    assert!(!stored.duplicate);
    let letter = js
        .get_stream(names::DEAD_STREAM)
        .await?
        .get_last_raw_message_by_subject("herald.dead.events")
        .await?;
    assert!(letter.payload.is_empty());
    assert_eq!(
        headers::dead_reason(&letter.headers),
        Some("too large to deliver")
    );
    assert_eq!(
        letter
            .headers
            .get(names::header::DEAD_PAYLOAD_OMITTED)
            .map(|v| v.as_str().to_owned()),
        Some(format!("{max} bytes, more than the server accepts"))
    );
    assert_eq!(headers::msg_id(&letter.headers), Some("evt_huge"));
    Ok(())
}

/// A fan-out larger than the context's limit of unacknowledged publishes (5,000), and two of
/// them at once: every message is stored on the first pass. When everything was sent before
/// any acknowledgement was read, the sends stalled on that limit until acknowledgements timed
/// out, and the messages came back as duplicates of themselves when published again.
#[tokio::test]
async fn a_fan_out_past_the_unacknowledged_publish_limit_is_stored_on_the_first_pass()
-> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let js = provisioned(&nats).await?;
    let messages = |batch: &str| -> Vec<herald_bus::Outgoing> {
        (0..6_000)
            .map(|n| {
                herald_bus::Outgoing::protobuf(
                    format!("herald.deliveries.wh_fanout_{batch}_{n}"),
                    &format!("fanout-{batch}-{n}"),
                    Bytes::from_static(b"task"),
                )
            })
            .collect()
    };
    let (first, second) = (messages("a"), messages("b"));
    let patient = herald_bus::Persistence::patient(std::time::Duration::from_secs(60));
    let (a, b) = tokio::join!(
        herald_bus::publish_all(&js, &first, patient),
        herald_bus::publish_all(&js, &second, patient),
    );
    for receipts in [a?, b?] {
        assert_eq!(receipts.len(), 6_000);
        let again = receipts.iter().filter(|r| r.duplicate).count();
        assert_eq!(
            again, 0,
            "{again} messages had to be published a second time"
        );
    }
    Ok(())
}
