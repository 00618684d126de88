//! An account's webhooks: the Webhooks tab, the create and update form,
//! removal, and a webhook's own page (health, delivery log, test events,
//! secrets, and how to verify signatures).

use std::collections::BTreeSet;

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use herald_core::{AccountId, EventData, EventPattern, EventType, WebhookId, WebhookUrl};
use serde::Deserialize;

use super::accounts::account_id;
use super::chart::Chart;
use super::deliveries::{LogQuery, LogView, log_view};
use super::errors::UiResult;
use super::forms::{Choice, FieldErrors, UiQuery};
use super::session::{Flash, Posted, SecretsShown, Viewer};
use super::submission::{self, Submission};
use super::view::{AccountView, ConfirmPage, Layout, Tab, account_path, events_label, when};
use super::{UiError, page, render, see_other};
use crate::service::{DEFAULT_GRACE, ServiceError, WebhookChange, WebhookHealth, WebhookInput};
use crate::state::AppState;
use crate::store::{EventTypeRecord, Webhook, WebhookFilter};

/// Webhooks per page of the list.
const PAGE: u64 = 50;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/accounts/{account}/webhooks", get(list).post(create))
        .route("/accounts/{account}/webhooks/new", get(new_form))
        .route("/accounts/{account}/webhooks/{webhook}", get(show))
        .route(
            "/accounts/{account}/webhooks/{webhook}/edit",
            get(edit_form).post(update),
        )
        .route(
            "/accounts/{account}/webhooks/{webhook}/remove",
            get(confirm_remove).post(remove),
        )
        .route(
            "/accounts/{account}/webhooks/{webhook}/test",
            get(back_to_webhook).post(send_test),
        )
        .route(
            "/accounts/{account}/webhooks/{webhook}/secret/reveal",
            get(back_to_webhook).post(reveal),
        )
        .route(
            "/accounts/{account}/webhooks/{webhook}/secret/rotate",
            get(back_to_webhook).post(rotate),
        )
}

fn ids(account: &str, webhook: &str) -> UiResult<(AccountId, WebhookId)> {
    let account = account_id(account)?;
    let webhook = WebhookId::parse(webhook).map_err(|_| UiError::NotFound("webhook"))?;
    Ok((account, webhook))
}

/// A visit to an address that takes a form (a reload of a page answered by
/// one, say) goes to the webhook's page.
async fn back_to_webhook(Path((account, webhook)): Path<(String, String)>) -> UiResult<Response> {
    let (account, webhook) = ids(&account, &webhook)?;
    Ok(see_other(&account_path(
        &account,
        &format!("/webhooks/{webhook}"),
    )))
}

fn webhook_href(webhook: &Webhook, rest: &str) -> String {
    account_path(&webhook.account, &format!("/webhooks/{}{rest}", webhook.id))
}

// The list ---------------------------------------------------------------

#[derive(Debug)]
struct Health {
    text: String,
    /// `ok`, `warn`, `bad` or `idle`: the badge's colour.
    tone: &'static str,
}

impl Health {
    fn of(stats: Option<&WebhookHealth>) -> Self {
        let Some(stats) = stats else {
            return Self {
                text: "No deliveries in 24 h".into(),
                tone: "idle",
            };
        };
        let mut parts = vec![format!("{} delivered", stats.delivered)];
        if stats.failed > 0 {
            parts.push(format!("{} retrying", stats.failed));
        }
        if stats.exhausted > 0 {
            parts.push(format!("{} failed", stats.exhausted));
        }
        if stats.pending > 0 {
            parts.push(format!("{} pending", stats.pending));
        }
        let tone = if stats.exhausted > 0 {
            "bad"
        } else if stats.failed > 0 {
            "warn"
        } else {
            "ok"
        };
        Self {
            text: format!("{} (24 h)", parts.join(" · ")),
            tone,
        }
    }
}

#[derive(Debug)]
struct WebhookRow {
    id: String,
    name: String,
    url: String,
    events: String,
    enabled: bool,
    disabled_reason: Option<String>,
    health: Health,
    href: String,
    edit_href: String,
    remove_href: String,
}

