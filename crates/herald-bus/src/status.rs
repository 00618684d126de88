//! What Herald's streams and consumers hold right now, for operators (`herald status`).
//!
//! Read-only: stream and consumer info requests, one per stream and one listing per stream's
//! consumers. A busy webhook's lane consumers are summed into one line, since there may be many
//! and their names hold webhook ids.

use std::time::{SystemTime, UNIX_EPOCH};

use async_nats::jetstream;
use futures::TryStreamExt as _;
use serde::Serialize;

use crate::names::{
    DEAD_STREAM, DELIVERIES_STREAM, EVENTS_STREAM, LANE_CONSUMER_PREFIX, LANES_STREAM,
    OUTCOMES_STREAM, RETRY_STREAM_PREFIX, WEBHOOKS_BUCKET_STREAM,
};

/// Why the status could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the status of {what}: {source}")]
pub struct StatusError {
    what: String,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl StatusError {
    fn new(what: &str, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            what: what.to_owned(),
            source: source.into(),
        }
    }
}

/// One consumer (or, for lanes, every lane consumer together).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsumerStatus {
    pub name: String,
    /// Messages not yet handed to this consumer.
    pub pending: u64,
    /// Handed out and not yet acknowledged.
    pub ack_pending: u64,
    /// Handed out more than once and not yet acknowledged.
    pub redelivered: u64,
    /// The stream sequence up to which every message is acknowledged (0 for the lanes' sum).
    pub ack_floor: u64,
    /// How many consumers this line sums (1 but for lanes).
    pub consumers: u64,
}

/// One of Herald's streams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamStatus {
    pub name: String,
    /// What the stream is for, in a word: `events`, `deliveries`, `delay line`, `lanes`,
    /// `outcomes`, `dead letters` or `webhook specs`.
    pub role: &'static str,
    pub messages: u64,
    pub bytes: u64,
    /// Age of the oldest message held; none when the stream is empty.
    pub oldest_age_seconds: Option<u64>,
    pub replicas: usize,
    /// The server leading the stream's replicas, when clustered.
    pub leader: Option<String>,
    pub consumers: Vec<ConsumerStatus>,
}

/// Every Herald stream found, in a fixed order; streams not (yet) provisioned are absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub streams: Vec<StreamStatus>,
}

impl Status {
    pub fn stream(&self, name: &str) -> Option<&StreamStatus> {
        self.streams.iter().find(|stream| stream.name == name)
    }
}

impl StreamStatus {
    pub fn consumer(&self, name: &str) -> Option<&ConsumerStatus> {
        self.consumers.iter().find(|consumer| consumer.name == name)
    }
}

fn role_of(name: &str) -> Option<(u8, &'static str)> {
    match name {
        EVENTS_STREAM => Some((0, "events")),
        DELIVERIES_STREAM => Some((1, "deliveries")),
        LANES_STREAM => Some((3, "lanes")),
        OUTCOMES_STREAM => Some((4, "outcomes")),
        DEAD_STREAM => Some((5, "dead letters")),
        WEBHOOKS_BUCKET_STREAM => Some((6, "webhook specs")),
        _ if name.starts_with(RETRY_STREAM_PREFIX) => Some((2, "delay line")),
        _ => None,
    }
}

/// Reads the status of every Herald stream and its consumers.
pub async fn status(js: &jetstream::Context) -> Result<Status, StatusError> {
    let mut names: Vec<String> = js
        .stream_names()
        .try_collect()
        .await
        .map_err(|err| StatusError::new("the stream list", err))?;
    names.retain(|name| role_of(name).is_some());
    // Delay lines sort by their delay, which their names do not.
    let mut streams = Vec::with_capacity(names.len());
    for name in names {
        streams.push(stream_status(js, &name).await?);
    }
    streams.sort_by_key(|stream| {
        let rank = role_of(&stream.name).map_or(u8::MAX, |(rank, _)| rank);
        let delay = crate::tiers::RetryTier::from_stream_name(&stream.name).map(|t| t.delay());
        (rank, delay, stream.name.clone())
    });
    Ok(Status { streams })
}

async fn stream_status(js: &jetstream::Context, name: &str) -> Result<StreamStatus, StatusError> {
    let mut stream = js
        .get_stream(name)
        .await
        .map_err(|err| StatusError::new(name, err))?;
    let info = stream
        .info()
        .await
        .map_err(|err| StatusError::new(name, err))?
        .clone();
    let infos: Vec<jetstream::consumer::Info> = stream
        .consumers()
        .try_collect()
        .await
        .map_err(|err| StatusError::new(name, err))?;
    let mut consumers: Vec<ConsumerStatus> = Vec::new();
    let mut lanes: Option<ConsumerStatus> = None;
    for consumer in infos {
        let line = ConsumerStatus {
            name: consumer.name.clone(),
            pending: consumer.num_pending,
            ack_pending: consumer.num_ack_pending as u64,
            redelivered: consumer.num_redelivered as u64,
            ack_floor: consumer.ack_floor.stream_sequence,
            consumers: 1,
        };
        if consumer.name.starts_with(LANE_CONSUMER_PREFIX) {
            let sum = lanes.get_or_insert_with(|| ConsumerStatus {
                name: format!("{LANE_CONSUMER_PREFIX}*"),
                pending: 0,
                ack_pending: 0,
                redelivered: 0,
                ack_floor: 0,
                consumers: 0,
            });
            sum.pending += line.pending;
            sum.ack_pending += line.ack_pending;
            sum.redelivered += line.redelivered;
            sum.consumers += 1;
        } else {
            consumers.push(line);
        }
    }
    consumers.sort_by(|a, b| a.name.cmp(&b.name));
    consumers.extend(lanes);
    let oldest_age_seconds = (info.state.messages > 0).then(|| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let first = u64::try_from(info.state.first_timestamp.unix_timestamp()).unwrap_or(0);
        now.saturating_sub(first)
    });
    Ok(StreamStatus {
        name: name.to_owned(),
        role: role_of(name).map_or("", |(_, role)| role),
        messages: info.state.messages,
        bytes: info.state.bytes,
        oldest_age_seconds,
        replicas: info.config.num_replicas,
        leader: info.cluster.and_then(|cluster| cluster.leader),
        consumers,
    })
}
