//! A real HTTP webhook receiver for tests: records every request and answers with a
//! per-path script (status sequences, delays, extra headers), and can be taken down and brought
//! back on the same port.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// In arrival order, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub received_at: Instant,
}

impl Recorded {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The body as UTF-8 text, lossily.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn body_json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("request body is not JSON: {}", self.body_text()))
    }
}

/// What the receiver answers: a status, extra headers, a body and an optional delay before
/// answering (longer than the sender's timeout simulates a hanging endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Bytes,
    delay: Option<Duration>,
}

impl Response {
    pub fn status(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
            delay: None,
        }
    }

    /// 200 with an empty body: what the receiver answers unless told otherwise.
    pub fn ok() -> Response {
        Response::status(200)
    }

    /// Adds a response header, e.g. `Retry-After`.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Response {
        self.body = body.into();
        self
    }

    /// Waits this long before answering.
    pub fn delay(mut self, delay: Duration) -> Response {
        self.delay = Some(delay);
        self
    }
}

impl From<u16> for Response {
    fn from(status: u16) -> Response {
        Response::status(status)
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<ReceiverState>,
    /// Bumped on every recorded request, so waiters wake without polling.
    arrivals: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct ReceiverState {
    requests: Vec<Recorded>,
    /// Per path; the front is answered next and the last entry repeats forever.
    scripts: HashMap<String, VecDeque<Response>>,
    default: Option<Response>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, ReceiverState> {
        // A panic while holding the lock cannot leave the state half-updated (every update
        // is a single push or insert), so a poisoned lock is still safe to use.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A webhook receiver on 127.0.0.1. Every path is accepted with any method.
#[derive(Debug)]
pub struct Receiver {
    shared: Arc<Shared>,
    port: u16,
    running: Option<Running>,
}

#[derive(Debug)]
struct Running {
    server: JoinHandle<()>,
    connections: Arc<Connections>,
}

impl Receiver {
    /// Starts a receiver on a free port.
    pub async fn start() -> anyhow::Result<Receiver> {
        Receiver::start_on(0).await
    }

    /// Starts a receiver on `port` (0 picks a free one); a test that stopped a receiver brings
    /// one back on the same port with this.
    pub async fn start_on(port: u16) -> anyhow::Result<Receiver> {
        let (arrivals, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            state: Mutex::new(ReceiverState::default()),
            arrivals,
        });
        let mut receiver = Receiver {
            shared,
            port,
            running: None,
        };
        receiver.serve().await?;
        Ok(receiver)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The URL of `path` on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url(), normalise(path))
    }

    /// Answers every request to `path` with `response` from now on.
    pub fn respond(&self, path: &str, response: impl Into<Response>) {
        self.respond_seq(path, [response]);
    }

    /// Answers requests to `path` with `responses` in order; the last one then repeats.
    pub fn respond_seq<R: Into<Response>>(
        &self,
        path: &str,
        responses: impl IntoIterator<Item = R>,
    ) {
        let script: VecDeque<Response> = responses.into_iter().map(Into::into).collect();
        let mut state = self.shared.lock();
        if script.is_empty() {
            state.scripts.remove(&normalise(path));
        } else {
            state.scripts.insert(normalise(path), script);
        }
    }

    /// Answers requests to paths without a script with `response` (initially 200).
    pub fn respond_default(&self, response: impl Into<Response>) {
        self.shared.lock().default = Some(response.into());
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// The requests to `path` so far, in arrival order.
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        let path = normalise(path);
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|request| request.path == path)
            .cloned()
            .collect()
    }

    /// Waits until at least `n` requests to `path` have arrived and returns all of them.
    pub async fn wait_for_requests(
        &self,
        path: &str,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Recorded>> {
        let mut arrivals = self.shared.arrivals.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Marks the current count as seen before looking, so an arrival between the look
            // and the wait still wakes us.
            arrivals.borrow_and_update();
            let got = self.requests_to(path);
            if got.len() >= n {
                return Ok(got);
            }
            match tokio::time::timeout_at(deadline, arrivals.changed()).await {
                Ok(Ok(())) => {}
                // The sender lives in `self.shared`, so it cannot be gone while we borrow self.
                Ok(Err(_)) | Err(_) => {
                    let all = self.requests();
                    let seen: Vec<String> = all
                        .iter()
                        .map(|r| format!("{} {}", r.method, r.path))
                        .collect();
                    anyhow::bail!(
                        "expected {n} request(s) to {} within {timeout:?}, got {}; \
                         all {} request(s) received: {seen:?}",
                        normalise(path),
                        got.len(),
                        all.len()
                    );
                }
            }
        }
    }

    /// Forgets the recorded requests (scripts stay).
    pub fn clear(&self) {
        self.shared.lock().requests.clear();
    }

    /// Takes the receiver down like a crashed endpoint: stops listening and closes every open
    /// connection, including ones whose answer is still being delayed.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.server.abort();
            // Awaiting the aborted task guarantees the listener is closed, so the port can be
            // bound again right away.
            if let Err(err) = running.server.await
                && !err.is_cancelled()
            {
                tracing::warn!(%err, "receiver server task failed");
            }
            running.connections.shutdown_all();
        }
    }

    /// Brings a stopped receiver back on the same port, keeping its scripts and records.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        self.serve().await
    }

    async fn serve(&mut self) -> anyhow::Result<()> {
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .with_context(|| format!("binding the test receiver to 127.0.0.1:{}", self.port))?;
        self.port = listener
            .local_addr()
            .context("reading the receiver's address")?
            .port();
        let connections = Arc::new(Connections::default());
        let listener = TrackedListener {
            inner: listener,
            connections: connections.clone(),
        };
        let app = Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::disable())
            .with_state(self.shared.clone());
        let server = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                tracing::warn!(%err, "test receiver stopped");
            }
        });
        self.running = Some(Running {
            server,
            connections,
        });
        Ok(())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.server.abort();
            running.connections.shutdown_all();
        }
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let received_at = Instant::now();
    let path = uri.path().to_owned();
    let recorded = Recorded {
        method: method.to_string(),
        path: path.clone(),
        query: uri.query().map(str::to_owned),
        headers: headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
        received_at,
    };
    let response = {
        let mut state = shared.lock();
        state.requests.push(recorded);
        next_response(&mut state, &path)
    };
    shared.arrivals.send_modify(|count| *count += 1);

    if let Some(delay) = response.delay {
        tokio::time::sleep(delay).await;
    }
    build(&response)
}

