//! The delivery log in the console: the log table shared by the
//! Deliveries tab and a webhook's page, its live updates (server-sent
//! events), one delivery with its attempts, and redelivery.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::get;
use futures::{Stream, StreamExt as _};
use herald_core::{AccountId, DeliveryId, EventType, WebhookId};
use serde::Deserialize;
use tokio::sync::broadcast;

use super::accounts::account_id;
use super::errors::UiResult;
use super::forms::{Choice, UiQuery};
use super::session::{Flash, Posted, Viewer};
use super::view::{AccountView, Layout, Tab, account_path, iso, latency, when};
use super::{UiError, page, see_other};
use crate::live::{LogNotice, OpenLog};
use crate::principal::Principal;
use crate::service::ServiceError;
use crate::state::AppState;
use crate::store::{Delivery, DeliveryFilter, DeliveryState, Webhook, WebhookFilter};

/// Deliveries per page of the log.
pub const PAGE: u64 = 25;
/// How long the live log gathers notices before it reads their deliveries.
const GATHER: Duration = Duration::from_millis(250);
/// How often a quiet live log checks that its session still lives.
const RECHECK: Duration = Duration::from_secs(15);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/accounts/{account}/deliveries", get(tab))
        .route("/accounts/{account}/deliveries/{delivery}", get(show))
        .route(
            "/accounts/{account}/deliveries/{delivery}/redeliver",
            get(back_to_delivery).post(redeliver),
        )
        .route("/accounts/{account}/live", get(live))
}

/// The log's filters and page, from the query string. Empty values (a GET
/// form's unset selects) mean no filter.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct LogQuery {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub event_type: String,
    #[serde(default)]
    pub webhook: String,
    #[serde(default)]
    pub cursor: String,
}

impl LogQuery {
    fn state(&self) -> Option<DeliveryState> {
        STATES
            .iter()
            .find(|(value, _)| *value == self.status)
            .map(|(_, state)| *state)
    }

    fn event_type(&self) -> Option<EventType> {
        EventType::parse(self.event_type.trim()).ok()
    }

    fn webhook(&self) -> Option<WebhookId> {
        WebhookId::parse(self.webhook.trim()).ok()
    }

    fn filter(&self, webhook: Option<WebhookId>) -> DeliveryFilter {
        DeliveryFilter {
            webhook,
            state: self.state(),
            event_type: self.event_type().map(|t| t.to_string()),
            since: None,
            until: None,
        }
    }

    /// The filters as a query string, with `extra` pairs after them.
    fn query_string(&self, webhook: Option<&str>, extra: &[(&str, &str)]) -> String {
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        if let Some(webhook) = webhook {
            pairs.push(("webhook", webhook));
        }
        if self.state().is_some() {
            pairs.push(("status", &self.status));
        }
        if self.event_type().is_some() {
            pairs.push(("event_type", &self.event_type));
        }
        pairs.extend_from_slice(extra);
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    }
}

const STATES: [(&str, DeliveryState); 4] = [
    ("pending", DeliveryState::Pending),
    ("delivered", DeliveryState::Delivered),
    ("failed", DeliveryState::Failed),
    ("exhausted", DeliveryState::Exhausted),
];

fn state_label(state: DeliveryState) -> &'static str {
    match state {
        DeliveryState::Pending => "Pending",
        DeliveryState::Delivered => "Delivered",
        DeliveryState::Failed => "Failed, will retry",
        DeliveryState::Exhausted => "Exhausted",
    }
}

/// One row of the log table.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub id: String,
    pub href: String,
    /// The status's value, also its CSS class.
    pub status: &'static str,
    pub status_label: &'static str,
    pub event_type: String,
    pub event_id: String,
    pub webhook_name: String,
    pub attempts: u32,
    pub response: String,
    pub latency: String,
    pub created: String,
    pub created_iso: String,
}

