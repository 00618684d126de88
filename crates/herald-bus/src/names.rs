//! Every stream, subject, consumer, bucket and header name Herald uses on NATS. No other crate
//! spells them, so renaming one is a change to this file alone.

use herald_core::{AccountId, EventType, WebhookId};

/// The booking platform's events; owned by the platform in production.
pub const EVENTS_STREAM: &str = "EVENTS";
/// Subjects of [`EVENTS_STREAM`]: `events.<account_id>.<event_type>`.
pub const EVENTS_SUBJECTS: &str = "events.>";

/// Delivery tasks waiting to be sent, one subject per webhook.
pub const DELIVERIES_STREAM: &str = "HERALD_DELIVERIES";
pub const DELIVERIES_SUBJECTS: &str = "herald.deliveries.>";

/// The result of every delivery attempt, for the registry's delivery log.
pub const OUTCOMES_STREAM: &str = "HERALD_OUTCOMES";
pub const OUTCOMES_SUBJECTS: &str = "herald.outcomes.>";

/// Messages that could not be processed, kept for inspection, one subject per source.
pub const DEAD_STREAM: &str = "HERALD_DEAD";
pub const DEAD_SUBJECTS: &str = "herald.dead.>";

/// Prefix of the retry delay-line streams (`HERALD_RETRY_5S`, …); see [`crate::RetryTier`].
pub const RETRY_STREAM_PREFIX: &str = "HERALD_RETRY_";
/// Prefix of the retry delay-line subjects (`herald.retry.5s`, …).
pub const RETRY_SUBJECT_PREFIX: &str = "herald.retry.";
/// Prefix of the retry delay-line consumers (`herald-retry-5s`, …).
pub const RETRY_CONSUMER_PREFIX: &str = "herald-retry-";

/// Tasks of webhooks that have more waiting than they may send at once, one subject per webhook
/// (`herald.lanes.<webhook_id>`). Each busy webhook's subject is read through its own durable
/// consumer, which hands out at most the webhook's cap at a time, so the rest wait in the
/// stream at no cost to anyone.
pub const LANES_STREAM: &str = "HERALD_LANES";
pub const LANES_SUBJECTS: &str = "herald.lanes.>";
/// Prefix of a lane's subject; the webhook id follows.
pub const LANE_SUBJECT_PREFIX: &str = "herald.lanes.";
/// Prefix of a lane's durable consumer (`herald-lane-<webhook_id>`).
pub const LANE_CONSUMER_PREFIX: &str = "herald-lane-";

/// The KV bucket holding one `WebhookSpec` per webhook id.
pub const WEBHOOKS_BUCKET: &str = "herald-webhooks";
/// The stream behind [`WEBHOOKS_BUCKET`], named by the KV convention `KV_<bucket>`.
pub const WEBHOOKS_BUCKET_STREAM: &str = "KV_herald-webhooks";
/// Subjects of [`WEBHOOKS_BUCKET_STREAM`], by the KV convention `$KV.<bucket>.>`.
pub const WEBHOOKS_BUCKET_SUBJECTS: &str = "$KV.herald-webhooks.>";

/// Durable consumer of [`EVENTS_STREAM`] shared by all worker replicas.
pub const ROUTER_CONSUMER: &str = "herald-router";
/// Durable consumer of [`DELIVERIES_STREAM`] shared by all worker replicas.
pub const SENDER_CONSUMER: &str = "herald-sender";
/// Durable consumer of [`OUTCOMES_STREAM`] shared by all registry replicas.
pub const OUTCOMES_CONSUMER: &str = "herald-outcomes";

