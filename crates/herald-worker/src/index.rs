//! The subscription index: which webhooks receive an event, answered from memory.
//!
//! The index is fed by the `herald-webhooks` bucket (see [`crate::watch`]). Matching looks up the
//! event's account, then its exact type, then each proper prefix of the type for wildcard
//! subscriptions, so its cost depends on the depth of the type and the number of matches, never
//! on how many webhooks do not match.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use chrono::{DateTime, Utc};
use herald_core::{
    AccountId, EventFilter, EventPattern, EventType, Keyring, SealError, SigningSecret, Ulid,
    WebhookId, WebhookUrl,
};
use herald_proto::webhooks::v1::WebhookSpec;
use secrecy::ExposeSecret as _;

/// Why a projected spec cannot be used. The registry validates every field before projecting,
/// so these mean a bug or a hand-edited bucket; the webhook is then left out of the index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("webhook spec under key {key} has id {id:?}")]
    KeyMismatch { key: String, id: String },
    #[error("webhook spec {id:?}: field `{field}` is invalid: {reason}")]
    Field {
        id: String,
        field: &'static str,
        reason: String,
    },
}

/// A secret that signs deliveries, until `expires_at` when it is being rotated out.
#[derive(Debug, Clone)]
pub struct SigningKey {
    pub secret: SigningSecret,
    pub expires_at: Option<DateTime<Utc>>,
}

/// One webhook as the worker needs it: who it belongs to, what it wants, where it goes and how
/// deliveries are signed.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: WebhookId,
    pub account: AccountId,
    pub name: String,
    pub enabled: bool,
    pub filter: EventFilter,
    pub url: WebhookUrl,
    pub keys: Vec<SigningKey>,
    /// Why a signing secret did not open (a key this worker lacks): nothing may be sent
    /// until it does, since sending unsigned or with only some signatures would fail the
    /// receiver's check or, worse, teach it to skip it.
    pub unopened: Option<SealError>,
    pub version: u64,
}

impl Subscription {
    /// Parses a projected spec, opening its sealed secrets with `keyring`. `key` is the bucket
    /// key it was stored under.
    pub fn from_spec(
        key: &str,
        spec: &WebhookSpec,
        keyring: &Keyring,
    ) -> Result<Subscription, IndexError> {
        let field = |field: &'static str, reason: String| IndexError::Field {
            id: spec.id.clone(),
            field,
            reason,
        };
        if spec.id != key {
            return Err(IndexError::KeyMismatch {
                key: key.to_owned(),
                id: spec.id.clone(),
            });
        }
        let id = WebhookId::parse(&spec.id).map_err(|err| field("id", err.to_string()))?;
        let account = AccountId::parse(&spec.account_id)
            .map_err(|err| field("account_id", err.to_string()))?;
        let filter = spec
            .event_patterns
            .iter()
            .map(|text| EventPattern::parse(text))
            .collect::<Result<EventFilter, _>>()
            .map_err(|err| field("event_patterns", err.to_string()))?;
        let url = WebhookUrl::parse(&spec.url).map_err(|err| field("url", err.to_string()))?;
        let mut unopened = None;
        let keys = spec
            .signing_keys
            .iter()
            .filter_map(|key| {
                // A bare `whsec_` secret is how registries without sealing projected it.
                let opened = if key.secret.starts_with(herald_core::signing::SECRET_PREFIX) {
                    Ok(secrecy::SecretString::from(key.secret.clone()))
                } else {
                    keyring.open(&key.secret, spec.id.as_bytes())
                };
                match opened {
                    Ok(opened) => Some((key, opened)),
                    Err(err) => {
                        unopened = Some(err);
                        None
                    }
                }
            })
            .map(|(key, opened)| {
                let secret = SigningSecret::parse(opened.expose_secret())
                    .map_err(|err| field("signing_keys", err.to_string()))?;
                let expires_at = match &key.expires_at {
                    None => None,
                    Some(at) => Some(herald_proto::datetime(at).ok_or_else(|| {
                        field("signing_keys", "expires_at is out of range".to_owned())
                    })?),
                };
                Ok(SigningKey { secret, expires_at })
            })
            .collect::<Result<Vec<_>, IndexError>>()?;
        Ok(Subscription {
            id,
            account,
            name: spec.name.clone(),
            enabled: spec.enabled,
            filter,
            url,
            keys,
            unopened,
            version: spec.version,
        })
    }

    /// The secrets that sign a delivery made at `now`: every key not yet expired.
    pub fn live_secrets(&self, now: DateTime<Utc>) -> Vec<&SigningSecret> {
        self.keys
            .iter()
            .filter(|key| key.expires_at.is_none_or(|at| at > now))
            .map(|key| &key.secret)
            .collect()
    }
}

