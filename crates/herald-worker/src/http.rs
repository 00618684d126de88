//! The HTTP client that delivers webhooks: pooled keep-alive connections, one hard timeout, no
//! redirects, and the address policy enforced on every address actually connected to.
//!
//! The policy is checked at connect time, not only when a webhook is registered, because a DNS
//! name can start resolving to an internal address at any moment (DNS rebinding). Names go
//! through a resolver that applies the policy; IP literals never reach a resolver, so they are
//! checked before the request is made.

use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use herald_core::{AddressPolicy, Forbidden, WebhookUrl};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderValue};
use tokio::time::Instant;

/// How much of a response body an outcome records.
pub const RESPONSE_BODY_LIMIT: usize = 1024;

/// How much of a response body is read (and discarded past the recorded part) so that the
/// connection can go back to the pool; a longer body costs a new connection instead.
const DRAIN_LIMIT: usize = 64 * 1024;

/// Longest time spent establishing a connection, within the request timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle connections are kept this long for the next delivery to the same endpoint.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Why the delivery client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot build the HTTP client")]
    Build(#[source] reqwest::Error),
    #[error("the user agent is not a valid header value")]
    UserAgent,
}

/// Why an attempt got no HTTP response. `Display` is the curated text recorded in the outcome,
/// shown to integrators: it names the cause without leaking internal error chains.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The destination is refused by the address policy; no connection was attempted.
    #[error("{0}")]
    Forbidden(Forbidden),
    /// A name resolved only to refused addresses; no connection was attempted. Integrators see
    /// the same words as for a name that does not resolve, so the delivery log cannot be used to
    /// map which internal names exist and where they point.
    #[error("could not resolve {host} to a public address")]
    ForbiddenName { host: String, forbidden: Forbidden },
    #[error("could not resolve {host} to a public address")]
    Dns { host: String },
    #[error("timed out after {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("connection refused")]
    ConnectionRefused,
    #[error("connection reset by the endpoint")]
    ConnectionReset,
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Request(String),
}

impl SendError {
    /// True when no request left Herald: the endpoint never saw this attempt.
    pub fn is_refused_by_policy(&self) -> bool {
        matches!(
            self,
            SendError::Forbidden(_) | SendError::ForbiddenName { .. }
        )
    }
}

/// The response head and the first bytes of the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The `Retry-After` header, unparsed.
    pub retry_after: Option<String>,
    /// At most [`RESPONSE_BODY_LIMIT`] bytes of the body, as text.
    pub body: String,
}

/// One attempt's result and how long it took to get the response head (or to fail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub latency: Duration,
    pub result: Result<Response, SendError>,
}

/// Sends deliveries. Cheap to clone: clones share the connection pool.
#[derive(Debug, Clone)]
pub struct DeliveryClient {
    client: reqwest::Client,
    policy: Arc<AddressPolicy>,
    timeout: Duration,
    user_agent: HeaderValue,
}

impl DeliveryClient {
    pub fn new(
        policy: AddressPolicy,
        timeout: Duration,
        user_agent: &str,
    ) -> Result<DeliveryClient, HttpError> {
        let policy = Arc::new(policy);
        let client = reqwest::Client::builder()
            .user_agent(user_agent)
            .timeout(timeout)
            .connect_timeout(timeout.min(CONNECT_TIMEOUT))
            // The registered URL is the one that was checked and that the tenant owns; a
            // redirect could point anywhere, so 3xx is an answer, and a failure.
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve names itself, out of the address policy's reach.
            .no_proxy()
            .dns_resolver(GuardedResolver {
                policy: policy.clone(),
            })
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .tcp_nodelay(true)
            .build()
            .map_err(HttpError::Build)?;
        Ok(DeliveryClient {
            client,
            policy,
            timeout,
            user_agent: HeaderValue::from_str(user_agent).map_err(|_| HttpError::UserAgent)?,
        })
    }

    /// The `user-agent` of every request.
    pub fn user_agent(&self) -> &HeaderValue {
        &self.user_agent
    }

