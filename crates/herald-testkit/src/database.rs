//! A fresh, empty database per test: a SQLite file in a private folder, or a new database on a
//! PostgreSQL server that is dropped again afterwards.

use std::time::Duration;

use anyhow::{Context as _, bail};
use rand::Rng as _;
use sea_orm::{ConnectOptions, ConnectionTrait as _, Database, DatabaseConnection};
use tempfile::TempDir;

/// Selects the backend for [`TestDatabase::from_env`]: `sqlite` (default) or `postgres`. CI runs
/// the whole suite once per value.
const BACKEND_ENV: &str = "HERALD_TEST_DATABASE";
/// A PostgreSQL URL whose user may create databases; test databases are created beside the
/// database it names.
const POSTGRES_URL_ENV: &str = "HERALD_TEST_POSTGRES_URL";
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const POSTGRES_HINT: &str = "start PostgreSQL with `pg_ctlcluster --skip-systemctl-redirect \
     $(ls /etc/postgresql) main start`, or set HERALD_TEST_POSTGRES_URL to a server where the \
     user may create databases";
/// A server that is down should fail the test quickly, not after sqlx's 30 s default.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which database server a [`TestDatabase`] lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// An empty database owned by one test.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    backend: Backend,
    // Held for its Drop: removes the SQLite file.
    _dir: Option<TempDir>,
    postgres: Option<PostgresDatabase>,
}

#[derive(Debug)]
struct PostgresDatabase {
    admin_url: String,
    name: String,
}

impl TestDatabase {
    /// A SQLite database file in a private folder, created on first connect.
    ///
    /// # Panics
    ///
    /// When no temporary folder can be created; a test cannot run without one.
    pub fn sqlite() -> TestDatabase {
        #[allow(clippy::expect_used)] // A fixture that cannot exist fails its test loudly.
        let dir = tempfile::Builder::new()
            .prefix("herald-db-")
            .tempdir()
            .expect("creating a temporary folder for a SQLite test database");
        let path = dir.path().join("herald.db");
        TestDatabase {
            url: format!("sqlite://{}?mode=rwc", path.display()),
            backend: Backend::Sqlite,
            _dir: Some(dir),
            postgres: None,
        }
    }

    /// A new database `herald_test_<random hex>` on the PostgreSQL server named by
    /// `HERALD_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
    pub async fn postgres() -> anyhow::Result<TestDatabase> {
        let admin_url =
            std::env::var(POSTGRES_URL_ENV).unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
        let name = format!("herald_test_{:016x}", rand::rng().random::<u64>());
        let url = sibling_database_url(&admin_url, &name)?;

        let admin = connect_admin(&admin_url).await?;
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .with_context(|| format!("creating test database {name}"))?;
        if let Err(err) = admin.close().await {
            tracing::debug!(%err, "closing the PostgreSQL admin connection");
        }

        Ok(TestDatabase {
            url,
            backend: Backend::Postgres,
            _dir: None,
            postgres: Some(PostgresDatabase { admin_url, name }),
        })
    }

    /// The backend chosen by `HERALD_TEST_DATABASE`: `sqlite` (the default) or `postgres`.
    pub async fn from_env() -> anyhow::Result<TestDatabase> {
        match std::env::var(BACKEND_ENV) {
            Err(std::env::VarError::NotPresent) => Ok(TestDatabase::sqlite()),
            Ok(value) => match value.as_str() {
                "" | "sqlite" => Ok(TestDatabase::sqlite()),
                "postgres" => TestDatabase::postgres().await,
                other => bail!("{BACKEND_ENV}={other:?}: expected `sqlite` or `postgres`"),
            },
            Err(err) => bail!("{BACKEND_ENV}: {err}"),
        }
    }

    /// A connection URL for sea-orm.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Connects to the database with sea-orm.
    pub async fn connect(&self) -> anyhow::Result<DatabaseConnection> {
        let mut options = ConnectOptions::new(self.url.clone());
        options.connect_timeout(CONNECT_TIMEOUT).sqlx_logging(false);
        Database::connect(options)
            .await
            .with_context(|| format!("connecting to test database {}", self.url))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(PostgresDatabase { admin_url, name }) = self.postgres.take() else {
            return;
        };
        // Drop may run inside a test's runtime, where blocking on async work would panic; a
        // thread with its own runtime does the clean-up instead.
        let dropped = std::thread::spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("building a runtime to drop the test database")?;
            runtime.block_on(async {
                let admin = connect_admin(&admin_url).await?;
                // FORCE disconnects pools the test may still hold open.
                admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
                    .with_context(|| format!("dropping test database {name}"))?;
                admin
                    .close()
                    .await
                    .context("closing the admin connection")?;
                Ok(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::warn!(error = %format!("{err:#}"), "could not drop a test database");
                eprintln!("could not drop a test database: {err:#}");
            }
            Err(_) => eprintln!("the thread dropping a test database panicked"),
        }
    }
}

async fn connect_admin(admin_url: &str) -> anyhow::Result<DatabaseConnection> {
    connect_admin_within(admin_url, CONNECT_TIMEOUT).await
}

async fn connect_admin_within(
    admin_url: &str,
    timeout: Duration,
) -> anyhow::Result<DatabaseConnection> {
    let mut options = ConnectOptions::new(admin_url.to_owned());
    options
        .connect_timeout(timeout)
        .max_connections(1)
        .sqlx_logging(false);
    Database::connect(options).await.with_context(|| {
        format!(
            "cannot connect to PostgreSQL at {}; {POSTGRES_HINT}",
            redact(admin_url)
        )
    })
}

/// The URL of database `name` on the same server, with the same user and options.
fn sibling_database_url(admin_url: &str, name: &str) -> anyhow::Result<String> {
    let mut url = url::Url::parse(admin_url)
        .with_context(|| format!("{POSTGRES_URL_ENV} is not a URL: {}", redact(admin_url)))?;
    url.set_path(&format!("/{name}"));
    Ok(url.into())
}

/// The URL without its password, for error messages.
fn redact(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() && url.set_password(Some("***")).is_err() {
                return "<unprintable URL>".to_owned();
            }
            url.into()
        }
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sibling_url_keeps_user_host_and_options() -> anyhow::Result<()> {
        assert_eq!(
            sibling_database_url("postgres://postgres@127.0.0.1:5432/test", "herald_test_ab")?,
            "postgres://postgres@127.0.0.1:5432/herald_test_ab"
        );
        assert_eq!(
            sibling_database_url("postgres://u:p@db:5433/x?sslmode=disable", "t")?,
            "postgres://u:p@db:5433/t?sslmode=disable"
        );
        Ok(())
    }

    #[tokio::test]
    async fn an_unreachable_server_says_how_to_start_postgres() -> anyhow::Result<()> {
        let port = crate::free_port()?;
        let url = format!("postgres://postgres:pw@127.0.0.1:{port}/test");
        let err = connect_admin_within(&url, Duration::from_millis(500))
            .await
            .err()
            .map(|err| err.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("pg_ctlcluster --skip-systemctl-redirect"),
            "{err}"
        );
        assert!(err.contains("HERALD_TEST_POSTGRES_URL"), "{err}");
        assert!(!err.contains(":pw@"), "the password leaked: {err}");
        Ok(())
    }

    #[test]
    fn redact_hides_the_password() {
        assert_eq!(redact("postgres://u:secret@db/x"), "postgres://u:***@db/x");
        assert_eq!(redact("postgres://u@db/x"), "postgres://u@db/x");
    }
}
