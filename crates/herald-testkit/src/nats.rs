//! A private `nats-server` with JetStream for one test: its own port and store folder, and
//! control over its life (kill -9, graceful stop, restart on the same port and store); or a
//! cluster of them on loopback ports.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tempfile::TempDir;

use crate::net::free_port;

/// Environment variable naming the `nats-server` binary to run.
const BIN_ENV: &str = "HERALD_NATS_SERVER_BIN";
/// Where Debian's package installs the server, which is not on every user's PATH.
const DEBIAN_BIN: &str = "/usr/sbin/nats-server";
const INSTALL_HINT: &str =
    "install nats-server (Debian: apt-get install nats-server) or set HERALD_NATS_SERVER_BIN";

/// Generous, because a loaded CI machine replaying a JetStream store can take seconds.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// A port picked by [`free_port`] can be taken by another process before the server binds it;
/// starting again on a new port is cheap.
const START_ATTEMPTS: usize = 3;
/// How much of the server log is printed when a test panics while the server is alive.
const LOG_TAIL_BYTES: u64 = 8 * 1024;

/// A `nats-server -js` child process owned by one test. Dropping it kills the process and
/// removes its store.
#[derive(Debug)]
pub struct NatsServer {
    bin: PathBuf,
    port: u16,
    dir: TempDir,
    child: Option<Child>,
    cluster: Option<ClusterRole>,
}

/// A node's place in a [`NatsCluster`].
#[derive(Debug, Clone)]
struct ClusterRole {
    name: String,
    cluster_port: u16,
    routes: Vec<u16>,
}

impl NatsServer {
    /// Starts a server on a free port with its own JetStream store and waits until it accepts
    /// clients.
    pub fn start() -> anyhow::Result<NatsServer> {
        let bin = find_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("herald-nats-")
            .tempdir()
            .context("creating a folder for nats-server")?;
        let mut server = NatsServer {
            bin,
            port: 0,
            dir,
            child: None,
            cluster: None,
        };
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            server.port = free_port()?;
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(err) if server.log().contains("address already in use") => {
                    last_error = Some(err);
                }
                Err(err) => return Err(err),
            }
        }
        Err(last_error
            .unwrap_or_else(|| anyhow::anyhow!("nats-server did not start"))
            .context(format!(
                "nats-server could not bind a port in {START_ATTEMPTS} attempts"
            )))
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's name in its cluster (`n1`, `n2`, …); none for a lone server.
    pub fn name(&self) -> Option<&str> {
        self.cluster.as_ref().map(|role| role.name.as_str())
    }

    /// The JetStream store folder, kept across [`kill`](Self::kill) and
    /// [`restart`](Self::restart).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("jetstream")
    }

    /// The file that receives the server's stdout and stderr, across restarts.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Whether the process is still alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_)) | Err(_)) | None => false,
        }
    }

    /// Kills the process with SIGKILL, like a crash: nothing is flushed or closed cleanly.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            // An error here means the process has already exited, which is what we want.
            if let Err(err) = child.kill() {
                tracing::debug!(%err, "nats-server had already exited");
            }
            child.wait().context("waiting for the killed nats-server")?;
        }
        Ok(())
    }

    /// Stops the process gracefully (the server's own `--signal quit`), falling back to
    /// SIGKILL if it has not exited within a deadline.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        // std can only send SIGKILL, and unsafe code is forbidden, so the server binary
        // delivers the graceful signal to itself.
        let signalled = Command::new(&self.bin)
            .arg("--signal")
            .arg(format!("quit={}", child.id()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !matches!(signalled, Ok(status) if status.success()) {
            tracing::warn!(
                ?signalled,
                "could not signal nats-server to quit; killing it"
            );
            return self.kill();
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if child.try_wait().context("checking nats-server")?.is_some() {
                self.child = None;
                return Ok(());
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        tracing::warn!("nats-server did not stop within {STOP_TIMEOUT:?}; killing it");
        self.kill()
    }

    /// Starts the server again on the same port with the same store, so JetStream streams,
    /// consumers and their data survive. Stops it first if it is still running.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.spawn()
    }

    /// Connects a client to this server.
    pub async fn client(&self) -> anyhow::Result<async_nats::Client> {
        let url = self.url();
        async_nats::connect(&url)
            .await
            .with_context(|| format!("connecting to the test nats-server at {url}"))
    }

    /// Connects a client and wraps it in a JetStream context.
    pub async fn jetstream(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        Ok(async_nats::jetstream::new(self.client().await?))
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("opening the nats-server log file")?;
        let stderr = log.try_clone().context("duplicating the log file handle")?;
        let child = Command::new(&self.bin)
            .arg("-a")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-js")
            .arg("-sd")
            .arg(self.store_dir())
            .args(self.cluster.iter().flat_map(|role| {
                let routes = role
                    .routes
                    .iter()
                    .map(|port| format!("nats://127.0.0.1:{port}"))
                    .collect::<Vec<_>>()
                    .join(",");
                [
                    "--server_name".to_owned(),
                    role.name.clone(),
                    "--cluster_name".to_owned(),
                    "herald-test".to_owned(),
                    "--cluster".to_owned(),
                    format!("nats://127.0.0.1:{}", role.cluster_port),
                    "--routes".to_owned(),
                    routes,
                ]
            }))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("running {}; {INSTALL_HINT}", self.bin.display()))?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait().context("checking nats-server")?,
                None => bail!("nats-server is not running"),
            };
            if let Some(status) = exited {
                self.child = None;
                bail!(
                    "nats-server on port {} exited with {status} before accepting clients; log:\n{}",
                    self.port,
                    self.log()
                );
            }
            let probe = probe(addr);
            if probe.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill()?;
                bail!(
                    "nats-server on port {} did not accept clients within {READY_TIMEOUT:?} \
                     (last probe: {probe:?}); log:\n{}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn log_tail(&self) -> String {
        let Ok(mut file) = File::open(self.log_path()) else {
            return String::new();
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if file
            .seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))
            .is_err()
        {
            return String::new();
        }
        let mut tail = Vec::new();
        if file.read_to_end(&mut tail).is_err() {
            return String::new();
        }
        String::from_utf8_lossy(&tail).into_owned()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The folder (and the log in it) is removed with `self.dir`; this is the last
            // chance to show what the server saw during the failed test.
            eprintln!(
                "--- nats-server log (port {}) ---\n{}",
                self.port,
                self.log_tail()
            );
        }
        if let Err(err) = self.kill() {
            eprintln!("could not kill nats-server on port {}: {err:#}", self.port);
        }
    }
}

