//! The HTTP client that delivers webhooks: pooled keep-alive connections, one hard timeout, no
//! redirects, and the address policy enforced on every address actually connected to.
//!
//! The policy is checked at connect time, not only when a webhook is registered, because a DNS
//! name can start resolving to an internal address at any moment (DNS rebinding). Names go
//! through a resolver that applies the policy; IP literals never reach a resolver, so they are
//! checked before the request is made.

use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use herald_core::{AddressPolicy, Forbidden, WebhookUrl};
use http::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use http_body_util::{BodyExt as _, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::CertificateDer;
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

/// TCP keepalive probes start after this long idle, and repeat this often.
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);

/// Data sent but not acknowledged for this long ends the connection.
#[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the delivery client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot set up TLS certificate verification")]
    Tls(#[source] rustls::Error),
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

type Https = HttpsConnector<HttpConnector<GuardedResolver>>;

type BoxError = Box<dyn StdError + Send + Sync>;

/// How many times a request the endpoint refused unprocessed over HTTP/2 is sent again, within
/// the attempt's timeout.
const UNPROCESSED_RESENDS: usize = 2;

/// The HTTPS connector with one bound over the whole set-up of a connection: resolving the
/// name, TCP, and the TLS handshake. hyper-util's own connect timeout bounds each TCP connect
/// only, and a connection set-up can outlive the delivery that started it (hyper-util finishes
/// it in the background for the pool when another connection freed up first): without this, an
/// endpoint that accepts TCP and never completes a handshake would hold a socket and a task.
#[derive(Clone)]
struct Connector {
    https: Https,
    timeout: Duration,
}

impl Connector {
    /// Connections to what `policy` allows, trusting the platform's certificate authorities
    /// and `extra_roots`, each set up within `timeout`.
    fn new(
        policy: &Arc<AddressPolicy>,
        timeout: Duration,
        extra_roots: Vec<CertificateDer<'static>>,
    ) -> Result<Connector, HttpError> {
        let mut http = HttpConnector::new_with_resolver(GuardedResolver {
            policy: policy.clone(),
        });
        // The TLS layer above takes `https` URLs; this one connects for both schemes.
        http.enforce_http(false);
        http.set_nodelay(true);
        // Split between the addresses a name has; `timeout` bounds the whole set-up.
        http.set_connect_timeout(Some(timeout));
        // An idle pooled connection whose endpoint went away is found out and dropped rather
        // than handed to the next delivery (reqwest's settings).
        http.set_keepalive(Some(TCP_KEEPALIVE));
        http.set_keepalive_interval(Some(TCP_KEEPALIVE));
        http.set_keepalive_retries(Some(3));
        #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
        http.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(extra_roots)?)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Ok(Connector { https, timeout })
    }
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = <Https as tower_service::Service<http::Uri>>::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.https.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.https.call(uri);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(connected) => connected,
                Err(_) => Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connecting timed out",
                )) as BoxError),
            }
        })
    }
}

/// Sends deliveries. Cheap to clone: clones share the connection pool.
///
/// Built on hyper-util's pooled client directly rather than on reqwest (which wraps the same
/// client): reqwest's per-request layers (the URL parsed twice, a service stack, its own
/// timers) cost about a seventh of a worker's CPU a delivery. Of what they did, Herald keeps
/// the one thing it needs, sending again a request an HTTP/2 endpoint refused unprocessed.
/// Requests go out as given: no proxy (a proxy would resolve names itself, out of the address
/// policy's reach), no redirects followed (the registered URL is the one that was checked and
/// that the tenant owns, so a 3xx is an answer, and a failure), no default headers.
#[derive(Clone)]
pub struct DeliveryClient {
    client: Client<Connector, Full<Bytes>>,
    policy: Arc<AddressPolicy>,
    timeout: Duration,
    user_agent: HeaderValue,
}

impl std::fmt::Debug for DeliveryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryClient")
            .field("policy", &self.policy)
            .field("timeout", &self.timeout)
            .field("user_agent", &self.user_agent)
            .finish_non_exhaustive()
    }
}

impl DeliveryClient {
    /// A client that trusts the certificate authorities the platform trusts.
    pub fn new(
        policy: AddressPolicy,
        timeout: Duration,
        user_agent: &str,
    ) -> Result<DeliveryClient, HttpError> {
        Self::trusting(policy, timeout, user_agent, Vec::new())
    }

