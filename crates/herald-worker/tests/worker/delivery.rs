//! Deliveries as a receiver sees them, and who receives which events.

use std::collections::HashSet;

use async_nats::HeaderMap;
use herald_bus::Publisher;
use herald_bus::headers::set_traceparent;
use herald_core::{
    AccountId, DeliveryId, Event, EventData, EventId, EventType, SigningSecret, WebhookId,
};
use herald_proto::deliveries::v1::{DeliveryStatus, Trigger};
use herald_testkit::{Response, wait_until};

use crate::common::{Harness, SECRET, WAIT, ms, status, wait_counters};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_is_signed_and_shaped_as_documented() {
    let h = Harness::start().await;
    let worker = h.worker().await;
    let spec = h.spec("/happy", &["booking.created"]);
    h.put_indexed(&worker, &[&spec]).await;

    // Fixed ids and time, so the body can be compared whole.
    let event = Event {
        id: EventId::parse("evt_happy_path").unwrap(),
        event_type: EventType::parse("booking.created").unwrap(),
        account: h.account.clone(),
        timestamp: "2026-11-27T10:00:00.250Z".parse().unwrap(),
        data: EventData::parse(r#"{"booking_id": "bk_1", "guests": 2}"#).unwrap(),
    };
    let mut headers = HeaderMap::new();
    set_traceparent(&mut headers, TRACEPARENT);
    Publisher::new(h.js.clone())
        .publish_with_headers(&event, headers)
        .await
        .unwrap();

    let requests = h
        .receiver
        .wait_for_requests("/happy", 1, WAIT)
        .await
        .unwrap();
    let request = &requests[0];
    assert_eq!(request.method, "POST");

    let mut names: Vec<&str> = request
        .headers
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    names.sort_unstable();
    expect_test::expect![[r#"
        content-length
        content-type
        host
        traceparent
        user-agent
        webhook-id
        webhook-signature
        webhook-timestamp"#]]
    .assert_eq(&names.join("\n"));

    let body = request.body_text();
    let expected_body = format!(
        r#"{{"id":"evt_happy_path","type":"booking.created","timestamp":"2026-11-27T10:00:00.250Z","account":"{}","data":{{"booking_id": "bk_1", "guests": 2}}}}"#,
        h.account
    );
    assert_eq!(body, expected_body);
    assert_eq!(body, event.webhook_body());

    let webhook = WebhookId::parse(&spec.id).unwrap();
    let delivery_id = DeliveryId::derive(&event.id, &webhook);
    assert_eq!(request.header("webhook-id"), Some(delivery_id.as_str()));
    assert_eq!(request.header("content-type"), Some("application/json"));
    // The request's trace is the delivery's own, not the publisher's (HERALD_OUTBOUND_TRACE).
    let traceparent = request.header("traceparent").unwrap();
    assert!(
        traceparent.starts_with(&format!(
            "00-{}-",
            herald_worker::delivery_trace_id(&delivery_id)
        )),
        "{traceparent}"
    );
    assert!(!traceparent.contains(&TRACEPARENT[3..35]), "{traceparent}");
    assert_eq!(
        request.header("user-agent"),
        Some(format!("Herald/{}", env!("CARGO_PKG_VERSION")).as_str())
    );
    let timestamp = request.header("webhook-timestamp").unwrap();
    let sent_at: i64 = timestamp.parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - sent_at).abs() < 60);
    herald_core::verify(
        &[SigningSecret::parse(SECRET).unwrap()],
        delivery_id.as_str(),
        timestamp,
        request.header("webhook-signature").unwrap(),
        body.as_bytes(),
        chrono::Utc::now().timestamp(),
        herald_core::DEFAULT_TOLERANCE,
    )
    .expect("the signature verifies with the webhook's secret");

    let outcomes = h.wait_outcomes(|outcomes| !outcomes.is_empty()).await;
    let outcome = &outcomes[0];
    assert_eq!(status(outcome), DeliveryStatus::Delivered);
    assert_eq!(outcome.delivery_id, delivery_id.as_str());
    assert_eq!(outcome.webhook_id, spec.id);
    assert_eq!(outcome.attempt, 1);
    assert_eq!(outcome.http_status, 200);
    assert_eq!(outcome.error, "");
    assert_eq!(outcome.trigger(), Trigger::Event);
    assert!(outcome.attempted_at.is_some());
    assert_eq!(outcome.next_attempt_at, None);
    assert_eq!(
        outcome.event.as_ref().map(|event| event.id.as_str()),
        Some("evt_happy_path")
    );
    wait_counters(&worker, |c| c.delivered == 1 && c.events_routed == 1).await;
    // /metrics: the attempt by outcome and status class, and its latency from the event's
    // timestamp, without naming the webhook or the account.
    let metrics = worker.metrics_text();
    for line in [
        r#"herald_worker_attempts_total{outcome="delivered",status_class="2xx"} 1"#,
        "herald_worker_delivery_latency_seconds_count 1",
        "herald_worker_attempts_per_delivery_count 1",
        "herald_worker_delivered_total 1",
        "herald_worker_requests_in_flight 0",
    ] {
        assert!(metrics.contains(line), "{line} is missing from:\n{metrics}");
    }
    assert!(!metrics.contains(&spec.id) && !metrics.contains(h.account.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_fans_out_to_every_subscribed_webhook() {
    let h = Harness::start().await;
    let worker = h.worker().await;
    let specs: Vec<_> = (0..25)
        .map(|n| h.spec(&format!("/fan/{n}"), &["booking.created"]))
        .collect();
    h.put_indexed(&worker, &specs.iter().collect::<Vec<_>>())
        .await;

    let event = h.event("booking.created");
    h.publish(&event).await;

    let mut ids = HashSet::new();
    for n in 0..25 {
        let requests = h
            .receiver
            .wait_for_requests(&format!("/fan/{n}"), 1, WAIT)
            .await
            .unwrap();
        ids.insert(requests[0].header("webhook-id").unwrap().to_owned());
    }
    assert_eq!(ids.len(), 25, "every webhook gets its own delivery id");
    wait_counters(&worker, |c| c.delivered == 25 && c.tasks_published == 25).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_wildcard_and_all_event_subscriptions_match() {
    let h = Harness::start().await;
    let worker = h.worker().await;
    let exact = h.spec("/exact", &["booking.created"]);
    let wildcard = h.spec("/wildcard", &["booking.*"]);
    let refunds = h.spec("/refunds", &["booking.refund.*"]);
    let all = h.spec("/all", &[]);
    let payments = h.spec("/payments", &["payment.failed", "payment.succeeded"]);
    h.put_indexed(&worker, &[&exact, &wildcard, &refunds, &all, &payments])
        .await;

    for event_type in [
        "booking.created",
        "booking.refund.partial",
        "payment.failed",
        "booking",
    ] {
        h.publish(&h.event(event_type)).await;
    }
    wait_counters(&worker, |c| c.events_routed == 4 && c.delivered == 9).await;

    let types_at = |path: &str| -> Vec<String> {
        let mut types: Vec<String> = h
            .receiver
            .requests_to(path)
            .iter()
            .map(|r| r.body_json().unwrap()["type"].as_str().unwrap().to_owned())
            .collect();
        types.sort();
        types
    };
    assert_eq!(types_at("/exact"), ["booking.created"]);
    assert_eq!(
        types_at("/wildcard"),
        ["booking.created", "booking.refund.partial"]
    );
    assert_eq!(types_at("/refunds"), ["booking.refund.partial"]);
    assert_eq!(
        types_at("/all"),
        [
            "booking",
            "booking.created",
            "booking.refund.partial",
            "payment.failed"
        ]
    );
    assert_eq!(types_at("/payments"), ["payment.failed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_accounts_webhooks_receive_nothing() {
    let h = Harness::start().await;
    let worker = h.worker().await;
    let other_account = AccountId::new();
    let mut theirs = h.spec("/theirs", &[]);
    theirs.account_id = other_account.to_string();
    let ours = h.spec("/ours", &[]);
    h.put_indexed(&worker, &[&theirs, &ours]).await;

    h.publish(&h.event("booking.created")).await;
    h.receiver
        .wait_for_requests("/ours", 1, WAIT)
        .await
        .unwrap();
    // Their own events do reach them, after ours: both were routed by the same worker.
    h.publish(&h.event_of(&other_account, "booking.updated"))
        .await;
    let theirs_got = h
        .receiver
        .wait_for_requests("/theirs", 1, WAIT)
        .await
        .unwrap();
    assert_eq!(theirs_got.len(), 1);
    assert_eq!(
        theirs_got[0].body_json().unwrap()["type"],
        "booking.updated"
    );
    wait_counters(&worker, |c| c.events_routed == 2 && c.delivered == 2).await;
    assert_eq!(h.receiver.requests_to("/ours").len(), 1);
    assert_eq!(h.receiver.requests_to("/theirs").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_and_deleted_webhooks_receive_nothing() {
    let h = Harness::start().await;
    let mut disabled = h.spec("/disabled", &[]);
    disabled.enabled = false;
    let deleted = h.spec("/deleted", &[]);
    let disabled_later = h.spec("/disabled-later", &[]);
    let control = h.spec("/control", &[]);
    // Loaded from the bucket's snapshot at start-up.
    for spec in [&disabled, &deleted, &disabled_later, &control] {
        h.put(spec).await;
    }
    let worker = h.worker().await;
    assert_eq!(worker.index().len(), 4);

    h.bucket.delete(&deleted.id).await.unwrap();
    let mut now_disabled = disabled_later.clone();
    now_disabled.enabled = false;
    now_disabled.version = 2;
    h.put(&now_disabled).await;
    let index = worker.index().clone();
    let deleted_id = WebhookId::parse(&deleted.id).unwrap();
    let disabled_id = WebhookId::parse(&disabled_later.id).unwrap();
    wait_until(WAIT, || {
        let index = index.clone();
        let deleted_id = deleted_id.clone();
        let disabled_id = disabled_id.clone();
        async move {
            index.get(&deleted_id).is_none() && index.get(&disabled_id).is_some_and(|s| !s.enabled)
        }
    })
    .await
    .unwrap();

    h.publish(&h.event("booking.created")).await;
    h.receiver
        .wait_for_requests("/control", 1, WAIT)
        .await
        .unwrap();
    wait_counters(&worker, |c| c.events_routed == 1).await;
    assert_eq!(worker.counters().tasks_published, 1);
    for path in ["/disabled", "/deleted", "/disabled-later"] {
        assert!(h.receiver.requests_to(path).is_empty(), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_disabled_between_attempts_gets_no_retry() {
    let h = Harness::start().await;
    let worker = h.worker().await;
    let spec = h.spec("/disabled-mid-way", &[]);
    h.put_indexed(&worker, &[&spec]).await;
    // A slow failure, so the webhook can be disabled while the first attempt is in flight.
    h.receiver
        .respond("/disabled-mid-way", Response::status(500).delay(ms(500)));

    h.publish(&h.event("booking.created")).await;
    h.receiver
        .wait_for_requests("/disabled-mid-way", 1, WAIT)
        .await
        .unwrap();
    let mut disabled = spec.clone();
    disabled.enabled = false;
    disabled.version = 2;
    h.put_indexed(&worker, &[&disabled]).await;

    wait_counters(&worker, |c| c.failed == 1 && c.dropped == 1).await;
    assert_eq!(h.receiver.requests_to("/disabled-mid-way").len(), 1);
}
