//! What an integrator sees: signed deliveries, the log, test events,
//! redelivery and replay, and a 410 that turns a webhook off.

use std::time::Duration;

use herald_core::{DeliveryId, WebhookId};
use herald_testkit::Response;
use reqwest::Method;
use serde_json::json;

use crate::harness::{Herald, WAIT, assert_signed};

#[tokio::test]
async fn an_event_is_delivered_signed_and_logged() {
    let herald = Herald::start(Duration::from_millis(200), 3).await;
    let account = herald.account().await;
    let (hook, secret) = herald.webhook(&account, "/in", json!(["booking.*"])).await;
    let (other, _) = herald
        .webhook(&account, "/payments", json!(["payment.succeeded"]))
        .await;
    herald.wait_for_spec(&hook, 1).await;
    herald.wait_for_spec(&other, 1).await;

    let event = herald
        .publish(&account, "booking.created", json!({ "booking_id": "bk_1" }))
        .await;
    let request = herald
        .receiver
        .wait_for_requests("/in", 1, WAIT)
        .await
        .unwrap()
        .remove(0);
    let delivery = DeliveryId::derive(&event, &WebhookId::parse(&hook).unwrap()).to_string();
    assert_eq!(request.header("webhook-id"), Some(delivery.as_str()));
    assert_signed(&secret, &request);
    let body = request.body_json().unwrap();
    assert_eq!(body["type"], "booking.created");
    assert_eq!(body["account"], account.as_str());
    assert_eq!(body["data"], json!({ "booking_id": "bk_1" }));

    let logged = herald
        .wait_for_delivery(&account, &delivery, |d| d["status"] == "delivered")
        .await;
    assert_eq!(logged["attempts"], 1);
    assert_eq!(logged["attempt_log"][0]["http_status"], 200);
    let stats = herald
        .ok(
            Method::GET,
            &format!("/v1/accounts/{account}/webhooks/{hook}/stats"),
            None,
        )
        .await;
    assert_eq!(stats["delivered"], 1);
    assert!(
        herald.receiver.requests_to("/payments").is_empty(),
        "not subscribed to bookings"
    );
    // The registry's /metrics counts the outcome it recorded and how long it waited.
    let metrics = herald_testkit::wait_for(WAIT, || async {
        let text = herald
            .http
            .get(format!("{}/metrics", herald.api))
            .bearer_auth(crate::harness::ADMIN)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.contains("herald_registry_outcomes_recorded_total 1")
            .then_some(text)
    })
    .await
    .unwrap();
    assert!(
        metrics.contains("herald_registry_outcome_ingest_lag_seconds_count 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn exhausted_deliveries_are_redelivered_and_replayed_with_the_same_id() {
    let herald = Herald::start(Duration::from_millis(100), 2).await;
    let account = herald.account().await;
    herald.receiver.respond("/flaky", Response::status(500));
    let (hook, _) = herald.webhook(&account, "/flaky", json!([])).await;
    herald.wait_for_spec(&hook, 1).await;
    let hook_id = WebhookId::parse(&hook).unwrap();

    let first = herald.publish(&account, "booking.created", json!({})).await;
    let second = herald
        .publish(&account, "booking.cancelled", json!({}))
        .await;
    let first_id = DeliveryId::derive(&first, &hook_id).to_string();
    let second_id = DeliveryId::derive(&second, &hook_id).to_string();
    for id in [&first_id, &second_id] {
        let logged = herald
            .wait_for_delivery(&account, id, |d| d["status"] == "exhausted")
            .await;
        assert_eq!(logged["attempts"], 2, "{logged}");
    }
    let tried: Vec<String> = herald
        .receiver
        .requests_to("/flaky")
        .iter()
        .filter_map(|r| r.header("webhook-id").map(str::to_owned))
        .collect();
    assert_eq!(
        tried.iter().filter(|id| **id == first_id).count(),
        2,
        "retries keep the webhook-id"
    );

    // The endpoint is fixed: one delivery by hand, the rest by replay.
    herald.receiver.respond("/flaky", Response::status(200));
    herald
        .ok(
            Method::POST,
            &format!("/v1/accounts/{account}/deliveries/{first_id}/redeliver"),
            Some(json!({})),
        )
        .await;
    let logged = herald
        .wait_for_delivery(&account, &first_id, |d| d["status"] == "delivered")
        .await;
    assert_eq!(logged["attempts"], 3);
    assert_eq!(logged["attempt_log"][2]["trigger"], "redelivery");

    let since = (chrono::Utc::now() - chrono::Duration::minutes(10)).to_rfc3339();
    let replayed = herald
        .ok(
            Method::POST,
            &format!("/v1/accounts/{account}/webhooks/{hook}/replay"),
            Some(json!({ "since": since })),
        )
        .await;
    assert_eq!(replayed["replayed"], 1);
    let logged = herald
        .wait_for_delivery(&account, &second_id, |d| d["status"] == "delivered")
        .await;
    assert_eq!(logged["attempt_log"][2]["trigger"], "replay");
    let last = herald
        .receiver
        .requests_to("/flaky")
        .last()
        .unwrap()
        .header("webhook-id")
        .unwrap()
        .to_owned();
    assert_eq!(last, second_id);
}

#[tokio::test]
async fn a_test_event_reaches_the_endpoint_whatever_its_filter() {
    let herald = Herald::start(Duration::from_millis(100), 2).await;
    let account = herald.account().await;
    let (hook, _) = herald
        .webhook(&account, "/only-payments", json!(["payment.failed"]))
        .await;
    herald.wait_for_spec(&hook, 1).await;
    let sent = herald
        .ok(
            Method::POST,
            &format!("/v1/accounts/{account}/webhooks/{hook}/test"),
            Some(json!({})),
        )
        .await;
    let request = herald
        .receiver
        .wait_for_requests("/only-payments", 1, WAIT)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(request.header("webhook-id"), sent["id"].as_str());
    assert_eq!(request.body_json().unwrap()["type"], "herald.test");
    herald
        .wait_for_delivery(&account, sent["id"].as_str().unwrap(), |d| {
            d["status"] == "delivered"
        })
        .await;
}

#[tokio::test]
async fn gone_turns_the_webhook_off_everywhere() {
    let herald = Herald::start(Duration::from_millis(100), 3).await;
    let account = herald.account().await;
    herald.receiver.respond("/gone", Response::status(410));
    let (gone, _) = herald.webhook(&account, "/gone", json!([])).await;
    let (alive, _) = herald.webhook(&account, "/alive", json!([])).await;
    herald.wait_for_spec(&gone, 1).await;
    herald.wait_for_spec(&alive, 1).await;

    herald.publish(&account, "booking.created", json!({})).await;
    herald
        .receiver
        .wait_for_requests("/gone", 1, WAIT)
        .await
        .unwrap();
    let path = format!("/v1/accounts/{account}/webhooks/{gone}");
    herald_testkit::wait_until(WAIT, || async {
        herald.ok(Method::GET, &path, None).await["enabled"] == false
    })
    .await
    .unwrap();
    let webhook = herald.ok(Method::GET, &path, None).await;
    assert_eq!(webhook["disabled_reason"], "the endpoint answered 410 Gone");
    // The worker learns of it through the projection and sends no more.
    herald
        .wait_for_spec(&gone, webhook["version"].as_u64().unwrap())
        .await;
    herald.publish(&account, "booking.updated", json!({})).await;
    herald
        .receiver
        .wait_for_requests("/alive", 2, WAIT)
        .await
        .unwrap();
    assert_eq!(
        herald.receiver.requests_to("/gone").len(),
        1,
        "no retry after 410, nothing after disabling"
    );
}
