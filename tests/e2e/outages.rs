//! The worker needs only NATS: with the registry down, deliveries go on and
//! the log catches up when the registry returns.

use std::time::Duration;

use herald_core::{DeliveryId, WebhookId};
use reqwest::Method;
use serde_json::json;

use crate::harness::{Herald, WAIT};

#[tokio::test]
async fn deliveries_continue_while_the_registry_is_down_and_the_log_catches_up() {
    let mut herald = Herald::start(Duration::from_millis(100), 2).await;
    let account = herald.account().await;
    let (hook, _) = herald.webhook(&account, "/in", json!([])).await;
    herald.wait_for_spec(&hook, 1).await;

    herald.stop_registry().await;
    let mut events = Vec::new();
    for n in 0..20 {
        events.push(
            herald
                .publish(&account, "booking.created", json!({ "n": n }))
                .await,
        );
    }
    herald
        .receiver
        .wait_for_requests("/in", 20, WAIT)
        .await
        .unwrap();

    herald.start_registry().await;
    let hook_id = WebhookId::parse(&hook).unwrap();
    for event in &events {
        let id = DeliveryId::derive(event, &hook_id).to_string();
        herald
            .wait_for_delivery(&account, &id, |d| d["status"] == "delivered")
            .await;
    }
    let stats = herald
        .ok(
            Method::GET,
            &format!("/v1/accounts/{account}/webhooks/{hook}/stats"),
            None,
        )
        .await;
    assert_eq!(
        stats["delivered"], 20,
        "each outcome recorded once: {stats}"
    );
}
