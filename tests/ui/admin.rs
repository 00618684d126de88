//! What only the admin does: the event type catalogue and account keys.

use fantoccini::Locator;
use reqwest::Method;

use crate::Console;

#[tokio::test]
async fn the_admin_adds_and_deprecates_event_types() {
    let console = Console::start().await;
    let (herald, browser) = (&console.herald, &console.browser);
    let cool = herald.account().await;
    console.sign_in_as_admin().await;
    browser.click_link("Event types").await.unwrap();
    browser.wait_for_path("/ui/event-types").await.unwrap();
    browser
        .fill("#type-name", "booking.checked_in")
        .await
        .unwrap();
    browser
        .fill("#type-description", "The guest arrived.")
        .await
        .unwrap();
    browser.click_button("Add event type").await.unwrap();
    browser
        .wait_for_text(".notice", "booking.checked_in added")
        .await
        .unwrap();
    browser.inspect("event-types").await.unwrap();

    browser
        .open("/ui/event-types/booking.checked_in")
        .await
        .unwrap();
    browser.inspect("event-type-edit").await.unwrap();
    browser
        .client
        .find(Locator::Id("deprecated"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.click_button("Save").await.unwrap();
    browser
        .wait_for_text(".notice", "deprecated")
        .await
        .unwrap();
    let types = herald.ok(Method::GET, "/v1/event-types", None).await;
    let added = types["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "booking.checked_in")
        .unwrap();
    assert_eq!(added["deprecated"], true);
    assert_eq!(added["description"], "The guest arrived.");

    // A deprecated type is no longer offered to new webhooks.
    browser
        .open(&format!("/ui/accounts/{cool}/webhooks/new"))
        .await
        .unwrap();
    assert!(
        browser
            .client
            .find(Locator::Id("event-booking-created"))
            .await
            .is_ok()
    );
    assert!(
        browser
            .client
            .find(Locator::Id("event-booking-checked_in"))
            .await
            .is_err()
    );
    console.close().await;
}

#[tokio::test]
async fn the_admin_creates_and_revokes_an_account_key() {
    let console = Console::start().await;
    let (herald, browser) = (&console.herald, &console.browser);
    let cool = herald.account().await;
    console.sign_in_as_admin().await;
    let keys = format!("/ui/accounts/{cool}/api-keys");
    browser.open(&keys).await.unwrap();
    browser
        .fill("#key-name", "booking integration")
        .await
        .unwrap();
    browser.click_button("Create key").await.unwrap();
    browser
        .wait_for_text("#new-key-h", "Your new API key")
        .await
        .unwrap();
    let key = browser.value("#new-key").await.unwrap();
    assert!(key.starts_with("hrld_"), "{key}");
    browser.inspect("api-keys").await.unwrap();
    let works = herald
        .http
        .get(format!("{}/v1/accounts/{cool}", herald.api))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(works.status(), 200);

    browser.open(&keys).await.unwrap();
    assert!(
        browser.client.find(Locator::Id("new-key")).await.is_err(),
        "shown once"
    );
    browser
        .click_link("Revoke booking integration")
        .await
        .unwrap();
    assert!(
        browser
            .alert_text()
            .await
            .unwrap()
            .contains("Revoke “booking integration”?")
    );
    browser.client.accept_alert().await.unwrap();
    browser.wait_for_text(".notice", "revoked").await.unwrap();
    let refused = herald
        .http
        .get(format!("{}/v1/accounts/{cool}", herald.api))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    console.close().await;
}