impl DeliveryRow {
    fn new(delivery: &Delivery, webhook_name: String) -> Self {
        let response = if delivery.last_http_status > 0 {
            format!("HTTP {}", delivery.last_http_status)
        } else if delivery.last_error.is_empty() {
            "—".to_owned()
        } else {
            shorten(&delivery.last_error, 60)
        };
        Self {
            id: delivery.id.to_string(),
            href: account_path(&delivery.account, &format!("/deliveries/{}", delivery.id)),
            status: delivery.state.as_str(),
            status_label: state_label(delivery.state),
            event_type: delivery.event_type.clone(),
            event_id: delivery.event_id.clone(),
            webhook_name,
            attempts: delivery.attempts,
            response,
            latency: if delivery.attempts > 0 {
                latency(delivery.last_latency_ms)
            } else {
                "—".to_owned()
            },
            created: when(&delivery.created_at),
            created_iso: iso(&delivery.created_at),
        }
    }
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(max - 1).collect();
        format!("{cut}…")
    }
}

/// The log table, its filters and its pages.
#[derive(Debug)]
pub struct LogView {
    pub rows: Vec<DeliveryRow>,
    /// The account-wide log names each row's webhook.
    pub show_webhook: bool,
    pub statuses: Vec<Choice>,
    pub event_types: Vec<Choice>,
    pub webhooks: Vec<Choice>,
    /// Where the filter form goes.
    pub action: String,
    pub filtered: bool,
    pub next_page: Option<String>,
    /// The first page, when this is a later one.
    pub first_page: Option<String>,
    /// The live updates' source; only the first page is live.
    pub live_src: Option<String>,
    pub page_size: u64,
}

/// Names of the account's webhooks, for the account-wide log.
async fn webhook_names(
    state: &AppState,
    principal: &Principal,
    account: &AccountId,
) -> UiResult<HashMap<WebhookId, String>> {
    let page = state
        .list_webhooks(principal, account, &WebhookFilter::default(), None, 250)
        .await?;
    Ok(page.items.into_iter().map(|w| (w.id, w.name)).collect())
}

fn name_of(names: &HashMap<WebhookId, String>, id: &WebhookId) -> String {
    names
        .get(id)
        .cloned()
        .unwrap_or_else(|| format!("{id} (removed)"))
}

/// The log of one webhook (`webhook`), or of the whole account.
pub async fn log_view(
    state: &AppState,
    viewer: &Viewer,
    account: &AccountId,
    webhook: Option<&Webhook>,
    query: &LogQuery,
    base: &str,
) -> UiResult<LogView> {
    let principal = viewer.principal();
    let names = match webhook {
        Some(w) => HashMap::from([(w.id.clone(), w.name.clone())]),
        None => webhook_names(state, principal, account).await?,
    };
    let webhook_filter = match webhook {
        Some(w) => Some(w.id.clone()),
        None => query.webhook().filter(|id| names.contains_key(id)),
    };
    let cursor = (!query.cursor.is_empty()).then_some(query.cursor.as_str());
    let deliveries = state
        .list_deliveries(
            principal,
            account,
            &query.filter(webhook_filter.clone()),
            cursor,
            PAGE,
        )
        .await?;
    let catalogue = state.list_event_types().await?;
    let chosen_type = query
        .event_type()
        .map(|t| t.to_string())
        .unwrap_or_default();
    let filter_webhook = if webhook.is_some() {
        None
    } else {
        webhook_filter.as_ref().map(WebhookId::as_str)
    };
    let mut webhooks: Vec<Choice> = names
        .iter()
        .map(|(id, name)| {
            Choice::new(
                id.to_string(),
                name.clone(),
                webhook_filter.as_ref() == Some(id),
            )
        })
        .collect();
    webhooks.sort_by(|a, b| a.label.cmp(&b.label));
    let live_query = query.query_string(webhook_filter.as_ref().map(WebhookId::as_str), &[]);
    Ok(LogView {
        rows: deliveries
            .items
            .iter()
            .map(|d| DeliveryRow::new(d, name_of(&names, &d.webhook_id)))
            .collect(),
        show_webhook: webhook.is_none(),
        statuses: STATES
            .iter()
            .map(|(value, state)| {
                Choice::new(*value, state_label(*state), query.state() == Some(*state))
            })
            .collect(),
        event_types: catalogue
            .iter()
            .map(|t| Choice::new(t.name.clone(), t.name.clone(), t.name == chosen_type))
            .collect(),
        webhooks,
        action: base.to_owned(),
        filtered: query.state().is_some()
            || query.event_type().is_some()
            || filter_webhook.is_some(),
        next_page: deliveries.next_cursor.map(|c| {
            format!(
                "{base}?{}#log",
                query.query_string(filter_webhook, &[("cursor", &c)])
            )
        }),
        first_page: cursor
            .map(|_| format!("{base}?{}#log", query.query_string(filter_webhook, &[]))),
        live_src: cursor
            .is_none()
            .then(|| format!("{}?{live_query}", account_path(account, "/live"))),
        page_size: PAGE,
    })
}

