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
