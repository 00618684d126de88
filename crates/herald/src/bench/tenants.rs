//! `herald bench --scenario tenants`: what many accounts cost a worker. The bucket holds
//! first 100 webhooks, then `--tenant-webhooks` (100,000 by default) over a tenth as many
//! accounts; for each, a worker starts and the run reports how long it took to load its index,
//! how much the process's resident memory grew, and what one event's match costs. Targets: RSS
//! under 200 MB, the index loaded in under 5 s, match cost within 2× of the 100-webhook case.
//!
//! The two indexes' matches are timed in alternating rounds once both are loaded, so that a
//! change in the host's speed during the run (other tenants of a shared machine) falls on both
//! alike: each size's figure is its median round, each ratio the median of the rounds' ratios.
//! As in a router, each worked-out match reads an account id that is in the cache (see
//! [`timed_per_account`]), so the figures are what the index costs. The first match of each
//! account, which works its list out, is timed once over all accounts as they are listed.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use herald_core::{AccountId, EventType, SigningSecret, WebhookId};
use herald_proto::webhooks::v1::{SigningKey, WebhookSpec};
use tokio_util::sync::CancellationToken;

use super::median;

/// Event patterns the webhooks subscribe to, in turn: exact types, wildcards and everything.
const PATTERNS: [&[&str]; 5] = [
    &["booking.created"],
    &["booking.*"],
    &["booking.cancelled", "payment.captured"],
    &[],
    &["payment.*"],
];

/// Matches timed per index in one round.
const MATCHES: u32 = 200_000;

/// Rounds of matches (and of bare lookups), each index's in turn.
const ROUNDS: usize = 9;

/// Accounts whose ids are copied before their matches are timed, in turn: see [`timed_per_account`].
const BATCH: u32 = 64;

#[derive(Debug, clap::Args)]
pub struct TenantArgs {
    /// Webhooks in the large bucket, ten per account.
    #[arg(long, default_value_t = 100_000)]
    pub tenant_webhooks: usize,
}

/// One index size's figures.
struct Sized {
    webhooks: usize,
    load: Duration,
    rss_growth_mb: f64,
    /// An (account, type)'s first match, which works it out.
    first_match_ns: f64,
}

/// One index size's costs once worked out, each its median round.
struct Costs {
    match_ns: f64,
    /// A bare lookup of the account in a map of the accounts alone.
    lookup_ns: f64,
}

/// Both sizes' matches and bare lookups, timed in alternating rounds.
struct Timed {
    small: Costs,
    large: Costs,
    /// The median of the rounds' large-to-small ratios, of matches and of bare lookups.
    ratio: f64,
    lookup_ratio: f64,
    /// The lowest and highest of the rounds' large-to-small match ratios.
    ratio_range: (f64, f64),
}

impl Sized {
    fn json(&self, costs: &Costs) -> serde_json::Value {
        serde_json::json!({
            "webhooks": self.webhooks,
            "index_load_s": self.load.as_secs_f64(),
            "rss_growth_mb": self.rss_growth_mb,
            "first_match_ns": self.first_match_ns,
            "match_ns": costs.match_ns,
            "account_lookup_ns": costs.lookup_ns,
        })
    }
}

/// The process's resident set, in MB (Linux; 0 elsewhere).
fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<f64>()
                        .ok()
                })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn spec(account: &AccountId, n: usize, secret: &SigningSecret) -> WebhookSpec {
    WebhookSpec {
        id: WebhookId::new().to_string(),
        account_id: account.to_string(),
        name: format!("tenant {n}"),
        enabled: true,
        event_patterns: PATTERNS[n % PATTERNS.len()]
            .iter()
            .map(|p| (*p).to_owned())
            .collect(),
        url: format!("https://hooks.example.com/{n}"),
        signing_keys: vec![SigningKey {
            secret: secret.expose_whsec(),
            expires_at: None,
        }],
        version: 1,
        updated_at: None,
    }
}

/// Adds webhooks to the bucket until it holds `total`, ten per new account.
async fn fill(
    bucket: &herald_bus::WebhookBucket,
    accounts: &mut Vec<AccountId>,
    from: usize,
    total: usize,
) -> anyhow::Result<()> {
    let secret = SigningSecret::generate();
    let mut specs = Vec::with_capacity(total - from);
    for n in from..total {
        if n % 10 == 0 {
            accounts.push(AccountId::new());
        }
        let account = accounts.last().context("an account")?;
        specs.push(spec(account, n, &secret));
    }
    let failures = futures::stream::iter(specs)
        .map(|spec| async move { bucket.put(&spec).await.is_err() })
        .buffer_unordered(256)
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await;
    anyhow::ensure!(failures == 0, "{failures} webhooks could not be stored");
    Ok(())
}

