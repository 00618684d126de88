use herald_core::{SigningSecret, verify};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{TestRegistry, expect, expect_field_error};

#[tokio::test]
async fn webhook_lifecycle_through_an_account_key() {
    let registry = TestRegistry::start().await;
    let account = registry.create_account("Cool Account").await;
    let key = registry.create_key(&account).await;
    let created = registry
        .create_webhook(
            &account,
            &key,
            json!({ "name": "CRM", "events": ["booking.created", "payment.*"], "description": "sync" }),
        )
        .await;
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("wh_"));
    assert_eq!(created["account_id"], account.as_str());
    assert_eq!(created["enabled"], true);
    assert_eq!(created["version"], 1);
    assert_eq!(created["events"], json!(["booking.created", "payment.*"]));
    let secret = created["secret"].as_str().unwrap();
    assert!(SigningSecret::parse(secret).is_ok());

    let path = format!("/v1/accounts/{account}/webhooks/{id}");
    let got = registry
        .request(Method::GET, &path, Some(&key))
        .send()
        .await
        .unwrap();
    assert_eq!(got.headers().get("etag").unwrap(), "\"1\"");
    let got = expect(got, StatusCode::OK).await;
    assert!(
        got.get("secret").is_none(),
        "the secret is shown on creation only"
    );

    let updated = expect(
        registry
            .request(Method::PATCH, &path, Some(&key))
            .json(&json!({ "enabled": false, "name": "CRM v2", "description": null, "version": 1 }))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(updated["enabled"], false);
    assert_eq!(updated["name"], "CRM v2");
    assert!(updated["description"].is_null());
    assert_eq!(updated["version"], 2);
    assert_eq!(
        updated["url"], "https://example.com/hook",
        "untouched fields stay"
    );

    let updated = expect(
        registry
            .request(Method::PATCH, &path, Some(&key))
            .json(&json!({ "url": "https://example.org/new", "events": [] }))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(updated["url"], "https://example.org/new");
    assert_eq!(updated["events"], json!([]));

    expect(
        registry
            .request(Method::DELETE, &path, Some(&key))
            .send()
            .await
            .unwrap(),
        StatusCode::NO_CONTENT,
    )
    .await;
    expect(
        registry
            .request(Method::GET, &path, Some(&key))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    expect(
        registry
            .request(Method::DELETE, &path, Some(&key))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn stale_versions_are_refused() {
    let registry = TestRegistry::start().await;
    let account = registry.create_account("A").await;
    let created = registry
        .create_webhook(&account, crate::common::ADMIN_KEY, json!({}))
        .await;
    let path = format!(
        "/v1/accounts/{account}/webhooks/{}",
        created["id"].as_str().unwrap()
    );
    let patch = |body: serde_json::Value| registry.admin(Method::PATCH, &path).json(&body);

    expect(
        patch(json!({ "name": "b", "version": 1 }))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let stale = expect(
        patch(json!({ "name": "c", "version": 1 }))
            .send()
            .await
            .unwrap(),
        StatusCode::CONFLICT,
    )
    .await;
    assert!(
        stale["detail"].as_str().unwrap().contains("version 2"),
        "{stale}"
    );

    let response = patch(json!({ "name": "c" }))
        .header("If-Match", "\"1\"")
        .send()
        .await
        .unwrap();
    expect(response, StatusCode::PRECONDITION_FAILED).await;
    let response = patch(json!({ "name": "c" }))
        .header("If-Match", "\"2\"")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers().get("etag").unwrap(), "\"3\"");
    expect(response, StatusCode::OK).await;
    let response = patch(json!({ "name": "d" }))
        .header("If-Match", "yesterday")
        .send()
        .await
        .unwrap();
    expect_field_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "header:if-match",
    )
    .await;

    let current = expect(
        registry.admin(Method::GET, &path).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(current["name"], "c");
}

#[tokio::test]
async fn list_paginates_and_filters() {
    let registry = TestRegistry::start().await;
    let account = registry.create_account("A").await;
    let key = registry.create_key(&account).await;
    let mut ids = Vec::new();
    for (i, events) in [
        json!(["booking.created"]),
        json!(["payment.*"]),
        json!([]),
        json!(["booking.cancelled"]),
        json!(["booking.*"]),
    ]
    .into_iter()
    .enumerate()
    {
        let enabled = i != 3;
        let hook = registry
            .create_webhook(
                &account,
                &key,
                json!({ "name": format!("h{i}"), "events": events, "enabled": enabled }),
            )
            .await;
        ids.push(hook["id"].as_str().unwrap().to_owned());
    }
    let list = |query: String| {
        let registry = &registry;
        let path = format!("/v1/accounts/{account}/webhooks{query}");
        let key = key.clone();
        async move {
            expect(
                registry
                    .request(Method::GET, &path, Some(&key))
                    .send()
                    .await
                    .unwrap(),
                StatusCode::OK,
            )
            .await
        }
    };
    let names = |page: &serde_json::Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["name"].as_str().unwrap().to_owned())
            .collect()
    };

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("?limit=2&cursor={c}"),
            None => "?limit=2".into(),
        };
        let page = list(query).await;
        seen.extend(names(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["h0", "h1", "h2", "h3", "h4"]);

    assert_eq!(names(&list("?enabled=false".into()).await), ["h3"]);
    assert_eq!(
        names(&list("?event=booking.created".into()).await),
        ["h0", "h2", "h4"]
    );
    assert_eq!(
        names(&list("?event=booking.cancelled&enabled=true".into()).await),
        ["h2", "h4"]
    );
    let page = list("?event=booking.created&limit=1".into()).await;
    assert_eq!(names(&page), ["h0"]);
    let next = page["next_cursor"].as_str().unwrap();
    assert_eq!(
        names(&list(format!("?event=booking.created&limit=2&cursor={next}")).await),
        ["h2", "h4"]
    );
}

#[tokio::test]
async fn secrets_are_revealed_on_request_and_rotate_with_a_grace_period() {
    let registry = TestRegistry::start().await;
    let account = registry.create_account("A").await;
    let key = registry.create_key(&account).await;
    let own = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let created = registry
        .create_webhook(&account, &key, json!({ "secret": own }))
        .await;
    assert_eq!(created["secret"], own);
    let base = format!(
        "/v1/accounts/{account}/webhooks/{}",
        created["id"].as_str().unwrap()
    );

    let revealed = registry
        .request(Method::GET, &format!("{base}/secret"), Some(&key))
        .send()
        .await
        .unwrap();
    assert_eq!(revealed.headers().get("cache-control").unwrap(), "no-store");
    let revealed = expect(revealed, StatusCode::OK).await;
    assert_eq!(revealed["data"][0]["secret"], own);
    assert!(revealed["data"][0]["expires_at"].is_null());

    let rotated = expect(
        registry
            .request(Method::POST, &format!("{base}/secret/rotate"), Some(&key))
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, own);
    assert_eq!(rotated["webhook"]["version"], 2);
    let revealed = expect(
        registry
            .request(Method::GET, &format!("{base}/secret"), Some(&key))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let secrets: Vec<&str> = revealed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["secret"].as_str().unwrap())
        .collect();
    assert_eq!(
        secrets,
        [new.as_str(), own],
        "both sign during the grace period"
    );
    assert!(revealed["data"][1]["expires_at"].is_string());

    // Both secrets are in the projection, so the worker signs with both and
    // a receiver holding either one verifies.
    let spec = registry
        .bucket()
        .await
        .get(created["id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    let keys: Vec<SigningSecret> = (0..spec.signing_keys.len())
        .map(|i| SigningSecret::parse(&crate::common::projected_secret(&spec, i)).unwrap())
        .collect();
    assert_eq!(keys.len(), 2);
    let refs: Vec<&SigningSecret> = keys.iter().collect();
    let header = herald_core::signature_header(&refs, "msg_1", 1_700_000_000, b"{}");
    for secret in [own, new.as_str()] {
        verify(
            &[SigningSecret::parse(secret).unwrap()],
            "msg_1",
            "1700000000",
            &header,
            b"{}",
            1_700_000_000,
            herald_core::DEFAULT_TOLERANCE,
        )
        .unwrap();
    }

    // An emergency rotation retires the old secrets at once.
    let rotated = expect(
        registry
            .request(Method::POST, &format!("{base}/secret/rotate"), Some(&key))
            .json(&json!({ "grace_period_seconds": 0 }))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let revealed = expect(
        registry
            .request(Method::GET, &format!("{base}/secret"), Some(&key))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(revealed["data"].as_array().unwrap().len(), 1);
    assert_eq!(revealed["data"][0]["secret"], rotated["secret"]);

    let response = registry
        .request(Method::POST, &format!("{base}/secret/rotate"), Some(&key))
        .json(&json!({ "secret": "whsec_tooshort" }))
        .send()
        .await
        .unwrap();
    expect_field_error(response, StatusCode::UNPROCESSABLE_ENTITY, "secret").await;
    let response = registry
        .request(Method::POST, &format!("{base}/secret/rotate"), Some(&key))
        .json(&json!({ "grace_period_seconds": 99_999_999 }))
        .send()
        .await
        .unwrap();
    expect_field_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "grace_period_seconds",
    )
    .await;
}

#[tokio::test]
async fn secrets_are_sealed_at_rest_when_a_key_is_configured() {
    let registry = TestRegistry::start_with(|config| {
        config.keyring = herald_core::Keyring::from_keys(&[[9; 32]]);
    })
    .await;
    let account = registry.create_account("A").await;
    let created = registry
        .create_webhook(&account, crate::common::ADMIN_KEY, json!({}))
        .await;
    let secret = created["secret"].as_str().unwrap();
    let raw = registry.store.raw_secret_rows_for_tests().await.unwrap();
    assert_eq!(raw.len(), 1);
    assert!(
        raw[0].starts_with("v2:") && !raw[0].contains(&secret[6..]),
        "{raw:?}"
    );
    let revealed = expect(
        registry
            .admin(
                Method::GET,
                &format!(
                    "/v1/accounts/{account}/webhooks/{}/secret",
                    created["id"].as_str().unwrap()
                ),
            )
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(revealed["data"][0]["secret"], secret);
}