/// What [`SubscriptionIndex::put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Inserted,
    Replaced,
    /// The index already holds a newer version; nothing changed.
    Stale,
}

/// The webhooks an event matches, each once, in id order, as the index keeps them.
type Matches = Box<[Arc<Subscription>]>;

/// An event type that some webhook names exactly, numbered by the index (see [`TypeNumbers`]).
type TypeNo = u32;

/// One account's enabled webhooks, by what they subscribe to.
#[derive(Debug, Default)]
struct AccountSubscriptions {
    all_events: Vec<Arc<Subscription>>,
    exact: HashMap<String, Vec<Arc<Subscription>>>,
    /// Keyed by the part before `.*`.
    prefix: HashMap<String, Vec<Arc<Subscription>>>,
}

impl AccountSubscriptions {
    fn insert(&mut self, subscription: &Arc<Subscription>) {
        if subscription.filter.is_all() {
            self.all_events.push(subscription.clone());
        }
        for pattern in subscription.filter.patterns() {
            let list = match (pattern.exact(), pattern.prefix()) {
                (Some(exact), _) => self.exact.entry(exact.as_str().to_owned()).or_default(),
                (None, Some(prefix)) => self.prefix.entry(prefix.to_owned()).or_default(),
                // A pattern is exact or a wildcard.
                (None, None) => continue,
            };
            list.push(subscription.clone());
        }
    }

