//! Signing secrets at rest: sealed in the webhook bucket, opened only by a worker holding the
//! key, and resealed when the key is rotated.

use std::time::Duration;

use herald_core::{DeliveryId, Keyring, WebhookId};
use herald_proto::webhooks::v1::WebhookSpec;
use reqwest::Method;
use serde_json::json;

use crate::harness::{Herald, KEY, WAIT, assert_signed};

async fn projected(herald: &Herald, id: &str) -> WebhookSpec {
    let client = herald.nats.client().await.unwrap();
    let bucket = herald_bus::WebhookBucket::open(&async_nats::jetstream::new(client))
        .await
        .unwrap();
    let current = bucket.current(id).await.unwrap();
    current.spec().cloned().unwrap()
}

#[tokio::test]
async fn the_bucket_holds_sealed_secrets_and_a_worker_without_the_key_sends_nothing() {
    // Retries a second apart for half a minute: time enough, even on a loaded machine, to see
    // an attempt fail and to restart the worker with the key before the last one.
    let mut herald = Herald::start(Duration::from_secs(1), 30).await;
    herald.stop_worker().await;
    herald.keyring = Keyring::default();
    herald.start_worker(Duration::from_secs(1), 30).await;
    let account = herald.account().await;
    let (hook, secret) = herald.webhook(&account, "/in", json!([])).await;
    herald.wait_for_spec(&hook, 1).await;

    let spec = projected(&herald, &hook).await;
    let sealed = &spec.signing_keys[0].secret;
    assert!(sealed.starts_with("v2:"), "{sealed}");
    assert!(!sealed.contains(&secret["whsec_".len()..]), "{sealed}");

    let event = herald.publish(&account, "booking.created", json!({})).await;
    let delivery = DeliveryId::derive(&event, &WebhookId::parse(&hook).unwrap()).to_string();
    let logged = herald
        .wait_for_delivery(&account, &delivery, |d| d["attempts"].as_u64() >= Some(1))
        .await;
    let error = logged["attempt_log"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("cannot open the webhook's signing secret")
            && error.contains("HERALD_ENCRYPTION_KEY"),
        "{logged}"
    );
    assert_eq!(logged["status"], "failed", "{logged}");
    assert!(herald.receiver.requests_to("/in").is_empty());

    // Given the key, the next attempt (waiting in its delay line meanwhile) goes out signed.
    herald.stop_worker().await;
    herald.keyring = Keyring::from_keys(&[KEY]);
    herald.start_worker(Duration::from_secs(1), 30).await;
    let request = herald
        .receiver
        .wait_for_requests("/in", 1, WAIT)
        .await
        .unwrap()
        .remove(0);
    assert_signed(&secret, &request);
    herald
        .wait_for_delivery(&account, &delivery, |d| d["status"] == "delivered")
        .await;
}

#[tokio::test]
async fn a_rotated_key_reseals_the_database_and_the_bucket() {
    let mut herald = Herald::start(Duration::from_millis(200), 3).await;
    let account = herald.account().await;
    let (hook, secret) = herald.webhook(&account, "/in", json!([])).await;
    herald.wait_for_spec(&hook, 1).await;
    let before = projected(&herald, &hook).await.signing_keys[0]
        .secret
        .clone();

    // The new key goes first; the old one still opens what it sealed.
    let new_key = [7u8; 32];
    let rotated = Keyring::from_keys(&[new_key, KEY]);
    let new_id = rotated.key_ids().next().unwrap().to_owned();
    herald.stop_registry().await;
    herald.keyring = rotated;
    herald.start_registry().await;
    let after = projected(&herald, &hook).await.signing_keys[0]
        .secret
        .clone();
    assert_ne!(before, after);
    assert!(after.starts_with(&format!("v2:{new_id}:")), "{after}");
    let revealed = herald
        .ok(
            Method::GET,
            &format!("/v1/accounts/{account}/webhooks/{hook}/secret"),
            None,
        )
        .await;
    assert_eq!(revealed["data"][0]["secret"], secret.as_str());

    // The old key is retired: a worker with only the new one delivers.
    herald.stop_worker().await;
    herald.keyring = Keyring::from_keys(&[new_key]);
    herald.start_worker(Duration::from_millis(200), 3).await;
    herald.wait_for_spec(&hook, 1).await;
    herald.publish(&account, "booking.created", json!({})).await;
    let request = herald
        .receiver
        .wait_for_requests("/in", 1, WAIT)
        .await
        .unwrap()
        .remove(0);
    assert_signed(&secret, &request);
}
