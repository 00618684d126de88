//! The scriptable webhook receiver: recording, status sequences, delays, headers, and
//! stopping and restarting on the same port.

// Tests fail by panicking; unwrap keeps them readable.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use herald_testkit::{Receiver, Response};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test]
async fn records_requests_and_answers_200_by_default() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    let response = client()
        .post(receiver.url("/hooks/a?x=1"))
        .header("Webhook-Id", "dlv_1")
        .body(r#"{"id":"evt_1"}"#)
        .send()
        .await?;
    assert_eq!(response.status(), 200);

    let got = receiver.requests_to("/hooks/a");
    assert_eq!(got.len(), 1);
    let request = &got[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/hooks/a");
    assert_eq!(request.query.as_deref(), Some("x=1"));
    assert_eq!(request.header("webhook-id"), Some("dlv_1"));
    assert!(request.headers.iter().any(|(name, _)| name == "webhook-id"));
    assert_eq!(request.body_json()?["id"], "evt_1");
    assert!(receiver.requests_to("/other").is_empty());
    assert_eq!(receiver.requests().len(), 1);
    Ok(())
}

#[tokio::test]
async fn sequences_repeat_their_last_answer() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    receiver.respond_seq("/seq", vec![500, 500, 200]);
    receiver.respond(
        "flaky",
        Response::status(503)
            .header("Retry-After", "7")
            .body("busy"),
    );

    let http = client();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            http.post(receiver.url("/seq"))
                .send()
                .await?
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [500, 500, 200, 200, 200]);

    let flaky = http.post(receiver.url("/flaky")).send().await?;
    assert_eq!(flaky.status(), 503);
    assert_eq!(flaky.headers()["retry-after"], "7");
    assert_eq!(flaky.text().await?, "busy");

    receiver.respond_default(404);
    assert_eq!(
        http.get(receiver.url("/unknown")).send().await?.status(),
        404
    );
    Ok(())
}

#[tokio::test]
async fn delays_let_a_client_time_out() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    receiver.respond("/slow", Response::ok().delay(Duration::from_secs(30)));
    let started = Instant::now();
    let result = client()
        .post(receiver.url("/slow"))
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(result.unwrap_err().is_timeout());
    assert!(started.elapsed() < Duration::from_secs(5));
    // The request is recorded on arrival, before the delayed answer.
    assert_eq!(receiver.requests_to("/slow").len(), 1);
    Ok(())
}

#[tokio::test]
async fn wait_for_requests_wakes_on_arrival_and_reports_what_came() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    let url = receiver.url("/late");
    let sender = tokio::spawn(async move {
        let http = client();
        for _ in 0..3 {
            http.post(&url).send().await.unwrap();
        }
    });
    let got = receiver
        .wait_for_requests("/late", 3, Duration::from_secs(10))
        .await?;
    assert_eq!(got.len(), 3);
    sender.await?;

    client().post(receiver.url("/elsewhere")).send().await?;
    let err = receiver
        .wait_for_requests("/late", 4, Duration::from_millis(100))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected 4 request(s) to /late"), "{err}");
    assert!(err.contains("got 3"), "{err}");
    assert!(err.contains("POST /elsewhere"), "{err}");
    Ok(())
}

#[tokio::test]
async fn stop_refuses_connections_and_restart_serves_the_same_port() -> anyhow::Result<()> {
    let mut receiver = Receiver::start().await?;
    let port = receiver.port();
    receiver.respond("/hook", 202);
    let http = client();
    assert_eq!(http.post(receiver.url("/hook")).send().await?.status(), 202);

    receiver.stop().await;
    // The client's pooled keep-alive connection is closed too, so this really fails.
    let down = http.post(receiver.url("/hook")).send().await;
    assert!(down.is_err(), "a stopped receiver answered: {down:?}");

    receiver.restart().await?;
    assert_eq!(receiver.port(), port);
    assert_eq!(http.post(receiver.url("/hook")).send().await?.status(), 202);
    assert_eq!(receiver.requests_to("/hook").len(), 2);
    Ok(())
}

#[tokio::test]
async fn stop_cuts_requests_in_flight() -> anyhow::Result<()> {
    let mut receiver = Receiver::start().await?;
    receiver.respond("/hang", Response::ok().delay(Duration::from_secs(60)));
    let url = receiver.url("/hang");
    let in_flight = tokio::spawn(async move { client().post(url).send().await });
    receiver
        .wait_for_requests("/hang", 1, Duration::from_secs(10))
        .await?;
    receiver.stop().await;
    let result = tokio::time::timeout(Duration::from_secs(5), in_flight).await??;
    assert!(
        result.is_err(),
        "expected a broken connection, got {result:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_new_receiver_can_take_over_a_port() -> anyhow::Result<()> {
    let mut first = Receiver::start().await?;
    let port = first.port();
    first.stop().await;
    let second = Receiver::start_on(port).await?;
    client().post(second.url("/again")).send().await?;
    assert_eq!(second.requests_to("/again").len(), 1);
    assert!(first.requests().is_empty());
    Ok(())
}
