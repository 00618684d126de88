//! The router: turns each published event into one delivery task per matching webhook.
//!
//! An event is acknowledged only once every one of its tasks is stored, so a crash mid-fan-out
//! leads to a redelivery of the event, and the derived delivery ids make the repeated fan-out a
//! no-op for the tasks already stored.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};
use chrono::{DateTime, Utc};
use futures::future::join_all;
use herald_bus::headers::{content_type, set_traceparent, traceparent};
use herald_bus::names::{delivery_msg_id, delivery_subject, event_subject, header, lane_subject};
use herald_bus::{DeadSource, dead_letter};
use herald_core::{DeliveryId, Event};
use herald_proto::deliveries::v1::{DeliveryTask, Trigger};
use herald_proto::{CONTENT_TYPE_PROTOBUF, decode_event, encode_event};
use tokio::sync::OwnedSemaphorePermit;

use crate::attempt::new_traceparent;
use crate::counters::Counters;
use crate::index::SharedIndex;
use crate::lanes::LaneOpener;
use crate::shutdown::{Stopping, ack, nak};
use crate::task::{self, msg_id};

/// How long a failed fan-out waits before the event is tried again; long enough not to spin
/// through a NATS outage, short enough that events are not noticeably late after one.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Why routing one event failed. The event is handed back and routed again.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("cannot publish a delivery task to {subject}: {source}")]
    Publish {
        subject: String,
        #[source]
        source: async_nats::Error,
    },
    #[error("cannot dead-letter an undecodable event: {0}")]
    DeadLetter(#[from] herald_bus::PublishError),
}

/// Shared state of the router's handlers.
#[derive(Debug)]
pub struct Router {
    pub js: jetstream::Context,
    pub index: SharedIndex,
    /// A webhook whose lane is open here gets its new tasks straight in the lane, behind its
    /// backlog, instead of through the shared consumer and a move.
    pub lanes: LaneOpener,
    pub counters: Arc<Counters>,
    pub stopping: Stopping,
}

impl Router {
    /// Routes one event and settles its message.
    pub async fn handle(
        self: Arc<Self>,
        message: jetstream::Message,
        _permit: OwnedSemaphorePermit,
    ) {
        let routed = tokio::select! {
            routed = self.route(&message) => routed,
            () = self.stopping.hard.cancelled() => {
                nak(&message, None, &self.counters).await;
                return;
            }
        };
        match routed {
            Ok(()) => ack(&message).await,
            Err(err) => {
                tracing::warn!(subject = %message.subject, %err, "routing failed; the event will be routed again");
                nak(&message, Some(RETRY_DELAY), &self.counters).await;
            }
        }
    }

    async fn route(&self, message: &jetstream::Message) -> Result<(), RouteError> {
        let headers = message.headers.as_ref();
        let received_at = message
            .info()
            .map(|info| DateTime::<Utc>::from(SystemTime::from(info.published)))
            .unwrap_or_else(|_| Utc::now());
        let decoded = decode_event(
            headers.and_then(content_type),
            &message.payload,
            received_at,
        )
        .map_err(|err| err.to_string())
        .and_then(|event| {
            // The subject is what NATS permissions guard: a publisher allowed only
            // `events.<its account>.>` must not reach another account's webhooks by
            // naming it in the payload.
            let expected = event_subject(&event.account, &event.event_type);
            if message.subject.as_str() == expected {
                Ok(event)
            } else {
                Err(format!(
                    "subject {} does not match the event's account and type (expected {expected})",
                    message.subject
                ))
            }
        });
        let event = match decoded {
            Ok(event) => event,
            Err(reason) => {
                tracing::warn!(subject = %message.subject, %reason, "undecodable event dead-lettered");
                dead_letter(
                    &self.js,
                    DeadSource::Events,
                    &reason,
                    &message.subject,
                    headers,
                    message.payload.clone(),
                )
                .await?;
                self.counters.dead(1);
                return Ok(());
            }
        };

        let matching = self.index.matching(&event.account, &event.event_type);
        if matching.is_empty() {
            self.counters.events_unmatched(1);
            self.counters.events_routed(1);
            return Ok(());
        }
        // One trace for all of the event's deliveries, also when the publisher sent none.
        let traceparent = headers
            .and_then(traceparent)
            .map_or_else(new_traceparent, str::to_owned);
        let tasks = matching.iter().map(|subscription| {
            let delivery_id = DeliveryId::derive(&event.id, &subscription.id);
            (subscription.id.clone(), delivery_id)
        });
        self.fan_out(&event, tasks, &traceparent).await?;
        self.counters.events_routed(1);
        Ok(())
    }

    /// Publishes every task, pipelined, then waits for all acknowledgements. A task goes to the
    /// deliveries stream, or to its webhook's lane while that is open here.
    async fn fan_out(
        &self,
        event: &Event,
        tasks: impl Iterator<Item = (herald_core::WebhookId, DeliveryId)>,
        traceparent: &str,
    ) -> Result<(), RouteError> {
        let proto_event = encode_event(event);
        let mut pending = Vec::new();
        let mut laned = Vec::new();
        for (webhook, delivery_id) in tasks {
            let id = delivery_msg_id(delivery_id.as_str(), 1);
            // Under the id the sender would move it with, so the two ways in are one step.
            let (subject, id) = if self.lanes.is_open(&webhook) {
                laned.push(webhook.clone());
                (lane_subject(&webhook), msg_id::lane(&id))
            } else {
                (delivery_subject(&webhook), id)
            };
            let payload = task::encode(&DeliveryTask {
                delivery_id: delivery_id.to_string(),
                webhook_id: webhook.to_string(),
                event: Some(proto_event.clone()),
                attempt: 1,
                not_before: None,
                trigger: Trigger::Event as i32,
            });
            let mut headers = HeaderMap::new();
            headers.insert(header::MSG_ID, id.as_str());
            headers.insert(header::CONTENT_TYPE, CONTENT_TYPE_PROTOBUF);
            set_traceparent(&mut headers, traceparent);
            let publish = PublishMessage::build().headers(headers).payload(payload);
            let ack = self
                .js
                .send_publish(subject.clone(), publish)
                .await
                .map_err(|err| RouteError::Publish {
                    subject: subject.clone(),
                    source: err.into(),
                })?;
            pending.push(async move { (subject, ack.await) });
        }
        for (subject, acked) in join_all(pending).await {
            match acked {
                Ok(ack) if ack.duplicate => self.counters.tasks_duplicate(1),
                Ok(_) => self.counters.tasks_published(1),
                Err(err) => {
                    return Err(RouteError::Publish {
                        subject,
                        source: err.into(),
                    });
                }
            }
        }
        self.counters.laned(laned.len() as u64);
        for webhook in &laned {
            self.lanes.stored(webhook);
        }
        Ok(())
    }
}