fn next_response(state: &mut ReceiverState, path: &str) -> Response {
    match state.scripts.get_mut(path) {
        Some(script) if script.len() > 1 => script.pop_front().unwrap_or_else(Response::ok),
        Some(script) => script.front().cloned().unwrap_or_else(Response::ok),
        None => state.default.clone().unwrap_or_else(Response::ok),
    }
}

fn build(response: &Response) -> axum::response::Response {
    let mut built = axum::response::Response::new(Body::from(response.body.clone()));
    *built.status_mut() =
        StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in &response.headers {
        match (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            (Ok(name), Ok(value)) => {
                built.headers_mut().append(name, value);
            }
            _ => tracing::warn!(%name, %value, "scripted header is not valid HTTP; skipped"),
        }
    }
    built
}

fn normalise(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    }
}

/// Second handles on the accepted sockets, so that stopping the receiver can close
/// connections that axum's per-connection tasks (which outlive the server task) still hold.
#[derive(Debug, Default)]
struct Connections {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, std::net::TcpStream>>,
}

impl Connections {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, std::net::TcpStream>> {
        // Inserts and removals are atomic, so a poisoned map is still consistent.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn track(self: &Arc<Self>, stream: TcpStream) -> std::io::Result<TrackedStream> {
        let stream = stream.into_std()?;
        let handle = stream.try_clone()?;
        let inner = TcpStream::from_std(stream)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, handle);
        Ok(TrackedStream {
            inner,
            id,
            connections: self.clone(),
        })
    }

    fn shutdown_all(&self) {
        for (_, handle) in self.lock().drain() {
            // The peer may already have gone; nothing is left to close then.
            if let Err(err) = handle.shutdown(std::net::Shutdown::Both) {
                tracing::debug!(%err, "closing a receiver connection");
            }
        }
    }
}

struct TrackedListener {
    inner: TcpListener,
    connections: Arc<Connections>,
}

impl axum::serve::Listener for TrackedListener {
    type Io = TrackedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => match self.connections.track(stream) {
                    Ok(stream) => return (stream, addr),
                    Err(err) => tracing::warn!(%err, "dropping a receiver connection"),
                },
                Err(err) => {
                    // Typically out of file descriptors; retrying at once would spin.
                    tracing::warn!(%err, "receiver accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An accepted connection that unregisters its second handle when closed, so that dropping
/// the connection really closes the socket.
struct TrackedStream {
    inner: TcpStream,
    id: u64,
    connections: Arc<Connections>,
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        self.connections.lock().remove(&self.id);
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