    fn remove(&mut self, subscription: &Subscription) {
        let id = &subscription.id;
        self.all_events.retain(|held| held.id != *id);
        for pattern in subscription.filter.patterns() {
            let (map, key) = match (pattern.exact(), pattern.prefix()) {
                (Some(exact), _) => (&mut self.exact, exact.as_str()),
                (None, Some(prefix)) => (&mut self.prefix, prefix),
                (None, None) => continue,
            };
            if let Some(list) = map.get_mut(key) {
                list.retain(|held| held.id != *id);
                if list.is_empty() {
                    map.remove(key);
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.all_events.is_empty() && self.exact.is_empty() && self.prefix.is_empty()
    }

    /// Works out what an event of `event_type` matches from the webhooks' patterns.
    fn work_out(&self, event_type: &EventType) -> Matches {
        let mut out = Vec::new();
        out.extend(self.all_events.iter().cloned());
        let text = event_type.as_str();
        if let Some(list) = self.exact.get(text) {
            out.extend(list.iter().cloned());
        }
        // `booking.*` matches `booking.refund.partial` through the proper prefixes `booking` and
        // `booking.refund`; the whole type is not a prefix of itself.
        for (at, _) in text.match_indices('.') {
            if let Some(list) = self.prefix.get(&text[..at]) {
                out.extend(list.iter().cloned());
            }
        }
        // A webhook with overlapping patterns (`booking.*` and `booking.created`) is listed
        // under each of them.
        if out.len() > 1 {
            out.sort_unstable_by(|a, b| a.id.cmp(&b.id));
            out.dedup_by(|a, b| a.id == b.id);
        }
        out.into()
    }
}

/// A number for each event type some webhook has named exactly, so that an account's worked-out
/// matches are found without comparing strings. Numbers are never taken back: there are as many
/// as distinct exact patterns ever held, a few bytes each. Past `u32::MAX` of them (more than
/// memory holds), new types get none and are matched from the patterns each time.
#[derive(Debug, Default)]
struct TypeNumbers(HashMap<String, TypeNo>);

impl TypeNumbers {
    fn number(&mut self, event_type: &str) -> Option<TypeNo> {
        if let Some(number) = self.0.get(event_type) {
            return Some(*number);
        }
        let number = TypeNo::try_from(self.0.len()).ok()?;
        self.0.insert(event_type.to_owned(), number);
        Some(number)
    }

    fn get(&self, event_type: &str) -> Option<TypeNo> {
        self.0.get(event_type).copied()
    }
}

/// Tombstones kept at most, by default; beyond, the oldest are forgotten. The bucket watch
/// delivers changes in revision order, so only a put seen after this many later deletes could
/// need an older one, and a worker that runs for months beside webhooks that come and go keeps
/// a bounded set (about 10 MB at most) rather than one entry per webhook ever deleted.
const MAX_TOMBSTONES: usize = 100_000;

/// Every webhook held, and the enabled ones by account and subscription.
#[derive(Debug)]
pub struct SubscriptionIndex {
    webhooks: HashMap<WebhookId, Arc<Subscription>>,
    accounts: HashMap<AccountId, AccountSubscriptions>,
    /// The bucket revision of each webhook's latest put or delete seen: for a deleted webhook
    /// it is a tombstone, so that no older put (from a stale view) brings it back.
    revisions: HashMap<WebhookId, u64>,
    /// The deletes that left tombstones, oldest first, so that the oldest can be forgotten. An
    /// entry whose webhook was put again since is skipped when its turn comes.
    tombstones: VecDeque<(WebhookId, u64)>,
    tombstone_limit: usize,
    types: TypeNumbers,
    /// For each account and each type one of its webhooks names exactly: what an event of that
    /// type matches, worked out at its first event since the account last changed. Most events
    /// are of such a type, so most matches find this one small entry and lend its list,
    /// touching neither the account's lists nor the webhooks themselves. With many
    /// accounts, cache misses are what a match costs: the key is the account's ULID, held in the
    /// entry, not its text behind a pointer, and the entry holds the list's length.
    resolved: HashMap<(Ulid, TypeNo), OnceLock<Matches>>,
}

impl Default for SubscriptionIndex {
    fn default() -> Self {
        Self::with_tombstone_limit(MAX_TOMBSTONES)
    }
}

impl SubscriptionIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty index that keeps at most `tombstone_limit` tombstones.
    fn with_tombstone_limit(tombstone_limit: usize) -> Self {
        SubscriptionIndex {
            webhooks: HashMap::new(),
            accounts: HashMap::new(),
            revisions: HashMap::new(),
            tombstones: VecDeque::new(),
            tombstone_limit,
            types: TypeNumbers::default(),
            resolved: HashMap::new(),
        }
    }

    /// Stores `subscription` unless the index holds a newer version of it.
    pub fn put(&mut self, subscription: Subscription) -> Put {
        if let Some(held) = self.webhooks.get(&subscription.id)
            && held.version > subscription.version
        {
            return Put::Stale;
        }
        let replaced = self.remove(&subscription.id);
        let subscription = Arc::new(subscription);
        if subscription.enabled {
            // A webhook only adds to its account's types, and every one gets a fresh place.
            let account = &subscription.account;
            self.accounts
                .entry(account.clone())
                .or_default()
                .insert(&subscription);
            self.note_resolvable(account);
        }
        self.webhooks.insert(subscription.id.clone(), subscription);
        if replaced {
            Put::Replaced
        } else {
            Put::Inserted
        }
    }

    /// Stores `subscription`, written at bucket revision `revision`, unless something later
    /// was seen for it (a newer put, or its deletion).
    pub fn put_at(&mut self, subscription: Subscription, revision: u64) -> Put {
        if self.seen_later(&subscription.id, revision) {
            return Put::Stale;
        }
        let id = subscription.id.clone();
        let put = self.put(subscription);
        if put != Put::Stale {
            self.revisions.insert(id, revision);
        }
        put
    }

    /// Forgets a webhook deleted at bucket revision `revision`, and keeps a tombstone. Returns
    /// whether it was held.
    pub fn remove_at(&mut self, id: &WebhookId, revision: u64) -> bool {
        if self.seen_later(id, revision) {
            return false;
        }
        self.revisions.insert(id.clone(), revision);
        self.tombstones.push_back((id.clone(), revision));
        while self.tombstones.len() > self.tombstone_limit {
            let Some((oldest, at)) = self.tombstones.pop_front() else {
                break;
            };
            if self.revisions.get(&oldest) == Some(&at) && !self.webhooks.contains_key(&oldest) {
                self.revisions.remove(&oldest);
            }
        }
        self.remove(id)
    }

    /// Forgets every revision seen, tombstones included: before the whole bucket is read again,
    /// which re-establishes them (and whose revisions restart if its stream was recreated).
    pub fn forget_revisions(&mut self) {
        self.revisions.clear();
        self.tombstones.clear();
    }

    /// How many deleted webhooks' revisions are kept.
    #[cfg(test)]
    fn tombstone_count(&self) -> usize {
        self.revisions
            .keys()
            .filter(|id| !self.webhooks.contains_key(*id))
            .count()
    }

    fn seen_later(&self, id: &WebhookId, revision: u64) -> bool {
        self.revisions.get(id).is_some_and(|seen| *seen > revision)
    }

    /// Forgets a webhook. Returns whether it was held.
    pub fn remove(&mut self, id: &WebhookId) -> bool {
        let Some(held) = self.webhooks.remove(id) else {
            return false;
        };
        self.forget_resolved(&held.account);
        if let Some(account) = self.accounts.get_mut(&held.account) {
            account.remove(&held);
            if account.is_empty() {
                self.accounts.remove(&held.account);
            }
        }
        self.note_resolvable(&held.account);
        true
    }

    /// Drops the account's worked-out matches, before one of its webhooks goes.
    fn forget_resolved(&mut self, account: &AccountId) {
        for key in self.resolved_keys(account) {
            self.resolved.remove(&key);
        }
    }

    /// Makes a fresh place for the worked-out match of each type the account's webhooks name
    /// exactly, after they changed; each is worked out at its type's next event.
    fn note_resolvable(&mut self, account: &AccountId) {
        for key in self.resolved_keys(account) {
            self.resolved.insert(key, OnceLock::new());
        }
    }

    /// The places in `resolved` of the types the account's webhooks name exactly.
    fn resolved_keys(&mut self, account: &AccountId) -> Vec<(Ulid, TypeNo)> {
        let Some(subscriptions) = self.accounts.get(account) else {
            return Vec::new();
        };
        let ulid = account.ulid();
        subscriptions
            .exact
            .keys()
            .filter_map(|event_type| self.types.number(event_type))
            .map(|number| (ulid, number))
            .collect()
    }

    pub fn get(&self, id: &WebhookId) -> Option<Arc<Subscription>> {
        self.webhooks.get(id).cloned()
    }

    /// Calls `f` with the enabled webhooks of `account` that subscribe to `event_type`, each
    /// once, by id. They are lent, not shared: a match takes no reference count, which every
    /// router handler on every core would otherwise take and give back on one cache line.
    pub fn with_matching<T>(
        &self,
        account: &AccountId,
        event_type: &EventType,
        f: impl FnOnce(&[Arc<Subscription>]) -> T,
    ) -> T {
        let resolved = self
            .types
            .get(event_type.as_str())
            .and_then(|number| self.resolved.get(&(account.ulid(), number)));
        match resolved {
            Some(matches) => f(matches.get_or_init(|| self.work_out(account, event_type))),
            None => f(&self.work_out(account, event_type)),
        }
    }

    /// Works out what an event matches from the account's webhooks' patterns.
    fn work_out(&self, account: &AccountId, event_type: &EventType) -> Matches {
        match self.accounts.get(account) {
            Some(subscriptions) => subscriptions.work_out(event_type),
            None => Matches::default(),
        }
    }

    pub fn ids(&self) -> impl Iterator<Item = &WebhookId> {
        self.webhooks.keys()
    }

    pub fn len(&self) -> usize {
        self.webhooks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.webhooks.is_empty()
    }
}

/// The index shared by the bucket follower (the only writer), the router and the sender.
///
/// A plain `RwLock`: writes are rare (webhook changes) and short, reads are a few hash lookups,
/// and no lock is ever held across an `.await`.
#[derive(Debug, Clone, Default)]
pub struct SharedIndex {
    inner: Arc<RwLock<SubscriptionIndex>>,
    /// Whether the index follows the bucket: false until the first load, and while the watch is
    /// broken and the bucket is read again. A stale index must not decide that an event matches
    /// nothing or that a webhook is gone.
    current: Arc<AtomicBool>,
    /// When the index last took a change, in milliseconds since the Unix epoch; 0 before any.
    last_change: Arc<AtomicU64>,
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

impl SharedIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the index follows the bucket right now (see [`set_current`](Self::set_current)).
    pub fn is_current(&self) -> bool {
        self.current.load(Ordering::Acquire)
    }

    /// Set by the bucket follower: false while the bucket is being read again after its watch
    /// broke, true once it is caught up. Tests set it to stand for such a reload.
    pub fn set_current(&self, current: bool) {
        self.current.store(current, Ordering::Release);
    }

    pub fn read<T>(&self, f: impl FnOnce(&SubscriptionIndex) -> T) -> T {
        // Index updates are single map operations that cannot panic halfway in a way that
        // breaks matching, so a poisoned lock still guards a usable index.
        f(&self.inner.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn write<T>(&self, f: impl FnOnce(&mut SubscriptionIndex) -> T) -> T {
        let written = f(&mut self.inner.write().unwrap_or_else(PoisonError::into_inner));
        self.last_change.store(unix_millis(), Ordering::Relaxed);
        written
    }

    /// How long since the index last took a change; zero before the first.
    pub fn since_last_change(&self) -> std::time::Duration {
        match self.last_change.load(Ordering::Relaxed) {
            0 => std::time::Duration::ZERO,
            at => std::time::Duration::from_millis(unix_millis().saturating_sub(at)),
        }
    }

    /// [`SubscriptionIndex::with_matching`] under the read lock: `f` must be short, and must
    /// not use the index.
    pub fn with_matching<T>(
        &self,
        account: &AccountId,
        event_type: &EventType,
        f: impl FnOnce(&[Arc<Subscription>]) -> T,
    ) -> T {
        self.read(|index| index.with_matching(account, event_type, f))
    }

    pub fn get(&self, id: &WebhookId) -> Option<Arc<Subscription>> {
        self.read(|index| index.get(id))
    }

    pub fn len(&self) -> usize {
        self.read(SubscriptionIndex::len)
    }

    pub fn is_empty(&self) -> bool {
        self.read(SubscriptionIndex::is_empty)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with the value in the message
mod tests {
    use super::*;
    use herald_core::id::Ulid;
    use herald_proto::webhooks::v1::SigningKey as ProtoKey;
    use proptest::prelude::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn account(n: u128) -> AccountId {
        AccountId::from_ulid(Ulid(n))
    }

    fn webhook(n: u128) -> WebhookId {
        WebhookId::from_ulid(Ulid(n))
    }

    fn spec(id: u128, account_n: u128, patterns: &[&str]) -> WebhookSpec {
        WebhookSpec {
            id: webhook(id).to_string(),
            account_id: account(account_n).to_string(),
            name: format!("hook {id}"),
            enabled: true,
            event_patterns: patterns.iter().map(|p| (*p).to_owned()).collect(),
            url: "https://example.com/hook".to_owned(),
            signing_keys: vec![ProtoKey {
                secret: SECRET.to_owned(),
                expires_at: None,
            }],
            version: 1,
            updated_at: None,
        }
    }

    fn sub(spec: &WebhookSpec) -> Subscription {
        Subscription::from_spec(&spec.id, spec, &Keyring::default()).unwrap()
    }

    fn event_type(text: &str) -> EventType {
        EventType::parse(text).unwrap()
    }

    /// The ids of the webhooks of `account_n` matching `type_text`, in id order.
    fn matched(index: &SubscriptionIndex, account_n: u128, type_text: &str) -> Vec<u128> {
        index.with_matching(&account(account_n), &event_type(type_text), |matches| {
            matches
                .iter()
                .map(|s| Ulid::from_string(&s.id.as_str()[3..]).unwrap().0)
                .collect()
        })
    }

    #[test]
    fn exact_wildcard_and_all_events() {
        let mut index = SubscriptionIndex::new();
        index.put(sub(&spec(1, 1, &["booking.created"])));
        index.put(sub(&spec(2, 1, &["booking.*"])));
        index.put(sub(&spec(3, 1, &[])));
        index.put(sub(&spec(4, 1, &["booking.refund.*", "payment.failed"])));
        index.put(sub(&spec(5, 2, &["booking.created"])));
        // Overlapping patterns still match once.
        index.put(sub(&spec(6, 1, &["booking.*", "booking.refund.partial"])));

        assert_eq!(matched(&index, 1, "booking.created"), [1, 2, 3, 6]);
        assert_eq!(matched(&index, 1, "booking.refund.partial"), [2, 3, 4, 6]);
        assert_eq!(matched(&index, 1, "booking"), [3]);
        assert_eq!(matched(&index, 1, "payment.failed"), [3, 4]);
        assert_eq!(matched(&index, 2, "booking.created"), [5]);
        assert_eq!(matched(&index, 3, "booking.created"), Vec::<u128>::new());
    }

    #[test]
    fn disabled_webhooks_are_held_but_never_match() {
        let mut index = SubscriptionIndex::new();
        let mut disabled = spec(1, 1, &[]);
        disabled.enabled = false;
        index.put(sub(&disabled));
        assert!(matched(&index, 1, "booking.created").is_empty());
        assert!(!index.get(&webhook(1)).unwrap().enabled);

        // Enabling it (a newer version) makes it match.
        let mut enabled = spec(1, 1, &[]);
        enabled.version = 2;
        assert_eq!(index.put(sub(&enabled)), Put::Replaced);
        assert_eq!(matched(&index, 1, "booking.created"), [1]);
    }

    #[test]
    fn older_versions_are_ignored() {
        let mut index = SubscriptionIndex::new();
        let mut newer = spec(1, 1, &["booking.created"]);
        newer.version = 5;
        assert_eq!(index.put(sub(&newer)), Put::Inserted);
        let mut older = spec(1, 1, &["payment.failed"]);
        older.version = 4;
        assert_eq!(index.put(sub(&older)), Put::Stale);
        assert_eq!(matched(&index, 1, "booking.created"), [1]);
        assert!(matched(&index, 1, "payment.failed").is_empty());
        // The same version again is a re-projection: accepted.
        assert_eq!(index.put(sub(&newer)), Put::Replaced);
    }

    #[test]
    fn a_tombstone_keeps_a_deleted_webhook_from_coming_back_with_an_older_put() {
        let mut index = SubscriptionIndex::new();
        let id = webhook(1);
        assert_eq!(index.put_at(sub(&spec(1, 1, &[])), 5), Put::Inserted);
        assert!(index.remove_at(&id, 6));
        // A put from before the delete, seen late.
        assert_eq!(index.put_at(sub(&spec(1, 1, &[])), 4), Put::Stale);
        assert!(index.get(&id).is_none());
        // A delete older than what is held changes nothing either.
        let mut again = spec(1, 1, &[]);
        again.version = 2;
        assert_eq!(index.put_at(sub(&again), 7), Put::Inserted);
        assert!(!index.remove_at(&id, 6));
        assert!(index.get(&id).is_some());
        // After the bucket is read again from scratch, revisions start over.
        index.forget_revisions();
        assert_eq!(index.put_at(sub(&again), 1), Put::Replaced);
    }

    #[test]
    fn the_oldest_tombstones_are_forgotten_beyond_the_limit() {
        let mut index = SubscriptionIndex::with_tombstone_limit(3);
        for n in 1..=6u64 {
            assert_eq!(index.put_at(sub(&spec(n.into(), 1, &[])), n), Put::Inserted);
        }
        // Webhook 2 is deleted, put again and deleted again: its first tombstone is outdated.
        assert!(index.remove_at(&webhook(2), 10));
        let mut again = spec(2, 1, &[]);
        again.version = 2;
        assert_eq!(index.put_at(sub(&again), 11), Put::Inserted);
        for (n, revision) in [(1, 12), (2, 13), (3, 14), (4, 15)] {
            assert!(index.remove_at(&webhook(n), revision));
        }
        assert_eq!(index.tombstone_count(), 3);
        // The newest three still keep older puts out; the oldest (webhook 1's) is forgotten.
        for (n, revision) in [(2, 12), (3, 13), (4, 14)] {
            assert_eq!(index.put_at(sub(&spec(n, 1, &[])), revision), Put::Stale);
        }
        assert_eq!(index.put_at(sub(&spec(1, 1, &[])), 11), Put::Inserted);
        // Live webhooks keep their revisions whatever the tombstones do.
        assert_eq!(index.put_at(sub(&spec(5, 1, &[])), 4), Put::Stale);
        assert_eq!(index.len(), 3);
    }

    #[test]
    fn removal_and_moves_leave_nothing_behind() {
        let mut index = SubscriptionIndex::new();
        index.put(sub(&spec(1, 1, &["booking.*", "payment.failed"])));
        // Moving to another account and other patterns.
        let mut moved = spec(1, 2, &["payment.succeeded"]);
        moved.version = 2;
        index.put(sub(&moved));
        assert!(matched(&index, 1, "booking.created").is_empty());
        assert_eq!(matched(&index, 2, "payment.succeeded"), [1]);
        assert!(!index.accounts.contains_key(&account(1)));
        // One place for a worked-out match: the moved webhook's one type in its new account.
        assert_eq!(index.resolved.len(), 1);

        assert!(index.remove(&webhook(1)));
        assert!(!index.remove(&webhook(1)));
        assert!(index.is_empty());
        assert!(index.accounts.is_empty());
        assert!(index.resolved.is_empty());
    }

    #[test]
    fn sealed_secrets_open_only_with_the_key_and_for_their_own_webhook() {
        let keyring = Keyring::from_keys(&[[5; 32]]);
        let secret = secrecy::SecretString::from(SECRET.to_owned());
        let mut sealed = spec(1, 1, &[]);
        sealed.signing_keys[0].secret = keyring.seal(&secret, sealed.id.as_bytes());

        let opened = Subscription::from_spec(&sealed.id, &sealed, &keyring).unwrap();
        assert_eq!(opened.unopened, None);
        assert_eq!(opened.keys[0].secret, SigningSecret::parse(SECRET).unwrap());

        let keyless = Subscription::from_spec(&sealed.id, &sealed, &Keyring::default()).unwrap();
        assert_eq!(keyless.unopened, Some(SealError::NoKey));
        assert!(keyless.keys.is_empty());

        // Another webhook's sealed secret, copied into this spec, does not open here.
        let mut swapped = spec(2, 1, &[]);
        swapped.signing_keys = sealed.signing_keys.clone();
        let swapped = Subscription::from_spec(&swapped.id, &swapped, &keyring).unwrap();
        assert_eq!(swapped.unopened, Some(SealError::Corrupt));
    }

    #[test]
    fn spec_errors_name_the_field() {
        let check = |spec: WebhookSpec, key: &str, expect: &str| {
            let err = Subscription::from_spec(key, &spec, &Keyring::default()).unwrap_err();
            assert_eq!(err.to_string(), expect);
        };
        let good = spec(1, 1, &[]);
        let key = good.id.clone();
        check(
            good.clone(),
            "wh_other",
            &format!("webhook spec under key wh_other has id {key:?}"),
        );
        check(
            WebhookSpec {
                url: "ftp://x".to_owned(),
                ..good.clone()
            },
            &key,
            &format!(
                "webhook spec {key:?}: field `url` is invalid: URL scheme must be http or https, \
                 found `ftp`"
            ),
        );
        check(
            WebhookSpec {
                event_patterns: vec!["Booking".to_owned()],
                ..good.clone()
            },
            &key,
            &format!(
                "webhook spec {key:?}: field `event_patterns` is invalid: invalid event pattern \
                 `Booking`: may contain only a-z, 0-9, `_`, `-` and `.`, found 'B'"
            ),
        );
        check(
            WebhookSpec {
                signing_keys: vec![ProtoKey {
                    // Opens (it is not sealed), but is no signing secret.
                    secret: "plain:nope".to_owned(),
                    expires_at: None,
                }],
                ..good
            },
            &key,
            &format!(
                "webhook spec {key:?}: field `signing_keys` is invalid: signing secret must \
                 start with `whsec_`"
            ),
        );
    }

    #[test]
    fn expired_keys_stop_signing() {
        let now: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let mut rotating = spec(1, 1, &[]);
        rotating.signing_keys.push(ProtoKey {
            secret: "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".to_owned(),
            expires_at: Some(herald_proto::timestamp(now + chrono::Duration::hours(1))),
        });
        let subscription = sub(&rotating);
        assert_eq!(subscription.live_secrets(now).len(), 2);
        assert_eq!(
            subscription
                .live_secrets(now + chrono::Duration::hours(1))
                .len(),
            1
        );
    }

    const TYPES: [&str; 8] = [
        "booking",
        "booking.created",
        "booking.refund",
        "booking.refund.partial",
        "booking.refund.full",
        "payment.failed",
        "payment",
        "bookings.created",
    ];

    fn arb_pattern() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(&TYPES[..]).prop_map(str::to_owned),
            proptest::sample::select(&TYPES[..]).prop_map(|t| format!("{t}.*")),
        ]
    }

    fn arb_spec() -> impl Strategy<Value = (u128, u128, Vec<String>, bool)> {
        (
            0u128..40,
            0u128..3,
            proptest::collection::vec(arb_pattern(), 0..4),
            proptest::bool::weighted(0.8),
        )
    }

    proptest! {
        /// Index matching agrees with checking every webhook's filter, across puts, replacements
        /// and removals, checked after every change so that a match worked out before it is
        /// never handed out after it.
        #[test]
        fn index_matches_like_brute_force(
            specs in proptest::collection::vec(arb_spec(), 0..60),
            removals in proptest::collection::vec(0u128..40, 0..10),
        ) {
            let mut index = SubscriptionIndex::new();
            let mut version = 0;
            for (id, account_n, patterns, enabled) in &specs {
                version += 1;
                let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
                let mut spec = spec(*id, *account_n, &refs);
                spec.enabled = *enabled;
                spec.version = version;
                index.put(sub(&spec));
                check_against_brute_force(&index)?;
            }
            for id in &removals {
                index.remove(&webhook(*id));
                check_against_brute_force(&index)?;
            }
        }
    }

    fn check_against_brute_force(index: &SubscriptionIndex) -> Result<(), TestCaseError> {
        for account_n in 0u128..3 {
            for type_text in TYPES {
                let event_type = event_type(type_text);
                let mut expected: Vec<WebhookId> = index
                    .webhooks
                    .values()
                    .filter(|s| s.enabled && s.account == account(account_n))
                    .filter(|s| s.filter.matches(&event_type))
                    .map(|s| s.id.clone())
                    .collect();
                expected.sort();
                let got: Vec<WebhookId> =
                    index.with_matching(&account(account_n), &event_type, |matches| {
                        matches.iter().map(|s| s.id.clone()).collect()
                    });
                prop_assert_eq!(got, expected, "{} for account {}", type_text, account_n);
            }
        }
        Ok(())
    }
}
