//! Ordinary concurrent use and odd but valid-looking input never answer
//! 500: SQLite serialises its writers, a vanished parent is "not found",
//! text a database cannot store is refused naming its field, and bodies
//! must be objects.

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{ADMIN_KEY, TestRegistry, expect, expect_field_error};

/// Runs `n` requests per client over `clients` concurrent clients; returns
/// every status.
async fn hammer<F, Fut>(clients: usize, n: usize, request: F) -> Vec<StatusCode>
where
    F: Fn(usize) -> Fut + Clone,
    Fut: std::future::Future<Output = StatusCode>,
{
    let runs = (0..clients).map(|client| {
        let request = request.clone();
        async move {
            let mut statuses = Vec::with_capacity(n);
            for i in 0..n {
                statuses.push(request(client * n + i).await);
            }
            statuses
        }
    });
    join_all(runs).await.into_iter().flatten().collect()
}

fn tally(statuses: &[StatusCode]) -> std::collections::BTreeMap<u16, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for status in statuses {
        *counts.entry(status.as_u16()).or_insert(0) += 1;
    }
    counts
}

#[tokio::test]
async fn concurrent_writers_all_succeed() {
    let registry = TestRegistry::start().await;
    let account = registry.create_account("Cool Account").await;
    let hook = registry
        .create_webhook(&account, ADMIN_KEY, json!({ "name": "busy" }))
        .await;
    let path = format!(
        "/v1/accounts/{account}/webhooks/{}",
        hook["id"].as_str().unwrap()
    );

    let patches = hammer(8, 20, |i| {
        let (registry, path) = (&registry, &path);
        async move {
            registry
                .admin(Method::PATCH, path)
                .json(&json!({ "name": format!("name {i}") }))
                .send()
                .await
                .unwrap()
                .status()
        }
    })
    .await;
    assert_eq!(tally(&patches), [(200, 160)].into(), "PATCHes");

    let rotate = format!("{path}/secret/rotate");
    let rotations = hammer(8, 20, |_| {
        let (registry, rotate) = (&registry, &rotate);
        async move {
            registry
                .admin(Method::POST, rotate)
                .json(&json!({ "grace_period_seconds": 60 }))
                .send()
                .await
                .unwrap()
                .status()
        }
    })
    .await;
    assert_eq!(tally(&rotations), [(200, 160)].into(), "rotations");
    let version = expect(
        registry.admin(Method::GET, &path).send().await.unwrap(),
        StatusCode::OK,
    )
    .await["version"]
        .as_u64()
        .unwrap();
    assert_eq!(version, 1 + 160 + 160, "every write counted once");
}

