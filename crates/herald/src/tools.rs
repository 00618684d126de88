//! `herald publish` and `herald verify`: the publisher's and the
//! integrator's tools.

use std::io::Read as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use herald_core::{AccountId, Event, EventData, EventId, EventType, SigningSecret};

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// Event type, e.g. booking.created.
    pub event_type: String,
    /// The account the event belongs to (acct_…).
    #[arg(long)]
    pub account: String,
    /// The event's data: a JSON object.
    #[arg(long, default_value = "{}")]
    pub data: String,
    /// The event id, the de-duplication key; a new evt_… id by default.
    #[arg(long)]
    pub id: Option<String>,
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
}

pub async fn publish(args: PublishArgs) -> anyhow::Result<String> {
    let event = Event {
        id: match &args.id {
            Some(id) => EventId::parse(id).context("--id")?,
            None => EventId::generate(),
        },
        event_type: EventType::parse(&args.event_type).context("event type")?,
        account: AccountId::parse(&args.account).context("--account")?,
        timestamp: chrono::Utc::now(),
        data: EventData::parse(&args.data).context("--data")?,
    };
    let client = herald_bus::connect(&args.nats_url, "herald-publish").await?;
    let publisher = herald_bus::Publisher::new(async_nats::jetstream::new(client));
    let receipt = publisher
        .publish(&event)
        .await
        .context("publishing failed")?;
    Ok(if receipt.duplicate {
        format!("{} was already published (duplicate ignored)", event.id)
    } else {
        format!("published {} ({})", event.id, event.event_type)
    })
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The endpoint's signing secret (whsec_…). Repeat during a rotation.
    #[arg(long = "secret", required = true, env = "HERALD_WEBHOOK_SECRET")]
    pub secrets: Vec<String>,
    /// The `webhook-id` header.
    #[arg(long)]
    pub id: String,
    /// The `webhook-timestamp` header.
    #[arg(long)]
    pub timestamp: String,
    /// The `webhook-signature` header.
    #[arg(long)]
    pub signature: String,
    /// File holding the raw request body; standard input when absent.
    #[arg(long)]
    pub body: Option<PathBuf>,
    /// Accept any timestamp age (for requests captured earlier).
    #[arg(long)]
    pub ignore_age: bool,
}

pub fn verify(args: VerifyArgs) -> anyhow::Result<String> {
    let secrets = args
        .secrets
        .iter()
        .map(|s| SigningSecret::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .context("--secret")?;
    let body = match &args.body {
        Some(path) => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        None => {
            let mut body = Vec::new();
            std::io::stdin()
                .read_to_end(&mut body)
                .context("cannot read the body")?;
            body
        }
    };
    let (now, tolerance) = if args.ignore_age {
        (
            args.timestamp.parse().unwrap_or(0),
            Duration::from_secs(u64::MAX / 4),
        )
    } else {
        (
            chrono::Utc::now().timestamp(),
            herald_core::DEFAULT_TOLERANCE,
        )
    };
    herald_core::verify(
        &secrets,
        &args.id,
        &args.timestamp,
        &args.signature,
        &body,
        now,
        tolerance,
    )
    .context("signature does not verify")?;
    Ok(format!("signature verified for {}", args.id))
}

#[derive(Debug, clap::Args)]
pub struct SpecArgs {
    /// The webhook id (wh_…).
    pub webhook_id: String,
    /// Print the signing secrets instead of masking them.
    #[arg(long)]
    pub show_secrets: bool,
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
}

/// The `WebhookSpec` a worker reads for one webhook, as JSON.
pub async fn spec(args: SpecArgs) -> anyhow::Result<String> {
    let client = herald_bus::connect(&args.nats_url, "herald-spec").await?;
    let bucket = herald_bus::WebhookBucket::open(&async_nats::jetstream::new(client)).await?;
    let spec = bucket
        .get(&args.webhook_id)
        .await?
        .with_context(|| format!("no spec for {} in the bucket", args.webhook_id))?;
    Ok(spec_json(&spec, args.show_secrets).to_string())
}

fn spec_json(
    spec: &herald_proto::webhooks::v1::WebhookSpec,
    show_secrets: bool,
) -> serde_json::Value {
    let time = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .and_then(herald_proto::datetime)
            .map(|t| t.to_rfc3339())
    };
    serde_json::json!({
        "id": spec.id,
        "account_id": spec.account_id,
        "name": spec.name,
        "enabled": spec.enabled,
        "event_patterns": spec.event_patterns,
        "url": spec.url,
        "signing_keys": spec.signing_keys.iter().map(|k| serde_json::json!({
            "secret": if show_secrets { k.secret.clone() } else { "whsec_…(masked; --show-secrets)".to_owned() },
            "expires_at": time(&k.expires_at),
        })).collect::<Vec<_>>(),
        "version": spec.version,
        "updated_at": time(&spec.updated_at),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests unwrap: a panic is a failure with its message.

    use super::*;

    fn verify_args(signature: &str, body: &std::path::Path) -> VerifyArgs {
        VerifyArgs {
            secrets: vec!["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()],
            id: "msg_p5jXN8AQM9LWM0D4loKWxJek".into(),
            timestamp: "1614265330".into(),
            signature: signature.into(),
            body: Some(body.to_owned()),
            ignore_age: true,
        }
    }

    #[test]
    fn verify_accepts_the_published_vector_and_refuses_a_tampered_body() {
        let dir = tempfile::tempdir().unwrap();
        let body = dir.path().join("body.json");
        std::fs::write(&body, r#"{"test": 2432232314}"#).unwrap();
        let good = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert!(
            verify(verify_args(good, &body))
                .unwrap()
                .contains("verified")
        );
        std::fs::write(&body, r#"{"test": 2432232315}"#).unwrap();
        let error = verify(verify_args(good, &body)).unwrap_err();
        assert!(
            format!("{error:#}").contains("signature does not verify"),
            "{error:#}"
        );
    }

    #[test]
    fn spec_json_masks_secrets_unless_asked() {
        let spec = herald_proto::webhooks::v1::WebhookSpec {
            id: "wh_1".into(),
            signing_keys: vec![herald_proto::webhooks::v1::SigningKey {
                secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
                expires_at: None,
            }],
            ..Default::default()
        };
        assert!(!spec_json(&spec, false).to_string().contains("MfKQ9r8"));
        assert!(spec_json(&spec, true).to_string().contains("MfKQ9r8"));
    }
}
