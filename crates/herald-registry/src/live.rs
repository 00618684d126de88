//! Live updates of the delivery log for the console.
//!
//! Whichever registry replica records a change (an outcome ingested, a test
//! event or a redelivery handed over) announces it on core NATS; every
//! replica follows those notices and hands them to the console's open
//! delivery logs. Notices are hints, not data: a page reads the deliveries
//! they name through the tenant-scoped service, and a lost notice only
//! means a change shows on the next page load.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt as _;
use herald_core::{AccountId, DeliveryId, WebhookId};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Notices buffered per open page before it is told it fell behind.
const BUFFER: usize = 1024;

/// Live logs one console session may follow at once. A page that shows a log
/// follows it over a connection of its own and reads the database at each
/// change; a few tabs are normal, a script opening hundreds is not.
pub const LIVE_LOGS_PER_SESSION: usize = 8;

/// How many live logs each console session follows.
#[derive(Debug, Clone, Default)]
struct OpenLogs(Arc<Mutex<HashMap<String, usize>>>);

impl OpenLogs {
    fn open(&self, session: &str) -> Option<OpenLog> {
        let mut open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(session.to_owned()).or_default();
        if *count >= LIVE_LOGS_PER_SESSION {
            return None;
        }
        *count += 1;
        Some(OpenLog {
            open: self.clone(),
            session: session.to_owned(),
        })
    }

    fn close(&self, session: &str) {
        let mut open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(session) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(session);
            }
        }
    }
}

/// Deliveries of one webhook that changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogNotice {
    pub account: AccountId,
    pub webhook: WebhookId,
    pub deliveries: Vec<DeliveryId>,
}

#[derive(Debug, Clone)]
pub struct LogNotices {
    nats: async_nats::Client,
    sender: broadcast::Sender<Arc<LogNotice>>,
    open: OpenLogs,
}

/// One live log, counted against its session until dropped (when its page
/// goes, or its session ends).
#[derive(Debug)]
pub struct OpenLog {
    open: OpenLogs,
    session: String,
}

impl Drop for OpenLog {
    fn drop(&mut self) {
        self.open.close(&self.session);
    }
}

impl LogNotices {
    pub fn new(nats: async_nats::Client) -> Self {
        let (sender, _) = broadcast::channel(BUFFER);
        Self {
            nats,
            sender,
            open: OpenLogs::default(),
        }
    }

    /// Counts a live log against `session`; `None` when the session already
    /// follows [`LIVE_LOGS_PER_SESSION`].
    pub fn open(&self, session: &str) -> Option<OpenLog> {
        self.open.open(session)
    }

    /// Every notice from now on, from every replica.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LogNotice>> {
        self.sender.subscribe()
    }

    /// Announces that one delivery changed.
    pub async fn announce(&self, account: &AccountId, webhook: &WebhookId, delivery: &DeliveryId) {
        self.announce_all([(account, webhook, delivery)]).await;
    }

    /// Announces changed deliveries, one notice per webhook. Best effort: a
    /// notice that cannot be sent is logged and dropped.
    pub async fn announce_all<'a>(
        &self,
        changes: impl IntoIterator<Item = (&'a AccountId, &'a WebhookId, &'a DeliveryId)>,
    ) {
        let mut by_webhook: BTreeMap<(&AccountId, &WebhookId), String> = BTreeMap::new();
        for (account, webhook, delivery) in changes {
            let ids = by_webhook.entry((account, webhook)).or_default();
            ids.push_str(delivery.as_str());
            ids.push('\n');
        }
        for ((account, webhook), ids) in by_webhook {
            let subject = herald_bus::names::log_notice_subject(account, webhook);
            if let Err(error) = self.nats.publish(subject, ids.into()).await {
                tracing::debug!(%error, "cannot announce a delivery log change");
            }
        }
    }

    /// Follows every replica's notices until `shutdown`, subscribing again
    /// after an interruption.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let subscribed = tokio::select! {
                () = shutdown.cancelled() => return,
                subscribed = self.nats.subscribe(herald_bus::names::LOG_NOTICE_SUBJECTS) => subscribed,
            };
            let mut subscription = match subscribed {
                Ok(subscription) => subscription,
                Err(error) => {
                    tracing::warn!(%error, "cannot follow delivery log notices; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            loop {
                let message = tokio::select! {
                    () = shutdown.cancelled() => return,
                    message = subscription.next() => message,
                };
                let Some(message) = message else { break };
                if let Some(notice) = parse(message.subject.as_str(), &message.payload) {
                    // No open page is not an error.
                    let _ = self.sender.send(Arc::new(notice));
                }
            }
        }
    }
}

fn parse(subject: &str, payload: &[u8]) -> Option<LogNotice> {
    let (account, webhook) = herald_bus::names::parse_log_notice_subject(subject)?;
    let deliveries = std::str::from_utf8(payload)
        .ok()?
        .lines()
        .filter_map(|line| DeliveryId::parse(line.trim()).ok())
        .collect::<Vec<_>>();
    (!deliveries.is_empty()).then_some(LogNotice {
        account,
        webhook,
        deliveries,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_session_holds_a_bounded_number_of_live_logs_and_gets_them_back() {
        let open = OpenLogs::default();
        let mut held: Vec<OpenLog> = (0..LIVE_LOGS_PER_SESSION)
            .map(|_| open.open("one").unwrap())
            .collect();
        assert!(open.open("one").is_none(), "past the cap");
        let other = open.open("two").expect("another session has its own");
        drop(other);
        assert!(
            !open.0.lock().unwrap().contains_key("two"),
            "nothing left behind"
        );
        held.pop();
        let again = open.open("one").expect("a closed log frees its place");
        assert!(open.open("one").is_none());
        drop(again);
        assert_eq!(
            open.0.lock().unwrap().get("one"),
            Some(&(LIVE_LOGS_PER_SESSION - 1))
        );
        held.clear();
        assert!(open.0.lock().unwrap().is_empty());
    }

    #[test]
    fn notices_parse_back() {
        let account = AccountId::new();
        let webhook = WebhookId::new();
        let delivery = DeliveryId::derive(&herald_core::EventId::generate(), &webhook);
        let subject = herald_bus::names::log_notice_subject(&account, &webhook);
        let payload = format!("{delivery}\nnot-an-id\n");
        assert_eq!(
            parse(&subject, payload.as_bytes()),
            Some(LogNotice {
                account: account.clone(),
                webhook: webhook.clone(),
                deliveries: vec![delivery],
            })
        );
        assert_eq!(parse(&subject, b"nothing useful"), None);
        assert_eq!(parse("herald.log.garbage", b""), None);
    }
}