#[tokio::test]
async fn an_account_deleted_under_concurrent_writes_is_not_found_not_an_error() {
    let registry = TestRegistry::start().await;
    let mut accounts = Vec::new();
    for i in 0..10 {
        accounts.push(registry.create_account(&format!("doomed {i}")).await);
    }
    let writes = accounts.iter().map(|account| {
        let registry = &registry;
        async move {
            let create = async {
                registry
                    .admin(Method::POST, &format!("/v1/accounts/{account}/webhooks"))
                    .json(&json!({ "name": "late", "url": "https://example.com/hook" }))
                    .send()
                    .await
                    .unwrap()
                    .status()
            };
            let key = async {
                registry
                    .admin(Method::POST, &format!("/v1/accounts/{account}/api-keys"))
                    .json(&json!({ "name": "late" }))
                    .send()
                    .await
                    .unwrap()
                    .status()
            };
            let delete = async {
                registry
                    .admin(Method::DELETE, &format!("/v1/accounts/{account}"))
                    .send()
                    .await
                    .unwrap()
                    .status()
            };
            let (created, keyed, deleted) = tokio::join!(create, key, delete);
            vec![created, keyed, deleted]
        }
    });
    let statuses: Vec<StatusCode> = join_all(writes).await.into_iter().flatten().collect();
    for status in &statuses {
        assert!(
            matches!(status.as_u16(), 200 | 201 | 204 | 404),
            "{status}: {:?}",
            tally(&statuses)
        );
    }
    for account in &accounts {
        let gone = registry
            .admin(Method::GET, &format!("/v1/accounts/{account}"))
            .send()
            .await
            .unwrap();
        assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn text_with_control_characters_is_refused_naming_its_field() {
    let registry = TestRegistry::start().await;
    let account = registry.create_account("Cool Account").await;
    let hook = registry
        .create_webhook(&account, ADMIN_KEY, json!({ "name": "fine" }))
        .await;
    let hook = hook["id"].as_str().unwrap();
    let nul = "bad\u{0}name";
    for (method, path, body, field) in [
        (
            Method::POST,
            "/v1/accounts".to_owned(),
            json!({ "name": nul }),
            "name",
        ),
        (
            Method::PATCH,
            format!("/v1/accounts/{account}"),
            json!({ "name": nul }),
            "name",
        ),
        (
            Method::POST,
            format!("/v1/accounts/{account}/webhooks"),
            json!({ "name": nul, "url": "https://example.com/" }),
            "name",
        ),
        (
            Method::PATCH,
            format!("/v1/accounts/{account}/webhooks/{hook}"),
            json!({ "description": "line\u{0}" }),
            "description",
        ),
        (
            Method::PATCH,
            format!("/v1/accounts/{account}/webhooks/{hook}"),
            json!({ "name": "tab\tinside" }),
            "name",
        ),
        // At the end, where trimming would have hidden it.
        (
            Method::POST,
            "/v1/accounts".to_owned(),
            json!({ "name": "trailing tab\t" }),
            "name",
        ),
        (
            Method::POST,
            format!("/v1/accounts/{account}/api-keys"),
            json!({ "name": nul }),
            "name",
        ),
        (
            Method::POST,
            "/v1/event-types".to_owned(),
            json!({ "name": "booking.odd", "description": "a\u{0}b" }),
            "description",
        ),
        (
            Method::PATCH,
            "/v1/event-types/booking.created".to_owned(),
            json!({ "description": "\u{7}bell" }),
            "description",
        ),
    ] {
        let response = registry
            .admin(method.clone(), &path)
            .json(&body)
            .send()
            .await
            .unwrap();
        expect_field_error(response, StatusCode::UNPROCESSABLE_ENTITY, field).await;
    }
    // An Idempotency-Key holds visible ASCII, spaces and tabs only.
    let response = registry
        .admin(Method::POST, "/v1/accounts")
        .header(
            "idempotency-key",
            reqwest::header::HeaderValue::from_bytes(b"key\xe9").unwrap(),
        )
        .json(&json!({ "name": "keyed" }))
        .send()
        .await
        .unwrap();
    expect_field_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "header:idempotency-key",
    )
    .await;
    // Line breaks and tabs are ordinary in a description.
    let fine = registry
        .admin(
            Method::PATCH,
            &format!("/v1/accounts/{account}/webhooks/{hook}"),
        )
        .json(&json!({ "description": "two\nlines\tand a tab" }))
        .send()
        .await
        .unwrap();
    expect(fine, StatusCode::OK).await;
}

#[tokio::test]
async fn bodies_must_be_json_objects() {
    let registry = TestRegistry::start().await;
    let account = registry.create_account("Cool Account").await;
    for (path, body) in [
        ("/v1/accounts".to_owned(), json!(["Sneaky"])),
        (format!("/v1/accounts/{account}"), json!("renamed")),
        (format!("/v1/accounts/{account}/webhooks"), json!([1, 2])),
    ] {
        let method = if path.ends_with("accounts") || path.ends_with("webhooks") {
            Method::POST
        } else {
            Method::PATCH
        };
        let response = registry
            .admin(method, &path)
            .json(&body)
            .send()
            .await
            .unwrap();
        expect_field_error(response, StatusCode::UNPROCESSABLE_ENTITY, "body").await;
    }
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
        1,
        "nothing created"
    );
}

