//! The webhook specs bucket on a real nats-server (2.9 or current): CRUD, and the snapshot-then-watch that
//! workers start from, including the empty-bucket case.

// Tests fail by panicking; unwrap keeps them readable.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures::StreamExt as _;
use herald_bus::{
    Current, ProvisionOptions, SpecChange, SpecWatch, Topology, WebhookBucket, Written, names,
};
use herald_core::{AccountId, WebhookId};
use herald_proto::webhooks::v1::WebhookSpec;
use herald_testkit::NatsServer;

const STEP: Duration = Duration::from_secs(10);

fn spec(name: &str) -> WebhookSpec {
    WebhookSpec {
        id: WebhookId::new().as_str().to_owned(),
        account_id: AccountId::new().as_str().to_owned(),
        name: name.to_owned(),
        enabled: true,
        event_patterns: vec!["booking.*".to_owned()],
        url: format!("https://example.com/{name}"),
        version: 1,
        ..Default::default()
    }
}

async fn next(watch: &mut SpecWatch) -> SpecChange {
    tokio::time::timeout(STEP, watch.next())
        .await
        .expect("the watch yielded nothing in time")
        .expect("the watch ended")
        .expect("the watch failed")
        .0
}

#[tokio::test]
async fn put_get_delete_and_keys() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let bucket = WebhookBucket::open(&nats.jetstream().await?).await?;
    assert!(bucket.keys().await?.is_empty());

    let a = spec("a");
    let b = spec("b");
    let first = bucket.put(&a).await?;
    bucket.put(&b).await?;
    assert_eq!(bucket.get(&a.id).await?, Some(a.clone()));

    let changed = WebhookSpec {
        version: 2,
        enabled: false,
        ..a.clone()
    };
    assert!(bucket.put(&changed).await? > first);
    assert_eq!(bucket.get(&a.id).await?, Some(changed));

    let mut expected = vec![a.id.clone(), b.id.clone()];
    expected.sort();
    assert_eq!(bucket.keys().await?, expected);

    bucket.delete(&a.id).await?;
    assert_eq!(bucket.get(&a.id).await?, None);
    assert_eq!(bucket.keys().await?, vec![b.id.clone()]);
    // Deleting again, or something that never existed, is fine.
    bucket.delete(&a.id).await?;
    bucket.delete("wh_never").await?;
    assert_eq!(bucket.get("wh_never").await?, None);

    // The purge keeps nothing of the removed spec (its secrets included).
    let stream = nats
        .jetstream()
        .await?
        .get_stream(names::WEBHOOKS_BUCKET_STREAM)
        .await?;
    let marker = stream
        .get_last_raw_message_by_subject(&format!("$KV.herald-webhooks.{}", a.id))
        .await?;
    assert!(marker.payload.is_empty());
    Ok(())
}

#[tokio::test]
async fn open_works_before_and_after_provisioning() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let js = nats.jetstream().await?;
    let bucket = WebhookBucket::open(&js).await?;
    let a = spec("a");
    bucket.put(&a).await?;
    Topology::provision(&js, &ProvisionOptions::development()).await?;
    let again = WebhookBucket::open(&js).await?;
    assert_eq!(again.get(&a.id).await?, Some(a));
    Ok(())
}

#[tokio::test]
async fn an_empty_bucket_is_caught_up_at_once_then_follows_changes() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let bucket = WebhookBucket::open(&nats.jetstream().await?).await?;
    let mut watch = bucket.snapshot_then_watch().await?;
    assert_eq!(next(&mut watch).await, SpecChange::CaughtUp);

    let a = spec("a");
    bucket.put(&a).await?;
    assert_eq!(next(&mut watch).await, SpecChange::Put(a.clone()));
    bucket.delete(&a.id).await?;
    assert_eq!(next(&mut watch).await, SpecChange::Deleted(a.id.clone()));
    Ok(())
}

#[tokio::test]
async fn a_populated_bucket_yields_its_snapshot_then_live_changes() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let bucket = WebhookBucket::open(&nats.jetstream().await?).await?;
    let specs: Vec<_> = ["a", "b", "c"].into_iter().map(spec).collect();
    for spec in &specs {
        bucket.put(spec).await?;
    }
    let updated_b = WebhookSpec {
        version: 2,
        ..specs[1].clone()
    };
    bucket.put(&updated_b).await?;
    bucket.delete(&specs[2].id).await?;

    let mut watch = bucket.snapshot_then_watch().await?;
    // The latest entry per key, in the order they were last written.
    assert_eq!(next(&mut watch).await, SpecChange::Put(specs[0].clone()));
    assert_eq!(next(&mut watch).await, SpecChange::Put(updated_b.clone()));
    assert_eq!(
        next(&mut watch).await,
        SpecChange::Deleted(specs[2].id.clone())
    );
    assert_eq!(next(&mut watch).await, SpecChange::CaughtUp);

    let d = spec("d");
    bucket.put(&d).await?;
    assert_eq!(next(&mut watch).await, SpecChange::Put(d));
    bucket.delete(&specs[0].id).await?;
    assert_eq!(
        next(&mut watch).await,
        SpecChange::Deleted(specs[0].id.clone())
    );
    Ok(())
}