/// Starts a worker on the bucket as it is; the load time, the RSS it added and the first
/// matches' cost, and the worker's index as it stopped (no longer following the bucket).
async fn measure(
    nats_url: &str,
    accounts: &[AccountId],
    webhooks: usize,
) -> anyhow::Result<(Sized, herald_worker::SharedIndex)> {
    let before = rss_mb();
    let stop = CancellationToken::new();
    let started = Instant::now();
    // `start` returns once the index holds the whole bucket.
    let worker = herald_worker::Worker::start(
        herald_worker::WorkerConfig::for_local(nats_url),
        stop.clone(),
    )
    .await?;
    let load = started.elapsed();
    anyhow::ensure!(
        worker.index().len() >= webhooks,
        "the index holds {} of {webhooks} webhooks",
        worker.index().len()
    );
    let rss_growth_mb = rss_mb() - before;
    let event_type = EventType::parse("booking.created")?;
    let index = worker.index();
    // The index works out what an (account, type) matches at its first event and keeps it: the
    // first pass over every account is timed on its own, and a running worker's cost is the
    // next ones'.
    let timing = Instant::now();
    let first_matched: usize = accounts
        .iter()
        .map(|account| index.with_matching(account, &event_type, <[_]>::len))
        .sum();
    let first_match_ns = timing.elapsed().as_nanos() as f64 / accounts.len() as f64;
    anyhow::ensure!(first_matched > 0, "no webhook matched");
    let index = index.clone();
    stop.cancel();
    worker.wait().await?;
    let sized = Sized {
        webhooks,
        load,
        rss_growth_mb,
        first_match_ns,
    };
    Ok((sized, index))
}

/// Times `ROUNDS` rounds of matches against each index in turn, then of bare lookups.
fn time_alternately(
    small: (&herald_worker::SharedIndex, &[AccountId]),
    large: (&herald_worker::SharedIndex, &[AccountId]),
) -> anyhow::Result<Timed> {
    let event_type = EventType::parse("booking.created")?;
    let (small_rounds, large_rounds) = alternate(
        || match_ns(small.0, small.1, &event_type),
        || match_ns(large.0, large.1, &event_type),
    )?;
    let match_ratios = ratios(&small_rounds, &large_rounds);
    let ratio_range = match_ratios
        .iter()
        .fold((f64::MAX, 0.0_f64), |(low, high), r| {
            (low.min(*r), high.max(*r))
        });
    let (small_map, large_map) = (account_map(small.1), account_map(large.1));
    let (small_lookups, large_lookups) = alternate(
        || Ok(lookup_ns(&small_map, small.1)),
        || Ok(lookup_ns(&large_map, large.1)),
    )?;
    let lookup_ratios = ratios(&small_lookups, &large_lookups);
    Ok(Timed {
        small: Costs {
            match_ns: median(small_rounds),
            lookup_ns: median(small_lookups),
        },
        large: Costs {
            match_ns: median(large_rounds),
            lookup_ns: median(large_lookups),
        },
        ratio: median(match_ratios),
        lookup_ratio: median(lookup_ratios),
        ratio_range,
    })
}

/// `ROUNDS` rounds of `small` and `large` in turn, which one goes first alternating too, so
/// that neither always follows the other; each one's figures in round order.
fn alternate(
    mut small: impl FnMut() -> anyhow::Result<f64>,
    mut large: impl FnMut() -> anyhow::Result<f64>,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let (mut smalls, mut larges) = (Vec::with_capacity(ROUNDS), Vec::with_capacity(ROUNDS));
    for round in 0..ROUNDS {
        if round % 2 == 0 {
            smalls.push(small()?);
            larges.push(large()?);
        } else {
            larges.push(large()?);
            smalls.push(small()?);
        }
    }
    Ok((smalls, larges))
}

/// One round's cost per match, striding through `accounts`.
fn match_ns(
    index: &herald_worker::SharedIndex,
    accounts: &[AccountId],
    event_type: &EventType,
) -> anyhow::Result<f64> {
    let (ns, matched) = timed_per_account(accounts, |account| {
        index.with_matching(account, event_type, <[_]>::len)
    });
    anyhow::ensure!(matched > 0, "no webhook matched");
    Ok(ns)
}

/// `f`'s cost per call over `MATCHES` accounts striding through `accounts`, and the sum of
/// what it returned. The router matches an event it has just decoded, so the account's id is
/// in the cache and only the index is not: the ids are copied in batches of `BATCH`, untimed,
/// and each batch's calls are timed after. Without the copies, a run over 10,000 accounts would
/// also time fetching each id from a cold list, which no router does.
fn timed_per_account(
    accounts: &[AccountId],
    mut f: impl FnMut(&AccountId) -> usize,
) -> (f64, usize) {
    let mut batch = Vec::with_capacity(BATCH as usize);
    let (mut timed, mut total) = (Duration::ZERO, 0usize);
    for start in (0..MATCHES).step_by(BATCH as usize) {
        batch.clear();
        batch.extend((start..MATCHES.min(start + BATCH)).map(|n| spread(accounts, n).clone()));
        let timing = Instant::now();
        for account in &batch {
            total += f(std::hint::black_box(account));
        }
        timed += timing.elapsed();
    }
    (timed.as_nanos() as f64 / f64::from(MATCHES), total)
}

