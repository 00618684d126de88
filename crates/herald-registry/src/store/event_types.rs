//! The event type catalogue that webhooks subscribe against.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait as _, EntityTrait as _, QueryOrder as _, Set};

use super::entities::event_type;
use super::{Store, StoreError, StoreResult, now};

/// The booking platform's events, present in every registry.
pub const SEED_CATALOGUE: &[(&str, &str)] = &[
    ("booking.created", "A booking was created."),
    ("booking.updated", "A booking's details changed."),
    ("booking.cancelled", "A booking was cancelled."),
    ("booking.failed", "A booking could not be completed."),
    (
        "booking.refund.partial",
        "Part of a booking's payment was refunded.",
    ),
    (
        "booking.refund.full",
        "A booking's payment was refunded in full.",
    ),
    ("payment.succeeded", "A payment succeeded."),
    ("payment.failed", "A payment failed."),
    (
        "herald.test",
        "A test event sent on request to check an endpoint.",
    ),
];

#[derive(Debug, Clone)]
pub struct EventTypeRecord {
    pub name: String,
    pub description: String,
    pub deprecated: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<event_type::Model> for EventTypeRecord {
    fn from(row: event_type::Model) -> Self {
        Self {
            name: row.name,
            description: row.description,
            deprecated: row.deprecated,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

impl Store {
    /// Adds the seed types that are missing; leaves existing ones alone so an
    /// admin's deprecation survives restarts.
    pub(super) async fn seed_event_types(&self) -> StoreResult<()> {
        let existing = self.list_event_types().await?;
        for (name, description) in SEED_CATALOGUE {
            if existing.iter().any(|t| t.name == *name) {
                continue;
            }
            match self.create_event_type(name, description).await {
                // Another replica seeded it first.
                Ok(_) | Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub async fn list_event_types(&self) -> StoreResult<Vec<EventTypeRecord>> {
        Ok(event_type::Entity::find()
            .order_by_asc(event_type::Column::Name)
            .all(&self.db)
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    pub async fn get_event_type(&self, name: &str) -> StoreResult<EventTypeRecord> {
        event_type::Entity::find_by_id(name)
            .one(&self.db)
            .await?
            .map(Into::into)
            .ok_or(StoreError::NotFound("event type"))
    }

    pub async fn create_event_type(
        &self,
        name: &str,
        description: &str,
    ) -> StoreResult<EventTypeRecord> {
        let at = now();
        let row = event_type::ActiveModel {
            name: Set(name.to_owned()),
            description: Set(description.to_owned()),
            deprecated: Set(false),
            created_at: Set(at),
            updated_at: Set(at),
        }
        .insert(&self.db)
        .await
        .map_err(StoreError::from)
        .map_err(|e| match e {
            StoreError::Conflict(_) => {
                StoreError::Conflict(format!("event type {name} already exists"))
            }
            other => other,
        })?;
        Ok(row.into())
    }

    pub async fn update_event_type(
        &self,
        name: &str,
        description: Option<String>,
        deprecated: Option<bool>,
    ) -> StoreResult<EventTypeRecord> {
        let row = event_type::Entity::find_by_id(name)
            .one(&self.db)
            .await?
            .ok_or(StoreError::NotFound("event type"))?;
        let mut active: event_type::ActiveModel = row.into();
        if let Some(description) = description {
            active.description = Set(description);
        }
        if let Some(deprecated) = deprecated {
            active.deprecated = Set(deprecated);
        }
        active.updated_at = Set(now());
        Ok(active.update(&self.db).await?.into())
    }
}
