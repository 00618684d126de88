//! Accounts: the booking platform's customers (the "entities" of the UI).

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use herald_core::{AccountId, WebhookId};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, QueryFilter as _, QueryOrder as _,
    QuerySelect as _, Set,
};

use super::entities::{account, webhook};
use super::{Page, Store, StoreError, StoreResult, decode_cursor, now, page};

#[derive(Debug, Clone)]
pub struct Account {
    pub id: AccountId,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TryFrom<account::Model> for Account {
    type Error = StoreError;

    fn try_from(row: account::Model) -> StoreResult<Self> {
        Ok(Self {
            id: AccountId::parse(&row.id).context("stored account id is invalid")?,
            name: row.name,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

impl Store {
    pub async fn create_account(&self, name: &str) -> StoreResult<Account> {
        let at = now();
        let row = account::ActiveModel {
            id: Set(AccountId::new().to_string()),
            name: Set(name.to_owned()),
            created_at: Set(at),
            updated_at: Set(at),
        }
        .insert(&self.db)
        .await?;
        row.try_into()
    }

    pub async fn get_account(&self, id: &AccountId) -> StoreResult<Option<Account>> {
        account::Entity::find_by_id(id.as_str())
            .one(&self.db)
            .await?
            .map(Account::try_from)
            .transpose()
    }

    pub async fn list_accounts(
        &self,
        cursor: Option<&str>,
        limit: u64,
    ) -> StoreResult<Page<Account>> {
        let mut query = account::Entity::find().order_by_asc(account::Column::Id);
        if let Some(after) = cursor.and_then(decode_cursor) {
            query = query.filter(account::Column::Id.gt(after));
        }
        let rows = query.limit(limit + 1).all(&self.db).await?;
        page(rows, limit, |r| r.id.clone(), Account::try_from)
    }

    pub async fn rename_account(&self, id: &AccountId, name: &str) -> StoreResult<Account> {
        let row = account::Entity::find_by_id(id.as_str())
            .one(&self.db)
            .await?
            .ok_or(StoreError::NotFound("account"))?;
        let mut active: account::ActiveModel = row.into();
        active.name = Set(name.to_owned());
        active.updated_at = Set(now());
        active.update(&self.db).await?.try_into()
    }

    /// Deletes the account with its webhooks and keys; returns the webhooks
    /// that went with it, so that their projections can be removed.
    pub async fn delete_account(&self, id: &AccountId) -> StoreResult<Vec<WebhookId>> {
        let txn = self.write().await?;
        let webhooks: Vec<String> = webhook::Entity::find()
            .select_only()
            .column(webhook::Column::Id)
            .filter(webhook::Column::AccountId.eq(id.as_str()))
            .into_tuple()
            .all(&txn)
            .await?;
        let deleted = account::Entity::delete_by_id(id.as_str())
            .exec(&txn)
            .await?;
        if deleted.rows_affected == 0 {
            return Err(StoreError::NotFound("account"));
        }
        txn.commit().await?;
        webhooks
            .iter()
            .map(|w| WebhookId::parse(w).context("stored webhook id is invalid"))
            .collect::<anyhow::Result<_>>()
            .map_err(StoreError::from)
    }
}