/// The server is ready once it greets a client with an INFO line; nats-server enables
/// JetStream before it starts accepting clients, and says so in that line.
fn probe(addr: SocketAddr) -> anyhow::Result<()> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    if line.starts_with("INFO ") && line.contains("\"jetstream\":true") {
        Ok(())
    } else {
        bail!("unexpected greeting {line:?}")
    }
}

fn find_binary() -> anyhow::Result<PathBuf> {
    find_binary_in(
        std::env::var_os(BIN_ENV),
        std::env::var_os("PATH"),
        Path::new(DEBIAN_BIN),
    )
}

/// The explicit choice first, then PATH, then where Debian installs it.
fn find_binary_in(
    explicit: Option<OsString>,
    path: Option<OsString>,
    fallback: &Path,
) -> anyhow::Result<PathBuf> {
    if let Some(bin) = explicit {
        let bin = PathBuf::from(bin);
        if bin.is_file() {
            return Ok(bin);
        }
        bail!(
            "{BIN_ENV}={} does not name a file; {INSTALL_HINT}",
            bin.display()
        );
    }
    let on_path = path.and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    });
    if let Some(bin) = on_path {
        return Ok(bin);
    }
    if fallback.is_file() {
        return Ok(fallback.to_path_buf());
    }
    bail!(
        "nats-server not found on PATH or at {}; {INSTALL_HINT}",
        fallback.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_says_how_to_install_it() -> anyhow::Result<()> {
        let empty = tempfile::tempdir()?;
        let missing = empty.path().join("nats-server");
        let err = find_binary_in(None, Some(empty.path().into()), &missing)
            .err()
            .map(|err| err.to_string())
            .unwrap_or_default();
        assert!(err.contains("apt-get install nats-server"), "{err}");
        assert!(err.contains("HERALD_NATS_SERVER_BIN"), "{err}");

        let err = find_binary_in(Some(missing.clone().into()), None, &missing)
            .err()
            .map(|err| err.to_string())
            .unwrap_or_default();
        assert!(err.starts_with("HERALD_NATS_SERVER_BIN="), "{err}");
        Ok(())
    }

    #[test]
    fn the_explicit_binary_wins_over_path() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let explicit = dir.path().join("my-nats");
        std::fs::write(&explicit, "")?;
        let found = find_binary_in(
            Some(explicit.clone().into()),
            Some(dir.path().into()),
            Path::new(DEBIAN_BIN),
        )?;
        assert_eq!(found, explicit);
        Ok(())
    }
}