/// Header names.
pub mod header {
    /// JetStream de-duplication key.
    pub const MSG_ID: &str = "Nats-Msg-Id";
    /// `application/protobuf` or `application/json`.
    pub const CONTENT_TYPE: &str = "Content-Type";
    /// W3C trace context, carried from the publisher to the webhook request.
    pub const TRACEPARENT: &str = "traceparent";
    /// On a retry's task: the `traceparent` of the attempt before, which the next attempt's
    /// span links to.
    pub const PREVIOUS_ATTEMPT: &str = "Herald-Previous-Attempt";
    /// Why a message was dead-lettered.
    pub const DEAD_REASON: &str = "Herald-Dead-Reason";
    /// The subject a dead-lettered message was originally published on.
    pub const DEAD_SUBJECT: &str = "Herald-Dead-Subject";
    /// Set when a dead letter is one outcome of a batch (`DeliveryOutcomes`): its index there.
    /// The payload is that one `DeliveryOutcome`.
    pub const DEAD_BATCH_INDEX: &str = "Herald-Dead-Batch-Index";
    /// Set when a dead letter could not keep its payload (it was too large), with its size.
    pub const DEAD_PAYLOAD_OMITTED: &str = "Herald-Dead-Payload-Omitted";
}

/// `events.<account_id>.<event_type>`; event types contain dots, so they span several tokens.
pub fn event_subject(account: &AccountId, event_type: &EventType) -> String {
    format!("events.{}.{}", account.as_str(), event_type.as_str())
}

/// `herald.deliveries.<webhook_id>`.
pub fn delivery_subject(webhook: &WebhookId) -> String {
    format!("herald.deliveries.{}", webhook.as_str())
}

/// `herald.lanes.<webhook_id>`: the lane of a busy webhook.
pub fn lane_subject(webhook: &WebhookId) -> String {
    format!("{LANE_SUBJECT_PREFIX}{}", webhook.as_str())
}

/// The webhook whose lane `subject` is.
pub fn lane_webhook(subject: &str) -> Option<WebhookId> {
    WebhookId::parse(subject.strip_prefix(LANE_SUBJECT_PREFIX)?).ok()
}

/// `herald-lane-<webhook_id>`: the durable consumer of a webhook's lane.
pub fn lane_consumer(webhook: &WebhookId) -> String {
    format!("{LANE_CONSUMER_PREFIX}{}", webhook.as_str())
}

/// `herald.outcomes.<webhook_id>`.
pub fn outcome_subject(webhook: &WebhookId) -> String {
    format!("herald.outcomes.{}", webhook.as_str())
}

/// Where a worker publishes several outcomes as one `DeliveryOutcomes` message: within
/// [`OUTCOMES_SUBJECTS`], and never a webhook's subject (webhook ids start `wh_`).
pub const OUTCOME_BATCH_SUBJECT: &str = "herald.outcomes.batch";

/// Notices that deliveries changed in the delivery log, on core NATS (not stored): the registry
/// replica that records a change announces it, and every replica's console updates the delivery
/// logs it has open. Subjects are `herald.log.<account_id>.<webhook_id>`; the payload is the
/// delivery ids, one per line.
pub const LOG_NOTICE_SUBJECTS: &str = "herald.log.>";

/// `herald.log.<account_id>.<webhook_id>`.
pub fn log_notice_subject(account: &AccountId, webhook: &WebhookId) -> String {
    format!("herald.log.{}.{}", account.as_str(), webhook.as_str())
}

/// The account and webhook of a [`log_notice_subject`].
pub fn parse_log_notice_subject(subject: &str) -> Option<(AccountId, WebhookId)> {
    let rest = subject.strip_prefix("herald.log.")?;
    let (account, webhook) = rest.split_once('.')?;
    Some((
        AccountId::parse(account).ok()?,
        WebhookId::parse(webhook).ok()?,
    ))
}

/// Where a dead-lettered message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadSource {
    /// A published event the router could not decode.
    Events,
    /// A delivery task the sender could not decode.
    Deliveries,
    /// A task in a retry delay line that could not be decoded.
    Retry,
    /// An outcome the registry could not decode.
    Outcomes,
}

impl DeadSource {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadSource::Events => "events",
            DeadSource::Deliveries => "deliveries",
            DeadSource::Retry => "retry",
            DeadSource::Outcomes => "outcomes",
        }
    }
}

/// `herald.dead.<source>`.
pub fn dead_subject(source: DeadSource) -> String {
    format!("herald.dead.{}", source.as_str())
}

