//! Per-test databases: SQLite files and PostgreSQL databases are created empty and removed on
//! drop.

// Tests fail by panicking; unwrap keeps them readable.
#![allow(clippy::unwrap_used)]

use herald_testkit::{Backend, TestDatabase};
use sea_orm::{ConnectionTrait as _, DbBackend, Statement};

#[tokio::test]
async fn sqlite_database_is_usable_and_removed_on_drop() -> anyhow::Result<()> {
    let db = TestDatabase::sqlite();
    assert_eq!(db.backend(), Backend::Sqlite);
    assert!(db.url().starts_with("sqlite://"));
    let path = db
        .url()
        .trim_start_matches("sqlite://")
        .trim_end_matches("?mode=rwc")
        .to_owned();

    let conn = db.connect().await?;
    conn.execute_unprepared("CREATE TABLE t (x INTEGER)")
        .await?;
    conn.execute_unprepared("INSERT INTO t VALUES (1)").await?;
    conn.close().await?;
    assert!(std::path::Path::new(&path).exists());

    let other = TestDatabase::sqlite();
    assert_ne!(other.url(), db.url());
    drop(db);
    assert!(!std::path::Path::new(&path).exists());
    Ok(())
}

#[tokio::test]
async fn postgres_database_is_created_fresh_and_dropped() -> anyhow::Result<()> {
    let db = TestDatabase::postgres().await?;
    assert_eq!(db.backend(), Backend::Postgres);
    let name = db.url().rsplit('/').next().unwrap().to_owned();
    assert!(name.starts_with("herald_test_"), "{name}");

    let conn = db.connect().await?;
    conn.execute_unprepared("CREATE TABLE t (x INTEGER)")
        .await?;
    // Left open on purpose: dropping the database must not wait for the test's pool.
    let other = TestDatabase::postgres().await?;
    assert_ne!(other.url(), db.url());
    drop(db);

    let admin = other.connect().await?;
    let exists = admin
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT 1 AS one FROM pg_database WHERE datname = $1",
            [name.clone().into()],
        ))
        .await?;
    assert!(exists.is_none(), "database {name} was not dropped");
    drop(conn);
    Ok(())
}

#[tokio::test]
async fn from_env_defaults_to_sqlite_or_follows_the_variable() -> anyhow::Result<()> {
    let db = TestDatabase::from_env().await?;
    let expected = match std::env::var("HERALD_TEST_DATABASE").as_deref() {
        Ok("postgres") => Backend::Postgres,
        _ => Backend::Sqlite,
    };
    assert_eq!(db.backend(), expected);
    Ok(())
}
