use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{TestRegistry, expect, expect_field_error};

#[tokio::test]
async fn the_catalogue_is_seeded_and_admins_extend_and_deprecate_it() {
    let registry = TestRegistry::start().await;
    let account = registry.create_account("A").await;
    let key = registry.create_key(&account).await;

    let listed = expect(
        registry
            .request(Method::GET, "/v1/event-types", Some(&key))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let names: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for seeded in [
        "booking.created",
        "booking.updated",
        "booking.cancelled",
        "booking.failed",
        "booking.refund.partial",
        "booking.refund.full",
        "payment.succeeded",
        "payment.failed",
        "herald.test",
    ] {
        assert!(names.contains(&seeded), "{seeded} missing from {names:?}");
    }

    let by_account = registry
        .request(Method::POST, "/v1/event-types", Some(&key))
        .json(&json!({ "name": "booking.checked_in" }))
        .send()
        .await
        .unwrap();
    expect(by_account, StatusCode::FORBIDDEN).await;
    let bad = registry
        .admin(Method::POST, "/v1/event-types")
        .json(&json!({ "name": "Booking Checked In" }))
        .send()
        .await
        .unwrap();
    expect_field_error(bad, StatusCode::UNPROCESSABLE_ENTITY, "name").await;

    let created = expect(
        registry
            .admin(Method::POST, "/v1/event-types")
            .json(&json!({ "name": "booking.checked_in", "description": "Guest arrived." }))
            .send()
            .await
            .unwrap(),
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(created["deprecated"], false);
    let again = registry
        .admin(Method::POST, "/v1/event-types")
        .json(&json!({ "name": "booking.checked_in" }))
        .send()
        .await
        .unwrap();
    expect(again, StatusCode::CONFLICT).await;

    let subscriber = registry
        .create_webhook(&account, &key, json!({ "events": ["booking.checked_in"] }))
        .await;
    let other = registry
        .create_webhook(&account, &key, json!({ "events": ["booking.created"] }))
        .await;

    let deprecated = expect(
        registry
            .admin(Method::PATCH, "/v1/event-types/booking.checked_in")
            .json(&json!({ "deprecated": true }))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(deprecated["deprecated"], true);
    let response = registry
        .request(Method::POST, &format!("/v1/accounts/{account}/webhooks"), Some(&key))
        .json(&json!({ "name": "late", "url": "https://example.com", "events": ["booking.checked_in"] }))
        .send()
        .await
        .unwrap();
    let problem = expect_field_error(response, StatusCode::UNPROCESSABLE_ENTITY, "events[0]").await;
    assert!(problem["detail"].as_str().unwrap().contains("deprecated"));

    // A webhook that has the type keeps it when saved again with its events (as the console's
    // edit form sends them), another type added beside it; one that has not cannot add it.
    let path = |hook: &serde_json::Value| {
        format!(
            "/v1/accounts/{account}/webhooks/{}",
            hook["id"].as_str().unwrap()
        )
    };
    let saved = expect(
        registry
            .request(Method::PATCH, &path(&subscriber), Some(&key))
            .json(
                &json!({ "name": "renamed", "events": ["booking.checked_in", "booking.created"] }),
            )
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        saved["events"],
        json!(["booking.checked_in", "booking.created"])
    );
    let response = registry
        .request(Method::PATCH, &path(&other), Some(&key))
        .json(&json!({ "events": ["booking.created", "booking.checked_in"] }))
        .send()
        .await
        .unwrap();
    let problem = expect_field_error(response, StatusCode::UNPROCESSABLE_ENTITY, "events[1]").await;
    assert!(problem["detail"].as_str().unwrap().contains("deprecated"));

    let missing = registry
        .admin(Method::PATCH, "/v1/event-types/no.such")
        .json(&json!({ "deprecated": true }))
        .send()
        .await
        .unwrap();
    expect(missing, StatusCode::NOT_FOUND).await;
    // A name no event type can have, NUL included (PostgreSQL's text refuses it): not found,
    // on either database.
    for name in ["%00", "booking%00created", "Booking.Created", "a..b"] {
        let response = registry
            .admin(Method::PATCH, &format!("/v1/event-types/{name}"))
            .json(&json!({ "deprecated": true }))
            .send()
            .await
            .unwrap();
        expect(response, StatusCode::NOT_FOUND).await;
    }
}
