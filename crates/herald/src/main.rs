//! `herald`: runs Herald's services and the tools around them.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

mod api;
mod bench;
mod demo;
mod dev;
mod ops;
mod telemetry;
mod tools;

/// mimalloc rather than glibc's malloc: a delivery allocates and frees many small buffers
/// across threads, where glibc's arenas spent about a tenth of the CPU (see
/// docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "herald",
    version,
    about = "Webhook delivery for the booking platform"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run herald-registry: the REST API and the webhook projection.
    /// Configured by HERALD_* environment variables (see the README).
    Registry,
    /// Run everything locally: the registry on SQLite, with a local
    /// nats-server when none answers at NATS_URL.
    Dev(dev::DevArgs),
    /// Run herald-worker: consume events and deliver webhooks. Configured
    /// by HERALD_* environment variables (see the README).
    Worker {
        /// Where /healthz, /readyz and /metrics (Prometheus) are served.
        #[arg(long, env = "HERALD_METRICS_LISTEN", default_value = "127.0.0.1:9090")]
        metrics_listen: std::net::SocketAddr,
    },
    /// Publish an event to NATS, as the booking platform does.
    Publish(tools::PublishArgs),
    /// Check a received webhook request's signature.
    Verify(tools::VerifyArgs),
    /// Print the WebhookSpec the workers read for a webhook (from the KV
    /// bucket), as JSON.
    Spec(tools::SpecArgs),
    /// Measure end-to-end delivery throughput and latency against a bare
    /// HTTP POST loop on this machine.
    Bench(bench::BenchArgs),
    /// Print the registry's OpenAPI document.
    Openapi,
    /// Show what Herald's streams and consumers hold: per stream messages,
    /// bytes, the oldest message's age, replicas and leader; per consumer
    /// pending, ack-pending and redelivered.
    Status(tools::StatusArgs),
    /// Bring the registry's database (HERALD_DATABASE_URL) up to date and
    /// print the migrations applied; registries also migrate at start-up.
    Migrate,
    /// Create or update Herald's streams, consumers and bucket as the
    /// worker's HERALD_* variables say (HERALD_STREAM_REPLICAS,
    /// HERALD_RETRY_SCHEDULE, ack waits; HERALD_CREATE_STREAMS for EVENTS),
    /// printing what changed.
    Provision,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("herald: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // A DNS lookup runs on a blocking thread that cannot be cancelled (one for an unreachable
    // host can take a minute); everything that matters has finished by now, so do not wait.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("herald: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Registry => {
            let _telemetry = telemetry::init("herald-registry");
            let config = herald_registry::Config::from_env()?;
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            herald_registry::run(config, listener, shutdown_on_signal()).await
        }
        Command::Dev(args) => {
            let _telemetry = telemetry::init("herald-dev");
            dev::run(args, shutdown_on_signal()).await
        }
        Command::Worker { metrics_listen } => {
            let _telemetry = telemetry::init("herald-worker");
            let config = herald_worker::WorkerConfig::from_env()?;
            let listener = ops::bind(metrics_listen).await?;
            let shutdown = shutdown_on_signal();
            let worker =
                std::sync::Arc::new(herald_worker::Worker::start(config, shutdown.clone()).await?);
            let ops = tokio::spawn(ops::serve(listener, worker.clone(), shutdown.clone()));
            // A worker that fails by itself ends the process (with an error, below), so that
            // whatever runs it starts a fresh one.
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = worker.stopped() => shutdown.cancel(),
            }
            if let Err(error) = ops.await.context("the metrics task failed")? {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "metrics server stopped with an error"
                );
            }
            match std::sync::Arc::try_unwrap(worker) {
                Ok(worker) => worker.wait().await,
                Err(_) => anyhow::bail!("the worker is still shared at shutdown"),
            }
        }
        Command::Status(args) => {
            print(&format!("{}\n", tools::status(args).await?));
            Ok(())
        }
        Command::Migrate => {
            print(&format!("{}\n", tools::migrate().await?));
            Ok(())
        }
        Command::Provision => {
            print(&format!("{}\n", tools::provision().await?));
            Ok(())
        }
        Command::Publish(args) => {
            let message = tools::publish(args).await?;
            eprintln!("{message}");
            Ok(())
        }
        Command::Verify(args) => {
            let message = tools::verify(args)?;
            eprintln!("{message}");
            Ok(())
        }
        Command::Bench(args) => {
            let _telemetry = telemetry::init("herald-bench");
            let report = bench::run(args).await?;
            print(&format!("{report}\n"));
            Ok(())
        }
        Command::Spec(args) => {
            print(&format!("{}\n", tools::spec(args).await?));
            Ok(())
        }
        Command::Openapi => {
            print(&herald_registry::openapi::to_pretty_json());
            Ok(())
        }
    }
}

/// Standard output is the product of `openapi`, `spec` and `status`;
/// everything else (logs, messages) goes to standard error. A reader that
/// stops early (`| head`) is not an error.
fn print(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(err) = out.write_all(text.as_bytes()).and_then(|()| out.flush())
        && err.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("herald: cannot write to standard output: {err}");
    }
}

/// A token cancelled on SIGTERM or Ctrl-C.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        trigger.cancel();
    });
    token
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops herald");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
