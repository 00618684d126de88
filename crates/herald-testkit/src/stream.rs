//! Reading what a test's streams hold.

use anyhow::{Context as _, anyhow};
use async_nats::jetstream::Message;
use async_nats::jetstream::consumer::PullConsumer;
use futures::TryStreamExt as _;

/// The messages `consumer` has ready now, at most `max`, in stream order; it does not wait for
/// more. The messages are not acked.
pub async fn fetch_ready(consumer: &PullConsumer, max: usize) -> anyhow::Result<Vec<Message>> {
    consumer
        .fetch()
        .max_messages(max)
        .messages()
        .await
        .map_err(|error| anyhow!(error))
        .context("fetching from a test consumer")?
        .try_collect()
        .await
        .map_err(|error| anyhow!(error))
        .context("reading a fetched message")
}