// The Deliveries tab ---------------------------------------------------------

#[derive(Template)]
#[template(path = "deliveries.html")]
struct DeliveriesPage {
    layout: Layout,
    account: AccountView,
    log: LogView,
}

async fn tab(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(account): Path<String>,
    UiQuery(query): UiQuery<LogQuery>,
) -> UiResult<Response> {
    let account = account_id(&account)?;
    let owner = state.get_account(viewer.principal(), &account).await?;
    let base = account_path(&account, "/deliveries");
    let log = log_view(&state, &viewer, &account, None, &query, &base).await?;
    Ok(page(&DeliveriesPage {
        layout: Layout::new(format!("{} · Deliveries", owner.name), &viewer),
        account: AccountView::new(&owner, Tab::Deliveries, &viewer),
        log,
    }))
}

// One delivery ---------------------------------------------------------------

#[derive(Debug)]
struct AttemptView {
    number: u32,
    trigger: String,
    when: String,
    status: &'static str,
    status_label: &'static str,
    http: String,
    latency: String,
    error: String,
    headers: Vec<(String, String)>,
    response: String,
}

#[derive(Debug)]
struct DeliveryView {
    id: String,
    status: &'static str,
    status_label: &'static str,
    event_type: String,
    event_id: String,
    created: String,
    next_attempt: Option<String>,
    attempts: u32,
    webhook_name: String,
    webhook_href: Option<String>,
}

#[derive(Template)]
#[template(path = "delivery.html")]
struct DeliveryPage {
    layout: Layout,
    account: AccountView,
    delivery: DeliveryView,
    /// The request's body; none when the event's data was not kept.
    body: Option<String>,
    attempts: Vec<AttemptView>,
    redeliver_action: String,
    /// Why redelivery is not offered now, if it is not.
    redeliver_blocked: Option<String>,
    csrf: String,
}