/// A webhook's signing secrets, shown on purpose and once.
#[derive(Debug)]
struct ShownSecrets {
    heading: String,
    explanation: String,
    secrets: Vec<SecretLine>,
}

#[derive(Debug)]
struct SecretLine {
    id: String,
    text: String,
    note: String,
}

#[derive(Template)]
#[template(path = "webhooks.html")]
struct WebhooksPage {
    layout: Layout,
    account: AccountView,
    rows: Vec<WebhookRow>,
    next_page: Option<String>,
    shown: Option<ShownSecrets>,
    csrf: String,
}

#[derive(Debug, Deserialize)]
struct CursorQuery {
    cursor: Option<String>,
}

/// The secrets a flash asks to show, when it names `webhook`'s account.
async fn shown_secrets(
    state: &AppState,
    viewer: &Viewer,
    account: &AccountId,
    flash: Option<&Flash>,
) -> UiResult<Option<ShownSecrets>> {
    let Some(Flash::Secrets { webhook, why }) = flash else {
        return Ok(None);
    };
    let Ok(webhook) = WebhookId::parse(webhook) else {
        return Ok(None);
    };
    let hook = match state
        .get_webhook(viewer.principal(), account, &webhook)
        .await
    {
        Ok(hook) => hook,
        Err(ServiceError::NotFound(_)) => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    let secrets = state
        .webhook_secrets(viewer.principal(), account, &webhook)
        .await?;
    let (heading, explanation) = match why {
        SecretsShown::Created => (
            format!("“{}” is ready", hook.name),
            "Copy its signing secret into the receiving system now: it verifies every \
             delivery with it. Only people who can manage this account can reveal it \
             again, from the webhook's page.",
        ),
        SecretsShown::Rotated => (
            format!("New signing secret for “{}”", hook.name),
            "Copy the new secret now. Until the old one expires, deliveries carry a \
             signature from each, so the receiving system can switch without missing any.",
        ),
        SecretsShown::Revealed => (
            format!("Signing secrets of “{}”", hook.name),
            "Deliveries are signed with every secret listed here.",
        ),
    };
    Ok(Some(ShownSecrets {
        heading,
        explanation: explanation.to_owned(),
        secrets: secrets
            .into_iter()
            .enumerate()
            .map(|(i, secret)| SecretLine {
                id: format!("secret-{i}"),
                text: secret.secret.expose_whsec(),
                note: match secret.expires_at {
                    None => "current".to_owned(),
                    Some(at) => format!("previous, signs until {}", when(&at)),
                },
            })
            .collect(),
    }))
}

async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(account): Path<String>,
    UiQuery(query): UiQuery<CursorQuery>,
) -> UiResult<Response> {
    let account = account_id(&account)?;
    let owner = state.get_account(viewer.principal(), &account).await?;
    let flash = viewer.take_flash().await?;
    let shown = shown_secrets(&state, &viewer, &account, flash.as_ref()).await?;
    let webhooks = state
        .list_webhooks(
            viewer.principal(),
            &account,
            &WebhookFilter::default(),
            query.cursor.as_deref(),
            PAGE,
        )
        .await?;
    let health = state.recent_health(viewer.principal(), &account).await?;
    let rows = webhooks
        .items
        .iter()
        .map(|w| WebhookRow {
            id: w.id.to_string(),
            name: w.name.clone(),
            url: w.url.to_string(),
            events: events_label(&w.events),
            enabled: w.enabled,
            disabled_reason: w.disabled_reason.clone(),
            health: Health::of(health.get(&w.id)),
            href: webhook_href(w, ""),
            edit_href: webhook_href(w, "/edit"),
            remove_href: webhook_href(w, "/remove"),
        })
        .collect();
    let title = format!("{} · Webhooks", owner.name);
    Ok(page(&WebhooksPage {
        layout: Layout::new(title, &viewer).with_flash(flash.as_ref()),
        account: AccountView::new(&owner, Tab::Webhooks, &viewer),
        rows,
        next_page: webhooks.next_cursor.map(|c| {
            format!(
                "{}?{}",
                account_path(&account, "/webhooks"),
                serde_urlencoded::to_string([("cursor", c)]).unwrap_or_default()
            )
        }),
        shown,
        csrf: viewer.csrf().to_owned(),
    }))
}