#[tokio::test]
async fn requests_past_the_api_timeout_get_a_problem_to_retry() {
    use sea_orm::{ConnectionTrait as _, TransactionTrait as _};
    let registry =
        TestRegistry::start_with(|c| c.api_timeout = std::time::Duration::from_millis(300)).await;
    // Another writer holds the accounts table, so creating one waits past the timeout.
    let other = registry.db.connect().await.unwrap();
    let lock = other.begin().await.unwrap();
    let hold = match registry.db.backend() {
        herald_testkit::Backend::Sqlite => "UPDATE accounts SET name = name",
        herald_testkit::Backend::Postgres => "LOCK TABLE accounts IN EXCLUSIVE MODE",
    };
    lock.execute_unprepared(hold).await.unwrap();
    let response = registry
        .admin(Method::POST, "/v1/accounts")
        .json(&json!({ "name": "Slow" }))
        .send()
        .await
        .unwrap();
    let problem = expect(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("did not finish within"),
        "{problem}"
    );
    lock.rollback().await.unwrap();
    // Probes and the console are not API requests and keep answering.
    let health = registry
        .request(Method::GET, "/healthz", None)
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn methods_a_route_does_not_answer_are_405_problems() {
    let registry = TestRegistry::start().await;
    for (method, path) in [
        (Method::DELETE, "/v1/event-types"),
        (Method::PUT, "/v1/accounts"),
        (Method::POST, "/healthz"),
    ] {
        let response = registry.admin(method.clone(), path).send().await.unwrap();
        expect(response, StatusCode::METHOD_NOT_ALLOWED).await;
    }
}

#[tokio::test]
async fn a_webhooks_delivery_list_takes_no_webhook_id_query() {
    let registry = TestRegistry::start().await;
    let account = registry.create_account("Cool Account").await;
    let hook = registry
        .create_webhook(&account, ADMIN_KEY, json!({ "name": "hook" }))
        .await;
    let path = format!(
        "/v1/accounts/{account}/webhooks/{}/deliveries?webhook_id=wh_other",
        hook["id"].as_str().unwrap()
    );
    let response = registry.admin(Method::GET, &path).send().await.unwrap();
    expect_field_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "query:webhook_id",
    )
    .await;
}

#[tokio::test]
async fn metrics_are_served_to_the_admin_by_route_template() {
    let registry = TestRegistry::start().await;
    let account = registry.create_account("Metered").await;
    let key = registry.create_key(&account).await;
    registry
        .admin(Method::GET, &format!("/v1/accounts/{account}"))
        .send()
        .await
        .unwrap();
    let anonymous = registry
        .request(Method::GET, "/metrics", None)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let tenant = registry
        .request(Method::GET, "/metrics", Some(&key))
        .send()
        .await
        .unwrap();
    assert_eq!(tenant.status(), StatusCode::FORBIDDEN);
    let response = registry
        .admin(Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    for line in [
        r#"herald_registry_http_requests_total{method="POST",route="/v1/accounts",status="201"} 1"#,
        r#"herald_registry_http_requests_total{method="GET",route="/v1/accounts/{account_id}",status="200"} 1"#,
        r#"herald_registry_http_request_duration_seconds_count{method="POST",route="/v1/accounts"} 1"#,
        "herald_registry_reconciles_total 1",
        "herald_registry_outcomes_recorded_total 0",
    ] {
        assert!(text.contains(line), "{line} is missing from:\n{text}");
    }
    // Routes are templates: no account id in any label.
    assert!(!text.contains(&account), "{text}");
}

#[tokio::test]
async fn migrate_applies_what_is_missing_once() {
    let db = herald_testkit::TestDatabase::from_env().await.unwrap();
    let applied = herald_registry::store::Store::migrate(db.url())
        .await
        .unwrap();
    assert!(
        applied.iter().any(|name| name.contains("console")),
        "{applied:?}"
    );
    let again = herald_registry::store::Store::migrate(db.url())
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
}
