//! An account key cannot read, list, change or delete another account's
//! resources, nor learn that they exist: every route answers as if they did
//! not.

use herald_core::{AccountId, WebhookId};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{TestRegistry, expect};

#[tokio::test]
async fn account_keys_see_only_their_own_account_on_every_route() {
    let registry = TestRegistry::start().await;
    let a = registry.create_account("A").await;
    let b = registry.create_account("B").await;
    let key_a = registry.create_key(&a).await;
    let key_b = registry.create_key(&b).await;
    let hook_a = registry
        .create_webhook(&a, &key_a, json!({ "name": "a-hook" }))
        .await;
    let hook_b = registry
        .create_webhook(&b, &key_b, json!({ "name": "b-hook" }))
        .await;
    let wa = hook_a["id"].as_str().unwrap();
    let wb = hook_b["id"].as_str().unwrap();
    let listed_b_keys = expect(
        registry
            .admin(Method::GET, &format!("/v1/accounts/{b}/api-keys"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let kb = listed_b_keys["data"][0]["id"].as_str().unwrap().to_owned();
    // A delivery of B's, logged through the admin's test event.
    let sent = expect(
        registry
            .admin(
                Method::POST,
                &format!("/v1/accounts/{b}/webhooks/{wb}/test"),
            )
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
        StatusCode::ACCEPTED,
    )
    .await;
    let db = sent["id"].as_str().unwrap().to_owned();
    let ghost_delivery = herald_core::DeliveryId::new().to_string();
    let ghost_account = AccountId::new().to_string();
    let ghost_hook = WebhookId::new().to_string();

    let patch = json!({ "name": "pwned" });
    let hook = json!({ "name": "x", "url": "https://example.com" });
    // (method, path, body): B's resources reached with A's key.
    let foreign: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/v1/accounts/{b}"), None),
        (
            Method::PATCH,
            format!("/v1/accounts/{b}"),
            Some(patch.clone()),
        ),
        (Method::DELETE, format!("/v1/accounts/{b}"), None),
        (Method::GET, format!("/v1/accounts/{b}/webhooks"), None),
        (
            Method::POST,
            format!("/v1/accounts/{b}/webhooks"),
            Some(hook.clone()),
        ),
        (Method::GET, format!("/v1/accounts/{b}/webhooks/{wb}"), None),
        (
            Method::PATCH,
            format!("/v1/accounts/{b}/webhooks/{wb}"),
            Some(patch.clone()),
        ),
        (
            Method::DELETE,
            format!("/v1/accounts/{b}/webhooks/{wb}"),
            None,
        ),
        (
            Method::GET,
            format!("/v1/accounts/{b}/webhooks/{wb}/secret"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/accounts/{b}/webhooks/{wb}/secret/rotate"),
            Some(json!({})),
        ),
        (Method::GET, format!("/v1/accounts/{b}/api-keys"), None),
        (
            Method::POST,
            format!("/v1/accounts/{b}/api-keys"),
            Some(json!({ "name": "k" })),
        ),
        (
            Method::DELETE,
            format!("/v1/accounts/{b}/api-keys/{kb}"),
            None,
        ),
        (Method::GET, format!("/v1/accounts/{b}/deliveries"), None),
        (
            Method::GET,
            format!("/v1/accounts/{b}/deliveries/{db}"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/accounts/{b}/deliveries/{db}/redeliver"),
            Some(json!({})),
        ),
        (
            Method::GET,
            format!("/v1/accounts/{b}/webhooks/{wb}/deliveries"),
            None,
        ),
        (
            Method::GET,
            format!("/v1/accounts/{b}/webhooks/{wb}/stats"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/accounts/{b}/webhooks/{wb}/test"),
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/v1/accounts/{b}/webhooks/{wb}/replay"),
            Some(json!({ "since": "2020-01-01T00:00:00Z" })),
        ),
        // B's webhook and delivery under A's own account path.
        (
            Method::GET,
            format!("/v1/accounts/{a}/deliveries/{db}"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/accounts/{a}/deliveries/{db}/redeliver"),
            Some(json!({})),
        ),
        (
            Method::GET,
            format!("/v1/accounts/{a}/deliveries?webhook_id={wb}"),
            None,
        ),
        (
            Method::GET,
            format!("/v1/accounts/{a}/webhooks/{wb}/deliveries"),
            None,
        ),
        (
            Method::GET,
            format!("/v1/accounts/{a}/webhooks/{wb}/stats"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/accounts/{a}/webhooks/{wb}/test"),
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/v1/accounts/{a}/webhooks/{wb}/replay"),
            Some(json!({ "since": "2020-01-01T00:00:00Z" })),
        ),
        (Method::GET, format!("/v1/accounts/{a}/webhooks/{wb}"), None),
        (
            Method::PATCH,
            format!("/v1/accounts/{a}/webhooks/{wb}"),
            Some(patch.clone()),
        ),
        (
            Method::DELETE,
            format!("/v1/accounts/{a}/webhooks/{wb}"),
            None,
        ),
        (
            Method::GET,
            format!("/v1/accounts/{a}/webhooks/{wb}/secret"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/accounts/{a}/webhooks/{wb}/secret/rotate"),
            Some(json!({})),
        ),
    ];
    for (method, path, body) in &foreign {
        let mut request = registry.request(method.clone(), path, Some(&key_a));
        if let Some(body) = body {
            request = request.json(body);
        }
        let problem = expect(request.send().await.unwrap(), StatusCode::NOT_FOUND).await;
        assert!(
            !problem.to_string().contains("b-hook"),
            "{method} {path} leaked: {problem}"
        );

        // Indistinguishable from a resource that does not exist at all.
        let ghost_path = path
            .replace(&b, &ghost_account)
            .replace(wb, &ghost_hook)
            .replace(&db, &ghost_delivery);
        let mut request = registry.request(method.clone(), &ghost_path, Some(&key_a));
        if let Some(body) = body {
            request = request.json(body);
        }
        let ghost = expect(request.send().await.unwrap(), StatusCode::NOT_FOUND).await;
        assert_eq!(problem["detail"], ghost["detail"], "{method} {path}");
    }

    // Admin-only routes refuse account keys outright.
    let admin_only: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/v1/accounts".into(), None),
        (
            Method::POST,
            "/v1/accounts".into(),
            Some(json!({ "name": "n" })),
        ),
        (
            Method::PATCH,
            format!("/v1/accounts/{a}"),
            Some(patch.clone()),
        ),
        (Method::DELETE, format!("/v1/accounts/{a}"), None),
        (Method::GET, format!("/v1/accounts/{a}/api-keys"), None),
        (
            Method::POST,
            format!("/v1/accounts/{a}/api-keys"),
            Some(json!({ "name": "k" })),
        ),
        (
            Method::POST,
            "/v1/event-types".into(),
            Some(json!({ "name": "x.y" })),
        ),
        (
            Method::PATCH,
            "/v1/event-types/booking.created".into(),
            Some(json!({ "deprecated": true })),
        ),
    ];
    for (method, path, body) in &admin_only {
        let mut request = registry.request(method.clone(), path, Some(&key_a));
        if let Some(body) = body {
            request = request.json(body);
        }
        expect(request.send().await.unwrap(), StatusCode::FORBIDDEN).await;
    }

    // Nothing of B's changed, and A's list holds only A's webhook.
    let still = expect(
        registry
            .admin(Method::GET, &format!("/v1/accounts/{b}/webhooks/{wb}"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (still["name"].as_str(), still["version"].as_u64()),
        (Some("b-hook"), Some(1))
    );
    let account_b = expect(
        registry
            .admin(Method::GET, &format!("/v1/accounts/{b}"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(account_b["name"], "B");
    let keys_b = expect(
        registry
            .admin(Method::GET, &format!("/v1/accounts/{b}/api-keys"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert!(
        keys_b["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["revoked_at"].is_null())
    );
    assert_eq!(keys_b["data"].as_array().unwrap().len(), 1);
    let own = expect(
        registry
            .request(
                Method::GET,
                &format!("/v1/accounts/{a}/webhooks"),
                Some(&key_a),
            )
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let ids: Vec<&str> = own["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [wa]);
    let own_log = expect(
        registry
            .request(
                Method::GET,
                &format!("/v1/accounts/{a}/deliveries"),
                Some(&key_a),
            )
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        own_log["data"],
        json!([]),
        "B's deliveries never show in A's log"
    );
    let b_log = expect(
        registry
            .admin(Method::GET, &format!("/v1/accounts/{b}/deliveries"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        b_log["data"].as_array().unwrap().len(),
        1,
        "A's key sent no test event to B"
    );
    // B's key still works: its account was not deleted or revoked.
    let response = registry
        .request(Method::GET, &format!("/v1/accounts/{b}"), Some(&key_b))
        .send()
        .await
        .unwrap();
    expect(response, StatusCode::OK).await;
}

#[tokio::test]
async fn idempotency_keys_do_not_cross_accounts() {
    let registry = TestRegistry::start().await;
    let a = registry.create_account("A").await;
    let b = registry.create_account("B").await;
    let key_a = registry.create_key(&a).await;
    let key_b = registry.create_key(&b).await;
    let send = |account: &str, key: &str| {
        registry
            .request(
                Method::POST,
                &format!("/v1/accounts/{account}/webhooks"),
                Some(key),
            )
            .header("Idempotency-Key", "same-key")
            .json(&json!({ "name": "h", "url": "https://example.com" }))
            .send()
    };
    let from_a = expect(send(&a, &key_a).await.unwrap(), StatusCode::CREATED).await;
    let from_b = expect(send(&b, &key_b).await.unwrap(), StatusCode::CREATED).await;
    assert_ne!(from_a["id"], from_b["id"]);
    assert_eq!(from_b["account_id"], b.as_str());
}
