//! What integrators use when something goes wrong: the delivery log that
//! updates while open, test events, one delivery's attempts, redelivery,
//! and the signing secret.

use std::time::Duration;

use fantoccini::Locator;
use herald_core::{DeliveryId, EventId, WebhookId};
use herald_e2e::harness::WAIT;
use herald_testkit::Response;
use reqwest::Method;
use serde_json::{Value, json};

use crate::Console;

#[tokio::test]
async fn a_test_event_reaches_the_receiver_and_appears_in_the_live_log() {
    let console = Console::start().await;
    let (herald, browser) = (&console.herald, &console.browser);
    let cool = herald.account().await;
    // Slow enough that the page shows the delivery before its answer.
    herald
        .receiver
        .respond("/wink", Response::ok().delay(Duration::from_millis(1500)));
    let (hook, _) = console
        .webhook(&cool, "Wink Stalker", "/wink", json!(["booking.*"]))
        .await;
    herald.wait_for_spec(&hook, 1).await;
    console.sign_in_as_admin().await;
    let page = format!("/ui/accounts/{cool}/webhooks/{hook}");
    browser.open(&page).await.unwrap();
    browser
        .wait_for_text("[data-empty]", "No deliveries yet")
        .await
        .unwrap();
    browser.inspect("webhook-page-new").await.unwrap();

    // Choosing a type brings its example; the payload can be edited.
    browser
        .client
        .find(Locator::Id("test-type"))
        .await
        .unwrap()
        .select_by_value("booking.created")
        .await
        .unwrap();
    assert!(
        browser
            .value("#test-payload")
            .await
            .unwrap()
            .contains("bk_1042")
    );
    browser
        .fill("#test-payload", r#"{"booking_id": "bk_live"}"#)
        .await
        .unwrap();
    browser.click_button("Send test event").await.unwrap();
    let notice = browser
        .wait_for_text(".notice", "Test event sent")
        .await
        .unwrap();
    let delivery = notice
        .split_whitespace()
        .find(|w| w.starts_with("dlv_"))
        .unwrap()
        .to_owned();
    browser.wait_for_path(&page).await.unwrap();
    // From here the page is never reloaded: the marker would vanish.
    browser
        .client
        .execute("window.heraldMarker = 'same page'; return true;", vec![])
        .await
        .unwrap();
    let row = format!("tr[id='{delivery}']");
    browser.wait_for_text(&row, "Delivered").await.unwrap();
    let request = herald
        .receiver
        .wait_for_requests("/wink", 1, WAIT)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(request.header("webhook-id"), Some(delivery.as_str()));
    let body = request.body_json().unwrap();
    assert_eq!(body["type"], "booking.created");
    assert_eq!(body["data"], json!({ "booking_id": "bk_live" }));
    // The health chart above the log follows it.
    browser
        .wait_for_text("#health figcaption", "1 attempt delivered, 0 failed")
        .await
        .unwrap();

    // An event published while the page is open appears by itself.
    let event = herald
        .publish(&cool, "booking.cancelled", json!({ "booking_id": "bk_2" }))
        .await;
    let published = DeliveryId::derive(&event, &WebhookId::parse(&hook).unwrap());
    browser
        .wait_for_text(&format!("tr[id='{published}']"), "Delivered")
        .await
        .unwrap();
    browser
        .wait_for_text("#health figcaption", "2 attempts delivered, 0 failed")
        .await
        .unwrap();
    let marker = browser
        .client
        .execute("return window.heraldMarker;", vec![])
        .await
        .unwrap();
    assert_eq!(marker, Value::from("same page"), "updated without a reload");
    let first = browser.text("table.log tbody tr").await.unwrap();
    assert!(first.contains("booking.cancelled"), "newest first: {first}");
    browser.inspect("webhook-page").await.unwrap();
    console.close().await;
}

#[tokio::test]
async fn a_delivery_shows_its_attempts_and_is_redelivered_with_the_same_id() {
    let console = Console::start().await;
    let (herald, browser) = (&console.herald, &console.browser);
    let cool = herald.account().await;
    let (hook, _) = console
        .webhook(&cool, "Wink Stalker", "/wink", json!([]))
        .await;
    herald.wait_for_spec(&hook, 1).await;
    herald
        .receiver
        .respond("/wink", Response::ok().body("thanks, got it"));
    let event: EventId = herald
        .publish(&cool, "booking.created", json!({ "booking_id": "bk_1" }))
        .await;
    let delivery = DeliveryId::derive(&event, &WebhookId::parse(&hook).unwrap()).to_string();
    herald
        .wait_for_delivery(&cool, &delivery, |d| d["status"] == "delivered")
        .await;
    console.sign_in_as_admin().await;

    // The Deliveries tab lists it; filters narrow the list.
    let tab = format!("/ui/accounts/{cool}/deliveries");
    browser.open(&tab).await.unwrap();
    browser
        .wait_for_text(&format!("tr[id='{delivery}']"), "Delivered")
        .await
        .unwrap();
    browser.inspect("deliveries").await.unwrap();
    browser
        .open(&format!("{tab}?status=exhausted"))
        .await
        .unwrap();
    browser
        .wait_for_text("[data-empty]", "No deliveries match")
        .await
        .unwrap();

    let page = format!("/ui/accounts/{cool}/deliveries/{delivery}");
    browser.open(&page).await.unwrap();
    let attempt = browser
        .wait_for_text("article.attempt", "Attempt 1")
        .await
        .unwrap();
    assert!(attempt.contains("webhook-signature"), "{attempt}");
    assert!(
        attempt.contains(&delivery),
        "the webhook-id header: {attempt}"
    );
    assert!(
        attempt.contains("thanks, got it"),
        "the first bytes of the answer: {attempt}"
    );
    assert!(
        browser
            .text("pre.code")
            .await
            .unwrap()
            .contains("\"booking_id\":\"bk_1\"")
    );
    browser.inspect("delivery").await.unwrap();

    browser.click_button("Redeliver").await.unwrap();
    browser
        .wait_for_text(".notice", "Sent again as attempt 2")
        .await
        .unwrap();
    herald_testkit::wait_until(WAIT, || async {
        browser.client.refresh().await.is_ok()
            && browser
                .text("article.attempt")
                .await
                .is_ok_and(|t| t.contains("Attempt 2") && t.contains("redelivery"))
    })
    .await
    .expect("the second attempt shows");
    let requests = herald
        .receiver
        .wait_for_requests("/wink", 2, WAIT)
        .await
        .unwrap();
    assert_eq!(
        requests[0].header("webhook-id"),
        requests[1].header("webhook-id")
    );
    console.close().await;
}

#[tokio::test]
async fn secrets_are_revealed_and_rotated_with_a_grace_period() {
    let console = Console::start().await;
    let (herald, browser) = (&console.herald, &console.browser);
    let cool = herald.account().await;
    let (hook, first) = console
        .webhook(&cool, "Wink Stalker", "/wink", json!([]))
        .await;
    console.sign_in_as_admin().await;
    let page = format!("/ui/accounts/{cool}/webhooks/{hook}");
    browser.open(&page).await.unwrap();
    browser.click_button("Reveal secret").await.unwrap();
    browser
        .wait_for_text("#secrets", "Signing secrets of")
        .await
        .unwrap();
    assert_eq!(browser.value("#secret-0").await.unwrap(), first);

    browser
        .client
        .find(Locator::Id("grace"))
        .await
        .unwrap()
        .select_by_label("1 hour")
        .await
        .unwrap();
    browser.click_button("Rotate secret").await.unwrap();
    assert!(
        browser
            .alert_text()
            .await
            .unwrap()
            .contains("Rotate the signing secret")
    );
    browser.client.accept_alert().await.unwrap();
    browser
        .wait_for_text("#secrets", "New signing secret")
        .await
        .unwrap();
    let current = browser.value("#secret-0").await.unwrap();
    assert_ne!(current, first);
    assert_eq!(browser.value("#secret-1").await.unwrap(), first);
    assert!(
        browser
            .text("#secrets")
            .await
            .unwrap()
            .contains("previous, signs until")
    );
    browser.inspect("webhook-secrets").await.unwrap();
    assert_eq!(console.secrets(&cool, &hook).await, [current, first]);
    let revealed = herald
        .ok(
            Method::GET,
            &format!("/v1/accounts/{cool}/webhooks/{hook}/secret"),
            None,
        )
        .await;
    let expires: chrono::DateTime<chrono::Utc> = revealed["data"][1]["expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let grace = expires - chrono::Utc::now();
    assert!(
        grace > chrono::TimeDelta::minutes(55) && grace <= chrono::TimeDelta::hours(1),
        "{grace}"
    );
    console.close().await;
}
