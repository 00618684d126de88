//! Connecting: the first connection retries while a server is starting, and the client then
//! survives a server restart on its own.

// Tests fail by panicking; unwrap keeps them readable.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures::StreamExt as _;
use herald_bus::{ConnectRetry, connect, connect_with};
use herald_testkit::{NatsServer, wait_until};

#[tokio::test]
async fn connects_and_names_the_client() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let client = connect(&nats.url(), "herald-test").await?;
    client.flush().await?;
    let info = client.server_info();
    assert_eq!(info.port, nats.port());
    Ok(())
}

#[tokio::test]
async fn a_list_of_servers_connects_to_one_that_answers() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    // Nothing listens on the first: a cluster node that is down.
    let down = herald_testkit::free_port()?;
    let url = format!("nats://127.0.0.1:{down}, {}", nats.url());
    let client = connect(&url, "herald-test").await?;
    client.flush().await?;
    assert_eq!(client.server_info().port, nats.port());
    Ok(())
}

#[tokio::test]
async fn the_first_connection_waits_for_a_starting_server() -> anyhow::Result<()> {
    let mut nats = NatsServer::start()?;
    nats.kill()?;
    // Stands in for a server that is not ready yet: it accepts and hangs up, and tells us so,
    // which proves the client tried (and failed) before the real server came up.
    let not_ready = tokio::net::TcpListener::bind(("127.0.0.1", nats.port())).await?;
    let (tried, mut tries) = tokio::sync::mpsc::unbounded_channel();
    let hang_up = tokio::spawn(async move {
        while let Ok((connection, _)) = not_ready.accept().await {
            drop(connection);
            if tried.send(()).is_err() {
                break;
            }
        }
    });

    let url = nats.url();
    let retry = ConnectRetry {
        attempts: 100,
        min_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
        total_delay: Duration::from_secs(20),
    };
    let connecting = tokio::spawn(async move { connect_with(&url, "herald-test", retry).await });
    tokio::time::timeout(Duration::from_secs(10), tries.recv()).await?;
    hang_up.abort();
    let _ = hang_up.await;

    nats.restart()?;
    let client = tokio::time::timeout(Duration::from_secs(20), connecting).await???;
    client.flush().await?;
    Ok(())
}

#[tokio::test]
async fn a_connected_client_rides_out_a_restart() -> anyhow::Result<()> {
    let mut nats = NatsServer::start()?;
    let client = connect(&nats.url(), "herald-test").await?;
    nats.kill()?;
    nats.restart()?;
    wait_until(Duration::from_secs(15), || {
        let client = client.clone();
        async move {
            client.connection_state() == async_nats::connection::State::Connected
                && client.flush().await.is_ok()
        }
    })
    .await?;
    let mut sub = client.subscribe("ping").await?;
    client.publish("ping", "pong".into()).await?;
    let got = tokio::time::timeout(Duration::from_secs(5), sub.next()).await?;
    assert_eq!(got.unwrap().payload.as_ref(), b"pong");
    Ok(())
}
