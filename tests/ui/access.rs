//! Who sees what: an account key stays in its account, a form without its
//! CSRF token changes nothing, and signing out (or a revoked key) ends the
//! session.

use fantoccini::Locator;
use reqwest::Method;
use serde_json::json;

use crate::Console;

#[tokio::test]
async fn an_account_key_cannot_open_another_accounts_pages() {
    let console = Console::start().await;
    let (herald, browser) = (&console.herald, &console.browser);
    let cool = herald.account().await;
    let other = herald
        .ok(
            Method::POST,
            "/v1/accounts",
            Some(json!({ "name": "Other Account" })),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (theirs, _) = console
        .webhook(&other, "Theirs", "/theirs", json!([]))
        .await;
    let key = herald
        .ok(
            Method::POST,
            &format!("/v1/accounts/{cool}/api-keys"),
            Some(json!({ "name": "people" })),
        )
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    browser.sign_in(&key).await.unwrap();
    let cards = browser.text("ul.cards").await.unwrap();
    assert!(
        cards.contains("Cool Account") && !cards.contains("Other Account"),
        "{cards}"
    );
    assert_eq!(browser.text(".who strong").await.unwrap(), "Cool Account");
    browser.inspect("accounts-account-key").await.unwrap();

    for path in [
        format!("/ui/accounts/{other}/webhooks"),
        format!("/ui/accounts/{other}/webhooks/{theirs}"),
        format!("/ui/accounts/{cool}/webhooks/{theirs}"),
        format!("/ui/accounts/{other}/deliveries"),
    ] {
        browser.open(&path).await.unwrap();
        assert_eq!(browser.text("h1").await.unwrap(), "Not found", "{path}");
    }
    browser.inspect("not-found").await.unwrap();

    browser
        .open(&format!("/ui/accounts/{cool}/webhooks"))
        .await
        .unwrap();
    let tabs = browser.text("nav.tabs").await.unwrap();
    assert!(!tabs.contains("API keys"), "keys are the admin's: {tabs}");
    browser.open("/ui/event-types").await.unwrap();
    assert!(
        browser
            .client
            .find(Locator::Id("add-type-h"))
            .await
            .is_err(),
        "only the admin adds event types"
    );
    console.close().await;
}

#[tokio::test]
async fn a_form_posted_without_its_csrf_token_is_refused() {
    let console = Console::start().await;
    let (herald, browser) = (&console.herald, &console.browser);
    let cool = herald.account().await;
    console.sign_in_as_admin().await;
    browser
        .open(&format!("/ui/accounts/{cool}/webhooks/new"))
        .await
        .unwrap();
    browser.fill("#name", "Wink Stalker").await.unwrap();
    browser
        .client
        .find(Locator::Id("event-all"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .fill("#url", &herald.receiver.url("/wink"))
        .await
        .unwrap();
    // As a forged form from another site would be: no token.
    browser
        .client
        .execute(
            "document.querySelector('main form input[name=csrf]').remove(); return true;",
            vec![],
        )
        .await
        .unwrap();
    browser.click_button("Save").await.unwrap();
    browser
        .wait_for_text("h1", "This form has expired")
        .await
        .unwrap();
    browser.inspect("csrf-refused").await.unwrap();
    let listed = herald
        .ok(Method::GET, &format!("/v1/accounts/{cool}/webhooks"), None)
        .await;
    assert_eq!(listed["data"], json!([]), "nothing was created");
    console.close().await;
}

#[tokio::test]
async fn signing_out_or_revoking_the_key_ends_the_session() {
    let console = Console::start().await;
    let (herald, browser) = (&console.herald, &console.browser);
    let cool = herald.account().await;
    console.sign_in_as_admin().await;
    browser.click_button("Sign out").await.unwrap();
    browser.wait_for_path("/ui/sign-in").await.unwrap();
    browser.open("/ui/accounts").await.unwrap();
    browser.wait_for_path("/ui/sign-in").await.unwrap();
    assert_eq!(
        browser.path().await.unwrap(),
        "/ui/sign-in?next=%2Fui%2Faccounts"
    );

    let created = herald
        .ok(
            Method::POST,
            &format!("/v1/accounts/{cool}/api-keys"),
            Some(json!({ "name": "people" })),
        )
        .await;
    browser
        .sign_in(created["key"].as_str().unwrap())
        .await
        .unwrap();
    herald
        .ok(
            Method::DELETE,
            &format!(
                "/v1/accounts/{cool}/api-keys/{}",
                created["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    browser.client.refresh().await.unwrap();
    browser.wait_for_path("/ui/sign-in").await.unwrap();
    console.close().await;
}