    /// A client that also trusts `extra_roots`.
    pub fn trusting(
        policy: AddressPolicy,
        timeout: Duration,
        user_agent: &str,
        extra_roots: Vec<CertificateDer<'static>>,
    ) -> Result<DeliveryClient, HttpError> {
        let user_agent = HeaderValue::from_str(user_agent).map_err(|_| HttpError::UserAgent)?;
        let policy = Arc::new(policy);
        let connector = Connector::new(&policy, timeout.min(CONNECT_TIMEOUT), extra_roots)?;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Ok(DeliveryClient {
            client,
            policy,
            timeout,
            user_agent,
        })
    }

    /// The `user-agent` of every request.
    pub fn user_agent(&self) -> &HeaderValue {
        &self.user_agent
    }

    /// POSTs `body` with `headers` to `url`. The request timeout covers the whole exchange:
    /// connecting, the response head, and reading the body (which stops there, keeping what
    /// came). A request an HTTP/2 endpoint refused before processing it (a graceful shutdown
    /// of the connection, or the stream refused) is sent again up to twice within that time,
    /// as reqwest did: such an endpoint has not seen it.
    pub async fn post(&self, url: &WebhookUrl, headers: &HeaderMap, body: Bytes) -> Attempt {
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
        let uri = match http::Uri::try_from(url.as_str()) {
            Ok(uri) => uri,
            Err(err) => {
                return Attempt {
                    latency: Duration::ZERO,
                    result: Err(SendError::Request(format!("the URL is not usable: {err}"))),
                };
            }
        };
        let deadline = tokio::time::sleep_until(started + self.timeout);
        tokio::pin!(deadline);
        let mut resends = 0;
        let sent = loop {
            let mut request = http::Request::new(Full::new(body.clone()));
            *request.method_mut() = http::Method::POST;
            *request.uri_mut() = uri.clone();
            *request.headers_mut() = headers.clone();
            let sent = tokio::select! {
                biased;
                sent = self.client.request(request) => sent,
                () = &mut deadline => {
                    return Attempt {
                        latency: started.elapsed(),
                        result: Err(SendError::Timeout(self.timeout)),
                    };
                }
            };
            match sent {
                Err(err) if resends < UNPROCESSED_RESENDS && refused_unprocessed(&err) => {
                    resends += 1;
                    tracing::debug!(error = %innermost(&err), "sent again: refused unprocessed");
                }
                sent => break sent,
            }
        };
        let latency = started.elapsed();
        let result = match sent {
            Ok(response) => Ok(read_response(response, deadline).await),
            Err(err) => Err(self.curate(&err)),
        };
        Attempt { latency, result }
    }

