//! `herald dev --demo`: seeds "Cool Account" with a webhook to a built-in
//! receiver and publishes sample bookings, so a first run shows deliveries
//! arriving and the log filling.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use herald_core::{AccountId, Event, EventData, EventId, EventType, SigningSecret};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const ACCOUNT_NAME: &str = "Cool Account";
const WEBHOOK_NAME: &str = "Demo receiver";

/// The secret the built-in receiver verifies with, known once the webhook
/// exists.
type Secret = Arc<RwLock<Option<SigningSecret>>>;

/// Serves the built-in receiver on an ephemeral loopback port; returns its URL.
pub async fn start_receiver(shutdown: CancellationToken) -> anyhow::Result<(String, Secret)> {
    let secret: Secret = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot start the demo receiver")?;
    let url = format!("http://{}/demo/webhook", listener.local_addr()?);
    let app = axum::Router::new()
        .route("/demo/webhook", axum::routing::post(receive))
        .with_state(secret.clone());
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::warn!(%error, "demo receiver stopped");
        }
    });
    Ok((url, secret))
}

async fn receive(State(secret): State<Secret>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let secrets: Vec<SigningSecret> = secret
        .read()
        .map(|s| s.iter().cloned().collect())
        .unwrap_or_default();
    let verified = herald_core::verify(
        &secrets,
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
        &body,
        chrono::Utc::now().timestamp(),
        herald_core::DEFAULT_TOLERANCE,
    );
    let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match verified {
        Ok(()) => {
            tracing::info!(
                webhook_id = header("webhook-id"),
                event_type = event["type"].as_str().unwrap_or("?"),
                "demo receiver: got a delivery, signature verified"
            );
            StatusCode::NO_CONTENT
        }
        Err(error) => {
            tracing::warn!(webhook_id = header("webhook-id"), %error, "demo receiver: bad signature");
            StatusCode::UNAUTHORIZED
        }
    }
}

/// Creates the demo account and webhook through the API (once; a restart
/// reuses them) and hands the webhook's secret to the receiver.
pub async fn seed(
    api: &str,
    admin_key: &str,
    receiver_url: &str,
    secret: &Secret,
) -> anyhow::Result<AccountId> {
    let api = crate::api::Api::new(api, admin_key);
    let call = |method: reqwest::Method, path: String, body: Option<Value>| {
        let api = api.clone();
        async move { api.call(method, &path, body).await }
    };
    let accounts = call(reqwest::Method::GET, "/v1/accounts?limit=250".into(), None).await?;
    let existing = accounts["data"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["name"] == ACCOUNT_NAME)
        .and_then(|a| a["id"].as_str().map(str::to_owned));
    let account = match existing {
        Some(id) => id,
        None => call(
            reqwest::Method::POST,
            "/v1/accounts".into(),
            Some(json!({ "name": ACCOUNT_NAME })),
        )
        .await?["id"]
            .as_str()
            .context("account without id")?
            .to_owned(),
    };
    let hooks = call(
        reqwest::Method::GET,
        format!("/v1/accounts/{account}/webhooks?limit=250"),
        None,
    )
    .await?;
    let existing = hooks["data"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|h| h["name"] == WEBHOOK_NAME)
        .cloned();
    let webhook = match existing {
        Some(hook) => {
            let id = hook["id"].as_str().context("webhook without id")?;
            // A previous run's receiver had another port.
            call(reqwest::Method::PATCH, format!("/v1/accounts/{account}/webhooks/{id}"), Some(json!({ "url": receiver_url, "enabled": true }))).await?
        }
        None => {
            call(
                reqwest::Method::POST,
                format!("/v1/accounts/{account}/webhooks"),
                Some(json!({ "name": WEBHOOK_NAME, "url": receiver_url, "events": ["booking.*", "payment.*"], "description": "Built-in receiver of herald dev --demo" })),
            )
            .await?
        }
    };
    let id = webhook["id"].as_str().context("webhook without id")?;
    let secrets = call(
        reqwest::Method::GET,
        format!("/v1/accounts/{account}/webhooks/{id}/secret"),
        None,
    )
    .await?;
    let parsed = secrets["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["secret"].as_str())
        .filter_map(|s| SigningSecret::parse(s).ok())
        .next();
    if let Ok(mut slot) = secret.write() {
        *slot = parsed;
    }
    tracing::info!(%account, webhook = id, "demo: Cool Account and its webhook are ready");
    AccountId::parse(&account).context("the API returned a bad account id")
}

/// Publishes a sample booking every few seconds until cancelled.
pub async fn publish_bookings(
    js: async_nats::jetstream::Context,
    account: AccountId,
    shutdown: CancellationToken,
) {
    let publisher = herald_bus::Publisher::new(js);
    let kinds = [
        "booking.created",
        "payment.succeeded",
        "booking.updated",
        "booking.cancelled",
        "booking.refund.full",
    ];
    let mut ticker = tokio::time::interval(Duration::from_secs(3));
    for n in 1u64.. {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let kind = kinds[(n as usize - 1) % kinds.len()];
        let data = json!({ "booking_id": format!("bk_{n:05}"), "guest": "Ada Lovelace", "nights": 1 + n % 4, "total": { "amount": 12000 + n * 500, "currency": "EUR" } });
        let event = match (EventType::parse(kind), EventData::parse(&data.to_string())) {
            (Ok(event_type), Ok(data)) => Event {
                id: EventId::generate(),
                event_type,
                account: account.clone(),
                timestamp: chrono::Utc::now(),
                data,
            },
            _ => continue,
        };
        match publisher.publish(&event).await {
            Ok(_) => tracing::info!(event = %event.id, %kind, "demo: published a sample event"),
            Err(error) => tracing::warn!(%error, "demo: publishing failed"),
        }
    }
}
