//! The minimal durable pipeline: only what at-least-once webhook delivery cannot avoid, written
//! with plain async-nats and reqwest. Each event is published with an acknowledgement to a
//! file-backed stream, pulled by a durable consumer, signed, POSTed, and acknowledged once the
//! receiver answered. No routing, no per-webhook state, no delivery log, no retries: the floor
//! Herald's figures are compared with.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::pull, stream};
use axum::body::Bytes;
use futures::StreamExt as _;
use herald_core::SigningSecret;

const STREAM: &str = "BENCH_MINIMAL";
const SUBJECT: &str = "bench.minimal";

/// Delivers `bodies` through the minimal pipeline to `receiver`, `concurrency` requests in
/// flight; returns the deliveries per second from the first publish to the last acknowledgement.
pub async fn run(
    nats_url: &str,
    receiver: &str,
    secret: &SigningSecret,
    bodies: Vec<String>,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let client = async_nats::connect(nats_url)
        .await
        .context("the minimal pipeline cannot connect to NATS")?;
    let js = jetstream::new(client);
    let stream = js
        .create_stream(stream::Config {
            name: STREAM.to_owned(),
            subjects: vec![SUBJECT.to_owned()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .context("cannot create the minimal pipeline's stream")?;
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("bench-minimal".to_owned()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            max_ack_pending: 10_000,
            ..Default::default()
        })
        .await
        .context("cannot create the minimal pipeline's consumer")?;

    let total = bodies.len();
    let http = reqwest::Client::new();
    let receiver = receiver.to_owned();
    let secret = secret.clone();
    let started = Instant::now();
    let delivering = tokio::spawn(async move {
        let messages = consumer.messages().await?;
        messages
            .take(total)
            .for_each_concurrent(concurrency, |message| {
                let (http, receiver, secret) = (&http, &receiver, &secret);
                async move {
                    let Ok(message) = message else { return };
                    let id = message
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("Nats-Msg-Id"))
                        .map(|v| v.as_str().to_owned())
                        .unwrap_or_default();
                    let timestamp = chrono::Utc::now().timestamp();
                    let signature = secret.sign(&id, timestamp, &message.payload);
                    let sent = http
                        .post(receiver)
                        .header("content-type", "application/json")
                        .header("webhook-id", &id)
                        .header("webhook-timestamp", timestamp.to_string())
                        .header("webhook-signature", signature)
                        .body(message.payload.clone())
                        .send()
                        .await;
                    match sent {
                        Ok(response) if response.status().is_success() => {
                            if let Err(error) = message.ack().await {
                                tracing::warn!(%error, "minimal pipeline: ack failed");
                            }
                        }
                        _ => tracing::warn!("minimal pipeline: a POST failed"),
                    }
                }
            })
            .await;
        anyhow::Ok(())
    });

    futures::stream::iter(bodies.into_iter().enumerate())
        .for_each_concurrent(256, |(n, body)| {
            let js = &js;
            async move {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", format!("msg_minimal_{n}").as_str());
                let published = async {
                    js.publish_with_headers(SUBJECT, headers, Bytes::from(body))
                        .await?
                        .await
                }
                .await;
                if let Err(error) = published {
                    tracing::warn!(%error, "minimal pipeline: publish failed");
                }
            }
        })
        .await;
    tokio::time::timeout(Duration::from_secs(300), delivering)
        .await
        .context("the minimal pipeline did not finish within 5 minutes")???;
    let rate = total as f64 / started.elapsed().as_secs_f64();
    js.delete_stream(STREAM)
        .await
        .context("cannot delete the minimal pipeline's stream")?;
    Ok(rate)
}
