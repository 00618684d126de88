//! The accounts the signed-in key may see, as cards, and an account's page,
//! which opens on its Webhooks tab.

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Redirect, Response};
use axum::routing::get;
use herald_core::AccountId;
use serde::Deserialize;

use super::errors::UiResult;
use super::forms::UiQuery;
use super::session::{Flash, Posted, Viewer};
use super::submission::{self, Submission};
use super::view::{Layout, account_path, when};
use super::{UiError, page, render, see_other};
use crate::service::ServiceError;
use crate::state::AppState;

/// Accounts per page of cards.
const PAGE: u64 = 24;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/accounts", get(list).post(create))
        .route(
            "/accounts/{account}",
            get(|Path(account): Path<String>| async move {
                let account = account_id(&account)?;
                Ok::<_, UiError>(Redirect::to(&account_path(&account, "/webhooks")))
            }),
        )
}

/// An account id from a path: a malformed one cannot exist.
pub fn account_id(text: &str) -> UiResult<AccountId> {
    AccountId::parse(text).map_err(|_| UiError::NotFound("account"))
}

#[derive(Debug)]
struct Card {
    name: String,
    id: String,
    created: String,
    manage_href: String,
}

#[derive(Template)]
#[template(path = "accounts.html")]
struct AccountsPage {
    layout: Layout,
    cards: Vec<Card>,
    next_page: Option<String>,
    is_admin: bool,
    csrf: String,
    new_name: String,
    name_error: Option<String>,
    /// The name of this showing of the create form (see [`submission`](super::submission)).
    submission: String,
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    cursor: Option<String>,
}

async fn cards_page(
    state: &AppState,
    viewer: &Viewer,
    cursor: Option<&str>,
    layout: Layout,
    new_name: String,
    name_error: Option<String>,
) -> UiResult<AccountsPage> {
    let accounts = state
        .visible_accounts(viewer.principal(), cursor, PAGE)
        .await?;
    Ok(AccountsPage {
        layout,
        cards: accounts
            .items
            .iter()
            .map(|account| Card {
                name: account.name.clone(),
                id: account.id.to_string(),
                created: when(&account.created_at),
                manage_href: account_path(&account.id, "/webhooks"),
            })
            .collect(),
        next_page: accounts.next_cursor.map(|c| {
            format!(
                "/ui/accounts?{}",
                serde_urlencoded::to_string([("cursor", c)]).unwrap_or_default()
            )
        }),
        is_admin: viewer.is_admin(),
        csrf: viewer.csrf().to_owned(),
        new_name,
        name_error,
        submission: submission::fresh(),
    })
}

async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    UiQuery(query): UiQuery<ListQuery>,
) -> UiResult<Response> {
    let flash = viewer.take_flash().await?;
    let layout = Layout::new("Accounts", &viewer).with_flash(flash.as_ref());
    let cards = cards_page(
        &state,
        &viewer,
        query.cursor.as_deref(),
        layout,
        String::new(),
        None,
    )
    .await?;
    Ok(page(&cards))
}

#[derive(Debug, Deserialize)]
struct NewAccount {
    #[serde(default)]
    name: String,
    #[serde(default)]
    submission: String,
}

async fn create(
    State(state): State<AppState>,
    Posted { viewer, form }: Posted<NewAccount>,
) -> UiResult<Response> {
    // Sent twice, the form creates one account; the second answer is the first's.
    let claim =
        match Submission::begin(&state, &viewer, "account", &form.submission, &form.name).await? {
            Submission::Repeated => return Ok(see_other("/ui/accounts")),
            Submission::Fresh(claim) => claim,
        };
    let create = {
        let (state, viewer, name) = (state.clone(), viewer.clone(), form.name.clone());
        async move { state.create_account(viewer.principal(), &name).await }
    };
    let made = claim
        .run(viewer.clone(), create, |account| {
            let flash = Flash::notice(format!("Account “{}” created.", account.name));
            (account.id.to_string(), Some(flash))
        })
        .await?;
    match made {
        Ok(_) => Ok(see_other("/ui/accounts")),
        Err(ServiceError::Invalid(errors)) => {
            let message = errors.into_iter().next().map(|e| e.message);
            let layout = Layout::new("Accounts", &viewer);
            let cards = cards_page(&state, &viewer, None, layout, form.name, message).await?;
            Ok(render(StatusCode::UNPROCESSABLE_ENTITY, &cards))
        }
        Err(error) => Err(error.into()),
    }
}