    /// POSTs `body` with `headers` to `url`.
    pub async fn post(&self, url: &WebhookUrl, headers: HeaderMap, body: Bytes) -> Attempt {
        let started = Instant::now();
        let literal = match url.host() {
            url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
            url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
            // Names, `localhost` included, are judged by what they resolve to.
            url::Host::Domain(_) => None,
        };
        if let Some(ip) = literal
            && let Err(forbidden) = self.policy.check(ip)
        {
            return Attempt {
                latency: Duration::ZERO,
                result: Err(SendError::Forbidden(forbidden)),
            };
        }
        // The request takes `headers` as they are: a builder would copy them one by one into
        // a map of its own, growing it on the way.
        let mut request = reqwest::Request::new(reqwest::Method::POST, url.as_url().clone());
        *request.headers_mut() = headers;
        *request.body_mut() = Some(body.into());
        let sent = self.client.execute(request).await;
        let latency = started.elapsed();
        let result = match sent {
            Ok(response) => Ok(read_response(response).await),
            Err(err) => Err(self.curate(&err)),
        };
        Attempt { latency, result }
    }

    fn curate(&self, err: &reqwest::Error) -> SendError {
        if let Some(resolve) = find_source::<ResolveError>(err) {
            return match resolve {
                ResolveError::Forbidden { host, forbidden } => {
                    // The detail is for operators only; integrators see less.
                    tracing::info!(%host, %forbidden, "delivery refused by the address policy");
                    SendError::ForbiddenName {
                        host: host.clone(),
                        forbidden: forbidden.clone(),
                    }
                }
                ResolveError::Lookup { host } | ResolveError::NoAddresses { host } => {
                    SendError::Dns { host: host.clone() }
                }
            };
        }
        if err.is_timeout() {
            return SendError::Timeout(self.timeout);
        }
        if let Some(io) = find_source::<std::io::Error>(err) {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return SendError::ConnectionRefused,
                std::io::ErrorKind::ConnectionReset => return SendError::ConnectionReset,
                std::io::ErrorKind::TimedOut => return SendError::Timeout(self.timeout),
                _ => {}
            }
        }
        let cause = innermost(err);
        if err.is_connect() {
            SendError::Connect(cause)
        } else {
            SendError::Request(cause)
        }
    }
}

/// Reads the head's interesting parts and up to [`DRAIN_LIMIT`] bytes of the body. A body that
/// fails halfway still leaves the status, which is what decides the delivery.
async fn read_response(mut response: reqwest::Response) -> Response {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let mut kept = BytesMut::new();
    let mut read = 0usize;
    while read < DRAIN_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                read += chunk.len();
                let room = RESPONSE_BODY_LIMIT.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) => break,
            Err(err) => {
                tracing::debug!(error = %err, "response body ended early");
                break;
            }
        }
    }
    Response {
        status,
        retry_after,
        body: body_text(&kept),
    }
}

/// The body as text of at most [`RESPONSE_BODY_LIMIT`] bytes: invalid UTF-8 is replaced, and a
/// character cut by the limit is dropped rather than mangled.
fn body_text(bytes: &[u8]) -> String {
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => return text.to_owned(),
        // Only the last character was cut: keep everything before it.
        Err(err) if err.error_len().is_none() => {
            return String::from_utf8_lossy(&bytes[..err.valid_up_to()]).into_owned();
        }
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    };
    // Replacement characters are wider than the bytes they replace.
    let mut cut = text.len().min(RESPONSE_BODY_LIMIT);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text[..cut].to_owned()
}

fn find_source<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current = Some(err);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        current = err.source();
    }
    None
}

