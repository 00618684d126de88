//! sea-orm entities: the rows as stored. Only the store module sees them;
//! the API speaks in the domain and DTO types.

pub mod account {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "accounts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub name: String,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod webhook {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhooks")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub account_id: String,
        pub name: String,
        pub description: Option<String>,
        pub enabled: bool,
        /// JSON array of event patterns; empty means every event type.
        pub events: String,
        pub url: String,
        pub version: i64,
        pub disabled_reason: Option<String>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod webhook_secret {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhook_secrets")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub webhook_id: String,
        /// Sealed by `store::cipher`: never the bare `whsec_` text when a key
        /// is configured.
        pub secret: String,
        pub created_at: DateTimeUtc,
        /// None for the current secret; set on one being rotated out.
        pub expires_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod event_type {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "event_types")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub description: String,
        pub deprecated: bool,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod api_key {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub account_id: String,
        pub name: String,
        /// The first characters of the key, so a person can tell keys apart.
        pub prefix: String,
        /// Hex SHA-256 of the whole key; the key itself is never stored.
        pub hash: String,
        pub created_at: DateTimeUtc,
        pub revoked_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod idempotency_key {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "idempotency_keys")]
    pub struct Model {
        /// Who sent the request (`admin` or an account id), so two tenants
        /// can use the same key without seeing each other's responses.
        #[sea_orm(primary_key, auto_increment = false)]
        pub scope: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        /// SHA-256 of method, path and body of the first request.
        pub fingerprint: String,
        /// 0 while the first request is still being handled.
        pub status: i32,
        /// The first response's body, sealed like a secret since it may
        /// hold one.
        pub body: Option<String>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod delivery {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "deliveries")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub account_id: String,
        /// Not a foreign key: the log outlives a deleted webhook.
        pub webhook_id: String,
        pub event_id: String,
        pub event_type: String,
        pub event_timestamp: DateTimeUtc,
        /// The event's `data`, verbatim JSON.
        pub payload: String,
        /// The event was too large to deliver and its data was not kept (`payload` is `{}`):
        /// the delivery cannot be sent again.
        pub payload_omitted: bool,
        /// `pending`, `delivered`, `failed` or `exhausted`: the latest
        /// attempt's outcome.
        pub status: String,
        pub attempts: i32,
        pub last_attempt: i32,
        pub last_http_status: i32,
        pub last_latency_ms: i32,
        pub last_error: String,
        pub next_attempt_at: Option<DateTimeUtc>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod attempt {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "attempts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub delivery_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub attempt: i32,
        pub status: String,
        pub trigger: String,
        pub http_status: i32,
        pub latency_ms: i32,
        pub error: String,
        pub response_body: String,
        pub attempted_at: DateTimeUtc,
        /// The webhook, so that its attempts can be counted by hour
        /// without reading its deliveries.
        pub webhook_id: String,
        /// JSON object of the request's headers as sent; `{}` when the
        /// worker did not report them.
        pub request_headers: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod console_session {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "console_sessions")]
    pub struct Model {
        /// Hex SHA-256 of the cookie's token: a leaked table opens nothing.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// None for the admin.
        pub account_id: Option<String>,
        /// The account key the session was opened with; revoking it ends
        /// the session.
        pub api_key_id: Option<String>,
        /// Hash of the admin key the session was opened with; a changed
        /// admin key ends the session.
        pub admin_key_hash: Option<String>,
        pub csrf_token: String,
        /// A one-time message for the next page (JSON).
        pub flash: Option<String>,
        pub created_at: DateTimeUtc,
        pub expires_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
