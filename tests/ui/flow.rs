//! The flow account admins know from the booking platform's help pages:
//! Accounts → Manage account → Webhooks → Create new webhook → Save, then
//! Actions → Update and Actions → Remove with OK, each ending on the list.

use fantoccini::Locator;
use herald_core::WebhookId;
use herald_e2e::harness::assert_signed;
use reqwest::Method;
use serde_json::json;

use crate::Console;

#[tokio::test]
async fn the_help_page_flow_creates_updates_disables_and_removes_a_webhook() {
    let console = Console::start().await;
    let (herald, browser) = (&console.herald, &console.browser);
    let cool = herald.account().await;
    herald
        .ok(
            Method::POST,
            "/v1/accounts",
            Some(json!({ "name": "Other Account" })),
        )
        .await;

    browser.open("/ui/sign-in").await.unwrap();
    browser.inspect("sign-in").await.unwrap();
    console.sign_in_as_admin().await;
    browser.inspect("accounts").await.unwrap();

    // 1–2. Accounts as cards; the card's Actions menu has Manage account.
    let card = browser
        .client
        .find(Locator::XPath(
            "//li[contains(@class,'card')][.//h2[normalize-space()='Cool Account']]",
        ))
        .await
        .unwrap();
    console.action(&card, "Manage account").await;
    let list = format!("/ui/accounts/{cool}/webhooks");
    browser.wait_for_path(&list).await.unwrap();
    assert_eq!(
        browser
            .text("nav.tabs a[aria-current='page']")
            .await
            .unwrap(),
        "Webhooks"
    );
    browser
        .wait_for_text(".empty", "No webhooks yet")
        .await
        .unwrap();
    browser.inspect("webhooks-empty").await.unwrap();

    // 3. Create new webhook: Name, Enabled (left checked), Entity name,
    // Events, Webhook URL, Save.
    browser.click_link("Create new webhook").await.unwrap();
    browser.wait_for_path(&format!("{list}/new")).await.unwrap();
    browser.inspect("webhook-form").await.unwrap();
    browser.fill("#name", "Wink Stalker").await.unwrap();
    assert!(
        browser.is_checked("#enabled").await.unwrap(),
        "Enabled starts checked"
    );
    browser
        .client
        .find(Locator::Id("account"))
        .await
        .unwrap()
        .select_by_label("Cool Account")
        .await
        .unwrap();
    browser
        .client
        .find(Locator::Id("event-booking-created"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .fill("#url", &herald.receiver.url("/wink"))
        .await
        .unwrap();
    browser.click_button("Save").await.unwrap();
    browser.wait_for_path(&list).await.unwrap();

    // Back on the list, the secret is shown once, with a copy button.
    browser
        .wait_for_text("#secrets", "“Wink Stalker” is ready")
        .await
        .unwrap();
    let shown = browser.value("#secret-0").await.unwrap();
    let copy = browser
        .client
        .find(Locator::Css("button[data-copy='secret-0']"))
        .await
        .unwrap();
    assert!(
        copy.is_displayed().await.unwrap(),
        "the copy button shows with scripts on"
    );
    browser.inspect("webhook-created").await.unwrap();
    let row = console.row("Wink Stalker").await.text().await.unwrap();
    assert!(
        row.contains("Enabled") && row.contains("booking.created"),
        "{row}"
    );
    let listed = herald
        .ok(Method::GET, &format!("/v1/accounts/{cool}/webhooks"), None)
        .await;
    let hook = listed["data"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        console.secrets(&cool, &hook).await,
        std::slice::from_ref(&shown)
    );

    // Ready to use: an event arrives, signed with the secret shown.
    herald.wait_for_spec(&hook, 1).await;
    herald
        .publish(&cool, "booking.created", json!({ "booking_id": "bk_1" }))
        .await;
    let request = herald
        .receiver
        .wait_for_requests("/wink", 1, herald_e2e::harness::WAIT)
        .await
        .unwrap()
        .remove(0);
    assert_signed(&shown, &request);
    browser.client.refresh().await.unwrap();
    assert!(
        browser.client.find(Locator::Id("secrets")).await.is_err(),
        "the secret is shown once"
    );

    // 4. Actions → Update: the same form, filled in; disable it, listen to
    // one more event, change the URL; Save returns to the list.
    let row = console.row("Wink Stalker").await;
    console.action(&row, "Update").await;
    browser
        .wait_for_path(&format!("{list}/{hook}/edit"))
        .await
        .unwrap();
    assert_eq!(browser.value("#name").await.unwrap(), "Wink Stalker");
    assert!(browser.is_checked("#event-booking-created").await.unwrap());
    assert_eq!(
        browser.value("#url").await.unwrap(),
        herald.receiver.url("/wink")
    );
    browser.inspect("webhook-update-form").await.unwrap();
    browser
        .client
        .find(Locator::Id("enabled"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .client
        .find(Locator::Id("event-booking-cancelled"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .fill("#url", &herald.receiver.url("/wink/v2"))
        .await
        .unwrap();
    browser.click_button("Save").await.unwrap();
    browser.wait_for_path(&list).await.unwrap();
    browser
        .wait_for_text(".notice", "“Wink Stalker” saved.")
        .await
        .unwrap();
    let row = console.row("Wink Stalker").await.text().await.unwrap();
    assert!(row.contains("Disabled"), "{row}");
    // Listed in the catalogue's order, as the form shows them.
    assert!(row.contains("booking.cancelled, booking.created"), "{row}");
    assert!(row.contains("/wink/v2"), "{row}");
    let stored = herald
        .ok(
            Method::GET,
            &format!("/v1/accounts/{cool}/webhooks/{hook}"),
            None,
        )
        .await;
    assert_eq!(stored["enabled"], false);
    assert_eq!(
        stored["events"],
        json!(["booking.cancelled", "booking.created"])
    );

    // Without scripts, Remove is a page that asks; Cancel goes back.
    browser
        .open(&format!("{list}/{hook}/remove"))
        .await
        .unwrap();
    browser.inspect("webhook-remove").await.unwrap();
    browser.click_link("Cancel").await.unwrap();
    browser.wait_for_path(&list).await.unwrap();

    // 4. Actions → Remove asks; Cancel keeps it, OK removes it.
    let row = console.row("Wink Stalker").await;
    console.action(&row, "Remove").await;
    assert!(
        browser
            .alert_text()
            .await
            .unwrap()
            .contains("Remove “Wink Stalker”?")
    );
    browser.client.dismiss_alert().await.unwrap();
    assert!(
        console.row("Wink Stalker").await.text().await.is_ok(),
        "still listed"
    );
    let row = console.row("Wink Stalker").await;
    console.action(&row, "Remove").await;
    browser.alert_text().await.unwrap();
    browser.client.accept_alert().await.unwrap();
    browser
        .wait_for_text(".notice", "“Wink Stalker” removed.")
        .await
        .unwrap();
    assert_eq!(browser.path().await.unwrap(), list);
    browser
        .wait_for_text(".empty", "No webhooks yet")
        .await
        .unwrap();
    let (status, _) = herald
        .call(
            Method::GET,
            &format!("/v1/accounts/{cool}/webhooks/{hook}"),
            None,
        )
        .await;
    assert_eq!(status, 404);
    assert!(WebhookId::parse(&hook).is_ok());
    console.close().await;
}

#[tokio::test]
async fn a_validation_error_keeps_what_was_typed() {
    let console = Console::start().await;
    let (herald, browser) = (&console.herald, &console.browser);
    let cool = herald.account().await;
    console.sign_in_as_admin().await;
    let list = format!("/ui/accounts/{cool}/webhooks");
    browser.open(&format!("{list}/new")).await.unwrap();
    browser.fill("#name", "Wink Stalker").await.unwrap();
    browser
        .client
        .find(Locator::Id("event-booking-created"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // A private address: refused by the SSRF policy, as in the API.
    browser
        .fill("#url", "http://10.0.0.7/webhook/wink")
        .await
        .unwrap();
    browser.click_button("Save").await.unwrap();
    browser
        .wait_for_text(".notice.error", "was not saved")
        .await
        .unwrap();
    let error = browser.text("#url-error").await.unwrap();
    assert!(!error.is_empty());
    assert_eq!(
        browser
            .client
            .find(Locator::Id("url"))
            .await
            .unwrap()
            .attr("aria-invalid")
            .await
            .unwrap(),
        Some("true".to_owned())
    );
    assert_eq!(browser.value("#name").await.unwrap(), "Wink Stalker");
    assert_eq!(
        browser.value("#url").await.unwrap(),
        "http://10.0.0.7/webhook/wink"
    );
    assert!(browser.is_checked("#event-booking-created").await.unwrap());
    assert!(browser.is_checked("#enabled").await.unwrap());
    browser.inspect("webhook-form-errors").await.unwrap();

    // Fixed, it saves.
    browser
        .fill("#url", &herald.receiver.url("/wink"))
        .await
        .unwrap();
    browser.click_button("Save").await.unwrap();
    browser.wait_for_path(&list).await.unwrap();
    browser.wait_for_text("#secrets", "is ready").await.unwrap();
    console.close().await;
}