#[tokio::test]
async fn malformed_values_are_skipped_without_losing_caught_up() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let js = nats.jetstream().await?;
    let bucket = WebhookBucket::open(&js).await?;
    let a = spec("a");
    bucket.put(&a).await?;
    let raw = js.get_key_value(names::WEBHOOKS_BUCKET).await?;
    // Not protobuf, and a valid spec stored under the wrong key; each is the last entry of
    // the snapshot in turn, which must still end it.
    raw.put("wh_garbage", vec![0xff, 0xff, 0xff].into()).await?;

    let mut watch = bucket.snapshot_then_watch().await?;
    assert_eq!(next(&mut watch).await, SpecChange::Put(a.clone()));
    assert_eq!(next(&mut watch).await, SpecChange::CaughtUp);

    let b = spec("b");
    raw.put("wh_elsewhere", prost::Message::encode_to_vec(&b).into())
        .await?;
    bucket.put(&b).await?;
    assert_eq!(next(&mut watch).await, SpecChange::Put(b.clone()));

    assert!(bucket.get("wh_garbage").await.is_err());
    Ok(())
}

#[tokio::test]
async fn a_watch_started_while_writes_happen_sees_every_key() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let bucket = WebhookBucket::open(&nats.jetstream().await?).await?;
    let specs: Vec<_> = (0..50).map(|i| spec(&format!("s{i}"))).collect();
    for spec in &specs[..25] {
        bucket.put(spec).await?;
    }
    let writer = {
        let bucket = bucket.clone();
        let rest = specs[25..].to_vec();
        tokio::spawn(async move {
            for spec in &rest {
                bucket.put(spec).await.unwrap();
            }
        })
    };
    let mut watch = bucket.snapshot_then_watch().await?;
    let mut seen = std::collections::BTreeSet::new();
    let mut caught_up = 0;
    while seen.len() < specs.len() {
        match next(&mut watch).await {
            SpecChange::Put(spec) => {
                seen.insert(spec.id);
            }
            SpecChange::Deleted(id) => panic!("unexpected delete of {id}"),
            SpecChange::CaughtUp => caught_up += 1,
        }
    }
    writer.await?;
    if caught_up == 0 {
        assert_eq!(next(&mut watch).await, SpecChange::CaughtUp);
        caught_up = 1;
    }
    assert_eq!(caught_up, 1);
    Ok(())
}

#[tokio::test]
async fn snapshot_reads_every_live_spec_in_one_pass() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let js = nats.jetstream().await?;
    let bucket = WebhookBucket::open(&js).await?;
    assert!(
        bucket.snapshot().await?.is_empty(),
        "an empty bucket is not a hang"
    );
    let (kept, gone, changed) = (spec("kept"), spec("gone"), spec("changed"));
    for s in [&kept, &gone, &changed] {
        bucket.put(s).await?;
    }
    bucket.delete(&gone.id).await?;
    let newer = WebhookSpec {
        version: 2,
        ..changed.clone()
    };
    bucket.put(&newer).await?;

    let snapshot = bucket.snapshot().await?;
    let mut ids: Vec<&String> = snapshot.keys().collect();
    ids.sort();
    let mut expected = vec![&kept.id, &changed.id];
    expected.sort();
    assert_eq!(ids, expected);
    assert_eq!(snapshot[&changed.id].spec.version, 2);
    Ok(())
}

#[tokio::test]
async fn a_conditional_write_never_overwrites_what_it_did_not_read() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let bucket = WebhookBucket::open(&nats.jetstream().await?).await?;
    let v1 = spec("a");
    let v2 = WebhookSpec {
        version: 2,
        ..v1.clone()
    };

    assert_eq!(bucket.current(&v1.id).await?, Current::Absent);
    let Written::Stored(first) = bucket.put_if(&v1, 0).await? else {
        panic!("an absent key is created");
    };
    // A second creator read "absent" too: it must not overwrite.
    assert_eq!(bucket.put_if(&v1, 0).await?, Written::Changed);
    // Two writers read revision `first`; the one with v2 stores, the late one with v1 cannot.
    assert!(matches!(
        bucket.put_if(&v2, first).await?,
        Written::Stored(_)
    ));
    assert_eq!(bucket.put_if(&v1, first).await?, Written::Changed);
    let current = bucket.current(&v1.id).await?;
    assert_eq!(current.spec(), Some(&v2));

    // A delete that read an older revision does not remove the newer spec...
    assert_eq!(bucket.delete_if(&v1.id, first).await?, Written::Changed);
    // ...and a write that read the spec before the delete does not bring it back.
    let before_delete = current.revision();
    bucket.delete(&v1.id).await?;
    assert!(matches!(bucket.current(&v1.id).await?, Current::Deleted(_)));
    assert_eq!(bucket.put_if(&v2, before_delete).await?, Written::Changed);
    assert_eq!(bucket.get(&v1.id).await?, None);
    Ok(())
}

/// On a server that accepts it the bucket is created as a bucket; nats-server 2.9 refuses
/// `create_key_value` from this client, and the bucket's stream is created instead. Either way
/// it ends with the settings provisioning expects, and a second look changes nothing.
#[tokio::test]
async fn the_bucket_is_made_as_the_server_allows_and_provisioning_agrees() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let js = nats.jetstream().await?;
    let version = js.client().server_info().version;
    let made = herald_bus::create_bucket_if_missing(&js, 1).await?;
    let expected = if version.starts_with("2.9.") {
        herald_bus::BucketMade::Stream
    } else {
        herald_bus::BucketMade::KeyValue
    };
    assert_eq!(made, expected, "nats-server {version}");
    assert_eq!(
        herald_bus::create_bucket_if_missing(&js, 1).await?,
        herald_bus::BucketMade::Existing
    );

    let (_, ensured) =
        herald_bus::ensure_stream(&js, herald_bus::topology::webhooks_bucket_stream(1)).await?;
    assert_eq!(
        ensured,
        herald_bus::Ensured::Unchanged,
        "the bucket {made:?} has the settings provisioning would give it"
    );
    let bucket = WebhookBucket::open(&js).await?;
    let stored = spec("made");
    bucket.put(&stored).await?;
    assert_eq!(bucket.get(&stored.id).await?, Some(stored));
    Ok(())
}