    fn curate(&self, err: &hyper_util::client::legacy::Error) -> SendError {
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

/// True when an HTTP/2 endpoint refused the request without processing it: it shut the
/// connection down gracefully (GOAWAY without an error) or refused the stream (RFC 9113,
/// section 8.7), so sending it again cannot deliver twice.
fn refused_unprocessed(err: &hyper_util::client::legacy::Error) -> bool {
    find_source::<h2::Error>(err).is_some_and(|err| {
        err.is_remote()
            && ((err.is_go_away() && err.reason() == Some(h2::Reason::NO_ERROR))
                || (err.is_reset() && err.reason() == Some(h2::Reason::REFUSED_STREAM)))
    })
}

/// TLS as reqwest sets it up: rustls on aws-lc-rs, the platform's verifier, HTTP/2 offered.
fn tls_config(
    extra_roots: Vec<CertificateDer<'static>>,
) -> Result<rustls::ClientConfig, HttpError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = if extra_roots.is_empty() {
        rustls_platform_verifier::Verifier::new(provider.clone())
    } else {
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra_roots, provider.clone())
    }
    .map_err(HttpError::Tls)?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(HttpError::Tls)?
        .dangerous()
        // Not dangerous: this is the platform's own verification, installed as rustls asks.
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// Reads the head's interesting parts and up to [`DRAIN_LIMIT`] bytes of the body, until
/// `deadline`. A body that fails halfway still leaves the status, which is what decides the
/// delivery.
async fn read_response(
    response: http::Response<hyper::body::Incoming>,
    mut deadline: Pin<&mut tokio::time::Sleep>,
) -> Response {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let mut body = response.into_body();
    let mut kept = BytesMut::new();
    let mut read = 0usize;
    while read < DRAIN_LIMIT {
        let frame = tokio::select! {
            biased;
            frame = body.frame() => frame,
            () = &mut deadline => {
                tracing::debug!("response body not read by the request timeout");
                break;
            }
        };
        match frame {
            Some(Ok(frame)) => {
                // Trailers carry nothing the log records.
                let Ok(chunk) = frame.into_data() else {
                    continue;
                };
                read += chunk.len();
                let room = RESPONSE_BODY_LIMIT.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            None => break,
            Some(Err(err)) => {
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
/// the client's outer layers only say where.
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
#[derive(Debug, Clone)]
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

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = ResolveError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ResolveError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ResolveError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = GuardedResolver::lookup(&policy, host).await?;
            Ok(addrs.into_iter())
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
                    &HeaderMap::new(),
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
        let attempt = client.post(&url, &HeaderMap::new(), Bytes::new()).await;
        assert_eq!(attempt.result, Err(SendError::ConnectionRefused));
    }

    /// A loopback server that answers each connection's first request as `answer` says, then
    /// closes it; with `tls`, behind that TLS configuration.
    async fn server(
        tls: Option<rustls::ServerConfig>,
        answer: fn(&str) -> Answer,
    ) -> std::net::SocketAddr {
        use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

        async fn serve(
            mut stream: impl AsyncRead + AsyncWrite + Unpin,
            answer: fn(&str) -> Answer,
        ) {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|window| window == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let request_line = String::from_utf8_lossy(&head);
            let request_line = request_line.lines().next().unwrap_or_default().to_owned();
            match answer(&request_line) {
                Answer::Never => std::future::pending().await,
                Answer::Now(response) => {
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                }
                Answer::HeadThenStall(head) => {
                    let _ = stream.write_all(head.as_bytes()).await;
                    std::future::pending().await
                }
            }
        }

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tls.map(|config| tokio_rustls::TlsAcceptor::from(Arc::new(config)));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        // A handshake fails when the client refuses the certificate.
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                serve(tls, answer).await;
                            }
                        }
                        None => serve(tcp, answer).await,
                    }
                });
            }
        });
        addr
    }

    enum Answer {
        Never,
        Now(String),
        HeadThenStall(String),
    }

    /// Echoes the request line as the body.
    fn echo(request_line: &str) -> Answer {
        Answer::Now(format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{request_line}",
            request_line.len()
        ))
    }

    /// A certificate authority of the test's own, and a server configuration presenting a
    /// certificate it issued for `localhost`.
    fn issued_for_localhost() -> (CertificateDer<'static>, rustls::ServerConfig) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![certificate.der().clone()],
            rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )
        .unwrap();
        (ca.der().clone(), config)
    }

    #[tokio::test]
    async fn https_is_delivered_to_a_trusted_certificate_and_refused_otherwise() {
        let (ca, config) = issued_for_localhost();
        let addr = server(Some(config), echo).await;
        let url = WebhookUrl::parse(&format!("https://localhost:{}/hook", addr.port())).unwrap();

        let trusting =
            DeliveryClient::trusting(loopback_allowed(), Duration::from_secs(5), "t", vec![ca])
                .unwrap();
        let attempt = trusting.post(&url, &HeaderMap::new(), Bytes::new()).await;
        let response = attempt.result.unwrap();
        assert_eq!(
            (response.status, response.body.as_str()),
            (200, "POST /hook HTTP/1.1")
        );

        let platform =
            DeliveryClient::new(loopback_allowed(), Duration::from_secs(5), "t").unwrap();
        let attempt = platform.post(&url, &HeaderMap::new(), Bytes::new()).await;
        assert_eq!(
            attempt.result,
            Err(SendError::Connect(
                "invalid peer certificate: UnknownIssuer".to_owned()
            ))
        );
    }

    /// An attempt over plain HTTP with `timeout`, to a server that answers as `answer` says.
    async fn plain_attempt(answer: fn(&str) -> Answer, timeout: Duration) -> Attempt {
        let addr = server(None, answer).await;
        let client = DeliveryClient::new(loopback_allowed(), timeout, "t").unwrap();
        let url = WebhookUrl::parse(&format!("http://{addr}/")).unwrap();
        bounded(client.post(&url, &HeaderMap::new(), Bytes::new())).await
    }

    /// The status and body of a bodiless POST to `url`, which must be answered.
    async fn answer_of(client: &DeliveryClient, url: &WebhookUrl) -> (u16, String) {
        let attempt = bounded(client.post(url, &HeaderMap::new(), Bytes::new())).await;
        let response = attempt.result.unwrap();
        (response.status, response.body)
    }

    /// What `work` gives, or a failed test if the client's own timeout did not end it.
    async fn bounded<T>(work: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), work)
            .await
            .expect("the client's own timeout ends it")
    }

    /// An HTTPS endpoint on loopback that speaks HTTP/2 only and serves each connection with
    /// `serve`, given the connection's number (from 1); a client that trusts it, and its URL.
    async fn http2_endpoint<F>(
        serve: impl Fn(usize, tokio_rustls::server::TlsStream<tokio::net::TcpStream>) -> F
        + Send
        + Sync
        + 'static,
    ) -> (DeliveryClient, WebhookUrl)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (ca, mut config) = issued_for_localhost();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let serve = Arc::new(serve);
        tokio::spawn(async move {
            for connection in 1.. {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, serve) = (acceptor.clone(), serve.clone());
                tokio::spawn(async move {
                    // A handshake fails when the client refuses the certificate.
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        serve(connection, tls).await;
                    }
                });
            }
        });
        let client =
            DeliveryClient::trusting(loopback_allowed(), Duration::from_secs(5), "t", vec![ca])
                .unwrap();
        let url = WebhookUrl::parse(&format!("https://localhost:{port}/")).unwrap();
        (client, url)
    }

    /// Serves an HTTP/2 connection until the client lets it go, answering every request with
    /// `answer`'s text.
    async fn serve_http2(
        tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        answer: impl Fn(&http::Request<hyper::body::Incoming>) -> String + Send + Sync + 'static,
    ) {
        let service = hyper::service::service_fn(move |request| {
            let body = Bytes::from(answer(&request));
            async move { Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(body))) }
        });
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
            .await;
    }

    #[tokio::test]
    async fn https_speaks_http2_when_the_endpoint_offers_it() {
        // Answers with the protocol version the request came in.
        let (client, url) =
            http2_endpoint(|_, tls| serve_http2(tls, |request| format!("{:?}", request.version())))
                .await;
        assert_eq!(answer_of(&client, &url).await, (200, "HTTP/2.0".to_owned()));
    }

    #[tokio::test]
    async fn https_checks_the_certificate_names_the_host() {
        let (ca, config) = issued_for_localhost();
        let addr = server(Some(config), echo).await;
        let client =
            DeliveryClient::trusting(loopback_allowed(), Duration::from_secs(5), "t", vec![ca])
                .unwrap();
        // The certificate names `localhost`, not the address.
        let url = WebhookUrl::parse(&format!("https://{addr}/")).unwrap();
        let attempt = bounded(client.post(&url, &HeaderMap::new(), Bytes::new())).await;
        match attempt.result {
            Err(SendError::Connect(cause)) => {
                assert!(cause.contains("not valid for name"), "{cause}");
            }
            other => panic!("expected a refused certificate, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_request_refused_unprocessed_over_http2_is_sent_again() {
        let (client, url) = http2_endpoint(|_, tls| async move {
            let mut connection = h2::server::handshake(tls).await.unwrap();
            let mut streams = 0;
            // Refuses the first request's stream, answers the next with its number.
            while let Some(Ok((_, mut respond))) = connection.accept().await {
                streams += 1;
                if streams == 1 {
                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                    continue;
                }
                let mut body = respond
                    .send_response(http::Response::new(()), false)
                    .unwrap();
                body.send_data(Bytes::from(format!("request {streams}")), true)
                    .unwrap();
            }
        })
        .await;
        assert_eq!(
            answer_of(&client, &url).await,
            (200, "request 2".to_owned())
        );
    }

    #[tokio::test]
    async fn a_request_an_http2_endpoint_shut_down_before_processing_is_sent_again() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        let (client, url) = http2_endpoint(|connection, mut tls| async move {
            if connection == 1 {
                // Reads the client's frames up to the request's HEADERS, then shuts down
                // gracefully having processed no stream: SETTINGS, then GOAWAY with last stream
                // 0 and NO_ERROR (RFC 9113, sections 6.5 and 6.8).
                let mut preface = [0; 24];
                tls.read_exact(&mut preface).await.unwrap();
                loop {
                    let mut head = [0; 9];
                    tls.read_exact(&mut head).await.unwrap();
                    let length = u32::from_be_bytes([0, head[0], head[1], head[2]]);
                    let mut payload = vec![0; length as usize];
                    tls.read_exact(&mut payload).await.unwrap();
                    if head[3] == 0x1 {
                        break;
                    }
                }
                tls.write_all(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]).await.unwrap();
                let go_away = [0, 0, 8, 0x7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                tls.write_all(&go_away).await.unwrap();
                tls.flush().await.unwrap();
                // Held until the client lets go of it.
                let _ = tls.read_to_end(&mut Vec::new()).await;
                return;
            }
            serve_http2(tls, move |_| format!("connection {connection}")).await;
        })
        .await;
        assert_eq!(
            answer_of(&client, &url).await,
            (200, "connection 2".to_owned())
        );
    }

    #[tokio::test]
    async fn a_connection_whose_handshake_never_ends_gives_up_at_the_connect_timeout() {
        // Accepts TCP, then says nothing: the TLS handshake never completes.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp);
            }
        });
        let mut connector = Connector::new(
            &Arc::new(loopback_allowed()),
            Duration::from_millis(200),
            Vec::new(),
        )
        .unwrap();
        let uri: http::Uri = format!("https://localhost:{port}/").parse().unwrap();
        let started = Instant::now();
        let Err(err) = bounded(tower_service::Service::call(&mut connector, uri)).await else {
            panic!("a connection was made");
        };
        assert!(started.elapsed() >= Duration::from_millis(200));
        let io = find_source::<std::io::Error>(&*err).expect("an I/O error");
        assert_eq!(io.kind(), std::io::ErrorKind::TimedOut, "{err}");
        held.abort();
    }

    #[tokio::test]
    async fn deliveries_to_one_endpoint_share_a_pooled_connection() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        // Answers every request of a connection, and counts the connections.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut pending = Vec::new();
                    let mut buf = [0u8; 1024];
                    while let Ok(n @ 1..) = tcp.read(&mut buf).await {
                        pending.extend_from_slice(&buf[..n]);
                        // The requests have empty bodies: each ends with its head.
                        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            pending.drain(..end + 4);
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if tcp.write_all(answer).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        let client = DeliveryClient::new(loopback_allowed(), Duration::from_secs(5), "t").unwrap();
        let url = WebhookUrl::parse(&format!("http://{addr}/")).unwrap();
        for _ in 0..3 {
            let attempt = bounded(client.post(&url, &HeaderMap::new(), Bytes::new())).await;
            assert_eq!(
                attempt.result.map(|response| response.body),
                Ok("ok".to_owned())
            );
        }
        assert_eq!(connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_timeout_covers_the_response_head() {
        let attempt = plain_attempt(|_| Answer::Never, Duration::from_millis(200)).await;
        assert_eq!(
            attempt.result,
            Err(SendError::Timeout(Duration::from_millis(200)))
        );
        assert!(
            attempt.latency >= Duration::from_millis(200),
            "{:?}",
            attempt.latency
        );
    }

    #[tokio::test]
    async fn a_body_that_stalls_keeps_the_status_and_what_came() {
        let stall = |_: &str| {
            Answer::HeadThenStall(
                "HTTP/1.1 503 Service Unavailable\r\nretry-after: 7\r\ncontent-length: 100\r\n\r\nbusy"
                    .to_owned(),
            )
        };
        let attempt = plain_attempt(stall, Duration::from_secs(1)).await;
        assert_eq!(
            attempt.result,
            Ok(Response {
                status: 503,
                retry_after: Some("7".to_owned()),
                body: "busy".to_owned(),
            })
        );
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