// The form ----------------------------------------------------------------

/// The form's values, as typed: kept when it comes back with errors.
#[derive(Debug, Default, Clone, Deserialize)]
struct WebhookForm {
    #[serde(default)]
    name: String,
    /// A checkbox: present when checked.
    #[serde(default)]
    enabled: Option<String>,
    /// The entity (account) the webhook belongs to.
    #[serde(default)]
    account: String,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    url: String,
    /// The version an update is based on.
    #[serde(default)]
    version: String,
    /// The name of this showing of the create form (see [`submission`](super::submission)).
    #[serde(default)]
    submission: String,
}

/// The event choice that means every event.
const ALL_EVENTS: &str = "*";

impl WebhookForm {
    fn of(webhook: &Webhook) -> Self {
        let events = webhook.events.patterns();
        Self {
            name: webhook.name.clone(),
            enabled: webhook.enabled.then(|| "on".to_owned()),
            account: webhook.account.to_string(),
            events: if events.is_empty() {
                vec![ALL_EVENTS.to_owned()]
            } else {
                events.iter().map(|p| p.as_str().to_owned()).collect()
            },
            url: webhook.url.to_string(),
            version: webhook.version.to_string(),
            // An edit is not a create: sent twice, it changes nothing the second time.
            submission: String::new(),
        }
    }

    /// Parses what the service takes as typed values; what cannot be parsed
    /// is reported beside its field.
    fn parse(&self, errors: &mut FieldErrors) -> Option<(WebhookUrl, Vec<EventPattern>)> {
        // Checked here too, so that every field's error shows in one round.
        if let Err(ServiceError::Invalid(invalid)) = crate::service::webhook_name(&self.name) {
            errors.extend(invalid, form_field);
        }
        let url = if self.url.trim().is_empty() {
            errors.add(
                "url",
                "Enter the URL Herald should send events to, e.g. https://my.system.com/webhook",
            );
            None
        } else {
            match WebhookUrl::parse(self.url.trim()) {
                Ok(url) => Some(url),
                Err(error) => {
                    errors.add(
                        "url",
                        format!(
                            "That is not a URL Herald can send to ({error}); \
                             for example https://my.system.com/webhook"
                        ),
                    );
                    None
                }
            }
        };
        let events = if self.events.iter().any(|e| e == ALL_EVENTS) {
            if self.events.len() > 1 {
                errors.add(
                    "events",
                    "Choose either All events or specific events, not both.",
                );
                None
            } else {
                Some(Vec::new())
            }
        } else if self.events.is_empty() {
            errors.add("events", "Choose at least one event, or All events.");
            None
        } else {
            let parsed: Result<Vec<_>, _> =
                self.events.iter().map(|e| EventPattern::parse(e)).collect();
            match parsed {
                Ok(patterns) => Some(patterns),
                Err(error) => {
                    errors.add("events", error.to_string());
                    None
                }
            }
        };
        Some((url?, events?))
    }
}

/// Where the service's field names land on the form.
fn form_field(field: &str) -> Option<&'static str> {
    match field {
        "name" => Some("name"),
        "url" => Some("url"),
        f if f.starts_with("events") => Some("events"),
        _ => None,
    }
}

/// The event checkboxes: all events, wildcards over the catalogue's
/// groups, and each type.
#[derive(Debug)]
struct EventChoices {
    all: bool,
    groups: Vec<Choice>,
    types: Vec<Choice>,
}

