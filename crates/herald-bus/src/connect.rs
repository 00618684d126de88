//! Connecting to NATS: a bounded, backed-off first connection that reports an unreachable
//! server promptly and clearly; after that, async-nats reconnects on its own for as long as it
//! takes.

use std::time::Duration;

use async_nats::{ConnectErrorKind, ConnectOptions, Event};
use backon::{ExponentialBuilder, Retryable as _};

/// Why no connection could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "cannot reach NATS at {url} after {attempts} attempt(s): {source}; start a server with \
         JetStream (`nats-server -js`) or point NATS_URL at one"
    )]
    Unreachable {
        url: String,
        attempts: usize,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("NATS at {url} refused the connection: {source}")]
    Refused {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
}

/// How hard to try before giving up on the first connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectRetry {
    /// Connection attempts in all, at least one.
    pub attempts: usize,
    /// Wait after the first failed attempt; doubles (with jitter) after each failure.
    pub min_delay: Duration,
    /// Longest wait between two attempts.
    pub max_delay: Duration,
    /// Longest time spent waiting between attempts in all.
    pub total_delay: Duration,
}

impl Default for ConnectRetry {
    /// Ten attempts within about ten seconds: long enough to ride out a server that is still
    /// starting next to us (as in docker compose), short enough that a wrong URL is reported
    /// before anyone wonders why nothing happens.
    fn default() -> Self {
        ConnectRetry {
            attempts: 10,
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            total_delay: Duration::from_secs(10),
        }
    }
}

/// Time allowed for one connection attempt, including the handshake.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a JetStream API request (stream and consumer info, creating a consumer) may go
/// unanswered. A request made just as the server went away is never answered; it must fail
/// soon, so that the caller tries again once the server is back.
pub const API_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a publish waits for its acknowledgement, for the same reason (async-nats waits 30 s
/// by default). A publish whose acknowledgement was merely slow is published again under the
/// same id, which the stream drops.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// A JetStream context over `client` whose requests and publishes give up after
/// [`API_TIMEOUT`] and [`ACK_TIMEOUT`], so that work in flight when NATS restarts is retried
/// within seconds of the server being back, not after half a minute.
pub fn jetstream(client: async_nats::Client) -> async_nats::jetstream::Context {
    async_nats::jetstream::context::ContextBuilder::new()
        .timeout(API_TIMEOUT)
        .ack_timeout(ACK_TIMEOUT)
        .build(client)
}

/// Connects to the NATS server at `url` as `client_name` (shown in the server's connection
/// list), retrying with [`ConnectRetry::default`]. `url` may list several servers of a cluster,
/// separated by commas: the client starts with any that answers and fails over to the others
/// (and to those the cluster announces).
pub async fn connect(url: &str, client_name: &str) -> Result<async_nats::Client, ConnectError> {
    connect_with(url, client_name, ConnectRetry::default()).await
}

/// Connects like [`connect`] with an explicit retry budget.
pub async fn connect_with(
    url: &str,
    client_name: &str,
    retry: ConnectRetry,
) -> Result<async_nats::Client, ConnectError> {
    let attempts = retry.attempts.max(1);
    let backoff = ExponentialBuilder::default()
        .with_min_delay(retry.min_delay)
        .with_max_delay(retry.max_delay)
        .with_max_times(attempts - 1)
        .with_total_delay(Some(retry.total_delay))
        .with_jitter();
    let servers: Vec<&str> = url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let mut tried = 0usize;
    let result = (|| {
        tried += 1;
        options(client_name).connect(servers.clone())
    })
    .retry(backoff)
    .when(is_transient)
    .notify(|err, wait| {
        tracing::warn!(url = %redact_url(url), %err, ?wait, "NATS not reachable yet; retrying");
    })
    .await;
    result.map_err(|source| {
        let url = redact_url(url);
        if is_transient(&source) {
            ConnectError::Unreachable {
                url,
                attempts: tried,
                source,
            }
        } else {
            ConnectError::Refused { url, source }
        }
    })
}

fn options(client_name: &str) -> ConnectOptions {
    // The default of unlimited reconnects is deliberate: once connected, an outage of NATS
    // must pause Herald, not end it.
    ConnectOptions::new()
        .name(client_name)
        .connection_timeout(ATTEMPT_TIMEOUT)
        .event_callback(|event| async move {
            match event {
                Event::Disconnected => tracing::warn!("disconnected from NATS; reconnecting"),
                Event::Connected => tracing::info!("connected to NATS"),
                Event::SlowConsumer(sid) => {
                    tracing::warn!(sid, "NATS subscription is too slow; messages were dropped")
                }
                other => tracing::info!(event = %other, "NATS client event"),
            }
        })
}

/// Worth another attempt: the server may be starting or briefly unreachable. A bad URL or bad
/// credentials will not fix themselves.
fn is_transient(err: &async_nats::ConnectError) -> bool {
    matches!(
        err.kind(),
        ConnectErrorKind::Io | ConnectErrorKind::TimedOut | ConnectErrorKind::Dns
    )
}

/// `url`, one server or a comma-separated list of them, with every password or token
/// replaced, for logs and errors.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(redact_server)
        .collect::<Vec<_>>()
        .join(",")
}

/// One server's URL with its password or token replaced; the scheme is optional, as it is
/// to the client.
fn redact_server(server: &str) -> String {
    let (scheme, rest) = match server.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, server),
    };
    let host_start = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..host_start].rfind('@') else {
        return server.to_owned();
    };
    let (userinfo, host) = (&rest[..at], &rest[at..]);
    let scheme = scheme
        .map(|scheme| format!("{scheme}://"))
        .unwrap_or_default();
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}{user}:***{host}"),
        None => format!("{scheme}***{host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_credentials() {
        assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(
            redact_url("nats://user:secret@nats:4222"),
            "nats://user:***@nats:4222"
        );
        assert_eq!(redact_url("nats://token@nats:4222"), "nats://***@nats:4222");
        assert_eq!(redact_url("nats:4222"), "nats:4222");
        // Without a scheme, as the client also takes a server.
        assert_eq!(redact_url("user:secret@nats:4222"), "user:***@nats:4222");
    }

    #[test]
    fn redact_hides_the_credentials_of_every_server_of_a_list() {
        assert_eq!(
            redact_url("nats://alice:pw1@n1:4222,nats://bob:pw2@n2:4222"),
            "nats://alice:***@n1:4222,nats://bob:***@n2:4222"
        );
        assert_eq!(
            redact_url("nats://n1:4222, nats://bob:pw2@n2:4222,tls://token@n3"),
            "nats://n1:4222, nats://bob:***@n2:4222,tls://***@n3"
        );
    }

    #[tokio::test]
    async fn an_unreachable_server_is_reported_with_its_url_and_a_hint() {
        // Port 1 on loopback refuses at once, so the retries are quick.
        let retry = ConnectRetry {
            attempts: 3,
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(20),
            total_delay: Duration::from_secs(1),
        };
        let started = std::time::Instant::now();
        let err = connect_with("nats://127.0.0.1:1", "test", retry)
            .await
            .err()
            .map(|err| err.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with("cannot reach NATS at nats://127.0.0.1:1 after 3 attempt(s)"),
            "{err}"
        );
        assert!(err.contains("nats-server -js"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