/// The deepest cause's message: hyper's and rustls's own words ("connection closed before
/// message completed", "invalid peer certificate: UnknownIssuer") say what went wrong, where
/// reqwest's outer layers only say where.
fn innermost(err: &(dyn StdError + 'static)) -> String {
    let mut current = err;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

/// Why [`GuardedResolver`] gave no address.
#[derive(Debug, Clone, thiserror::Error)]
enum ResolveError {
    #[error("could not resolve host {host}")]
    Lookup { host: String },
    #[error("host {host} has no addresses")]
    NoAddresses { host: String },
    #[error("host {host} resolves to {forbidden}")]
    Forbidden { host: String, forbidden: Forbidden },
}

/// Resolves names with the system resolver and returns only the addresses the policy allows.
///
/// Refused addresses are dropped rather than failing the whole name, so a dual-stack name with a
/// unique-local IPv6 address beside a public IPv4 one still works; the connection can only ever
/// be made to an allowed address.
#[derive(Debug)]
struct GuardedResolver {
    policy: Arc<AddressPolicy>,
}

impl GuardedResolver {
    async fn lookup(policy: &AddressPolicy, host: String) -> Result<Vec<SocketAddr>, ResolveError> {
        let resolved: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, 0)],
            Err(_) => tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|err| {
                    tracing::debug!(%host, error = %err, "name resolution failed");
                    ResolveError::Lookup { host: host.clone() }
                })?
                .collect(),
        };
        let mut refused = None;
        let allowed: Vec<SocketAddr> = resolved
            .into_iter()
            .filter(|addr| match policy.check(addr.ip()) {
                Ok(()) => true,
                Err(forbidden) => {
                    refused.get_or_insert(forbidden);
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), refused) {
            (false, _) => Ok(allowed),
            (true, Some(forbidden)) => Err(ResolveError::Forbidden { host, forbidden }),
            (true, None) => Err(ResolveError::NoAddresses { host }),
        }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = GuardedResolver::lookup(&policy, host).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with the value in the message
mod tests {
    use super::*;

    fn loopback_allowed() -> AddressPolicy {
        AddressPolicy::allowing(vec!["127.0.0.0/8".parse().unwrap()])
    }

    #[tokio::test]
    async fn resolver_refuses_names_that_resolve_to_refused_addresses() {
        let err = GuardedResolver::lookup(&AddressPolicy::default(), "localhost".to_owned())
            .await
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("host localhost resolves to ")
                && message.contains("loopback address"),
            "{message}"
        );
        let allowed = GuardedResolver::lookup(&loopback_allowed(), "localhost".to_owned())
            .await
            .unwrap();
        assert!(allowed.iter().all(|addr| addr.ip().is_loopback()));
        assert!(!allowed.is_empty());
    }

    #[tokio::test]
    async fn resolver_checks_literals_it_is_given() {
        let err = GuardedResolver::lookup(&AddressPolicy::default(), "10.0.0.1".to_owned())
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "host 10.0.0.1 resolves to 10.0.0.1 is a private-use address and is not an allowed \
             webhook destination"
        );
    }

    #[tokio::test]
    async fn literals_are_refused_before_connecting() {
        let client =
            DeliveryClient::new(AddressPolicy::default(), Duration::from_secs(1), "t").unwrap();
        for (url, expect) in [
            (
                "http://10.0.0.1/hook",
                "10.0.0.1 is a private-use address and is not an allowed webhook destination",
            ),
            (
                "http://169.254.169.254/latest/meta-data",
                "169.254.169.254 is a link-local address and is not an allowed webhook destination",
            ),
            (
                "http://[::ffff:127.0.0.1]:8080/",
                "::ffff:127.0.0.1 is an IPv6 form of 127.0.0.1, a loopback address and is not an \
                 allowed webhook destination",
            ),
        ] {
            let attempt = client
                .post(
                    &WebhookUrl::parse(url).unwrap(),
                    HeaderMap::new(),
                    Bytes::new(),
                )
                .await;
            let err = attempt.result.unwrap_err();
            assert!(err.is_refused_by_policy());
            assert_eq!(err.to_string(), expect, "{url}");
        }
    }

    #[tokio::test]
    async fn connection_refused_is_named() {
        // Bind then drop, so that nothing listens on the port.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let client = DeliveryClient::new(loopback_allowed(), Duration::from_secs(2), "t").unwrap();
        let url = WebhookUrl::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        let attempt = client.post(&url, HeaderMap::new(), Bytes::new()).await;
        assert_eq!(attempt.result, Err(SendError::ConnectionRefused));
    }

    #[test]
    fn body_text_is_capped_on_a_character_boundary() {
        assert_eq!(body_text(b"ok"), "ok");
        let long = "é".repeat(600);
        let capped = body_text(&long.as_bytes()[..RESPONSE_BODY_LIMIT - 1]);
        assert_eq!(capped, "é".repeat(511));
        let invalid = [0xffu8; RESPONSE_BODY_LIMIT];
        let replaced = body_text(&invalid);
        assert!(replaced.len() <= RESPONSE_BODY_LIMIT);
        assert!(replaced.starts_with('\u{fffd}'));
    }

    #[test]
    fn timeouts_read_naturally() {
        assert_eq!(
            SendError::Timeout(Duration::from_secs(15)).to_string(),
            "timed out after 15s"
        );
        assert_eq!(
            SendError::Timeout(Duration::from_millis(300)).to_string(),
            "timed out after 300ms"
        );
    }
}
