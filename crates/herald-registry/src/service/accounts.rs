//! Accounts: the booking platform's customers (the console's "entities").

use herald_core::AccountId;

use super::{ServiceError, ServiceResult, display_name, require_admin};
use crate::principal::Principal;
use crate::state::AppState;
use crate::store::{Account, Page};

impl AppState {
    pub async fn create_account(
        &self,
        principal: &Principal,
        name: &str,
    ) -> ServiceResult<Account> {
        require_admin(principal)?;
        let name = display_name("name", name, 200)?;
        Ok(self.store.create_account(&name).await?)
    }

    /// Every account, for the admin only.
    pub async fn list_accounts(
        &self,
        principal: &Principal,
        cursor: Option<&str>,
        limit: u64,
    ) -> ServiceResult<Page<Account>> {
        require_admin(principal)?;
        Ok(self.store.list_accounts(cursor, limit).await?)
    }

    /// The accounts `principal` may see: every account for the admin, its
    /// own for an account key.
    pub async fn visible_accounts(
        &self,
        principal: &Principal,
        cursor: Option<&str>,
        limit: u64,
    ) -> ServiceResult<Page<Account>> {
        match principal {
            Principal::Admin => self.list_accounts(principal, cursor, limit).await,
            Principal::Account(own) => Ok(Page {
                items: vec![self.get_account(principal, own).await?],
                next_cursor: None,
            }),
        }
    }

    pub async fn get_account(
        &self,
        principal: &Principal,
        id: &AccountId,
    ) -> ServiceResult<Account> {
        let scope = self.store.authorize(principal, id).await?;
        self.store
            .get_account(scope.account())
            .await?
            .ok_or(ServiceError::NotFound("account"))
    }

    pub async fn rename_account(
        &self,
        principal: &Principal,
        id: &AccountId,
        name: &str,
    ) -> ServiceResult<Account> {
        let scope = self.store.authorize(principal, id).await?;
        require_admin(principal)?;
        let name = display_name("name", name, 200)?;
        Ok(self.store.rename_account(scope.account(), &name).await?)
    }

    pub async fn delete_account(&self, principal: &Principal, id: &AccountId) -> ServiceResult<()> {
        let scope = self.store.authorize(principal, id).await?;
        require_admin(principal)?;
        for webhook in self.store.delete_account(scope.account()).await? {
            self.projector.remove(&webhook).await;
        }
        Ok(())
    }
}
