//! Account-scoped API keys: stored as SHA-256 hashes, shown once.

use anyhow::Context as _;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use herald_core::{AccountId, ApiKeyId};
use rand::RngCore as _;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, QueryFilter as _, QueryOrder as _,
    Set,
};
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};

use super::entities::api_key;
use super::{AccountScope, Store, StoreError, StoreResult, now};

/// Every key starts with this, so that secret scanners can spot a leaked one.
pub const KEY_PREFIX: &str = "hrld_";

#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub account: AccountId,
    pub name: String,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Who a live key is: its id and its account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOwner {
    pub key: ApiKeyId,
    pub account: AccountId,
}

/// A key just created: the only time its text exists outside the client.
#[derive(Debug)]
pub struct NewApiKey {
    pub key: ApiKey,
    pub secret: SecretString,
}

impl TryFrom<api_key::Model> for ApiKey {
    type Error = StoreError;

    fn try_from(row: api_key::Model) -> StoreResult<Self> {
        Ok(Self {
            id: ApiKeyId::parse(&row.id).context("stored key id is invalid")?,
            account: AccountId::parse(&row.account_id).context("stored account id is invalid")?,
            name: row.name,
            prefix: row.prefix,
            created_at: row.created_at,
            revoked_at: row.revoked_at,
        })
    }
}

/// Hex SHA-256 of a key's text. Keys are 256 random bits, so a fast hash is
/// enough: there is nothing to brute-force.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl Store {
    pub async fn create_api_key(&self, scope: &AccountScope, name: &str) -> StoreResult<NewApiKey> {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let text = format!(
            "{KEY_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        );
        let row = api_key::ActiveModel {
            id: Set(ApiKeyId::new().to_string()),
            account_id: Set(scope.account().to_string()),
            name: Set(name.to_owned()),
            prefix: Set(text.chars().take(KEY_PREFIX.len() + 6).collect()),
            hash: Set(hash_key(&text)),
            created_at: Set(now()),
            revoked_at: Set(None),
        }
        .insert(&self.db)
        .await?;
        Ok(NewApiKey {
            key: row.try_into()?,
            secret: SecretString::from(text),
        })
    }

    pub async fn list_api_keys(&self, scope: &AccountScope) -> StoreResult<Vec<ApiKey>> {
        api_key::Entity::find()
            .filter(api_key::Column::AccountId.eq(scope.account().as_str()))
            .order_by_asc(api_key::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(ApiKey::try_from)
            .collect()
    }

    pub async fn revoke_api_key(&self, scope: &AccountScope, id: &ApiKeyId) -> StoreResult<ApiKey> {
        let row = api_key::Entity::find_by_id(id.as_str())
            .filter(api_key::Column::AccountId.eq(scope.account().as_str()))
            .one(&self.db)
            .await?
            .ok_or(StoreError::NotFound("API key"))?;
        if row.revoked_at.is_some() {
            return row.try_into();
        }
        let mut active: api_key::ActiveModel = row.into();
        active.revoked_at = Set(Some(now()));
        active.update(&self.db).await?.try_into()
    }

    /// The live key whose text is `key`, and its account, if any.
    pub async fn owner_of_key(&self, key: &SecretString) -> StoreResult<Option<KeyOwner>> {
        let row = api_key::Entity::find()
            .filter(api_key::Column::Hash.eq(hash_key(key.expose_secret())))
            .filter(api_key::Column::RevokedAt.is_null())
            .one(&self.db)
            .await?;
        row.map(|r| {
            Ok(KeyOwner {
                key: ApiKeyId::parse(&r.id).context("stored key id is invalid")?,
                account: AccountId::parse(&r.account_id).context("stored account id is invalid")?,
            })
        })
        .transpose()
    }
}
