use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{TestRegistry, expect};

#[tokio::test]
async fn admin_creates_lists_renames_and_deletes_accounts() {
    let registry = TestRegistry::start().await;
    let a = registry.create_account("Cool Account").await;
    let b = registry.create_account("Other Account").await;
    assert!(a.starts_with("acct_"));

    let got = expect(
        registry
            .admin(Method::GET, &format!("/v1/accounts/{a}"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(got["name"], "Cool Account");

    let renamed = expect(
        registry
            .admin(Method::PATCH, &format!("/v1/accounts/{a}"))
            .json(&json!({ "name": "  Cooler Account " }))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(renamed["name"], "Cooler Account");

    let first = expect(
        registry
            .admin(Method::GET, "/v1/accounts?limit=1")
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(first["data"][0]["id"], a.as_str());
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = expect(
        registry
            .admin(
                Method::GET,
                &format!("/v1/accounts?limit=1&cursor={cursor}"),
            )
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(second["data"][0]["id"], b.as_str());
    assert!(second["next_cursor"].is_null());

    let response = registry
        .admin(Method::DELETE, &format!("/v1/accounts/{a}"))
        .send()
        .await
        .unwrap();
    expect(response, StatusCode::NO_CONTENT).await;
    let response = registry
        .admin(Method::GET, &format!("/v1/accounts/{a}"))
        .send()
        .await
        .unwrap();
    expect(response, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn deleting_an_account_removes_its_webhooks_and_keys() {
    let registry = TestRegistry::start().await;
    let account = registry.create_account("Doomed").await;
    let key = registry.create_key(&account).await;
    let hook = registry.create_webhook(&account, &key, json!({})).await;
    let hook_id = hook["id"].as_str().unwrap().to_owned();
    let bucket = registry.bucket().await;
    assert!(bucket.get(&hook_id).await.unwrap().is_some());

    let response = registry
        .admin(Method::DELETE, &format!("/v1/accounts/{account}"))
        .send()
        .await
        .unwrap();
    expect(response, StatusCode::NO_CONTENT).await;

    assert!(
        bucket.get(&hook_id).await.unwrap().is_none(),
        "projection removed"
    );
    let response = registry
        .request(
            Method::GET,
            &format!("/v1/accounts/{account}/webhooks"),
            Some(&key),
        )
        .send()
        .await
        .unwrap();
    expect(response, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn requests_without_a_valid_key_are_unauthorized() {
    let registry = TestRegistry::start().await;
    for key in [None, Some("hrld_not-a-real-key"), Some("")] {
        let response = registry
            .request(Method::GET, "/v1/event-types", key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer")
        );
        let body = expect(response, StatusCode::UNAUTHORIZED).await;
        assert_eq!(body["type"], "urn:herald:problem:unauthorized");
    }
}

#[tokio::test]
async fn api_keys_are_shown_once_listed_without_secret_and_revocable() {
    let registry = TestRegistry::start().await;
    let account = registry.create_account("Keys").await;
    let created = expect(
        registry
            .admin(Method::POST, &format!("/v1/accounts/{account}/api-keys"))
            .json(&json!({ "name": "ci" }))
            .send()
            .await
            .unwrap(),
        StatusCode::CREATED,
    )
    .await;
    let key = created["key"].as_str().unwrap();
    assert!(key.starts_with("hrld_") && key.starts_with(created["prefix"].as_str().unwrap()));

    let listed = expect(
        registry
            .admin(Method::GET, &format!("/v1/accounts/{account}/api-keys"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert!(
        !listed.to_string().contains(key),
        "the key is never shown again"
    );

    let own = registry.request(Method::GET, &format!("/v1/accounts/{account}"), Some(key));
    expect(own.send().await.unwrap(), StatusCode::OK).await;

    let id = created["id"].as_str().unwrap();
    let revoked = expect(
        registry
            .admin(
                Method::DELETE,
                &format!("/v1/accounts/{account}/api-keys/{id}"),
            )
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert!(revoked["revoked_at"].is_string());
    let own = registry.request(Method::GET, &format!("/v1/accounts/{account}"), Some(key));
    expect(own.send().await.unwrap(), StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn idempotency_key_returns_the_first_response() {
    let registry = TestRegistry::start().await;
    let send = |name: &'static str, key: &'static str| {
        registry
            .admin(Method::POST, "/v1/accounts")
            .header("Idempotency-Key", key)
            .json(&json!({ "name": name }))
            .send()
    };
    let first = expect(send("Once", "k-1").await.unwrap(), StatusCode::CREATED).await;
    let repeat = send("Once", "k-1").await.unwrap();
    assert_eq!(repeat.headers().get("idempotent-replayed").unwrap(), "true");
    let repeat = expect(repeat, StatusCode::CREATED).await;
    assert_eq!(first, repeat);

    let other = send("Twice", "k-1").await.unwrap();
    crate::common::expect_field_error(
        other,
        StatusCode::UNPROCESSABLE_ENTITY,
        "header:idempotency-key",
    )
    .await;

    let fresh = expect(send("Once", "k-2").await.unwrap(), StatusCode::CREATED).await;
    assert_ne!(fresh["id"], first["id"]);

    let listed = expect(
        registry
            .admin(Method::GET, "/v1/accounts")
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        listed["data"].as_array().unwrap().len(),
        2,
        "the repeat created nothing"
    );
}

#[tokio::test]
async fn a_failed_create_does_not_burn_its_idempotency_key() {
    let registry = TestRegistry::start().await;
    let account = registry.create_account("A").await;
    let send = |url: &'static str| {
        registry
            .admin(Method::POST, &format!("/v1/accounts/{account}/webhooks"))
            .header("Idempotency-Key", "retry-me")
            .json(&json!({ "name": "h", "url": url }))
            .send()
    };
    expect(
        send("ftp://example.com").await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    // Same key, corrected request: accepted, since the failure was not kept.
    expect(
        send("https://example.com").await.unwrap(),
        StatusCode::CREATED,
    )
    .await;
}

#[tokio::test]
async fn replayed_creates_do_not_show_secrets_again() {
    let registry = TestRegistry::start().await;
    let account = registry.create_account("A").await;
    let hook = |_: ()| {
        registry
            .admin(Method::POST, &format!("/v1/accounts/{account}/webhooks"))
            .header("Idempotency-Key", "hook-1")
            .json(&json!({ "name": "h", "url": "https://example.com" }))
            .send()
    };
    let first = expect(hook(()).await.unwrap(), StatusCode::CREATED).await;
    assert!(first["secret"].as_str().unwrap().starts_with("whsec_"));
    let again = expect(hook(()).await.unwrap(), StatusCode::CREATED).await;
    assert_eq!(again["id"], first["id"]);
    assert!(again["secret"].is_null(), "{again}");

    let key = |_: ()| {
        registry
            .admin(Method::POST, &format!("/v1/accounts/{account}/api-keys"))
            .header("Idempotency-Key", "key-1")
            .json(&json!({ "name": "k" }))
            .send()
    };
    let first = expect(key(()).await.unwrap(), StatusCode::CREATED).await;
    assert!(first["key"].as_str().unwrap().starts_with("hrld_"));
    let again = expect(key(()).await.unwrap(), StatusCode::CREATED).await;
    assert_eq!(again["id"], first["id"]);
    assert!(again["key"].is_null(), "{again}");
}
