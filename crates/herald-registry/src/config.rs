//! The registry's configuration: defaults, then an optional TOML file, then
//! `HERALD_*` environment variables, validated once into [`Config`].

use std::net::SocketAddr;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format as _, Serialized, Toml};
use herald_core::{AddressPolicy, Keyring};
use ipnet::IpNet;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// The shortest admin key accepted: anything shorter is guessable.
const MIN_ADMIN_KEY_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration key {key}: {reason}")]
    Invalid { key: String, reason: String },
    #[error("configuration: {0}")]
    Load(String),
}

impl ConfigError {
    fn invalid(key: &str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: env_name(key),
            reason: reason.into(),
        }
    }
}

fn env_name(key: &str) -> String {
    format!("HERALD_{}", key.to_ascii_uppercase())
}

/// The environment keys the registry reads, without the `HERALD_` prefix.
const KEYS: [&str; 14] = [
    "listen",
    "database_url",
    "nats_url",
    "admin_api_key",
    "encryption_key",
    "reconcile_interval",
    "idempotency_ttl",
    "max_body_bytes",
    "address_allowlist",
    "stream_replicas",
    "session_ttl",
    "secure_cookies",
    "api_timeout",
    "api_concurrency",
];

/// As read, before validation. Every field has a default or is optional, so
/// that validation can name exactly the key that is missing or wrong.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: String,
    database_url: String,
    nats_url: String,
    admin_api_key: Option<String>,
    encryption_key: Option<String>,
    reconcile_interval: String,
    idempotency_ttl: String,
    max_body_bytes: usize,
    address_allowlist: String,
    stream_replicas: usize,
    session_ttl: String,
    secure_cookies: bool,
    api_timeout: String,
    api_concurrency: usize,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            database_url: "sqlite://herald.db?mode=rwc".into(),
            nats_url: "nats://127.0.0.1:4222".into(),
            admin_api_key: None,
            encryption_key: None,
            reconcile_interval: "60s".into(),
            idempotency_ttl: "24h".into(),
            max_body_bytes: 256 * 1024,
            address_allowlist: String::new(),
            stream_replicas: 1,
            session_ttl: "12h".into(),
            secure_cookies: false,
            api_timeout: "30s".into(),
            api_concurrency: 512,
        }
    }
}

