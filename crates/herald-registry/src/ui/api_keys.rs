//! An account's API keys (the admin's tab): create one, shown once; revoke.

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use herald_core::ApiKeyId;
use secrecy::ExposeSecret as _;
use serde::Deserialize;

use super::accounts::account_id;
use super::errors::UiResult;
use super::session::{Flash, Posted, Viewer};
use super::submission::{self, Submission};
use super::view::{AccountView, ConfirmPage, Layout, Tab, account_path, when};
use super::{UiError, page, render, see_other};
use crate::service::ServiceError;
use crate::state::AppState;
use crate::store::Account;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/accounts/{account}/api-keys", get(list).post(create))
        .route(
            "/accounts/{account}/api-keys/{key}/revoke",
            get(confirm_revoke).post(revoke),
        )
}

#[derive(Debug)]
struct KeyRow {
    name: String,
    prefix: String,
    created: String,
    revoked: Option<String>,
    revoke_href: String,
}

#[derive(Template)]
#[template(path = "api_keys.html")]
struct KeysPage {
    layout: Layout,
    account: AccountView,
    keys: Vec<KeyRow>,
    new_name: String,
    name_error: Option<String>,
    /// A key just created: shown this once.
    created: Option<String>,
    /// The name of this showing of the create form (see [`submission`](super::submission)).
    submission: String,
    csrf: String,
}

async fn keys_page(
    state: &AppState,
    viewer: &Viewer,
    owner: &Account,
    layout: Layout,
    new_name: String,
    name_error: Option<String>,
    created: Option<String>,
) -> UiResult<KeysPage> {
    let keys = state.list_api_keys(viewer.principal(), &owner.id).await?;
    Ok(KeysPage {
        layout,
        account: AccountView::new(owner, Tab::ApiKeys, viewer),
        keys: keys
            .iter()
            .rev()
            .map(|k| KeyRow {
                name: k.name.clone(),
                prefix: k.prefix.clone(),
                created: when(&k.created_at),
                revoked: k.revoked_at.as_ref().map(when),
                revoke_href: account_path(&owner.id, &format!("/api-keys/{}/revoke", k.id)),
            })
            .collect(),
        new_name,
        name_error,
        created,
        submission: submission::fresh(),
        csrf: viewer.csrf().to_owned(),
    })
}

async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(account): Path<String>,
) -> UiResult<Response> {
    let account = account_id(&account)?;
    let owner = state.get_account(viewer.principal(), &account).await?;
    let flash = viewer.take_flash().await?;
    let layout =
        Layout::new(format!("{} · API keys", owner.name), &viewer).with_flash(flash.as_ref());
    let keys = keys_page(&state, &viewer, &owner, layout, String::new(), None, None).await?;
    Ok(page(&keys))
}

#[derive(Debug, Deserialize)]
struct NewKey {
    #[serde(default)]
    name: String,
    #[serde(default)]
    submission: String,
}

/// Creates a key and shows it on the page that answers the form: it is
/// stored only as a hash, so this is the one time it can be shown.
async fn create(
    State(state): State<AppState>,
    Path(account): Path<String>,
    Posted { viewer, form }: Posted<NewKey>,
) -> UiResult<Response> {
    let account = account_id(&account)?;
    let owner = state.get_account(viewer.principal(), &account).await?;
    let layout = Layout::new(format!("{} · API keys", owner.name), &viewer);
    // Sent twice (a reload that posts again, a double click), the form creates one key: a
    // second would be live without anyone having seen it. The repeat cannot show the first's
    // key (only its hash is kept), so it says so.
    let content = format!("{account}\n{}", form.name);
    let claim =
        match Submission::begin(&state, &viewer, "api-key", &form.submission, &content).await? {
            Submission::Repeated => {
                let layout = layout.with_flash(Some(&Flash::notice(
                    "This form was sent again: its key was created and shown once, the first \
                 time. If it was not copied, revoke it and create another.",
                )));
                let keys =
                    keys_page(&state, &viewer, &owner, layout, String::new(), None, None).await?;
                return Ok(page(&keys));
            }
            Submission::Fresh(claim) => claim,
        };
    let create = {
        let (state, viewer, account, name) = (
            state.clone(),
            viewer.clone(),
            account.clone(),
            form.name.clone(),
        );
        async move {
            state
                .create_api_key(viewer.principal(), &account, &name)
                .await
        }
    };
    let made = claim
        .run(viewer.clone(), create, |created| {
            (created.key.id.to_string(), None)
        })
        .await?;
    match made {
        Ok(created) => {
            let text = created.secret.expose_secret().to_owned();
            let keys = keys_page(
                &state,
                &viewer,
                &owner,
                layout,
                String::new(),
                None,
                Some(text),
            )
            .await?;
            Ok(page(&keys))
        }
        Err(ServiceError::Invalid(errors)) => {
            let message = errors.into_iter().next().map(|e| e.message);
            let keys = keys_page(&state, &viewer, &owner, layout, form.name, message, None).await?;
            Ok(render(StatusCode::UNPROCESSABLE_ENTITY, &keys))
        }
        Err(error) => Err(error.into()),
    }
}

async fn confirm_revoke(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((account, key)): Path<(String, String)>,
) -> UiResult<Response> {
    let account = account_id(&account)?;
    let key = ApiKeyId::parse(&key).map_err(|_| UiError::NotFound("API key"))?;
    let owner = state.get_account(viewer.principal(), &account).await?;
    let found = state
        .list_api_keys(viewer.principal(), &account)
        .await?
        .into_iter()
        .find(|k| k.id == key && k.revoked_at.is_none())
        .ok_or(UiError::NotFound("API key"))?;
    Ok(page(&ConfirmPage {
        layout: Layout::new(format!("Revoke {}", found.name), &viewer),
        account: AccountView::new(&owner, Tab::ApiKeys, &viewer),
        heading: format!("Revoke “{}”?", found.name),
        message: "It stops working at once, for the API and for the console.".to_owned(),
        action: account_path(&account, &format!("/api-keys/{key}/revoke")),
        confirm_label: "OK, revoke it",
        cancel_href: account_path(&account, "/api-keys"),
        csrf: viewer.csrf().to_owned(),
    }))
}

async fn revoke(
    State(state): State<AppState>,
    Path((account, key)): Path<(String, String)>,
    Posted { viewer, .. }: Posted<serde::de::IgnoredAny>,
) -> UiResult<Response> {
    let account = account_id(&account)?;
    let key = ApiKeyId::parse(&key).map_err(|_| UiError::NotFound("API key"))?;
    let revoked = state
        .revoke_api_key(viewer.principal(), &account, &key)
        .await?;
    viewer
        .flash(&Flash::notice(format!(
            "Key “{}” revoked: it no longer works, and its console sessions have ended.",
            revoked.name
        )))
        .await;
    Ok(see_other(&account_path(&account, "/api-keys")))
}
