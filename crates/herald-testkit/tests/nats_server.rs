//! The per-test nats-server: it starts with JetStream, and its store survives a kill -9 and a
//! restart on the same port.

// Tests fail by panicking; unwrap keeps them readable.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use herald_testkit::{NatsServer, wait_until};

#[tokio::test]
async fn starts_with_jetstream_on_its_own_port() -> anyhow::Result<()> {
    let a = NatsServer::start()?;
    let b = NatsServer::start()?;
    assert_ne!(a.port(), b.port());
    assert_eq!(a.url(), format!("nats://127.0.0.1:{}", a.port()));

    let client = a.client().await?;
    let reply = client.request("$JS.API.INFO", "".into()).await?;
    let info: serde_json::Value = serde_json::from_slice(&reply.payload)?;
    assert!(info.get("error").is_none(), "JetStream answered {info}");
    assert!(a.log().contains("Server is ready"), "log: {}", a.log());
    Ok(())
}

#[tokio::test]
async fn jetstream_data_survives_kill_and_restart() -> anyhow::Result<()> {
    let mut server = NatsServer::start()?;
    let port = server.port();
    {
        let js = server.jetstream().await?;
        js.create_stream(stream::Config {
            name: "KEEP".into(),
            subjects: vec!["keep.>".into()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
        js.publish("keep.one", "payload".into()).await?.await?;
    }

    server.kill()?;
    assert!(!server.is_running());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "a killed server must not accept connections"
    );

    server.restart()?;
    assert_eq!(server.port(), port);
    let js = jetstream::new(server.client().await?);
    let mut kept = js.get_stream("KEEP").await?;
    assert_eq!(kept.info().await?.state.messages, 1);
    let message = kept.get_last_raw_message_by_subject("keep.one").await?;
    assert_eq!(message.payload.as_ref(), b"payload");
    Ok(())
}

#[tokio::test]
async fn clients_reconnect_after_a_restart() -> anyhow::Result<()> {
    let mut server = NatsServer::start()?;
    let client = server.client().await?;
    server.kill()?;
    server.restart()?;
    // async-nats reconnects on its own; the same client works again once it has.
    wait_until(Duration::from_secs(10), || {
        let client = client.clone();
        async move {
            client.flush().await.is_ok()
                && matches!(
                    client.connection_state(),
                    async_nats::connection::State::Connected
                )
        }
    })
    .await?;
    let mut sub = client.subscribe("ping").await?;
    client.publish("ping", "x".into()).await?;
    let got =
        tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut sub)).await?;
    assert_eq!(got.unwrap().payload.as_ref(), b"x");
    Ok(())
}

#[tokio::test]
async fn stop_is_graceful_and_restart_works_after_it() -> anyhow::Result<()> {
    let mut server = NatsServer::start()?;
    server.stop()?;
    assert!(!server.is_running());
    assert!(
        server.log().contains("Server Exiting"),
        "log: {}",
        server.log()
    );
    server.restart()?;
    assert!(server.is_running());
    server.client().await?;
    Ok(())
}

#[test]
fn drop_kills_the_process() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let port = server.port();
    let store = server.store_dir();
    assert!(store.exists());
    drop(server);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    assert!(
        !store.exists(),
        "the store folder is removed with the server"
    );
    Ok(())
}