/// The `Nats-Msg-Id` of a delivery task.
///
/// The first attempt uses the delivery id itself, so re-running a fan-out is deduplicated by
/// the stream; later attempts add the attempt number, because the same delivery comes back
/// through the stream once per retry and must not be dropped as a duplicate of the first.
pub fn delivery_msg_id(delivery_id: &str, attempt: u32) -> String {
    if attempt <= 1 {
        delivery_id.to_owned()
    } else {
        format!("{delivery_id}.{attempt}")
    }
}

#[cfg(test)]
mod tests {
    // Test inputs are literals known to be valid.
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn subjects() {
        let account = AccountId::parse("acct_01JDX7Z3J6Q8W7H7N1M9D5T0AB").unwrap();
        let webhook = WebhookId::parse("wh_01JDX7Z3J6Q8W7H7N1M9D5T0AB").unwrap();
        let event_type = EventType::parse("booking.refund.partial").unwrap();
        assert_eq!(
            event_subject(&account, &event_type),
            "events.acct_01JDX7Z3J6Q8W7H7N1M9D5T0AB.booking.refund.partial"
        );
        assert_eq!(
            delivery_subject(&webhook),
            "herald.deliveries.wh_01JDX7Z3J6Q8W7H7N1M9D5T0AB"
        );
        assert_eq!(
            outcome_subject(&webhook),
            "herald.outcomes.wh_01JDX7Z3J6Q8W7H7N1M9D5T0AB"
        );
        assert_eq!(dead_subject(DeadSource::Events), "herald.dead.events");
        assert_eq!(
            dead_subject(DeadSource::Deliveries),
            "herald.dead.deliveries"
        );
        let notice = log_notice_subject(&account, &webhook);
        assert_eq!(
            notice,
            "herald.log.acct_01JDX7Z3J6Q8W7H7N1M9D5T0AB.wh_01JDX7Z3J6Q8W7H7N1M9D5T0AB"
        );
        assert_eq!(
            parse_log_notice_subject(&notice),
            Some((account.clone(), webhook.clone()))
        );
        assert_eq!(parse_log_notice_subject("herald.log.acct_x.wh_y"), None);
        assert_eq!(parse_log_notice_subject(&delivery_subject(&webhook)), None);
    }

    #[test]
    fn subjects_fall_inside_their_streams() {
        let prefix = |pattern: &str| pattern.trim_end_matches('>').to_owned();
        assert!(dead_subject(DeadSource::Retry).starts_with(&prefix(DEAD_SUBJECTS)));
        assert!(WEBHOOKS_BUCKET_SUBJECTS.starts_with(&format!("$KV.{WEBHOOKS_BUCKET}.")));
        assert_eq!(WEBHOOKS_BUCKET_STREAM, format!("KV_{WEBHOOKS_BUCKET}"));
    }

    #[test]
    fn lanes_are_named_after_their_webhook() {
        let webhook = WebhookId::parse("wh_01JDX7Z3J6Q8W7H7N1M9D5T0AB").unwrap();
        let subject = lane_subject(&webhook);
        assert_eq!(subject, "herald.lanes.wh_01JDX7Z3J6Q8W7H7N1M9D5T0AB");
        assert!(subject.starts_with(LANES_SUBJECTS.trim_end_matches('>')));
        assert_eq!(lane_webhook(&subject), Some(webhook.clone()));
        assert_eq!(lane_webhook("herald.lanes.nope"), None);
        assert_eq!(lane_webhook(&delivery_subject(&webhook)), None);
        assert_eq!(
            lane_consumer(&webhook),
            "herald-lane-wh_01JDX7Z3J6Q8W7H7N1M9D5T0AB"
        );
    }

    #[test]
    fn delivery_message_ids() {
        assert_eq!(delivery_msg_id("dlv_1", 1), "dlv_1");
        assert_eq!(delivery_msg_id("dlv_1", 0), "dlv_1");
        assert_eq!(delivery_msg_id("dlv_1", 3), "dlv_1.3");
    }
}
