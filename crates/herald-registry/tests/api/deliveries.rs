//! The delivery log, fed by outcomes as a worker publishes them, and the
//! tasks the registry hands to the workers.

use async_nats::jetstream;
use chrono::{Duration as Age, Utc};
use herald_core::{DeliveryId, Event, EventData, EventId, EventType, WebhookId};
use herald_proto::deliveries::v1::{DeliveryOutcome, DeliveryStatus, DeliveryTask, Trigger};
use prost::Message as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{ADMIN_KEY, TestRegistry, WAIT, expect, expect_field_error};

struct Fixture {
    registry: TestRegistry,
    account: String,
    key: String,
    webhook: WebhookId,
    js: jetstream::Context,
}

async fn fixture() -> Fixture {
    let registry = TestRegistry::start().await;
    let account = registry.create_account("A").await;
    let key = registry.create_key(&account).await;
    let hook = registry
        .create_webhook(&account, &key, json!({ "events": ["booking.*"] }))
        .await;
    let webhook = WebhookId::parse(hook["id"].as_str().unwrap()).unwrap();
    let js = registry.js().await;
    Fixture {
        registry,
        account,
        key,
        webhook,
        js,
    }
}

fn event(account: &str, kind: &str) -> Event {
    Event {
        id: EventId::generate(),
        event_type: EventType::parse(kind).unwrap(),
        account: herald_core::AccountId::parse(account).unwrap(),
        timestamp: Utc::now(),
        data: EventData::parse(r#"{"booking_id":"bk_1"}"#).unwrap(),
    }
}

fn outcome(
    event: &Event,
    webhook: &WebhookId,
    attempt: u32,
    status: DeliveryStatus,
    http: u32,
) -> DeliveryOutcome {
    DeliveryOutcome {
        delivery_id: DeliveryId::derive(&event.id, webhook).to_string(),
        webhook_id: webhook.to_string(),
        event: Some(herald_proto::encode_event(event)),
        attempt,
        status: status.into(),
        http_status: http,
        latency_ms: 12,
        error: if http == 200 {
            String::new()
        } else {
            format!("HTTP {http}")
        },
        response_body: "ok".into(),
        attempted_at: Some(herald_proto::timestamp(Utc::now())),
        next_attempt_at: None,
        disable_webhook: http == 410,
        trigger: Trigger::Event.into(),
        request_headers: [("webhook-id".to_owned(), "as sent".to_owned())].into(),
    }
}

/// Publishes outcomes as a worker does.
async fn report(js: &jetstream::Context, outcome: &DeliveryOutcome) {
    let webhook = WebhookId::parse(&outcome.webhook_id).unwrap();
    js.publish(
        herald_bus::names::outcome_subject(&webhook),
        outcome.encode_to_vec().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

impl Fixture {
    fn path(&self, rest: &str) -> String {
        format!("/v1/accounts/{}{rest}", self.account)
    }

    async fn get(&self, rest: &str) -> Value {
        let response = self
            .registry
            .request(Method::GET, &self.path(rest), Some(&self.key))
            .send()
            .await
            .unwrap();
        expect(response, StatusCode::OK).await
    }

    async fn post(&self, rest: &str, body: Value) -> reqwest::Response {
        self.registry
            .request(Method::POST, &self.path(rest), Some(&self.key))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Waits until the delivery's log entry satisfies `check`.
    async fn wait_for_delivery(&self, id: &str, check: impl Fn(&Value) -> bool) -> Value {
        let path = self.path(&format!("/deliveries/{id}"));
        let found = herald_testkit::wait_for(WAIT, || {
            let request = self.registry.request(Method::GET, &path, Some(&self.key));
            let check = &check;
            async move {
                let response = request.send().await.ok()?;
                let body: Value = response.json().await.ok()?;
                check(&body).then_some(body)
            }
        })
        .await;
        match found {
            Ok(body) => body,
            Err(e) => {
                let last = self.get(&format!("/deliveries/{id}")).await;
                panic!("{e}; last seen: {last}")
            }
        }
    }

    /// Replays the webhook's deliveries exhausted in the last five minutes; the answer's body.
    async fn replay_recent(&self) -> Value {
        let since = (Utc::now() - Age::minutes(5)).to_rfc3339();
        let response = self
            .post(
                &format!("/webhooks/{}/replay", self.webhook),
                json!({ "since": since }),
            )
            .await;
        expect(response, StatusCode::ACCEPTED).await
    }

    /// The newest task handed over for the webhook.
    async fn last_task(&self) -> DeliveryTask {
        let stream = self
            .js
            .get_stream(herald_bus::names::DELIVERIES_STREAM)
            .await
            .unwrap();
        let message = stream
            .get_last_raw_message_by_subject(&herald_bus::names::delivery_subject(&self.webhook))
            .await
            .unwrap();
        DeliveryTask::decode(message.payload.as_ref()).unwrap()
    }
}

#[tokio::test]
async fn outcomes_fill_the_log_once_each() {
    let f = fixture().await;
    let e = event(&f.account, "booking.created");
    let delivery = DeliveryId::derive(&e.id, &f.webhook).to_string();
    report(
        &f.js,
        &outcome(&e, &f.webhook, 1, DeliveryStatus::Failed, 500),
    )
    .await;
    report(
        &f.js,
        &outcome(&e, &f.webhook, 2, DeliveryStatus::Delivered, 200),
    )
    .await;
    // A worker that crashed after publishing but before acking reports again.
    report(
        &f.js,
        &outcome(&e, &f.webhook, 2, DeliveryStatus::Delivered, 200),
    )
    .await;
    report(
        &f.js,
        &outcome(&e, &f.webhook, 1, DeliveryStatus::Failed, 500),
    )
    .await;

    let logged = f
        .wait_for_delivery(&delivery, |d| d["status"] == "delivered")
        .await;
    assert_eq!(logged["attempts"], 2, "{logged}");
    assert_eq!(logged["webhook_id"], f.webhook.as_str());
    assert_eq!(logged["event_type"], "booking.created");
    assert_eq!(logged["payload"], json!({ "booking_id": "bk_1" }));
    let attempts: Vec<(u64, &str, u64)> = logged["attempt_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["attempt"].as_u64().unwrap(),
                a["status"].as_str().unwrap(),
                a["http_status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(attempts, [(1, "failed", 500), (2, "delivered", 200)]);
    assert_eq!(
        logged["attempt_log"][1]["request_headers"],
        json!({ "webhook-id": "as sent" }),
        "the headers the worker reports are kept"
    );

    let stats = f.get(&format!("/webhooks/{}/stats", f.webhook)).await;
    assert_eq!(
        stats,
        json!({ "pending": 0, "delivered": 1, "failed": 0, "exhausted": 0 })
    );

    // The console's health picture counts both attempts (this hour, or the one before when
    // the test straddles the hour).
    let hour = chrono::DurationRound::duration_trunc(Utc::now(), Age::hours(1)).unwrap();
    let counts = f
        .registry
        .store
        .attempt_counts(&f.webhook, hour - Age::hours(1), hour + Age::hours(1))
        .await
        .unwrap();
    assert_eq!(counts, (1, 1));
}

#[tokio::test]
async fn one_batch_with_repeats_and_attempts_out_of_order_is_recorded_once_each() {
    let f = fixture().await;
    let first = event(&f.account, "booking.created");
    let second = event(&f.account, "booking.cancelled");
    let record = |e: &Event, attempt, status, http| {
        herald_registry::deliveries::outcome_record(&outcome(e, &f.webhook, attempt, status, http))
            .unwrap()
    };
    let batch = [
        record(&first, 2, DeliveryStatus::Delivered, 200),
        record(&second, 1, DeliveryStatus::Exhausted, 410),
        record(&first, 1, DeliveryStatus::Failed, 500),
        // Redelivered within the same batch, and then again in a later one.
        record(&first, 2, DeliveryStatus::Delivered, 200),
    ];
    let report = f.registry.store.ingest_outcomes(&batch).await.unwrap();
    assert_eq!((report.recorded, report.duplicates), (3, 1));
    assert_eq!(
        report.new,
        [0, 1, 2],
        "the first of each attempt is the new one"
    );
    let again = f.registry.store.ingest_outcomes(&batch[2..]).await.unwrap();
    assert_eq!(
        (again.recorded, again.duplicates, again.new.len()),
        (0, 2, 0)
    );

    let id = DeliveryId::derive(&first.id, &f.webhook).to_string();
    let logged = f.get(&format!("/deliveries/{id}")).await;
    assert_eq!(
        logged["status"], "delivered",
        "the latest attempt decides: {logged}"
    );
    assert_eq!(logged["attempts"], 2, "{logged}");
    assert_eq!(logged["last_http_status"], 200, "{logged}");
    let statuses: Vec<&str> = logged["attempt_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["failed", "delivered"]);
    let id = DeliveryId::derive(&second.id, &f.webhook).to_string();
    let logged = f.get(&format!("/deliveries/{id}")).await;
    assert_eq!(
        (&logged["status"], &logged["attempts"]),
        (&json!("exhausted"), &json!(1))
    );
}

#[tokio::test]
async fn the_log_lists_with_filters_and_pagination() {
    let f = fixture().await;
    let mut ids = Vec::new();
    for (kind, status, http) in [
        ("booking.created", DeliveryStatus::Delivered, 200),
        ("booking.cancelled", DeliveryStatus::Exhausted, 500),
        ("booking.created", DeliveryStatus::Failed, 503),
    ] {
        let e = event(&f.account, kind);
        ids.push(DeliveryId::derive(&e.id, &f.webhook).to_string());
        report(&f.js, &outcome(&e, &f.webhook, 1, status, http)).await;
    }
    let last = ids.last().unwrap().clone();
    f.wait_for_delivery(&last, |d| d["status"] == "failed")
        .await;

    let all = f.get("/deliveries?limit=2").await;
    assert_eq!(all["data"].as_array().unwrap().len(), 2);
    let next = all["next_cursor"].as_str().unwrap();
    let rest = f.get(&format!("/deliveries?limit=2&cursor={next}")).await;
    let mut seen: Vec<String> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["data"].as_array().unwrap())
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(rest["next_cursor"].is_null());
    seen.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(seen, expected);

    let exhausted = f
        .get(&format!(
            "/webhooks/{}/deliveries?status=exhausted",
            f.webhook
        ))
        .await;
    assert_eq!(exhausted["data"][0]["id"], ids[1].as_str());
    assert_eq!(exhausted["data"].as_array().unwrap().len(), 1);
    let created = f.get("/deliveries?event_type=booking.created").await;
    assert_eq!(created["data"].as_array().unwrap().len(), 2);
    let future = (Utc::now() + Age::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let none = f.get(&format!("/deliveries?since={future}")).await;
    assert_eq!(none["data"], json!([]));

    let response = f
        .registry
        .request(
            Method::GET,
            &f.path("/deliveries?status=lost"),
            Some(&f.key),
        )
        .send()
        .await
        .unwrap();
    expect_field_error(response, StatusCode::UNPROCESSABLE_ENTITY, "query:status").await;
    let response = f
        .registry
        .request(
            Method::GET,
            &f.path("/deliveries?since=yesterday"),
            Some(&f.key),
        )
        .send()
        .await
        .unwrap();
    expect_field_error(response, StatusCode::UNPROCESSABLE_ENTITY, "query:since").await;
    let ghost = WebhookId::new();
    let response = f
        .registry
        .request(
            Method::GET,
            &f.path(&format!("/deliveries?webhook_id={ghost}")),
            Some(&f.key),
        )
        .send()
        .await
        .unwrap();
    expect(response, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn gone_endpoints_disable_their_webhook() {
    let f = fixture().await;
    let e = event(&f.account, "booking.created");
    report(
        &f.js,
        &outcome(&e, &f.webhook, 1, DeliveryStatus::Exhausted, 410),
    )
    .await;
    let path = format!("/webhooks/{}", f.webhook);
    // Disabled in the transaction that records the outcome: once the delivery shows, the
    // webhook is off.
    let delivery = DeliveryId::derive(&e.id, &f.webhook).to_string();
    f.wait_for_delivery(&delivery, |d| d["status"] == "exhausted")
        .await;
    let webhook = f.get(&path).await;
    assert_eq!(webhook["enabled"], false, "{webhook}");
    assert_eq!(webhook["disabled_reason"], "the endpoint answered 410 Gone");
    // The projection follows the database write, so it is waited for too.
    let bucket = f.registry.bucket().await;
    herald_testkit::wait_until(WAIT, || async {
        bucket
            .get(f.webhook.as_str())
            .await
            .ok()
            .flatten()
            .is_some_and(|spec| !spec.enabled)
    })
    .await
    .expect("workers learn of it through the projection");

    // Enabling it again clears the reason.
    let response = f
        .registry
        .request(Method::PATCH, &f.path(&path), Some(&f.key))
        .json(&json!({ "enabled": true }))
        .send()
        .await
        .unwrap();
    let webhook = expect(response, StatusCode::OK).await;
    assert!(webhook["disabled_reason"].is_null());

    // The same 410 once more (its message redelivered) is a duplicate, and does not turn off
    // the webhook enabled since. A later outcome shows when both have been read.
    report(
        &f.js,
        &outcome(&e, &f.webhook, 1, DeliveryStatus::Exhausted, 410),
    )
    .await;
    let later = event(&f.account, "booking.updated");
    report(
        &f.js,
        &outcome(&later, &f.webhook, 1, DeliveryStatus::Delivered, 200),
    )
    .await;
    let later = DeliveryId::derive(&later.id, &f.webhook).to_string();
    f.wait_for_delivery(&later, |d| d["status"] == "delivered")
        .await;
    assert_eq!(f.get(&path).await["enabled"], true);
}

#[tokio::test]
async fn test_events_redelivery_and_replay_hand_tasks_to_the_workers() {
    let f = fixture().await;

    let sent = expect(
        f.post(&format!("/webhooks/{}/test", f.webhook), json!({}))
            .await,
        StatusCode::ACCEPTED,
    )
    .await;
    assert_eq!(sent["status"], "pending");
    assert_eq!(sent["event_type"], "herald.test");
    let task = f.last_task().await;
    assert_eq!(task.delivery_id, sent["id"].as_str().unwrap());
    assert_eq!((task.attempt, task.trigger), (1, i32::from(Trigger::Test)));
    let listed = f.get(&format!("/webhooks/{}/deliveries", f.webhook)).await;
    assert_eq!(
        listed["data"][0]["id"], sent["id"],
        "the log shows it before any attempt"
    );

    let custom = f
        .post(
            &format!("/webhooks/{}/test", f.webhook),
            json!({ "event_type": "booking.created", "data": { "booking_id": "bk_9" } }),
        )
        .await;
    let custom = expect(custom, StatusCode::ACCEPTED).await;
    let detail = f
        .get(&format!("/deliveries/{}", custom["id"].as_str().unwrap()))
        .await;
    assert_eq!(detail["payload"], json!({ "booking_id": "bk_9" }));
    for (body, field) in [
        (json!({ "event_type": "nope.never" }), "event_type"),
        (json!({ "data": [1, 2] }), "data"),
        (json!({ "colour": 1 }), "colour"),
    ] {
        expect_field_error(
            f.post(&format!("/webhooks/{}/test", f.webhook), body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            field,
        )
        .await;
    }

    // An exhausted delivery is redelivered as one more attempt, same id.
    let e = event(&f.account, "booking.created");
    let delivery = DeliveryId::derive(&e.id, &f.webhook).to_string();
    report(
        &f.js,
        &outcome(&e, &f.webhook, 1, DeliveryStatus::Failed, 500),
    )
    .await;
    f.wait_for_delivery(&delivery, |d| d["status"] == "failed")
        .await;
    let refused = f
        .post(&format!("/deliveries/{delivery}/redeliver"), json!({}))
        .await;
    expect(refused, StatusCode::CONFLICT).await;
    report(
        &f.js,
        &outcome(&e, &f.webhook, 2, DeliveryStatus::Exhausted, 500),
    )
    .await;
    f.wait_for_delivery(&delivery, |d| d["status"] == "exhausted")
        .await;
    let again = expect(
        f.post(&format!("/deliveries/{delivery}/redeliver"), json!({}))
            .await,
        StatusCode::ACCEPTED,
    )
    .await;
    assert_eq!(again["status"], "pending");
    // Not again while that attempt is on its way: it would be the same attempt.
    let on_its_way = f
        .post(&format!("/deliveries/{delivery}/redeliver"), json!({}))
        .await;
    let problem = expect(on_its_way, StatusCode::CONFLICT).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("on its way"),
        "{problem}"
    );
    let task = f.last_task().await;
    assert_eq!(
        (task.delivery_id.as_str(), task.attempt),
        (delivery.as_str(), 3)
    );
    assert_eq!(task.trigger, i32::from(Trigger::Redelivery));
    assert_eq!(task.event.unwrap().id, e.id.as_str());

    // Replay hands over every exhausted delivery in the window.
    let e2 = event(&f.account, "booking.updated");
    let d2 = DeliveryId::derive(&e2.id, &f.webhook).to_string();
    report(
        &f.js,
        &outcome(&e2, &f.webhook, 8, DeliveryStatus::Exhausted, 0),
    )
    .await;
    f.wait_for_delivery(&d2, |d| d["status"] == "exhausted")
        .await;
    let replayed = f.replay_recent().await;
    assert_eq!(replayed["replayed"], 1, "only d2 is still exhausted");
    let task = f.last_task().await;
    assert_eq!((task.delivery_id.as_str(), task.attempt), (d2.as_str(), 9));
    assert_eq!(task.trigger, i32::from(Trigger::Replay));
    expect_field_error(
        f.post(&format!("/webhooks/{}/replay", f.webhook), json!({}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "since",
    )
    .await;

    // A disabled webhook is neither tested nor replayed.
    let response = f
        .registry
        .request(
            Method::PATCH,
            &f.path(&format!("/webhooks/{}", f.webhook)),
            Some(ADMIN_KEY),
        )
        .json(&json!({ "enabled": false }))
        .send()
        .await
        .unwrap();
    expect(response, StatusCode::OK).await;
    expect(
        f.post(&format!("/webhooks/{}/test", f.webhook), json!({}))
            .await,
        StatusCode::CONFLICT,
    )
    .await;
}

#[tokio::test]
async fn a_delivery_of_an_event_too_large_to_deliver_is_never_sent_again_without_its_data() {
    let f = fixture().await;
    // As a worker reports an event too large to make tasks of: exhausted at once, without
    // the event's data.
    let large = event(&f.account, "booking.created");
    let refused = DeliveryId::derive(&large.id, &f.webhook).to_string();
    let mut without_data = outcome(&large, &f.webhook, 1, DeliveryStatus::Exhausted, 0);
    if let Some(event) = without_data.event.as_mut() {
        event.data.clear();
    }
    without_data.error = "not sent: the event makes delivery tasks of 2000000 bytes".into();
    without_data.request_headers.clear();
    report(&f.js, &without_data).await;
    // And an ordinary exhausted one beside it, which replays.
    let ordinary = event(&f.account, "booking.updated");
    let exhausted = DeliveryId::derive(&ordinary.id, &f.webhook).to_string();
    report(
        &f.js,
        &outcome(&ordinary, &f.webhook, 8, DeliveryStatus::Exhausted, 500),
    )
    .await;
    f.wait_for_delivery(&exhausted, |d| d["status"] == "exhausted")
        .await;
    let detail = f
        .wait_for_delivery(&refused, |d| d["status"] == "exhausted")
        .await;
    assert_eq!(detail["payload_omitted"], true, "{detail}");
    let other = f.get(&format!("/deliveries/{exhausted}")).await;
    assert_eq!(other["payload_omitted"], false, "{other}");

    let problem = expect(
        f.post(&format!("/deliveries/{refused}/redeliver"), json!({}))
            .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains("not kept"),
        "{problem}"
    );
    let replayed = f.replay_recent().await;
    assert_eq!(replayed["replayed"], 1, "only the ordinary one is replayed");
    let task = f.last_task().await;
    assert_eq!(task.delivery_id, exhausted);
    let still = f.get(&format!("/deliveries/{refused}")).await;
    assert_eq!(still["status"], "exhausted", "{still}");

    // The console says why, and offers no redelivery.
    let console = crate::console::Console::sign_in(&f.registry, &f.key).await;
    let page = console
        .get(&format!("/ui/accounts/{}/deliveries/{refused}", f.account))
        .await;
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.unwrap();
    assert!(page.contains("data was not kept"), "{page}");
    assert!(
        !page.contains("<button type=\"submit\">Redeliver</button>"),
        "{page}"
    );
}

#[tokio::test]
async fn a_redelivery_that_cannot_be_handed_over_leaves_the_delivery_as_it_was() {
    let f = fixture().await;
    let e = event(&f.account, "booking.created");
    let delivery = DeliveryId::derive(&e.id, &f.webhook).to_string();
    report(
        &f.js,
        &outcome(&e, &f.webhook, 1, DeliveryStatus::Exhausted, 500),
    )
    .await;
    f.wait_for_delivery(&delivery, |d| d["status"] == "exhausted")
        .await;

    // The workers' stream is away.
    f.js.delete_stream(herald_bus::names::DELIVERIES_STREAM)
        .await
        .unwrap();
    expect(
        f.post(&format!("/deliveries/{delivery}/redeliver"), json!({}))
            .await,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    let detail = f.get(&format!("/deliveries/{delivery}")).await;
    assert_eq!(detail["status"], "exhausted", "not pending forever");
}

#[tokio::test]
async fn a_replay_reads_its_deliveries_in_pages() {
    let f = fixture().await;
    let count = 230;
    for _ in 0..count {
        let e = event(&f.account, "booking.created");
        report(
            &f.js,
            &outcome(&e, &f.webhook, 1, DeliveryStatus::Exhausted, 500),
        )
        .await;
    }
    herald_testkit::wait_until(WAIT, || async {
        f.get(&format!("/webhooks/{}/stats", f.webhook)).await["exhausted"] == count
    })
    .await
    .unwrap();
    let replayed = f.replay_recent().await;
    assert_eq!(replayed["replayed"], count);
    let stream =
        f.js.get_stream(herald_bus::names::DELIVERIES_STREAM)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .messages;
    assert_eq!(stream, count, "every delivery handed over once");
}

/// A busy worker stores the outcomes that settle together as one message: each is recorded
/// as if it came alone, and one that is unusable (or not an outcome at all) is set aside by
/// itself, with its reason, while the rest are recorded.
#[tokio::test]
async fn a_batch_of_outcomes_is_recorded_and_its_bad_outcome_set_aside_alone() {
    use herald_bus::names::{OUTCOME_BATCH_SUBJECT, header};
    use herald_proto::deliveries::v1::DeliveryOutcomes;

    let f = fixture().await;
    // Not an outcome at all, on a webhook's subject: set aside whole, and the log goes on.
    f.js.publish(
        herald_bus::names::outcome_subject(&f.webhook),
        vec![0xff, 0xff, 0xff].into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let first = event(&f.account, "booking.created");
    let second = event(&f.account, "booking.cancelled");
    let mut bad = outcome(&first, &f.webhook, 1, DeliveryStatus::Failed, 500);
    bad.delivery_id = "not-a-delivery-id".into();
    // `DeliveryOutcomes` on the wire, with an entry that is no outcome at all.
    let entries = [
        outcome(&first, &f.webhook, 1, DeliveryStatus::Delivered, 200).encode_to_vec(),
        bad.encode_to_vec(),
        vec![0xff, 0xff, 0xff],
        outcome(&second, &f.webhook, 1, DeliveryStatus::Failed, 503).encode_to_vec(),
    ];
    let mut batch = Vec::new();
    for entry in &entries {
        prost::encoding::bytes::encode(1, entry, &mut batch);
    }
    assert_eq!(
        DeliveryOutcomes::decode(batch.as_slice())
            .map(|b| b.outcomes.len())
            .ok(),
        None,
        "the batch as a whole does not decode"
    );
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(header::MSG_ID, "outcomes:test-batch");
    f.js.publish_with_headers(OUTCOME_BATCH_SUBJECT, headers, batch.into())
        .await
        .unwrap()
        .await
        .unwrap();

    let id = DeliveryId::derive(&first.id, &f.webhook).to_string();
    f.wait_for_delivery(&id, |d| d["status"] == "delivered")
        .await;
    let id = DeliveryId::derive(&second.id, &f.webhook).to_string();
    let logged = f.wait_for_delivery(&id, |d| d["status"] == "failed").await;
    assert_eq!(logged["last_http_status"], 503, "{logged}");

    // All three unusable ones were set aside before the batch's records were written.
    let dead = f.js.get_stream("HERALD_DEAD").await.unwrap();
    let consumer = dead
        .create_consumer(jetstream::consumer::pull::Config::default())
        .await
        .unwrap();
    let letters = herald_testkit::fetch_ready(&consumer, 10).await.unwrap();
    assert_eq!(letters.len(), 3, "three outcomes set aside");
    let header_of = |m: &jetstream::Message, name: &str| {
        m.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|value| value.as_str().to_owned())
    };
    let assert_reason = |m: &jetstream::Message, expected: &str| {
        let reason = header_of(m, header::DEAD_REASON).unwrap_or_default();
        assert!(reason.contains(expected), "{reason}");
    };
    assert_reason(&letters[0], "undecodable outcome");
    assert_eq!(letters[0].payload.as_ref(), [0xff, 0xff, 0xff]);
    assert_reason(&letters[1], "bad delivery id");
    let alone = DeliveryOutcome::decode(letters[1].payload.clone()).unwrap();
    assert_eq!(
        alone.delivery_id, "not-a-delivery-id",
        "only the bad outcome is set aside"
    );
    assert_eq!(
        header_of(&letters[1], header::MSG_ID).as_deref(),
        Some("outcomes:test-batch/1"),
        "under an id of its own"
    );
    assert_reason(&letters[2], "undecodable outcome");
    assert_eq!(letters[2].payload.as_ref(), [0xff, 0xff, 0xff]);
    assert_eq!(
        header_of(&letters[2], header::DEAD_BATCH_INDEX).as_deref(),
        Some("2")
    );
}

/// A batch larger than one transaction's share (the registry takes whatever a worker sends) is
/// written in several and recorded whole.
#[tokio::test]
async fn a_batch_larger_than_a_transaction_is_recorded_whole() {
    use herald_bus::names::{OUTCOME_BATCH_SUBJECT, header};
    use herald_proto::deliveries::v1::DeliveryOutcomes;

    let f = fixture().await;
    const OUTCOMES: u64 = 1_100;
    let batch = DeliveryOutcomes {
        outcomes: (0..OUTCOMES)
            .map(|_| {
                let e = event(&f.account, "booking.created");
                outcome(&e, &f.webhook, 1, DeliveryStatus::Delivered, 200)
            })
            .collect(),
    };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(header::MSG_ID, "outcomes:large-batch");
    f.js.publish_with_headers(OUTCOME_BATCH_SUBJECT, headers, batch.encode_to_vec().into())
        .await
        .unwrap()
        .await
        .unwrap();

    let now = Utc::now();
    let counted = herald_testkit::wait_for(WAIT, || async {
        let counts = f
            .registry
            .store
            .attempt_counts(&f.webhook, now - Age::hours(1), now + Age::hours(1))
            .await
            .ok()?;
        (counts.0 + counts.1 == OUTCOMES).then_some(counts)
    })
    .await;
    assert_eq!(
        counted.ok(),
        Some((OUTCOMES, 0)),
        "every outcome of the batch is logged, delivered"
    );
}