impl EventChoices {
    fn new(catalogue: &[EventTypeRecord], selected: &[String]) -> Self {
        let is_selected = |value: &str| selected.iter().any(|s| s == value);
        // herald.* types are Herald's own (test events reach every webhook).
        let offered: Vec<&EventTypeRecord> = catalogue
            .iter()
            .filter(|t| !t.name.starts_with("herald."))
            .collect();
        let mut prefixes = BTreeSet::new();
        for t in offered.iter().filter(|t| !t.deprecated) {
            let mut prefix = String::new();
            let segments: Vec<&str> = t.name.split('.').collect();
            for segment in &segments[..segments.len().saturating_sub(1)] {
                if !prefix.is_empty() {
                    prefix.push('.');
                }
                prefix.push_str(segment);
                prefixes.insert(prefix.clone());
            }
        }
        let groups = prefixes
            .into_iter()
            .map(|prefix| {
                let count = offered
                    .iter()
                    .filter(|t| t.name.starts_with(&format!("{prefix}.")))
                    .count();
                let value = format!("{prefix}.*");
                let hint = if count == 1 {
                    format!("every {prefix} event, today 1 type and any added later")
                } else {
                    format!("every {prefix} event, today {count} types and any added later")
                };
                Choice::new(value.clone(), value.clone(), is_selected(&value)).with_hint(hint)
            })
            .collect::<Vec<_>>();
        let mut types: Vec<Choice> = offered
            .iter()
            // A deprecated type stays listed only for a webhook that has it.
            .filter(|t| !t.deprecated || is_selected(&t.name))
            .map(|t| {
                let hint = if t.deprecated {
                    format!("deprecated: {}", t.description)
                } else {
                    t.description.clone()
                };
                Choice::new(t.name.clone(), t.name.clone(), is_selected(&t.name)).with_hint(hint)
            })
            .collect();
        // A pattern the webhook has that the lists above do not offer
        // (set through the API) stays on the form, checked.
        for value in selected {
            let offered = value == ALL_EVENTS
                || groups.iter().any(|c| &c.value == value)
                || types.iter().any(|c| &c.value == value);
            if !offered {
                types.push(Choice::new(value.clone(), value.clone(), true));
            }
        }
        Self {
            all: is_selected(ALL_EVENTS),
            groups,
            types,
        }
    }
}

#[derive(Template)]
#[template(path = "webhook_form.html")]
struct WebhookFormPage {
    layout: Layout,
    account: AccountView,
    heading: String,
    action: String,
    cancel_href: String,
    form: WebhookForm,
    errors: FieldErrors,
    entities: Vec<Choice>,
    /// A webhook stays in the account it was created in.
    entity_locked: bool,
    events: EventChoices,
    csrf: String,
}

impl WebhookFormPage {
    fn enabled(&self) -> bool {
        self.form.enabled.is_some()
    }
}

/// Renders the form with `form`'s values and `errors`.
#[allow(clippy::too_many_arguments)] // One call per form state; a struct would only rename them.
async fn form_page(
    state: &AppState,
    viewer: &Viewer,
    account: &AccountId,
    editing: Option<&Webhook>,
    form: WebhookForm,
    errors: FieldErrors,
    layout: Layout,
    status: StatusCode,
) -> UiResult<Response> {
    let owner = state.get_account(viewer.principal(), account).await?;
    let catalogue = state.list_event_types().await?;
    // The accounts the user may see; a long list is cut to the first
    // page, plus the current one.
    let visible = state
        .visible_accounts(viewer.principal(), None, 250)
        .await?;
    let mut entities: Vec<Choice> = visible
        .items
        .iter()
        .map(|a| {
            Choice::new(
                a.id.to_string(),
                a.name.clone(),
                a.id.as_str() == form.account,
            )
        })
        .collect();
    if !entities.iter().any(|c| c.value == owner.id.as_str()) {
        entities.insert(
            0,
            Choice::new(owner.id.to_string(), owner.name.clone(), true),
        );
    }
    let (heading, action, cancel_href) = match editing {
        Some(w) => (
            format!("Update “{}”", w.name),
            webhook_href(w, "/edit"),
            account_path(account, "/webhooks"),
        ),
        None => (
            "Create new webhook".to_owned(),
            account_path(account, "/webhooks"),
            account_path(account, "/webhooks"),
        ),
    };
    let events = EventChoices::new(&catalogue, &form.events);
    let page = WebhookFormPage {
        layout,
        account: AccountView::new(&owner, Tab::Webhooks, viewer),
        heading,
        action,
        cancel_href,
        form,
        errors,
        entities,
        entity_locked: editing.is_some(),
        events,
        csrf: viewer.csrf().to_owned(),
    };
    Ok(render(status, &page))
}