/// Several `nats-server` processes clustered on loopback ports, with JetStream: streams can
/// have replicas, and a node (the leader of a stream, say) can be killed and restarted.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

/// How long the cluster may take to elect its JetStream meta leader.
const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(30);

impl NatsCluster {
    /// Starts `size` nodes named `n1`, `n2`, … and waits until JetStream answers.
    pub async fn start(size: usize) -> anyhow::Result<NatsCluster> {
        let bin = find_binary()?;
        let ports = (0..size)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<anyhow::Result<Vec<(u16, u16)>>>()?;
        let mut nodes = Vec::with_capacity(size);
        for (index, (port, cluster_port)) in ports.iter().enumerate() {
            let dir = tempfile::Builder::new()
                .prefix("herald-nats-cluster-")
                .tempdir()
                .context("creating a folder for nats-server")?;
            let mut node = NatsServer {
                bin: bin.clone(),
                port: *port,
                dir,
                child: None,
                cluster: Some(ClusterRole {
                    name: format!("n{}", index + 1),
                    cluster_port: *cluster_port,
                    routes: ports
                        .iter()
                        .filter(|(_, other)| other != cluster_port)
                        .map(|(_, other)| *other)
                        .collect(),
                }),
            };
            node.spawn()?;
            nodes.push(node);
        }
        let cluster = NatsCluster { nodes };
        cluster.wait_for_jetstream().await?;
        Ok(cluster)
    }

    /// Every node's client URL, comma-separated, as clients take them.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node named `name` (`n1`, …).
    pub fn node(&mut self, name: &str) -> Option<&mut NatsServer> {
        self.nodes.iter_mut().find(|node| node.name() == Some(name))
    }

    pub fn nodes(&self) -> &[NatsServer] {
        &self.nodes
    }

    /// Connects a client that knows every node.
    pub async fn client(&self) -> anyhow::Result<async_nats::Client> {
        let urls: Vec<String> = self.nodes.iter().map(NatsServer::url).collect();
        async_nats::connect(urls.clone())
            .await
            .with_context(|| format!("connecting to the test cluster at {urls:?}"))
    }

    /// Waits until JetStream can place a stream on every node: a probe stream with one
    /// replica per node is created (and removed) once the meta leader is elected and every
    /// peer has joined.
    pub async fn wait_for_jetstream(&self) -> anyhow::Result<()> {
        let js = async_nats::jetstream::new(self.client().await?);
        let probe = async_nats::jetstream::stream::Config {
            name: "HERALD_TEST_CLUSTER_READY".to_owned(),
            subjects: vec!["herald-test.cluster-ready".to_owned()],
            num_replicas: self.nodes.len(),
            ..Default::default()
        };
        let deadline = Instant::now() + CLUSTER_READY_TIMEOUT;
        loop {
            match js.create_stream(probe.clone()).await {
                Ok(_) => {
                    js.delete_stream(&probe.name)
                        .await
                        .context("removing the cluster's probe stream")?;
                    return Ok(());
                }
                Err(err) if Instant::now() >= deadline => {
                    return Err(anyhow::anyhow!(err)).context(format!(
                        "the cluster's JetStream did not take a {}-replica stream within \
                         {CLUSTER_READY_TIMEOUT:?}",
                        self.nodes.len()
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}
