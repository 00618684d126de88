//! Schema migrations; the same statements run on SQLite and PostgreSQL.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, boolean, integer, string, string_null, text, text_null, timestamp_with_time_zone,
    timestamp_with_time_zone_null,
};

#[derive(Debug)]
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(Initial),
            Box::new(DeliveryLog),
            Box::new(Console),
            Box::new(PayloadOmitted),
        ]
    }
}

#[derive(DeriveIden)]
enum Accounts {
    Table,
    Id,
    Name,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Webhooks {
    Table,
    Id,
    AccountId,
    Name,
    Description,
    Enabled,
    Events,
    Url,
    Version,
    DisabledReason,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum WebhookSecrets {
    Table,
    Id,
    WebhookId,
    Secret,
    CreatedAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum EventTypes {
    Table,
    Name,
    Description,
    Deprecated,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    AccountId,
    Name,
    Prefix,
    Hash,
    CreatedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    Scope,
    Key,
    Fingerprint,
    Status,
    Body,
    CreatedAt,
}

struct Initial;

// Named by hand: the derive takes the file's name, which both migrations share.
impl MigrationName for Initial {
    fn name(&self) -> &str {
        "m20261127_000001_initial"
    }
}

// async_trait's expansion rejects `SchemaManager<'_>` here.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Initial {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Accounts::Table)
                    .col(string(Accounts::Id).primary_key())
                    .col(string(Accounts::Name))
                    .col(timestamp_with_time_zone(Accounts::CreatedAt))
                    .col(timestamp_with_time_zone(Accounts::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Webhooks::Table)
                    .col(string(Webhooks::Id).primary_key())
                    .col(string(Webhooks::AccountId))
                    .col(string(Webhooks::Name))
                    .col(text_null(Webhooks::Description))
                    .col(boolean(Webhooks::Enabled))
                    .col(text(Webhooks::Events))
                    .col(text(Webhooks::Url))
                    .col(big_integer(Webhooks::Version))
                    .col(string_null(Webhooks::DisabledReason))
                    .col(timestamp_with_time_zone(Webhooks::CreatedAt))
                    .col(timestamp_with_time_zone(Webhooks::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Webhooks::Table, Webhooks::AccountId)
                            .to(Accounts::Table, Accounts::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("webhooks_account_id")
                    .table(Webhooks::Table)
                    .col(Webhooks::AccountId)
                    .col(Webhooks::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookSecrets::Table)
                    .col(string(WebhookSecrets::Id).primary_key())
                    .col(string(WebhookSecrets::WebhookId))
                    .col(text(WebhookSecrets::Secret))
                    .col(timestamp_with_time_zone(WebhookSecrets::CreatedAt))
                    .col(timestamp_with_time_zone_null(WebhookSecrets::ExpiresAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(WebhookSecrets::Table, WebhookSecrets::WebhookId)
                            .to(Webhooks::Table, Webhooks::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("webhook_secrets_webhook_id")
                    .table(WebhookSecrets::Table)
                    .col(WebhookSecrets::WebhookId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(EventTypes::Table)
                    .col(string(EventTypes::Name).primary_key())
                    .col(text(EventTypes::Description))
                    .col(boolean(EventTypes::Deprecated))
                    .col(timestamp_with_time_zone(EventTypes::CreatedAt))
                    .col(timestamp_with_time_zone(EventTypes::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .col(string(ApiKeys::Id).primary_key())
                    .col(string(ApiKeys::AccountId))
                    .col(string(ApiKeys::Name))
                    .col(string(ApiKeys::Prefix))
                    .col(string(ApiKeys::Hash).unique_key())
                    .col(timestamp_with_time_zone(ApiKeys::CreatedAt))
                    .col(timestamp_with_time_zone_null(ApiKeys::RevokedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(ApiKeys::Table, ApiKeys::AccountId)
                            .to(Accounts::Table, Accounts::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(IdempotencyKeys::Table)
                    .col(string(IdempotencyKeys::Scope))
                    .col(string(IdempotencyKeys::Key))
                    .col(string(IdempotencyKeys::Fingerprint))
                    .col(integer(IdempotencyKeys::Status))
                    .col(text_null(IdempotencyKeys::Body))
                    .col(timestamp_with_time_zone(IdempotencyKeys::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(IdempotencyKeys::Scope)
                            .col(IdempotencyKeys::Key),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Deliveries {
    Table,
    Id,
    AccountId,
    WebhookId,
    EventId,
    EventType,
    EventTimestamp,
    Payload,
    Status,
    Attempts,
    LastAttempt,
    LastHttpStatus,
    LastLatencyMs,
    LastError,
    NextAttemptAt,
    CreatedAt,
    UpdatedAt,
    PayloadOmitted,
}

#[derive(DeriveIden)]
enum Attempts {
    Table,
    WebhookId,
    RequestHeaders,
    DeliveryId,
    Attempt,
    Status,
    Trigger,
    HttpStatus,
    LatencyMs,
    Error,
    ResponseBody,
    AttemptedAt,
}

/// The delivery log: one row per (event, webhook), one per attempt.
struct DeliveryLog;

impl MigrationName for DeliveryLog {
    fn name(&self) -> &str {
        "m20261127_000002_delivery_log"
    }
}

// async_trait's expansion rejects `SchemaManager<'_>` here.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for DeliveryLog {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Deliveries::Table)
                    .col(string(Deliveries::Id).primary_key())
                    .col(string(Deliveries::AccountId))
                    .col(string(Deliveries::WebhookId))
                    .col(string(Deliveries::EventId))
                    .col(string(Deliveries::EventType))
                    .col(timestamp_with_time_zone(Deliveries::EventTimestamp))
                    .col(text(Deliveries::Payload))
                    .col(string(Deliveries::Status))
                    .col(integer(Deliveries::Attempts))
                    .col(integer(Deliveries::LastAttempt))
                    .col(integer(Deliveries::LastHttpStatus))
                    .col(text(Deliveries::LastError))
                    .col(timestamp_with_time_zone_null(Deliveries::NextAttemptAt))
                    .col(timestamp_with_time_zone(Deliveries::CreatedAt))
                    .col(timestamp_with_time_zone(Deliveries::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        for (name, cols) in [
            (
                "deliveries_account",
                vec![Deliveries::AccountId, Deliveries::CreatedAt],
            ),
            (
                "deliveries_webhook",
                vec![Deliveries::WebhookId, Deliveries::CreatedAt],
            ),
        ] {
            let mut index = Index::create();
            index.name(name).table(Deliveries::Table);
            for col in cols {
                index.col(col);
            }
            manager.create_index(index.to_owned()).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(Attempts::Table)
                    .col(string(Attempts::DeliveryId))
                    .col(integer(Attempts::Attempt))
                    .col(string(Attempts::Status))
                    .col(string(Attempts::Trigger))
                    .col(integer(Attempts::HttpStatus))
                    .col(integer(Attempts::LatencyMs))
                    .col(text(Attempts::Error))
                    .col(text(Attempts::ResponseBody))
                    .col(timestamp_with_time_zone(Attempts::AttemptedAt))
                    .primary_key(
                        Index::create()
                            .col(Attempts::DeliveryId)
                            .col(Attempts::Attempt),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Attempts::Table, Attempts::DeliveryId)
                            .to(Deliveries::Table, Deliveries::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}

#[derive(DeriveIden)]
enum ConsoleSessions {
    Table,
    Id,
    AccountId,
    ApiKeyId,
    AdminKeyHash,
    CsrfToken,
    Flash,
    CreatedAt,
    ExpiresAt,
}

/// The console: sessions, and what its delivery pages show (attempts by
/// webhook and hour, the headers of each request).
struct Console;

impl MigrationName for Console {
    fn name(&self) -> &str {
        "m20261201_000003_console"
    }
}

// async_trait's expansion rejects `SchemaManager<'_>` here.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Console {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters a table a column at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(Deliveries::Table)
                    .add_column(integer(Deliveries::LastLatencyMs).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Attempts::Table)
                    .add_column(string(Attempts::WebhookId).default(""))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Attempts::Table)
                    .add_column(text(Attempts::RequestHeaders).default("{}"))
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE attempts SET webhook_id = \
                 (SELECT webhook_id FROM deliveries WHERE deliveries.id = attempts.delivery_id)",
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("attempts_webhook_time")
                    .table(Attempts::Table)
                    .col(Attempts::WebhookId)
                    .col(Attempts::AttemptedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ConsoleSessions::Table)
                    .col(string(ConsoleSessions::Id).primary_key())
                    .col(string_null(ConsoleSessions::AccountId))
                    .col(string_null(ConsoleSessions::ApiKeyId))
                    .col(string_null(ConsoleSessions::AdminKeyHash))
                    .col(string(ConsoleSessions::CsrfToken))
                    .col(text_null(ConsoleSessions::Flash))
                    .col(timestamp_with_time_zone(ConsoleSessions::CreatedAt))
                    .col(timestamp_with_time_zone(ConsoleSessions::ExpiresAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(ConsoleSessions::Table, ConsoleSessions::ApiKeyId)
                            .to(ApiKeys::Table, ApiKeys::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("console_sessions_expires_at")
                    .table(ConsoleSessions::Table)
                    .col(ConsoleSessions::ExpiresAt)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}

/// Deliveries of an event too large to deliver: the worker reports them without the event's
/// data, so the log must know not to send them again with none.
struct PayloadOmitted;

impl MigrationName for PayloadOmitted {
    fn name(&self) -> &str {
        "m20261207_000004_payload_omitted"
    }
}

// async_trait's expansion rejects `SchemaManager<'_>` here.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for PayloadOmitted {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Deliveries::Table)
                    .add_column(boolean(Deliveries::PayloadOmitted).default(false))
                    .to_owned(),
            )
            .await
    }
}
