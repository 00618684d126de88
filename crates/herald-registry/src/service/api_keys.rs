//! Account-scoped API keys; only the admin manages them.

use herald_core::{AccountId, ApiKeyId};

use super::{ServiceResult, display_name, require_admin};
use crate::principal::Principal;
use crate::state::AppState;
use crate::store::{ApiKey, NewApiKey};

impl AppState {
    pub async fn create_api_key(
        &self,
        principal: &Principal,
        account: &AccountId,
        name: &str,
    ) -> ServiceResult<NewApiKey> {
        let scope = self.store.authorize(principal, account).await?;
        require_admin(principal)?;
        let name = display_name("name", name, 100)?;
        Ok(self.store.create_api_key(&scope, &name).await?)
    }

    pub async fn list_api_keys(
        &self,
        principal: &Principal,
        account: &AccountId,
    ) -> ServiceResult<Vec<ApiKey>> {
        let scope = self.store.authorize(principal, account).await?;
        require_admin(principal)?;
        Ok(self.store.list_api_keys(&scope).await?)
    }

    pub async fn revoke_api_key(
        &self,
        principal: &Principal,
        account: &AccountId,
        id: &ApiKeyId,
    ) -> ServiceResult<ApiKey> {
        let scope = self.store.authorize(principal, account).await?;
        require_admin(principal)?;
        Ok(self.store.revoke_api_key(&scope, id).await?)
    }
}