/// Each round's large-to-small ratio.
fn ratios(small: &[f64], large: &[f64]) -> Vec<f64> {
    small
        .iter()
        .zip(large)
        .map(|(small, large)| large / small.max(1e-9))
        .collect()
}

/// The `n`th account of a match loop: strides through all of them, so that consecutive
/// matches are of different accounts, as a busy worker's are.
fn spread(accounts: &[AccountId], n: u32) -> &AccountId {
    &accounts[n as usize * 7919 % accounts.len()]
}

fn account_map(accounts: &[AccountId]) -> std::collections::HashMap<AccountId, usize> {
    accounts.iter().cloned().zip(0..).collect()
}

/// The floor under any index: one lookup by account id in a map that holds only the accounts,
/// in the same order as the matches and timed the same way. Between few accounts and many, it
/// grows by what this machine's caches make a random lookup cost.
fn lookup_ns(map: &std::collections::HashMap<AccountId, usize>, accounts: &[AccountId]) -> f64 {
    let (ns, found) = timed_per_account(accounts, |account| map.get(account).copied().unwrap_or(0));
    std::hint::black_box(found);
    ns
}

pub async fn run(args: &TenantArgs, json: bool) -> anyhow::Result<String> {
    anyhow::ensure!(
        args.tenant_webhooks >= 1_000,
        "--tenant-webhooks must be at least 1000"
    );
    let nats = super::BenchNats::start().await?;
    let nats_url = nats.url.clone();
    let client = herald_bus::connect(&nats_url, "herald-bench").await?;
    let js = async_nats::jetstream::new(client);
    let bucket = herald_bus::WebhookBucket::open(&js).await?;

    let mut accounts = Vec::new();
    fill(&bucket, &mut accounts, 0, 100).await?;
    let (small, small_index) = measure(&nats_url, &accounts, 100).await?;
    let small_accounts = accounts.len();
    let filling = Instant::now();
    fill(&bucket, &mut accounts, 100, args.tenant_webhooks).await?;
    let filled = filling.elapsed();
    let (large, large_index) = measure(&nats_url, &accounts, args.tenant_webhooks).await?;
    let timed = time_alternately(
        (&small_index, &accounts[..small_accounts]),
        (&large_index, &accounts),
    )?;

    let (ratio, lookup_ratio) = (timed.ratio, timed.lookup_ratio);
    let (low, high) = timed.ratio_range;
    let met = large.rss_growth_mb < 200.0 && large.load < Duration::from_secs(5) && ratio <= 2.0;
    if json {
        return Ok(serde_json::json!({
            "scenario": "tenants",
            "accounts": accounts.len(),
            "small": small.json(&timed.small),
            "large": large.json(&timed.large),
            "match_cost_ratio": ratio,
            "match_cost_ratio_rounds": [low, high],
            "account_lookup_ratio": lookup_ratio,
            "target_met": met,
        })
        .to_string());
    }
    let row = |sized: &Sized, costs: &Costs| {
        format!(
            "{:<10} {:>12.2} s {:>13.1} MB {:>11.0} ns {:>11.0} ns {:>11.0} ns",
            sized.webhooks,
            sized.load.as_secs_f64(),
            sized.rss_growth_mb,
            sized.first_match_ns,
            costs.match_ns,
            costs.lookup_ns,
        )
    };
    Ok(format!(
        "herald bench tenants: {large_n} webhooks over {accounts} accounts (stored in {filled:.1} s)\n\
         {h0:<10} {h1:>14} {h2:>16} {h3:>14} {h4:>14} {h5:>14}\n{small}\n{large}\n\
         match cost {ratio:.2}× the 100-webhook index (the median of {ROUNDS} alternating \
         rounds' ratios; {low:.2}–{high:.2}× round by round), where a bare account lookup costs \
         {lookup_ratio:.2}×; targets (RSS < 200 MB, load < 5 s, match ≤ 2×): {verdict}",
        accounts = accounts.len(),
        filled = filled.as_secs_f64(),
        h0 = "webhooks",
        h1 = "index load",
        h2 = "RSS growth",
        h3 = "first match",
        h4 = "per match",
        h5 = "account lookup",
        large_n = large.webhooks,
        small = row(&small, &timed.small),
        large = row(&large, &timed.large),
        verdict = if met { "met" } else { "NOT met" },
    ))
}
