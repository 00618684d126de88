//! The event type catalogue webhooks subscribe against.

use herald_core::EventType;

use super::{ServiceResult, require_admin};
use crate::principal::Principal;
use crate::state::AppState;
use crate::store::{EventTypeRecord, StoreError};

/// The longest description of an event type.
const MAX_DESCRIPTION: usize = 1000;

fn check_description(description: &str) -> ServiceResult<()> {
    super::free_text("description", description, MAX_DESCRIPTION)
}

impl AppState {
    pub async fn list_event_types(&self) -> ServiceResult<Vec<EventTypeRecord>> {
        Ok(self.store.list_event_types().await?)
    }

    pub async fn create_event_type(
        &self,
        principal: &Principal,
        name: &EventType,
        description: &str,
    ) -> ServiceResult<EventTypeRecord> {
        require_admin(principal)?;
        check_description(description)?;
        Ok(self
            .store
            .create_event_type(name.as_str(), description)
            .await?)
    }

    pub async fn update_event_type(
        &self,
        principal: &Principal,
        name: &str,
        description: Option<String>,
        deprecated: Option<bool>,
    ) -> ServiceResult<EventTypeRecord> {
        require_admin(principal)?;
        // No event type has a name that does not parse, and such a name (one holding a NUL,
        // which PostgreSQL's text refuses) must not reach the database.
        let Ok(name) = EventType::parse(name) else {
            return Err(StoreError::NotFound("event type").into());
        };
        if let Some(description) = &description {
            check_description(description)?;
        }
        Ok(self
            .store
            .update_event_type(name.as_str(), description, deprecated)
            .await?)
    }
}
