//! Messages that cannot be decoded are dead-lettered with a reason, and never block the stream.

use herald_bus::names::{delivery_subject, event_subject, header};
use herald_core::{DeliveryId, EventData, EventType, WebhookId};
use herald_proto::deliveries::v1::DeliveryStatus;

use crate::common::{Harness, WAIT, status, wait_counters};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_dead_lettered_while_good_ones_flow() {
    let h = Harness::start().await;
    let worker = h.worker().await;
    let spec = h.spec("/good", &[]);
    h.put_indexed(&worker, &[&spec]).await;

    let subject = event_subject(&h.account, &EventType::parse("booking.created").unwrap());
    h.publish_raw(&subject, None, "bad-json", &b"{\"id\": "[..])
        .await;
    let bad_type = format!(
        r#"{{"id":"evt_bad_type","type":"Booking Created!","account":"{}"}}"#,
        h.account
    );
    h.publish_raw(&subject, Some("application/json"), "bad-type", bad_type)
        .await;
    h.publish_raw(
        &subject,
        Some("application/protobuf"),
        "garbage",
        &b"\xff\xff\xff\xff"[..],
    )
    .await;
    h.publish_raw(&subject, Some("text/csv"), "csv", &b"a,b"[..])
        .await;
    // A well-formed event naming another account than its subject: the subject is what NATS
    // permissions guard, so the payload must not redirect it to another tenant's webhooks.
    let other = herald_core::AccountId::new();
    let spoofed = format!(
        r#"{{"id":"evt_spoofed","type":"booking.created","account":"{other}","data":{{}}}}"#
    );
    h.publish_raw(&subject, Some("application/json"), "spoofed", spoofed)
        .await;
    // A task that is not a task, straight onto the deliveries stream.
    let webhook = WebhookId::parse(&spec.id).unwrap();
    h.js.publish(delivery_subject(&webhook), "not protobuf".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let good = h.event("booking.created");
    h.publish(&good).await;

    let delivered = h
        .receiver
        .wait_for_requests("/good", 1, WAIT)
        .await
        .unwrap();
    assert_eq!(delivered[0].body_json().unwrap()["id"], good.id.as_str());
    wait_counters(&worker, |c| c.dead == 6).await;

    let mut reasons: Vec<String> = h
        .dead_letters()
        .await
        .iter()
        .map(|message| {
            let headers = message.headers.clone();
            let reason = headers
                .get(header::DEAD_REASON)
                .map(|value| value.as_str().to_owned())
                .unwrap_or_default();
            let from = headers
                .get(header::DEAD_SUBJECT)
                .map(|value| value.as_str().to_owned())
                .unwrap_or_default()
                .replace(h.account.as_str(), "ACCOUNT")
                .replace(webhook.as_str(), "WEBHOOK");
            let reason = reason
                .replace(h.account.as_str(), "ACCOUNT")
                .replace(other.as_str(), "OTHER");
            format!("{} from {from}: {reason}", message.subject)
        })
        .collect();
    reasons.sort();
    expect_test::expect![[r#"
        herald.dead.deliveries from herald.deliveries.WEBHOOK: malformed protobuf delivery task: failed to decode Protobuf message: invalid wire type value: 6
        herald.dead.events from events.ACCOUNT.booking.created: field `type` is invalid: invalid event type `Booking Created!`: may contain only a-z, 0-9, `_`, `-` and `.`, found 'B'
        herald.dead.events from events.ACCOUNT.booking.created: malformed JSON event: EOF while parsing a value at line 1 column 7
        herald.dead.events from events.ACCOUNT.booking.created: malformed protobuf event: failed to decode Protobuf message: invalid varint
        herald.dead.events from events.ACCOUNT.booking.created: subject events.ACCOUNT.booking.created does not match the event's account and type (expected events.OTHER.booking.created)
        herald.dead.events from events.ACCOUNT.booking.created: unsupported content type `text/csv`: send application/json (the default) or application/protobuf"#]]
    .assert_eq(&reasons.join("\n"));
    // The original payload is kept for inspection.
    let dead = h.dead_letters().await;
    assert!(
        dead.iter()
            .any(|message| message.payload.as_ref() == b"a,b")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_too_large_to_deliver_ends_dead_lettered_and_in_the_log() {
    let h = Harness::start().await;
    let worker = h.worker().await;
    let spec = h.spec("/big", &[]);
    h.put_indexed(&worker, &[&spec]).await;

    // Just under what the server accepts as an event, so its delivery task is over.
    let max = h.js.client().server_info().max_payload;
    let mut big = h.event("booking.created");
    big.data = EventData::parse(&format!(r#"{{"blob":"{}"}}"#, "x".repeat(max - 2048))).unwrap();
    h.publish(&big).await;
    let small = h.event("booking.created");
    h.publish(&small).await;

    let webhook = WebhookId::parse(&spec.id).unwrap();
    let big_id = DeliveryId::derive(&big.id, &webhook);
    let outcomes = h
        .wait_outcomes(|o| o.iter().any(|o| o.delivery_id == big_id.as_str()))
        .await;
    let refused = outcomes
        .iter()
        .find(|o| o.delivery_id == big_id.as_str())
        .unwrap();
    assert_eq!(status(refused), DeliveryStatus::Exhausted);
    assert!(
        refused
            .error
            .starts_with("not sent: the event makes delivery tasks of"),
        "{}",
        refused.error
    );
    wait_counters(&worker, |c| c.too_large == 1 && c.delivered == 1).await;
    let letters = h.dead_letters().await;
    assert!(letters.iter().any(|letter| {
        letter
            .headers
            .get(header::DEAD_REASON)
            .is_some_and(|reason| reason.as_str().contains("more than the"))
    }));
    // The stream went on: the small event was delivered, the big one never sent.
    let requests = h.receiver.requests_to("/big");
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].body_json().unwrap()["id"], small.id.as_str());
}