async fn show(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((account, delivery)): Path<(String, String)>,
) -> UiResult<Response> {
    let account = account_id(&account)?;
    let id = DeliveryId::parse(&delivery).map_err(|_| UiError::NotFound("delivery"))?;
    let owner = state.get_account(viewer.principal(), &account).await?;
    let (delivery, attempts) = state
        .get_delivery(viewer.principal(), &account, &id)
        .await?;
    let flash = viewer.take_flash().await?;
    let webhook = match state
        .get_webhook(viewer.principal(), &account, &delivery.webhook_id)
        .await
    {
        Ok(webhook) => Some(webhook),
        Err(ServiceError::NotFound(_)) => None,
        Err(error) => return Err(error.into()),
    };
    let body = if delivery.payload_omitted {
        None
    } else {
        let event = crate::deliveries::event_of(&delivery).map_err(UiError::Internal)?;
        Some(event.webhook_body())
    };
    let redeliver_blocked = match (&webhook, delivery.state) {
        _ if delivery.payload_omitted => Some(
            "The event was too large to deliver and its data was not kept, so this delivery \
             cannot be sent again."
                .to_owned(),
        ),
        (None, _) => Some("The webhook has been removed.".to_owned()),
        (Some(w), _) if !w.enabled => {
            Some("The webhook is disabled; enable it to redeliver.".to_owned())
        }
        (_, DeliveryState::Failed) => Some(
            "A retry is scheduled; redeliver once the delivery is delivered or exhausted."
                .to_owned(),
        ),
        (_, DeliveryState::Pending) => Some("An attempt is on its way.".to_owned()),
        _ => None,
    };
    let view = DeliveryView {
        id: delivery.id.to_string(),
        status: delivery.state.as_str(),
        status_label: state_label(delivery.state),
        event_type: delivery.event_type.clone(),
        event_id: delivery.event_id.clone(),
        created: when(&delivery.created_at),
        next_attempt: delivery.next_attempt_at.as_ref().map(when),
        attempts: delivery.attempts,
        webhook_name: webhook.as_ref().map_or_else(
            || format!("{} (removed)", delivery.webhook_id),
            |w| w.name.clone(),
        ),
        webhook_href: webhook
            .as_ref()
            .map(|w| account_path(&w.account, &format!("/webhooks/{}", w.id))),
    };
    let attempts = attempts
        .into_iter()
        .rev()
        .map(|a| AttemptView {
            number: a.attempt,
            trigger: a.trigger,
            when: when(&a.attempted_at),
            status: a.state.as_str(),
            status_label: state_label(a.state),
            http: if a.http_status > 0 {
                a.http_status.to_string()
            } else {
                "no answer".to_owned()
            },
            latency: latency(a.latency_ms),
            error: a.error,
            headers: a.request_headers.into_iter().collect(),
            response: a.response_body,
        })
        .collect();
    Ok(page(&DeliveryPage {
        layout: Layout::new(format!("Delivery {}", delivery.id), &viewer)
            .with_flash(flash.as_ref()),
        account: AccountView::new(&owner, Tab::Deliveries, &viewer),
        delivery: view,
        body,
        attempts,
        redeliver_action: account_path(&account, &format!("/deliveries/{}/redeliver", delivery.id)),
        redeliver_blocked,
        csrf: viewer.csrf().to_owned(),
    }))
}

/// A visit to the redeliver address goes to the delivery's page.
async fn back_to_delivery(Path((account, delivery)): Path<(String, String)>) -> UiResult<Response> {
    let account = account_id(&account)?;
    let id = DeliveryId::parse(&delivery).map_err(|_| UiError::NotFound("delivery"))?;
    Ok(see_other(&account_path(
        &account,
        &format!("/deliveries/{id}"),
    )))
}

async fn redeliver(
    State(state): State<AppState>,
    Path((account, delivery)): Path<(String, String)>,
    Posted { viewer, .. }: Posted<serde::de::IgnoredAny>,
) -> UiResult<Response> {
    let account = account_id(&account)?;
    let id = DeliveryId::parse(&delivery).map_err(|_| UiError::NotFound("delivery"))?;
    let flash = match state.redeliver(viewer.principal(), &account, &id).await {
        Ok((_, attempt)) => Flash::notice(format!(
            "Sent again as attempt {attempt}, with the same webhook-id."
        )),
        Err(ServiceError::Conflict(message) | ServiceError::Unavailable(message)) => {
            Flash::error(message)
        }
        Err(error) => return Err(error.into()),
    };
    viewer.flash(&flash).await;
    Ok(see_other(&account_path(
        &account,
        &format!("/deliveries/{id}"),
    )))
}

// Live updates ---------------------------------------------------------------

#[derive(Template)]
#[template(path = "delivery_row.html")]
struct RowTemplate<'a> {
    row: &'a DeliveryRow,
    show_webhook: bool,
}

/// What an open log needs to turn notices into rows.
struct LiveLog {
    state: AppState,
    session_id: String,
    principal: Principal,
    account: AccountId,
    webhook: Option<WebhookId>,
    filter: LogQuery,
    names: HashMap<WebhookId, String>,
    notices: broadcast::Receiver<Arc<LogNotice>>,
    /// Counts this log against its session while it is open.
    _open: OpenLog,
}

impl LiveLog {
    fn wants(&self, notice: &LogNotice) -> bool {
        notice.account == self.account && self.webhook.as_ref().is_none_or(|w| *w == notice.webhook)
    }

