//! Failed attempts: the retry schedule, exhaustion, 410, Retry-After, redirects, and the
//! single-attempt triggers.

use std::time::Duration;

use async_nats::HeaderMap;
use herald_bus::names::{delivery_subject, header};
use herald_core::{DeliveryId, RetrySchedule, WebhookId};
use herald_proto::deliveries::v1::{DeliveryStatus, DeliveryTask, Trigger};
use herald_testkit::Response;
use prost::Message as _;

use crate::common::{Harness, WAIT, ms, of_delivery, status, wait_counters};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attempt_is_retried_with_the_same_webhook_id() {
    let h = Harness::start().await;
    let worker = h.worker().await;
    let spec = h.spec("/flaky", &[]);
    h.put_indexed(&worker, &[&spec]).await;
    h.receiver.respond_seq(
        "/flaky",
        [Response::status(500).body("try later"), Response::ok()],
    );

    let event = h.event("booking.created");
    h.publish(&event).await;
    let requests = h
        .receiver
        .wait_for_requests("/flaky", 2, WAIT)
        .await
        .unwrap();
    let ids: Vec<_> = requests.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids[0], ids[1]);
    assert_eq!(requests[0].body, requests[1].body);
    // The schedule says 100 ms, jittered by at most 20 %.
    let gap = requests[1].received_at - requests[0].received_at;
    assert!(gap >= ms(80), "retried after {gap:?}");

    let delivery_id = DeliveryId::derive(&event.id, &WebhookId::parse(&spec.id).unwrap());
    let outcomes = h
        .wait_outcomes(|o| of_delivery(o, delivery_id.as_str()).len() == 2)
        .await;
    let attempts = of_delivery(&outcomes, delivery_id.as_str());
    assert_eq!(
        (attempts[0].attempt, status(attempts[0])),
        (1, DeliveryStatus::Failed)
    );
    assert_eq!(attempts[0].http_status, 500);
    assert_eq!(attempts[0].error, "HTTP 500");
    assert_eq!(attempts[0].response_body, "try later");
    let next = attempts[0]
        .next_attempt_at
        .expect("a failed attempt says when the next is");
    let at = attempts[0].attempted_at.expect("attempted_at");
    // Counted from the answer: 100 ms jittered by at most 20 %, after the request's latency.
    let planned = (next.seconds - at.seconds) * 1000 + i64::from(next.nanos - at.nanos) / 1_000_000
        - i64::from(attempts[0].latency_ms);
    assert!(
        (79..=121).contains(&planned),
        "next attempt planned {planned} ms after the answer"
    );
    assert_eq!(
        (attempts[1].attempt, status(attempts[1])),
        (2, DeliveryStatus::Delivered)
    );
    wait_counters(&worker, |c| {
        c.failed == 1 && c.delivered == 1 && c.retries_released == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_is_exhausted_after_its_last_attempt() {
    let h = Harness::start().await;
    let worker = h.worker().await;
    let spec = h.spec("/down", &[]);
    h.put_indexed(&worker, &[&spec]).await;
    h.receiver.respond("/down", 503);

    h.publish(&h.event("booking.created")).await;
    let outcomes = h
        .wait_outcomes(|o| o.iter().any(|o| status(o) == DeliveryStatus::Exhausted))
        .await;
    let statuses: Vec<_> = outcomes.iter().map(|o| (o.attempt, status(o))).collect();
    assert_eq!(
        statuses,
        [
            (1, DeliveryStatus::Failed),
            (2, DeliveryStatus::Failed),
            (3, DeliveryStatus::Exhausted)
        ]
    );
    assert_eq!(outcomes[2].next_attempt_at, None);
    assert!(!outcomes[2].disable_webhook);
    wait_counters(&worker, |c| c.exhausted == 1).await;
    assert_eq!(worker.counters().failed, 2);
    // Exhaustion is the last decision: nothing is queued for a fourth attempt.
    assert_eq!(h.receiver.requests_to("/down").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_asks_to_disable_the_webhook_and_is_not_retried() {
    let h = Harness::start().await;
    let worker = h.worker().await;
    let spec = h.spec("/gone", &[]);
    h.put_indexed(&worker, &[&spec]).await;
    h.receiver.respond("/gone", 410);

    h.publish(&h.event("booking.created")).await;
    let outcomes = h.wait_outcomes(|o| !o.is_empty()).await;
    assert_eq!(outcomes.len(), 1);
    assert_eq!(status(&outcomes[0]), DeliveryStatus::Exhausted);
    assert!(outcomes[0].disable_webhook);
    assert_eq!(outcomes[0].http_status, 410);
    wait_counters(&worker, |c| c.disabled == 1 && c.exhausted == 1).await;
    assert_eq!(worker.counters().failed, 0);
    assert_eq!(h.receiver.requests_to("/gone").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let h = Harness::start().await;
    let mut config = h.config();
    // Long enough a schedule for the endpoint's 1 s not to be clamped.
    config.retry_schedule = RetrySchedule::new(vec![ms(100), Duration::from_secs(2)]).unwrap();
    let worker = h.worker_with(config).await;
    let spec = h.spec("/busy", &[]);
    h.put_indexed(&worker, &[&spec]).await;
    h.receiver.respond_seq(
        "/busy",
        [
            Response::status(429).header("Retry-After", "1"),
            Response::ok(),
        ],
    );

    h.publish(&h.event("booking.created")).await;
    let requests = h
        .receiver
        .wait_for_requests("/busy", 2, WAIT)
        .await
        .unwrap();
    let gap = requests[1].received_at - requests[0].received_at;
    assert!(gap >= Duration::from_secs(1), "retried after {gap:?}");
    let outcomes = h.wait_outcomes(|o| o.len() == 2).await;
    assert_eq!(outcomes[0].http_status, 429);
    assert_eq!(status(&outcomes[1]), DeliveryStatus::Delivered);
    // The 1 s wait went through the 100 ms line, moving to its back each time it was not due.
    assert!(worker.counters().requeued > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_wait_does_not_hold_up_its_delay_line() {
    let h = Harness::start().await;
    let mut config = h.config();
    config.retry_schedule = RetrySchedule::new(vec![ms(100), Duration::from_secs(3)]).unwrap();
    let worker = h.worker_with(config).await;
    let patient = h.spec("/patient", &["payment.failed"]);
    let eager = h.spec("/eager", &["booking.created"]);
    h.put_indexed(&worker, &[&patient, &eager]).await;
    h.receiver.respond_seq(
        "/patient",
        [
            Response::status(503).header("Retry-After", "2"),
            Response::ok(),
        ],
    );
    h.receiver.respond_seq("/eager", [500, 200]);

    // The patient retry enters the 100 ms line first, due in 2 s.
    h.publish(&h.event("payment.failed")).await;
    h.receiver
        .wait_for_requests("/patient", 1, WAIT)
        .await
        .unwrap();
    h.publish(&h.event("booking.created")).await;
    let eager_requests = h
        .receiver
        .wait_for_requests("/eager", 2, WAIT)
        .await
        .unwrap();
    let patient_requests = h
        .receiver
        .wait_for_requests("/patient", 2, WAIT)
        .await
        .unwrap();
    let eager_gap = eager_requests[1].received_at - eager_requests[0].received_at;
    assert!(
        eager_gap < ms(1000),
        "the 100 ms retry waited {eager_gap:?} behind a 2 s one"
    );
    assert!(eager_requests[1].received_at < patient_requests[1].received_at);
    let patient_gap = patient_requests[1].received_at - patient_requests[0].received_at;
    assert!(patient_gap >= Duration::from_secs(2), "{patient_gap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_a_failure_and_is_not_followed() {
    let h = Harness::start().await;
    let worker = h.worker().await;
    let spec = h.spec("/moved", &[]);
    h.put_indexed(&worker, &[&spec]).await;
    h.receiver.respond_seq(
        "/moved",
        [
            Response::status(302).header("Location", h.receiver.url("/elsewhere")),
            Response::ok(),
        ],
    );

    h.publish(&h.event("booking.created")).await;
    let outcomes = h.wait_outcomes(|o| o.len() == 2).await;
    assert_eq!(status(&outcomes[0]), DeliveryStatus::Failed);
    assert_eq!(outcomes[0].http_status, 302);
    assert_eq!(outcomes[0].error, "HTTP 302 (redirects are not followed)");
    assert_eq!(status(&outcomes[1]), DeliveryStatus::Delivered);
    assert!(h.receiver.requests_to("/elsewhere").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeliveries_and_replays_make_a_single_attempt() {
    let h = Harness::start().await;
    let worker = h.worker().await;
    let spec = h.spec("/manual", &[]);
    h.put_indexed(&worker, &[&spec]).await;
    h.receiver.respond("/manual", 500);

    let webhook = WebhookId::parse(&spec.id).unwrap();
    for trigger in [Trigger::Redelivery, Trigger::Replay] {
        let event = h.event("booking.created");
        let delivery_id = DeliveryId::derive(&event.id, &webhook);
        let task = DeliveryTask {
            delivery_id: delivery_id.to_string(),
            webhook_id: spec.id.clone(),
            event: Some(herald_proto::encode_event(&event)),
            attempt: 1,
            not_before: None,
            trigger: trigger as i32,
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            header::MSG_ID,
            format!("{delivery_id}:{trigger:?}").as_str(),
        );
        h.js.publish_with_headers(
            delivery_subject(&webhook),
            headers,
            task.encode_to_vec().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let outcomes = h.wait_outcomes(|o| o.len() == 2).await;
    for outcome in &outcomes {
        assert_eq!(status(outcome), DeliveryStatus::Exhausted, "{outcome:?}");
        assert_eq!(outcome.attempt, 1);
    }
    let triggers: Vec<_> = outcomes.iter().map(|o| o.trigger()).collect();
    assert!(triggers.contains(&Trigger::Redelivery) && triggers.contains(&Trigger::Replay));
    wait_counters(&worker, |c| c.exhausted == 2).await;
    assert_eq!(worker.counters().failed, 0);
    assert_eq!(h.receiver.requests_to("/manual").len(), 2);
}
