//! `herald dev`: everything in one process for a laptop — the registry on
//! SQLite, against the NATS at `NATS_URL`, or a `nats-server` started here
//! with JetStream under the data folder when none answers.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use herald_core::Keyring;
use secrecy::{ExposeSecret as _, SecretString};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// The admin key `herald dev` uses unless HERALD_ADMIN_API_KEY is set.
pub const DEV_ADMIN_KEY: &str = "herald-dev-admin-key";

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Where the SQLite database and a local nats-server keep their data.
    #[arg(long, default_value = ".herald")]
    pub data_dir: PathBuf,
    /// Address of the registry's API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// NATS to use; a local nats-server is started when none answers there.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Seed "Cool Account" with a webhook to a built-in receiver and publish
    /// sample bookings every few seconds.
    #[arg(long)]
    pub demo: bool,
}

/// A nats-server this process started; killed when dropped.
#[derive(Debug)]
pub struct LocalNats {
    child: Child,
}

impl LocalNats {
    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// Answers whether something accepts NATS connections at `url`.
async fn nats_answers(url: &str) -> bool {
    let options = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(1));
    matches!(
        tokio::time::timeout(Duration::from_secs(2), options.connect(url)).await,
        Ok(Ok(_))
    )
}

fn nats_server_binary() -> Option<PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")]);
    candidates
        .map(|dir| dir.join("nats-server"))
        .find(|path| path.is_file())
}

/// Uses the NATS at `url`, or starts one with JetStream under `data_dir`.
pub async fn ensure_nats(url: &str, data_dir: &Path) -> anyhow::Result<Option<LocalNats>> {
    // Logs and errors name the server without its password.
    let shown = herald_bus::redact_url(url);
    if nats_answers(url).await {
        tracing::info!(url = %shown, "using the running NATS");
        return Ok(None);
    }
    let binary = nats_server_binary().with_context(|| {
        format!(
            "no NATS answers at {shown} and nats-server is not installed; \
             install it (Debian: apt-get install nats-server) or set NATS_URL"
        )
    })?;
    let parsed =
        url::Url::parse(url).with_context(|| format!("NATS_URL {shown:?} is not a URL"))?;
    let host = parsed.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = parsed.port().unwrap_or(4222);
    let store = data_dir.join("nats");
    std::fs::create_dir_all(&store)
        .with_context(|| format!("cannot create {}", store.display()))?;
    let log = std::fs::File::create(data_dir.join("nats-server.log"))
        .context("cannot create the nats-server log")?;
    tracing::info!(binary = %binary.display(), %host, port, "starting a local nats-server");
    let child = Command::new(&binary)
        .args(["-a", &host, "-p", &port.to_string(), "-js", "-sd"])
        .arg(&store)
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        // Its own process group, so that Ctrl-C reaches only herald, which
        // drains in-flight work before the server is stopped.
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !nats_answers(url).await {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the local nats-server did not answer at {shown}; see {}",
            data_dir.join("nats-server.log").display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Some(LocalNats { child }))
}

/// The keys that seal secrets in dev: `HERALD_ENCRYPTION_KEY` when set, else a key made on first
/// run and kept beside the database (readable by its owner only), so that sealed secrets
/// still open on the next run.
fn dev_keyring(data_dir: &Path) -> anyhow::Result<Keyring> {
    let text = match std::env::var("HERALD_ENCRYPTION_KEY") {
        Ok(text) => SecretString::from(text),
        Err(_) => {
            let path = data_dir.join("encryption.key");
            if !path.exists() {
                write_private(&path, Keyring::generate_key().expose_secret())?;
            }
            SecretString::from(
                std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
            )
        }
    };
    Keyring::parse(&text).context("HERALD_ENCRYPTION_KEY (or the dev key file) is unusable")
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

pub async fn run(args: DevArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let _nats = ensure_nats(&args.nats_url, &args.data_dir).await?;
    let database = format!(
        "sqlite://{}?mode=rwc",
        args.data_dir.join("herald.db").display()
    );
    let admin_key =
        std::env::var("HERALD_ADMIN_API_KEY").unwrap_or_else(|_| DEV_ADMIN_KEY.to_owned());
    // Dev webhooks commonly point at a receiver on this machine.
    let loopback: Vec<ipnet::IpNet> = vec![
        "127.0.0.0/8".parse().context("loopback CIDR")?,
        "::1/128".parse().context("loopback CIDR")?,
    ];
    let keyring = dev_keyring(&args.data_dir)?;
    let mut config = herald_registry::Config::for_local(&database, &args.nats_url, &admin_key);
    config.keyring = keyring.clone();
    config.listen = args.listen;
    config.address_policy.allow.clone_from(&loopback);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let mut worker_config = herald_worker::WorkerConfig::for_local(&args.nats_url);
    worker_config.keyring = keyring;
    worker_config.address_policy.allow = loopback;
    // The worker creates the EVENTS stream the registry and demo publish to.
    let worker = herald_worker::Worker::start(worker_config, shutdown.clone()).await?;
    let registry = herald_registry::Registry::build(config).await?;
    let api = format!("http://{}", args.listen);
    tracing::info!(
        api = %format!("{api}/v1"),
        admin_key = %if admin_key == DEV_ADMIN_KEY { DEV_ADMIN_KEY } else { "(from HERALD_ADMIN_API_KEY)" },
        "herald dev is up: registry and worker"
    );
    let serving = tokio::spawn(registry.serve(listener, shutdown.clone()));
    if args.demo {
        let (receiver, secret) = crate::demo::start_receiver(shutdown.clone()).await?;
        let account = crate::demo::seed(&api, &admin_key, &receiver, &secret).await?;
        let client = herald_bus::connect(&args.nats_url, "herald-demo").await?;
        tokio::spawn(crate::demo::publish_bookings(
            async_nats::jetstream::new(client),
            account.clone(),
            shutdown.clone(),
        ));
        tracing::info!(
            "demo: watch the log with  curl -s -H 'Authorization: Bearer {admin_key}' \
             {api}/v1/accounts/{account}/deliveries"
        );
    }
    // A worker that fails ends `herald dev` too, rather than leaving a registry whose
    // deliveries never happen.
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = worker.stopped() => shutdown.cancel(),
    }
    let served = serving.await.context("the registry task failed")?;
    worker.wait().await?;
    served
}