    /// Whether the session that opened the log still lives: signing out or
    /// revoking the key closes the log.
    async fn session_live(&self) -> bool {
        match self
            .state
            .store
            .session_by_id(&self.session_id, &self.state.admin_key_hash)
            .await
        {
            Ok(session) => session.is_some(),
            Err(error) => {
                tracing::warn!(
                    error = format!("{:#}", anyhow::Error::from(error)),
                    "live log stops"
                );
                false
            }
        }
    }

    /// Waits for the next notices for this log and turns them into events;
    /// None when the log must close (session over, shutting down).
    async fn next_events(&mut self) -> Option<Vec<SseEvent>> {
        let mut ids: Vec<DeliveryId> = Vec::new();
        let mut lagged = false;
        // Wait for the first relevant notice, then gather for a moment; a log
        // that gets none (a quiet one, or one that sees only other accounts'
        // notices) still checks its session every RECHECK.
        let mut recheck_at = tokio::time::Instant::now() + RECHECK;
        loop {
            let Ok(received) = tokio::time::timeout_at(recheck_at, self.notices.recv()).await
            else {
                if self.session_live().await {
                    recheck_at = tokio::time::Instant::now() + RECHECK;
                    continue;
                }
                return None;
            };
            match received {
                Ok(notice) if self.wants(&notice) => {
                    ids.extend(notice.deliveries.iter().cloned());
                    break;
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    lagged = true;
                    break;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
        let deadline = tokio::time::Instant::now() + GATHER;
        while let Ok(received) = tokio::time::timeout_at(deadline, self.notices.recv()).await {
            match received {
                Ok(notice) if self.wants(&notice) => ids.extend(notice.deliveries.iter().cloned()),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => lagged = true,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
        if !self.session_live().await {
            return None;
        }
        if lagged {
            // Too many changes to follow one by one: the page reloads its log.
            return Some(vec![SseEvent::default().event("resync").data("")]);
        }
        ids.sort();
        ids.dedup();
        let deliveries = match self
            .state
            .deliveries_by_ids(&self.principal, &self.account, &ids)
            .await
        {
            Ok(deliveries) => deliveries,
            Err(error) => {
                tracing::warn!(error = %error, "live log cannot read deliveries");
                return None;
            }
        };
        let filter = self.filter.filter(self.webhook.clone());
        let events = deliveries
            .iter()
            .map(|delivery| {
                let shown = filter.state.is_none_or(|s| s == delivery.state)
                    && filter
                        .event_type
                        .as_ref()
                        .is_none_or(|t| *t == delivery.event_type);
                if !shown {
                    return SseEvent::default().event("drop").data(delivery.id.as_str());
                }
                let row = DeliveryRow::new(delivery, name_of(&self.names, &delivery.webhook_id));
                let html = RowTemplate {
                    row: &row,
                    show_webhook: self.webhook.is_none(),
                }
                .render()
                .unwrap_or_default();
                SseEvent::default()
                    .event("upsert")
                    .id(delivery.id.as_str())
                    .data(html)
            })
            .collect();
        Some(events)
    }
}

/// The log's changes as server-sent events: `upsert` carries a row's HTML,
/// `drop` the id of a row that no longer matches the filters, `resync` asks
/// the page to read its log again.
async fn live(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(account): Path<String>,
    UiQuery(query): UiQuery<LogQuery>,
) -> UiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let account = account_id(&account)?;
    let principal = viewer.principal().clone();
    state.get_account(&principal, &account).await?;
    let webhook = match query.webhook() {
        Some(id) => {
            state.get_webhook(&principal, &account, &id).await?;
            Some(id)
        }
        None => None,
    };
    let names = webhook_names(&state, &principal, &account).await?;
    let open = state
        .log_notices
        .open(&viewer.session.id)
        .ok_or(UiError::TooManyLiveLogs)?;
    let log = LiveLog {
        _open: open,
        notices: state.log_notices.subscribe(),
        session_id: viewer.session.id.clone(),
        state,
        principal,
        account,
        webhook,
        filter: query,
        names,
    };
    let stream = futures::stream::unfold(log, |mut log| async move {
        log.next_events().await.map(|events| (events, log))
    })
    .flat_map(futures::stream::iter)
    .map(Ok);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
