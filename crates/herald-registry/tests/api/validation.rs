//! Bad input gets a 4xx problem naming the field, never a 500.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{ADMIN_KEY, TestRegistry, expect, expect_field_error};

async fn create(registry: &TestRegistry, account: &str, body: Value) -> reqwest::Response {
    registry
        .admin(Method::POST, &format!("/v1/accounts/{account}/webhooks"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn webhook_fields_are_checked_and_named() {
    let registry = TestRegistry::start().await;
    let account = registry.create_account("A").await;
    let url = "https://example.com/h";
    let cases: Vec<(Value, &str)> = vec![
        (json!({ "url": url }), "name"),
        (json!({ "name": "h" }), "url"),
        (json!({ "name": "   ", "url": url }), "name"),
        (json!({ "name": "x".repeat(101), "url": url }), "name"),
        (json!({ "name": 7, "url": url }), "name"),
        (json!({ "name": "h", "url": "ftp://example.com/h" }), "url"),
        (json!({ "name": "h", "url": "not a url" }), "url"),
        (
            json!({ "name": "h", "url": "https://user:pw@example.com/" }),
            "url",
        ),
        (
            json!({ "name": "h", "url": "http://127.0.0.1:8080/" }),
            "url",
        ),
        (json!({ "name": "h", "url": "http://10.1.2.3/" }), "url"),
        (
            json!({ "name": "h", "url": "http://[::ffff:192.168.0.1]/" }),
            "url",
        ),
        (json!({ "name": "h", "url": "http://2130706433/" }), "url"),
        (
            json!({ "name": "h", "url": "http://localhost:9000/" }),
            "url",
        ),
        (
            json!({ "name": "h", "url": "http://169.254.169.254/latest/meta-data" }),
            "url",
        ),
        (
            json!({ "name": "h", "url": url, "events": ["booking.exploded"] }),
            "events[0]",
        ),
        (
            json!({ "name": "h", "url": url, "events": ["booking.created", "Booking Created"] }),
            "events[1]",
        ),
        (
            json!({ "name": "h", "url": url, "events": ["nothing.*"] }),
            "events[0]",
        ),
        (
            json!({ "name": "h", "url": url, "events": "booking.created" }),
            "events",
        ),
        (
            json!({ "name": "h", "url": url, "enabled": "yes" }),
            "enabled",
        ),
        (
            json!({ "name": "h", "url": url, "colour": "blue" }),
            "colour",
        ),
        (
            json!({ "name": "h", "url": url, "secret": "not-a-secret" }),
            "secret",
        ),
        (
            json!({ "name": "h", "url": url, "description": "d".repeat(1001) }),
            "description",
        ),
    ];
    for (body, field) in cases {
        let response = create(&registry, &account, body.clone()).await;
        let problem = expect_field_error(response, StatusCode::UNPROCESSABLE_ENTITY, field).await;
        assert_eq!(problem["status"], 422, "{body}");
    }
    let listed = expect(
        registry
            .admin(Method::GET, &format!("/v1/accounts/{account}/webhooks"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(listed["data"], json!([]), "nothing was created");
}

#[tokio::test]
async fn malformed_bodies_get_4xx() {
    let registry = TestRegistry::start_with(|c| c.max_body_bytes = 4096).await;
    let account = registry.create_account("A").await;
    let path = format!("/v1/accounts/{account}/webhooks");

    let response = registry
        .admin(Method::POST, &path)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    let body = expect(response, StatusCode::BAD_REQUEST).await;
    assert!(
        body["detail"].as_str().unwrap().starts_with("invalid JSON"),
        "{body}"
    );

    let response = registry
        .admin(Method::POST, &path)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    expect(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;

    let huge =
        json!({ "name": "h", "url": "https://example.com", "description": "x".repeat(10_000) });
    let response = registry
        .admin(Method::POST, &path)
        .json(&huge)
        .send()
        .await
        .unwrap();
    let body = expect(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(body["detail"].as_str().unwrap().contains("4096"), "{body}");

    let response = registry
        .admin(Method::GET, &format!("{path}?limit=0"))
        .send()
        .await
        .unwrap();
    expect_field_error(response, StatusCode::UNPROCESSABLE_ENTITY, "query:limit").await;
    let response = registry
        .admin(Method::GET, &format!("{path}?limit=many"))
        .send()
        .await
        .unwrap();
    expect_field_error(response, StatusCode::UNPROCESSABLE_ENTITY, "query:limit").await;
    let response = registry
        .admin(Method::GET, &format!("{path}?event=NOT%20A%20TYPE"))
        .send()
        .await
        .unwrap();
    expect_field_error(response, StatusCode::UNPROCESSABLE_ENTITY, "query:event").await;
    let response = registry
        .admin(Method::GET, &format!("{path}?colour=blue"))
        .send()
        .await
        .unwrap();
    expect_field_error(response, StatusCode::UNPROCESSABLE_ENTITY, "query:colour").await;

    let response = registry
        .admin(Method::GET, "/v1/accounts/acct_nonsense/webhooks")
        .send()
        .await
        .unwrap();
    expect(response, StatusCode::NOT_FOUND).await;
    let response = registry
        .admin(Method::GET, "/v1/nowhere")
        .send()
        .await
        .unwrap();
    expect(response, StatusCode::NOT_FOUND).await;

    let response = registry
        .admin(Method::POST, &path)
        .header("Idempotency-Key", "x".repeat(300))
        .json(&json!({ "name": "h", "url": "https://example.com" }))
        .send()
        .await
        .unwrap();
    expect_field_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "header:idempotency-key",
    )
    .await;
}

#[tokio::test]
async fn allowlisted_addresses_may_be_registered() {
    let registry = TestRegistry::start_with(|c| {
        c.address_policy.allow = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let account = registry.create_account("A").await;
    let hook = registry
        .create_webhook(
            &account,
            ADMIN_KEY,
            json!({ "url": "http://127.0.0.1:9000/in" }),
        )
        .await;
    assert_eq!(hook["url"], "http://127.0.0.1:9000/in");
    let response = create(
        &registry,
        &account,
        json!({ "name": "h", "url": "http://10.0.0.1/" }),
    )
    .await;
    expect_field_error(response, StatusCode::UNPROCESSABLE_ENTITY, "url").await;
}
