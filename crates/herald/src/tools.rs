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

/// Migrates the database named by `HERALD_DATABASE_URL` (the registry's default when unset).
pub async fn migrate() -> anyhow::Result<String> {
    let url = std::env::var("HERALD_DATABASE_URL")
        .unwrap_or_else(|_| "sqlite://herald.db?mode=rwc".to_owned());
    let applied = herald_registry::store::Store::migrate(&url).await?;
    Ok(if applied.is_empty() {
        "the database is up to date".to_owned()
    } else {
        format!("applied {}", applied.join(", "))
    })
}

/// Creates or updates Herald's streams, consumers and bucket as the worker's `HERALD_*`
/// configuration says (replicas, retry schedule, ack waits), and says what changed.
pub async fn provision() -> anyhow::Result<String> {
    let config = herald_worker::WorkerConfig::from_env()?;
    config.validate()?;
    let tiers = config.retry_tiers()?;
    let client = herald_bus::connect(&config.nats_url, "herald-provision").await?;
    let js = async_nats::jetstream::new(client);
    let report = herald_bus::Topology::provision(&js, &config.provision_options(tiers))
        .await
        .context("cannot provision Herald's NATS topology")?;
    Ok(provision_report(&report))
}

fn provision_report(report: &herald_bus::ProvisionReport) -> String {
    let mut lines: Vec<String> = report
        .items
        .iter()
        .map(|(name, ensured)| {
            let what = match ensured {
                herald_bus::Ensured::Created => "created",
                herald_bus::Ensured::Updated => "updated",
                herald_bus::Ensured::Unchanged => "unchanged",
            };
            format!("{what:<9}  {name}")
        })
        .collect();
    let changed = report
        .items
        .iter()
        .filter(|(_, ensured)| *ensured != herald_bus::Ensured::Unchanged)
        .count();
    lines.push(format!("{changed} of {} changed", report.items.len()));
    lines.join("\n")
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[arg(long, env = "HERALD_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
}

/// What Herald's streams and consumers hold, as a table or JSON.
pub async fn status(args: StatusArgs) -> anyhow::Result<String> {
    let client = herald_bus::connect(&args.nats_url, "herald-status").await?;
    let status = herald_bus::status(&async_nats::jetstream::new(client)).await?;
    if args.json {
        return Ok(serde_json::to_string_pretty(&status)?);
    }
    Ok(status_table(&status))
}

fn status_table(status: &herald_bus::Status) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if status.streams.is_empty() {
        return "no Herald streams on this server (not provisioned yet?)".to_owned();
    }
    let _ = writeln!(
        out,
        "{:<22} {:<14} {:>10} {:>12} {:>10} {:>3}  leader",
        "stream", "role", "messages", "bytes", "oldest", "R"
    );
    for stream in &status.streams {
        let oldest = stream.oldest_age_seconds.map_or_else(
            || "-".to_owned(),
            |age| humantime::format_duration(Duration::from_secs(age)).to_string(),
        );
        let _ = writeln!(
            out,
            "{:<22} {:<14} {:>10} {:>12} {:>10} {:>3}  {}",
            stream.name,
            stream.role,
            stream.messages,
            stream.bytes,
            oldest,
            stream.replicas,
            stream.leader.as_deref().unwrap_or("-"),
        );
        for consumer in &stream.consumers {
            let count = if consumer.consumers == 1 {
                String::new()
            } else {
                format!(" ({} consumers)", consumer.consumers)
            };
            let _ = writeln!(
                out,
                "  {:<20} pending {:>8}  ack-pending {:>6}  redelivered {:>6}{count}",
                consumer.name, consumer.pending, consumer.ack_pending, consumer.redelivered,
            );
        }
    }
    out
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

    #[test]
    fn the_provision_report_says_what_changed() {
        let report = herald_bus::ProvisionReport {
            items: vec![
                ("EVENTS".into(), herald_bus::Ensured::Unchanged),
                ("HERALD_DELIVERIES".into(), herald_bus::Ensured::Updated),
                ("HERALD_RETRY_14S".into(), herald_bus::Ensured::Created),
            ],
        };
        expect_test::expect![[r#"
            unchanged  EVENTS
            updated    HERALD_DELIVERIES
            created    HERALD_RETRY_14S
            2 of 3 changed"#]]
        .assert_eq(&provision_report(&report));
    }

    #[test]
    fn the_status_table_shows_streams_then_their_consumers() {
        let consumer = |name: &str, consumers| herald_bus::ConsumerStatus {
            name: name.into(),
            pending: 2,
            ack_pending: 1,
            redelivered: 0,
            ack_floor: 0,
            consumers,
        };
        let status = herald_bus::Status {
            streams: vec![herald_bus::StreamStatus {
                name: "EVENTS".into(),
                role: "events",
                messages: 3,
                bytes: 420,
                oldest_age_seconds: Some(90),
                replicas: 3,
                leader: Some("n2".into()),
                consumers: vec![consumer("herald-router", 1), consumer("herald-lane-*", 4)],
            }],
        };
        expect_test::expect![[r#"
            stream                 role             messages        bytes     oldest   R  leader
            EVENTS                 events                  3          420     1m 30s   3  n2
              herald-router        pending        2  ack-pending      1  redelivered      0
              herald-lane-*        pending        2  ack-pending      1  redelivered      0 (4 consumers)
        "#]]
        .assert_eq(&status_table(&status));
    }
}