async fn new_form(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(account): Path<String>,
) -> UiResult<Response> {
    let account = account_id(&account)?;
    let form = WebhookForm {
        enabled: Some("on".into()),
        account: account.to_string(),
        submission: submission::fresh(),
        ..WebhookForm::default()
    };
    let layout = Layout::new("Create new webhook", &viewer);
    form_page(
        &state,
        &viewer,
        &account,
        None,
        form,
        FieldErrors::default(),
        layout,
        StatusCode::OK,
    )
    .await
}

async fn create(
    State(state): State<AppState>,
    Path(account): Path<String>,
    Posted { viewer, form }: Posted<WebhookForm>,
) -> UiResult<Response> {
    let account = account_id(&account)?;
    let mut errors = FieldErrors::default();
    let target = AccountId::parse(form.account.trim());
    if target.is_err() {
        errors.add("account", "Choose the account this webhook belongs to.");
    }
    if let (Some((url, events)), Ok(target)) = (form.parse(&mut errors), &target) {
        // Sent twice, the form creates once; the second answer is the first's: the list,
        // where the flash the first left shows the new webhook's secret.
        let content = format!("{target}\n{form:?}");
        let claim = match Submission::begin(&state, &viewer, "webhook", &form.submission, &content)
            .await?
        {
            Submission::Repeated => return Ok(see_other(&account_path(target, "/webhooks"))),
            Submission::Fresh(claim) => claim,
        };
        let input = WebhookInput {
            name: form.name.clone(),
            description: None,
            enabled: form.enabled.is_some(),
            events,
            url,
            secret: None,
        };
        let create = {
            let (state, viewer, target) = (state.clone(), viewer.clone(), target.clone());
            async move {
                state
                    .create_webhook(viewer.principal(), &target, input)
                    .await
            }
        };
        let made = claim
            .run(viewer.clone(), create, |(webhook, _)| {
                let id = webhook.id.to_string();
                let flash = Flash::Secrets {
                    webhook: id.clone(),
                    why: SecretsShown::Created,
                };
                (id, Some(flash))
            })
            .await?;
        match made {
            Ok(_) => return Ok(see_other(&account_path(target, "/webhooks"))),
            Err(ServiceError::Invalid(invalid)) => errors.extend(invalid, form_field),
            Err(ServiceError::NotFound("account")) => {
                errors.add("account", "Choose one of the accounts listed.");
            }
            Err(error) => return Err(error.into()),
        }
    }
    let layout = Layout::new("Create new webhook", &viewer);
    let form = if form.submission.is_empty() {
        WebhookForm {
            submission: submission::fresh(),
            ..form
        }
    } else {
        form
    };
    form_page(
        &state,
        &viewer,
        &account,
        None,
        form,
        errors,
        layout,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await
}

async fn edit_form(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((account, webhook)): Path<(String, String)>,
) -> UiResult<Response> {
    let (account, webhook) = ids(&account, &webhook)?;
    let hook = state
        .get_webhook(viewer.principal(), &account, &webhook)
        .await?;
    let layout = Layout::new(format!("Update {}", hook.name), &viewer);
    form_page(
        &state,
        &viewer,
        &account,
        Some(&hook),
        WebhookForm::of(&hook),
        FieldErrors::default(),
        layout,
        StatusCode::OK,
    )
    .await
}

async fn update(
    State(state): State<AppState>,
    Path((account, webhook)): Path<(String, String)>,
    Posted { viewer, form }: Posted<WebhookForm>,
) -> UiResult<Response> {
    let (account, webhook) = ids(&account, &webhook)?;
    let hook = state
        .get_webhook(viewer.principal(), &account, &webhook)
        .await?;
    let layout = Layout::new(format!("Update {}", hook.name), &viewer);
    let mut errors = FieldErrors::default();
    // The entity select is not sent (a webhook stays in its account).
    let form = WebhookForm {
        account: hook.account.to_string(),
        ..form
    };
    let Ok(version) = form.version.trim().parse::<u64>() else {
        return Err(UiError::BadForm(
            "the form lost track of the webhook's version".into(),
        ));
    };
    if let Some((url, events)) = form.parse(&mut errors) {
        let change = WebhookChange {
            name: Some(form.name.clone()),
            enabled: Some(form.enabled.is_some()),
            events: Some(events),
            url: Some(url),
            description: None,
        };
        match state
            .update_webhook(
                viewer.principal(),
                &account,
                &webhook,
                Some(version),
                change,
            )
            .await
        {
            Ok(updated) => {
                viewer
                    .flash(&Flash::notice(format!("“{}” saved.", updated.name)))
                    .await;
                return Ok(see_other(&account_path(&account, "/webhooks")));
            }
            Err(ServiceError::Invalid(invalid)) => errors.extend(invalid, form_field),
            Err(ServiceError::Stale { .. }) => {
                // Show what is there now; the user makes the change again.
                let current = state
                    .get_webhook(viewer.principal(), &account, &webhook)
                    .await?;
                let layout = layout.with_error(
                    "Someone else changed this webhook while you were editing it. The form \
                     now shows its current values: make your change again and save.",
                );
                return form_page(
                    &state,
                    &viewer,
                    &account,
                    Some(&current),
                    WebhookForm::of(&current),
                    FieldErrors::default(),
                    layout,
                    StatusCode::CONFLICT,
                )
                .await;
            }
            Err(error) => return Err(error.into()),
        }
    }
    form_page(
        &state,
        &viewer,
        &account,
        Some(&hook),
        form,
        errors,
        layout,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await
}

// Removal ----------------------------------------------------------------

async fn confirm_remove(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((account, webhook)): Path<(String, String)>,
) -> UiResult<Response> {
    let (account, webhook) = ids(&account, &webhook)?;
    let owner = state.get_account(viewer.principal(), &account).await?;
    let hook = state
        .get_webhook(viewer.principal(), &account, &webhook)
        .await?;
    Ok(page(&ConfirmPage {
        layout: Layout::new(format!("Remove {}", hook.name), &viewer),
        account: AccountView::new(&owner, Tab::Webhooks, &viewer),
        heading: format!("Remove “{}”?", hook.name),
        message: format!(
            "Deliveries to {} stop at once. Its delivery log stays.",
            hook.url
        ),
        action: webhook_href(&hook, "/remove"),
        confirm_label: "OK, remove it",
        cancel_href: account_path(&account, "/webhooks"),
        csrf: viewer.csrf().to_owned(),
    }))
}

async fn remove(
    State(state): State<AppState>,
    Path((account, webhook)): Path<(String, String)>,
    Posted { viewer, .. }: Posted<serde::de::IgnoredAny>,
) -> UiResult<Response> {
    let (account, webhook) = ids(&account, &webhook)?;
    let hook = state
        .get_webhook(viewer.principal(), &account, &webhook)
        .await?;
    state
        .delete_webhook(viewer.principal(), &account, &webhook)
        .await?;
    viewer
        .flash(&Flash::notice(format!("“{}” removed.", hook.name)))
        .await;
    Ok(see_other(&account_path(&account, "/webhooks")))
}

// The webhook's page -------------------------------------------------------

/// The test event form, as typed.
#[derive(Debug, Default, Clone, Deserialize)]
struct TestForm {
    #[serde(default)]
    event_type: String,
    #[serde(default)]
    payload: String,
}

#[derive(Debug)]
struct TestView {
    event_types: Vec<Choice>,
    payload: String,
    errors: FieldErrors,
    action: String,
}

#[derive(Debug)]
struct WebhookView {
    id: String,
    name: String,
    url: String,
    events: String,
    enabled: bool,
    disabled_reason: Option<String>,
    version: u64,
    created: String,
    updated: String,
    edit_href: String,
    remove_href: String,
    reveal_action: String,
    rotate_action: String,
}

#[derive(Template)]
#[template(path = "webhook.html")]
struct WebhookPage {
    layout: Layout,
    account: AccountView,
    webhook: WebhookView,
    shown: Option<ShownSecrets>,
    chart: Chart,
    log: LogView,
    test: TestView,
    graces: Vec<Choice>,
    csrf: String,
}

/// An example `data` per event type, for the test form.
pub fn example_payload(event_type: &str) -> &'static str {
    match event_type {
        "booking.created" => {
            r#"{"booking_id": "bk_1042", "guest": "Ada Lovelace", "check_in": "2026-12-24", "check_out": "2026-12-27", "total": {"amount": "420.00", "currency": "EUR"}}"#
        }
        "booking.updated" => {
            r#"{"booking_id": "bk_1042", "changed": ["check_out"], "check_out": "2026-12-28"}"#
        }
        "booking.cancelled" => r#"{"booking_id": "bk_1042", "reason": "guest_request"}"#,
        "booking.failed" => r#"{"booking_id": "bk_1042", "reason": "payment_declined"}"#,
        "booking.refund.partial" => {
            r#"{"booking_id": "bk_1042", "refund": {"amount": "100.00", "currency": "EUR"}}"#
        }
        "booking.refund.full" => {
            r#"{"booking_id": "bk_1042", "refund": {"amount": "420.00", "currency": "EUR"}}"#
        }
        "payment.succeeded" => {
            r#"{"payment_id": "pay_311", "booking_id": "bk_1042", "amount": "420.00", "currency": "EUR"}"#
        }
        "payment.failed" => {
            r#"{"payment_id": "pay_311", "booking_id": "bk_1042", "reason": "card_declined"}"#
        }
        _ => r#"{"message": "This is a test event sent by Herald."}"#,
    }
}

const TEST_EVENT_TYPE: &str = "herald.test";

fn graces(selected_seconds: u64) -> Vec<Choice> {
    [
        (0, "Retire the old secret now"),
        (3600, "1 hour"),
        (86_400, "24 hours"),
        (604_800, "7 days"),
    ]
    .into_iter()
    .map(|(seconds, label)| Choice::new(seconds.to_string(), label, seconds == selected_seconds))
    .collect()
}

#[allow(clippy::too_many_arguments)] // The page's parts, each from its own request.
async fn webhook_page(
    state: &AppState,
    viewer: &Viewer,
    account: &AccountId,
    webhook: &WebhookId,
    query: &LogQuery,
    test: TestForm,
    test_errors: FieldErrors,
    layout_notice: Option<&Flash>,
    status: StatusCode,
) -> UiResult<Response> {
    let owner = state.get_account(viewer.principal(), account).await?;
    let hook = state
        .get_webhook(viewer.principal(), account, webhook)
        .await?;
    let shown = shown_secrets(state, viewer, account, layout_notice).await?;
    let hours = state
        .hourly_health(viewer.principal(), account, webhook)
        .await?;
    let base = webhook_href(&hook, "");
    let log = log_view(state, viewer, account, Some(&hook), query, &base).await?;
    let catalogue = state.list_event_types().await?;
    let chosen = if test.event_type.is_empty() {
        TEST_EVENT_TYPE.to_owned()
    } else {
        test.event_type.clone()
    };
    let payload = if test.payload.is_empty() {
        example_payload(&chosen).to_owned()
    } else {
        test.payload
    };
    let event_types = catalogue
        .iter()
        .filter(|t| !t.deprecated)
        .map(|t| {
            Choice::new(t.name.clone(), t.name.clone(), t.name == chosen)
                .with_hint(example_payload(&t.name))
        })
        .collect();
    let mut layout = Layout::new(hook.name.clone(), viewer).with_flash(layout_notice);
    if !test_errors.is_empty() {
        layout = layout.with_error("The test event was not sent: see the form below.");
    }
    let view = WebhookView {
        id: hook.id.to_string(),
        name: hook.name.clone(),
        url: hook.url.to_string(),
        events: events_label(&hook.events),
        enabled: hook.enabled,
        disabled_reason: hook.disabled_reason.clone(),
        version: hook.version,
        created: when(&hook.created_at),
        updated: when(&hook.updated_at),
        edit_href: webhook_href(&hook, "/edit"),
        remove_href: webhook_href(&hook, "/remove"),
        reveal_action: webhook_href(&hook, "/secret/reveal"),
        rotate_action: webhook_href(&hook, "/secret/rotate"),
    };
    let page = WebhookPage {
        layout,
        account: AccountView::new(&owner, Tab::Webhooks, viewer),
        webhook: view,
        shown,
        chart: Chart::new(&hours),
        log,
        test: TestView {
            event_types,
            payload,
            errors: test_errors,
            action: webhook_href(&hook, "/test"),
        },
        graces: graces(DEFAULT_GRACE.as_secs()),
        csrf: viewer.csrf().to_owned(),
    };
    Ok(render(status, &page))
}

async fn show(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((account, webhook)): Path<(String, String)>,
    UiQuery(query): UiQuery<LogQuery>,
    headers: axum::http::HeaderMap,
) -> UiResult<Response> {
    let (account, webhook) = ids(&account, &webhook)?;
    // The live log re-reading itself leaves the one-time notice alone.
    let flash = if headers.contains_key("herald-resync") {
        None
    } else {
        viewer.take_flash().await?
    };
    webhook_page(
        &state,
        &viewer,
        &account,
        &webhook,
        &query,
        TestForm::default(),
        FieldErrors::default(),
        flash.as_ref(),
        StatusCode::OK,
    )
    .await
}

async fn send_test(
    State(state): State<AppState>,
    Path((account, webhook)): Path<(String, String)>,
    Posted { viewer, form }: Posted<TestForm>,
) -> UiResult<Response> {
    let (account, webhook) = ids(&account, &webhook)?;
    let mut errors = FieldErrors::default();
    let event_type = EventType::parse(form.event_type.trim())
        .map_err(|e| errors.add("event_type", e.to_string()))
        .ok();
    let data = EventData::parse(form.payload.trim())
        .map_err(|e| errors.add("payload", e.to_string()))
        .ok();
    if let (Some(event_type), Some(data)) = (event_type, data) {
        match state
            .send_test(
                viewer.principal(),
                &account,
                &webhook,
                Some(event_type),
                Some(data),
            )
            .await
        {
            Ok(delivery) => {
                viewer
                    .flash(&Flash::notice(format!(
                        "Test event sent: delivery {} is on its way.",
                        delivery.id
                    )))
                    .await;
                return Ok(see_other(&account_path(
                    &account,
                    &format!("/webhooks/{webhook}#log"),
                )));
            }
            Err(ServiceError::Invalid(invalid)) => errors.extend(invalid, |field| match field {
                "event_type" => Some("event_type"),
                _ => Some("payload"),
            }),
            Err(ServiceError::Conflict(message)) => errors.add("event_type", message),
            Err(error) => return Err(error.into()),
        }
    }
    webhook_page(
        &state,
        &viewer,
        &account,
        &webhook,
        &LogQuery::default(),
        form,
        errors,
        None,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await
}

async fn reveal(
    State(state): State<AppState>,
    Path((account, webhook)): Path<(String, String)>,
    Posted { viewer, .. }: Posted<serde::de::IgnoredAny>,
) -> UiResult<Response> {
    let (account, webhook) = ids(&account, &webhook)?;
    // Checked here so that a foreign webhook is a 404, not an empty page.
    state
        .get_webhook(viewer.principal(), &account, &webhook)
        .await?;
    tracing::info!(%webhook, "signing secrets revealed in the console");
    viewer
        .flash(&Flash::Secrets {
            webhook: webhook.to_string(),
            why: SecretsShown::Revealed,
        })
        .await;
    Ok(see_other(&account_path(
        &account,
        &format!("/webhooks/{webhook}#secrets"),
    )))
}

#[derive(Debug, Deserialize)]
struct RotateForm {
    #[serde(default)]
    grace_period_seconds: String,
}

async fn rotate(
    State(state): State<AppState>,
    Path((account, webhook)): Path<(String, String)>,
    Posted { viewer, form }: Posted<RotateForm>,
) -> UiResult<Response> {
    let (account, webhook) = ids(&account, &webhook)?;
    let grace = form
        .grace_period_seconds
        .trim()
        .parse::<u64>()
        .map(std::time::Duration::from_secs)
        .map_err(|_| UiError::BadForm("choose how long the old secret keeps signing".into()))?;
    state
        .rotate_secret(viewer.principal(), &account, &webhook, None, Some(grace))
        .await?;
    viewer
        .flash(&Flash::Secrets {
            webhook: webhook.to_string(),
            why: SecretsShown::Rotated,
        })
        .await;
    Ok(see_other(&account_path(
        &account,
        &format!("/webhooks/{webhook}#secrets"),
    )))
}
