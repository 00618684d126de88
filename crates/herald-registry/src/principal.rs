//! Who is acting: the operator or one account. Both edges (the API's bearer
//! keys and the console's sessions) resolve a caller to a [`Principal`]; the
//! store turns it into an [`AccountScope`](crate::store::AccountScope).

use herald_core::AccountId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The operator's key from configuration: every account.
    Admin,
    /// An account's key: that account only.
    Account(AccountId),
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        matches!(self, Self::Admin)
    }

    /// A stable name for the caller, used to keep idempotency keys apart.
    pub fn scope_name(&self) -> String {
        match self {
            Self::Admin => "admin".into(),
            Self::Account(id) => id.to_string(),
        }
    }
}
