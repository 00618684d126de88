//! Every write is projected into the KV bucket; the reconciler heals what a
//! failed projection left behind.

use std::time::Duration;

use herald_core::{AccountId, EventFilter, SigningSecret, WebhookId, WebhookUrl};
use herald_proto::webhooks::v1::WebhookSpec;
use herald_registry::principal::Principal;
use herald_registry::store::{NewWebhook, WebhookPatch};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{ADMIN_KEY, TestRegistry, WAIT, expect};

#[tokio::test]
async fn writes_are_projected_into_the_bucket() {
    let registry = TestRegistry::start().await;
    let account = registry.create_account("A").await;
    let created = registry
        .create_webhook(
            &account,
            ADMIN_KEY,
            json!({ "name": "CRM", "events": ["booking.*"], "url": "https://example.com/in" }),
        )
        .await;
    let id = created["id"].as_str().unwrap();
    let bucket = registry.bucket().await;

    let spec = bucket.get(id).await.unwrap().expect("projected on create");
    assert_eq!(spec.id, id);
    assert_eq!(spec.account_id, account);
    assert_eq!(spec.name, "CRM");
    assert!(spec.enabled);
    assert_eq!(spec.event_patterns, ["booking.*"]);
    assert_eq!(spec.url, "https://example.com/in");
    assert_eq!(spec.version, 1);
    assert_eq!(spec.signing_keys.len(), 1);
    assert_eq!(
        crate::common::projected_secret(&spec, 0),
        created["secret"].as_str().unwrap()
    );
    assert!(spec.signing_keys[0].expires_at.is_none());

    let path = format!("/v1/accounts/{account}/webhooks/{id}");
    let response = registry
        .admin(Method::PATCH, &path)
        .json(&json!({ "enabled": false }))
        .send()
        .await
        .unwrap();
    expect(response, StatusCode::OK).await;
    let spec = bucket.get(id).await.unwrap().unwrap();
    assert!(!spec.enabled);
    assert_eq!(spec.version, 2);

    expect(
        registry.admin(Method::DELETE, &path).send().await.unwrap(),
        StatusCode::NO_CONTENT,
    )
    .await;
    assert!(bucket.get(id).await.unwrap().is_none());
    assert!(!bucket.keys().await.unwrap().contains(&id.to_owned()));
}

/// A crash between the database write and its projection is simulated by
/// writing through the store alone; the reconciler must repair every kind of
/// drift exactly.
#[tokio::test]
async fn the_reconciler_heals_projections_a_crash_left_behind() {
    let registry = TestRegistry::start().await;
    let account = registry.create_account("A").await;
    let kept = registry
        .create_webhook(&account, ADMIN_KEY, json!({ "name": "kept" }))
        .await;
    let doomed = registry
        .create_webhook(&account, ADMIN_KEY, json!({ "name": "doomed" }))
        .await;
    let kept_id = WebhookId::parse(kept["id"].as_str().unwrap()).unwrap();
    let doomed_id = WebhookId::parse(doomed["id"].as_str().unwrap()).unwrap();
    let scope = registry
        .store
        .authorize(&Principal::Admin, &AccountId::parse(&account).unwrap())
        .await
        .unwrap();

    // Committed, never projected: a new webhook, a rename, a delete.
    let born = registry
        .store
        .create_webhook(
            &scope,
            NewWebhook {
                name: "born during the crash".into(),
                description: None,
                enabled: true,
                events: EventFilter::all(),
                url: WebhookUrl::parse("https://example.com/born").unwrap(),
                secret: SigningSecret::generate(),
            },
        )
        .await
        .unwrap();
    let patch = WebhookPatch {
        name: Some("renamed during the crash".into()),
        ..WebhookPatch::default()
    };
    registry
        .store
        .update_webhook(&scope, &kept_id, None, patch)
        .await
        .unwrap();
    registry
        .store
        .delete_webhook(&scope, &doomed_id)
        .await
        .unwrap();
    // And a key no webhook backs.
    let bucket = registry.bucket().await;
    let mut orphan: WebhookSpec = bucket.get(kept_id.as_str()).await.unwrap().unwrap();
    orphan.id = WebhookId::new().to_string();
    bucket.put(&orphan).await.unwrap();

    let report = registry.projector.reconcile(&registry.store).await.unwrap();
    assert_eq!(
        (report.written, report.removed, report.unchanged),
        (2, 2, 0),
        "{report:?}"
    );

    let mut keys = bucket.keys().await.unwrap();
    keys.sort();
    let mut expected = vec![kept_id.to_string(), born.id.to_string()];
    expected.sort();
    assert_eq!(keys, expected);
    let healed = bucket.get(kept_id.as_str()).await.unwrap().unwrap();
    assert_eq!(
        (healed.name.as_str(), healed.version),
        ("renamed during the crash", 2)
    );
    assert_eq!(
        bucket.get(born.id.as_str()).await.unwrap().unwrap().url,
        "https://example.com/born"
    );
    let again = registry.projector.reconcile(&registry.store).await.unwrap();
    assert_eq!((again.written, again.removed, again.unchanged), (0, 0, 2));
}