/// Validated configuration of herald-registry. Its `Debug` hides the
/// database URL, which may hold a password.
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    pub nats_url: String,
    pub admin_api_key: SecretString,
    /// The keys that seal signing secrets at rest, in the database and in
    /// the webhook bucket: the first seals, all open. Empty stores them as
    /// they are (fine for a test, not for production).
    pub keyring: Keyring,
    pub reconcile_interval: Duration,
    pub idempotency_ttl: Duration,
    pub max_body_bytes: usize,
    /// Which addresses a webhook URL may point at despite the SSRF policy.
    pub address_policy: AddressPolicy,
    /// Replicas of the streams the registry creates when missing.
    pub stream_replicas: usize,
    /// How long a console sign-in lasts.
    pub session_ttl: Duration,
    /// Mark the console's cookies `Secure`: set it when the registry is
    /// reached over HTTPS (as it must be in production).
    pub secure_cookies: bool,
    /// The longest an API request may take, waiting for a slot included.
    pub api_timeout: Duration,
    /// API requests handled at once; more wait for a slot.
    pub api_concurrency: usize,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database_url", &"[redacted]")
            .field("nats_url", &self.nats_url)
            .field("keyring", &self.keyring)
            .field("reconcile_interval", &self.reconcile_interval)
            .field("address_policy", &self.address_policy)
            .field("session_ttl", &self.session_ttl)
            .field("secure_cookies", &self.secure_cookies)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Reads the environment (and `HERALD_CONFIG_FILE`, when set).
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(RawConfig::default()));
        if let Ok(path) = std::env::var("HERALD_CONFIG_FILE") {
            figment = figment.merge(Toml::file_exact(path));
        }
        // Only the registry's own keys: the worker's, the log format and the
        // test settings share the HERALD_ prefix and the environment.
        figment = figment.merge(Env::prefixed("HERALD_").only(&KEYS));
        Self::from_figment(figment)
    }

    /// A configuration for tests and `herald dev`: defaults with the given
    /// database, NATS and admin key.
    pub fn for_local(database_url: &str, nats_url: &str, admin_api_key: &str) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: database_url.into(),
            nats_url: nats_url.into(),
            admin_api_key: SecretString::from(admin_api_key.to_owned()),
            keyring: Keyring::default(),
            reconcile_interval: Duration::from_secs(60),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            max_body_bytes: 256 * 1024,
            address_policy: AddressPolicy::default(),
            stream_replicas: 1,
            session_ttl: Duration::from_secs(12 * 3600),
            secure_cookies: false,
            api_timeout: Duration::from_secs(30),
            api_concurrency: 512,
        }
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let raw: RawConfig = figment.extract().map_err(|e| {
            let key = e.path.first().cloned().unwrap_or_default();
            if key.is_empty() {
                ConfigError::Load(e.to_string())
            } else {
                ConfigError::invalid(&key, e.kind.to_string())
            }
        })?;
        Self::validate(raw)
    }

    fn validate(raw: RawConfig) -> Result<Self, ConfigError> {
        let listen = raw
            .listen
            .parse()
            .map_err(|_| ConfigError::invalid("listen", "expected host:port, e.g. 0.0.0.0:8080"))?;
        if !(raw.database_url.starts_with("sqlite:") || raw.database_url.starts_with("postgres")) {
            return Err(ConfigError::invalid(
                "database_url",
                "expected a sqlite:// or postgres:// URL",
            ));
        }
        if raw.nats_url.trim().is_empty() {
            return Err(ConfigError::invalid("nats_url", "must not be empty"));
        }
        let admin_api_key = match raw.admin_api_key {
            Some(key) if key.len() >= MIN_ADMIN_KEY_LEN => SecretString::from(key),
            Some(_) => {
                return Err(ConfigError::invalid(
                    "admin_api_key",
                    format!("must be at least {MIN_ADMIN_KEY_LEN} characters"),
                ));
            }
            None => return Err(ConfigError::invalid("admin_api_key", "is required")),
        };
        let keyring = match raw.encryption_key {
            None => Keyring::default(),
            Some(text) => Keyring::parse(&SecretString::from(text))
                .map_err(|e| ConfigError::invalid("encryption_key", e.to_string()))?,
        };
        let reconcile_interval = parse_duration("reconcile_interval", &raw.reconcile_interval)?;
        let idempotency_ttl = parse_duration("idempotency_ttl", &raw.idempotency_ttl)?;
        let session_ttl = parse_duration("session_ttl", &raw.session_ttl)?;
        let api_timeout = parse_duration("api_timeout", &raw.api_timeout)?;
        if raw.api_concurrency == 0 {
            return Err(ConfigError::invalid(
                "api_concurrency",
                "must be at least 1",
            ));
        }
        if raw.max_body_bytes < 1024 {
            return Err(ConfigError::invalid(
                "max_body_bytes",
                "must be at least 1024",
            ));
        }
        let allow = raw
            .address_allowlist
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>().map_err(|_| {
                    ConfigError::invalid("address_allowlist", format!("{s:?} is not a CIDR"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if raw.stream_replicas == 0 || raw.stream_replicas > 5 {
            return Err(ConfigError::invalid(
                "stream_replicas",
                "must be between 1 and 5",
            ));
        }
        Ok(Self {
            listen,
            database_url: raw.database_url,
            nats_url: raw.nats_url,
            admin_api_key,
            keyring,
            reconcile_interval,
            idempotency_ttl,
            max_body_bytes: raw.max_body_bytes,
            address_policy: AddressPolicy { allow },
            stream_replicas: raw.stream_replicas,
            session_ttl,
            secure_cookies: raw.secure_cookies,
            api_timeout,
            api_concurrency: raw.api_concurrency,
        })
    }
}

fn parse_duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text)
        .map_err(|e| ConfigError::invalid(key, format!("{text:?} is not a duration ({e})")))
        .and_then(|d| {
            if d.is_zero() {
                Err(ConfigError::invalid(key, "must be greater than zero"))
            } else {
                Ok(d)
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(RawConfig::default()));
        for (k, v) in pairs {
            figment = figment.merge((*k, *v));
        }
        Config::from_figment(figment)
    }

    fn error_of(pairs: &[(&str, &str)]) -> String {
        match load(pairs) {
            Ok(_) => panic!("expected {pairs:?} to be rejected"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn admin_key_is_required_and_named() {
        assert_eq!(
            error_of(&[]),
            "configuration key HERALD_ADMIN_API_KEY: is required"
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let key = ("admin_api_key", "0123456789abcdef");
        for (pair, expect) in [
            (("listen", "nope"), "HERALD_LISTEN"),
            (("reconcile_interval", "soon"), "HERALD_RECONCILE_INTERVAL"),
            (("encryption_key", "c2hvcnQ="), "HERALD_ENCRYPTION_KEY"),
            (
                ("address_allowlist", "127.0.0.1/8,banana"),
                "HERALD_ADDRESS_ALLOWLIST",
            ),
            (("database_url", "mysql://x"), "HERALD_DATABASE_URL"),
            (("max_body_bytes", "lots"), "HERALD_MAX_BODY_BYTES"),
            (("admin_api_key", "short"), "HERALD_ADMIN_API_KEY"),
        ] {
            let message = error_of(&[key, pair]);
            assert!(message.contains(expect), "{pair:?}: {message}");
        }
    }

    #[test]
    fn good_values_are_typed() {
        let config = load(&[
            ("admin_api_key", "0123456789abcdef"),
            ("address_allowlist", "127.0.0.0/8, ::1/128"),
            ("reconcile_interval", "5s"),
            (
                "encryption_key",
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            ),
        ])
        .expect("valid config");
        assert_eq!(config.reconcile_interval, Duration::from_secs(5));
        assert_eq!(config.address_policy.allow.len(), 2);
        assert_eq!(config.keyring.key_ids().count(), 1);
    }
}
