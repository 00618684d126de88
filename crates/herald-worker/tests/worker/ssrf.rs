//! The address policy at delivery time: internal destinations are refused before any
//! connection, whether the URL names them literally or through DNS.

use herald_core::AddressPolicy;
use herald_proto::deliveries::v1::DeliveryStatus;

use crate::common::{Harness, status, wait_counters};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_destinations_are_refused_without_a_request() {
    let h = Harness::start().await;
    let mut config = h.config();
    // Production policy: loopback is not allowed, so even the receiver is out of reach.
    config.address_policy = AddressPolicy::default();
    let worker = h.worker_with(config).await;

    let port = h.receiver.port();
    let private = h.spec_at("http://10.0.0.1/hook", &[]);
    let metadata = h.spec_at("http://169.254.169.254/latest/meta-data", &[]);
    // A DNS name (resolved by the system resolver) that points at loopback.
    let by_name = h.spec_at(&format!("http://localhost:{port}/by-name"), &[]);
    let mapped = h.spec_at(&format!("http://[::ffff:127.0.0.1]:{port}/mapped"), &[]);
    h.put_indexed(&worker, &[&private, &metadata, &by_name, &mapped])
        .await;

    h.publish(&h.event("booking.created")).await;
    let outcomes = h.wait_outcomes(|o| o.len() == 4).await;
    let mut errors: Vec<String> = outcomes
        .iter()
        .map(|outcome| {
            assert_eq!(status(outcome), DeliveryStatus::Failed);
            assert_eq!(outcome.http_status, 0);
            let url = [&private, &metadata, &by_name, &mapped]
                .iter()
                .find(|spec| spec.id == outcome.webhook_id)
                .map(|spec| spec.url.replace(&port.to_string(), "PORT"))
                .unwrap_or_default();
            format!("{url}\n  {}", outcome.error)
        })
        .collect();
    errors.sort();
    expect_test::expect![[r#"
        http://10.0.0.1/hook
          10.0.0.1 is a private-use address and is not an allowed webhook destination
        http://169.254.169.254/latest/meta-data
          169.254.169.254 is a link-local address and is not an allowed webhook destination
        http://[::ffff:127.0.0.1]:PORT/mapped
          ::ffff:127.0.0.1 is an IPv6 form of 127.0.0.1, a loopback address and is not an allowed webhook destination
        http://localhost:PORT/by-name
          could not resolve localhost to a public address"#]]
    .assert_eq(&errors.join("\n"));
    wait_counters(&worker, |c| c.refused >= 4).await;
    assert!(
        h.receiver.requests().is_empty(),
        "no request reached the receiver"
    );
    // Refusals say nothing about the endpoint's health.
    assert_eq!(worker.open_breakers(), 0);
}
