//! The event type catalogue: everyone reads it; the admin adds types,
//! describes them and deprecates them.

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use herald_core::EventType;
use serde::Deserialize;

use super::errors::UiResult;
use super::forms::FieldErrors;
use super::session::{Flash, Posted, Viewer};
use super::view::Layout;
use super::{UiError, page, render, see_other};
use crate::service::ServiceError;
use crate::state::AppState;
use crate::store::EventTypeRecord;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/event-types", get(list).post(create))
        .route("/event-types/{name}", get(edit_form).post(update))
}

#[derive(Debug)]
struct TypeRow {
    name: String,
    description: String,
    deprecated: bool,
    edit_href: String,
}

#[derive(Debug, Default, Deserialize)]
struct TypeForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    /// A checkbox: present when checked.
    #[serde(default)]
    deprecated: Option<String>,
}

#[derive(Template)]
#[template(path = "event_types.html")]
struct CataloguePage {
    layout: Layout,
    types: Vec<TypeRow>,
    is_admin: bool,
    form: TypeForm,
    errors: FieldErrors,
    csrf: String,
}

fn edit_href(name: &str) -> String {
    format!("/ui/event-types/{name}")
}

async fn catalogue_page(
    state: &AppState,
    viewer: &Viewer,
    layout: Layout,
    form: TypeForm,
    errors: FieldErrors,
    status: StatusCode,
) -> UiResult<Response> {
    let types = state.list_event_types().await?;
    let page = CataloguePage {
        layout,
        types: types
            .into_iter()
            .map(|t| TypeRow {
                edit_href: edit_href(&t.name),
                name: t.name,
                description: t.description,
                deprecated: t.deprecated,
            })
            .collect(),
        is_admin: viewer.is_admin(),
        form,
        errors,
        csrf: viewer.csrf().to_owned(),
    };
    Ok(render(status, &page))
}

async fn list(State(state): State<AppState>, viewer: Viewer) -> UiResult<Response> {
    let flash = viewer.take_flash().await?;
    let layout = Layout::new("Event types", &viewer).with_flash(flash.as_ref());
    catalogue_page(
        &state,
        &viewer,
        layout,
        TypeForm::default(),
        FieldErrors::default(),
        StatusCode::OK,
    )
    .await
}

async fn create(
    State(state): State<AppState>,
    Posted { viewer, form }: Posted<TypeForm>,
) -> UiResult<Response> {
    let mut errors = FieldErrors::default();
    match EventType::parse(form.name.trim()) {
        Err(error) => errors.add(
            "name",
            format!("{error}; use lower-case dot-separated words, e.g. booking.checked_in"),
        ),
        Ok(name) => match state
            .create_event_type(viewer.principal(), &name, form.description.trim())
            .await
        {
            Ok(created) => {
                viewer
                    .flash(&Flash::notice(format!(
                        "Event type {} added: webhooks can subscribe to it now.",
                        created.name
                    )))
                    .await;
                return Ok(see_other("/ui/event-types"));
            }
            Err(ServiceError::Invalid(invalid)) => {
                errors.extend(invalid, |field| match field {
                    "description" => Some("description"),
                    _ => Some("name"),
                });
            }
            Err(ServiceError::Conflict(message)) => errors.add("name", message),
            Err(error) => return Err(error.into()),
        },
    }
    let layout = Layout::new("Event types", &viewer);
    catalogue_page(
        &state,
        &viewer,
        layout,
        form,
        errors,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await
}

#[derive(Template)]
#[template(path = "event_type_form.html")]
struct EditPage {
    layout: Layout,
    name: String,
    description: String,
    deprecated: bool,
    errors: FieldErrors,
    action: String,
    csrf: String,
}

async fn find(state: &AppState, name: &str) -> UiResult<EventTypeRecord> {
    state
        .list_event_types()
        .await?
        .into_iter()
        .find(|t| t.name == name)
        .ok_or(UiError::NotFound("event type"))
}

async fn edit_form(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> UiResult<Response> {
    if !viewer.is_admin() {
        return Err(UiError::Forbidden);
    }
    let found = find(&state, &name).await?;
    Ok(page(&EditPage {
        layout: Layout::new(format!("Edit {}", found.name), &viewer),
        action: edit_href(&found.name),
        name: found.name,
        description: found.description,
        deprecated: found.deprecated,
        errors: FieldErrors::default(),
        csrf: viewer.csrf().to_owned(),
    }))
}

async fn update(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Posted { viewer, form }: Posted<TypeForm>,
) -> UiResult<Response> {
    let deprecated = form.deprecated.is_some();
    match state
        .update_event_type(
            viewer.principal(),
            &name,
            Some(form.description.trim().to_owned()),
            Some(deprecated),
        )
        .await
    {
        Ok(updated) => {
            let note = if updated.deprecated {
                "deprecated: webhooks that have it keep receiving it, new ones cannot choose it"
            } else {
                "saved"
            };
            viewer
                .flash(&Flash::notice(format!("{}: {note}.", updated.name)))
                .await;
            Ok(see_other("/ui/event-types"))
        }
        Err(ServiceError::Invalid(invalid)) => {
            let mut errors = FieldErrors::default();
            errors.extend(invalid, |_| Some("description"));
            Ok(render(
                StatusCode::UNPROCESSABLE_ENTITY,
                &EditPage {
                    layout: Layout::new(format!("Edit {name}"), &viewer),
                    action: edit_href(&name),
                    name,
                    description: form.description,
                    deprecated,
                    errors,
                    csrf: viewer.csrf().to_owned(),
                },
            ))
        }
        Err(error) => Err(error.into()),
    }
}