/// Writes keep succeeding while NATS is down (the database is the source of
/// truth); once it is back the bucket converges on the database.
#[tokio::test]
async fn writes_during_a_nats_outage_converge_once_it_returns() {
    let mut registry = TestRegistry::start().await;
    let account = registry.create_account("A").await;
    let kept = registry
        .create_webhook(&account, ADMIN_KEY, json!({ "name": "kept" }))
        .await;
    let doomed = registry
        .create_webhook(&account, ADMIN_KEY, json!({ "name": "doomed" }))
        .await;
    let kept_id = kept["id"].as_str().unwrap().to_owned();
    let doomed_id = doomed["id"].as_str().unwrap().to_owned();

    registry.nats.kill().unwrap();
    let created = registry
        .create_webhook(&account, ADMIN_KEY, json!({ "name": "born while down" }))
        .await;
    let born_id = created["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/accounts/{account}/webhooks/{kept_id}");
    let response = registry
        .admin(Method::PATCH, &path)
        .json(&json!({ "name": "renamed while down" }))
        .send()
        .await
        .unwrap();
    expect(response, StatusCode::OK).await;
    let path = format!("/v1/accounts/{account}/webhooks/{doomed_id}");
    expect(
        registry.admin(Method::DELETE, &path).send().await.unwrap(),
        StatusCode::NO_CONTENT,
    )
    .await;

    registry.nats.restart().unwrap();
    let bucket = registry.bucket().await;
    let mut expected = vec![kept_id.clone(), born_id.clone()];
    expected.sort();
    herald_testkit::wait_until(WAIT, || {
        let (registry, bucket, expected, kept_id) = (&registry, &bucket, &expected, &kept_id);
        async move {
            if registry.projector.reconcile(&registry.store).await.is_err() {
                return false;
            }
            let mut keys = bucket.keys().await.unwrap_or_default();
            keys.sort();
            let renamed = bucket
                .get(kept_id)
                .await
                .ok()
                .flatten()
                .is_some_and(|s| s.name == "renamed while down");
            &keys == expected && renamed
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_periodic_reconciler_runs_by_itself() {
    let registry =
        TestRegistry::start_with(|c| c.reconcile_interval = Duration::from_millis(200)).await;
    let account = registry.create_account("A").await;
    let created = registry
        .create_webhook(&account, ADMIN_KEY, json!({}))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let bucket = registry.bucket().await;
    bucket.delete(&id).await.unwrap();
    herald_testkit::wait_until(WAIT, || {
        let bucket = bucket.clone();
        let id = id.clone();
        async move { bucket.get(&id).await.ok().flatten().is_some() }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn readiness_follows_nats_and_openapi_is_served() {
    let mut registry = TestRegistry::start().await;
    let ready = expect(
        registry.admin(Method::GET, "/readyz").send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(ready, json!({ "database": "ok", "nats": "ok" }));
    let health = registry
        .request(Method::GET, "/healthz", None)
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    registry.nats.kill().unwrap();
    let http = registry.http.clone();
    let url = format!("{}/readyz", registry.base);
    herald_testkit::wait_until(WAIT, || {
        let http = http.clone();
        let url = url.clone();
        async move {
            http.get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::SERVICE_UNAVAILABLE)
        }
    })
    .await
    .unwrap();
    registry.nats.restart().unwrap();
    herald_testkit::wait_until(WAIT, || {
        let http = http.clone();
        let url = url.clone();
        async move {
            http.get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK)
        }
    })
    .await
    .unwrap();

    let served: serde_json::Value = registry
        .http
        .get(format!("{}/openapi.json", registry.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served["info"]["title"], "Herald registry API");
}

/// The checked-in openapi.json must match the code. Regenerate with
/// `cargo run -p herald -- openapi > openapi.json`.
#[test]
fn checked_in_openapi_is_fresh() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi.json");
    let generated = herald_registry::openapi::to_pretty_json();
    if std::env::var_os("HERALD_UPDATE_OPENAPI").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "openapi.json is stale: run `HERALD_UPDATE_OPENAPI=1 cargo test -p herald-registry --test api checked_in_openapi` \
         or `cargo run -p herald -- openapi > openapi.json`"
    );
}

/// A replica that read the database before a newer write projected it must
/// not put its older spec over the newer one: the newest version wins.
#[tokio::test]
async fn a_projection_never_replaces_a_newer_spec_in_the_bucket() {
    let registry = TestRegistry::start().await;
    let account = registry.create_account("A").await;
    let created = registry
        .create_webhook(&account, ADMIN_KEY, json!({ "name": "raced" }))
        .await;
    let id = WebhookId::parse(created["id"].as_str().unwrap()).unwrap();
    let bucket = registry.bucket().await;
    // A newer version landed in the bucket meanwhile (another replica's write).
    let mut newer = bucket.get(id.as_str()).await.unwrap().unwrap();
    newer.version = 7;
    newer.name = "newer".into();
    bucket.put(&newer).await.unwrap();

    // This replica projects what it read: version 1.
    let scope = registry
        .store
        .authorize(&Principal::Admin, &AccountId::parse(&account).unwrap())
        .await
        .unwrap();
    registry
        .projector
        .project(&registry.store, &scope, &id)
        .await;
    let held = bucket.get(id.as_str()).await.unwrap().unwrap();
    assert_eq!((held.version, held.name.as_str()), (7, "newer"));
}
