//! Invalidation across nodes through Redis pub/sub: [`RedisNotifier`]
//! publishes each change on [`INVALIDATION_CHANNEL`], and every node runs an
//! [`InvalidationListener`] that hands what it hears to its cache (SPEC §8:
//! a change reaches every node within a second).
//!
//! Messages are `k:<64 hex>` (one key, by hash), `a:<account>` (an account's
//! plan) and `*` (everything), each followed by a space and the publication
//! time in Unix microseconds, so that every node can measure how long a
//! change took to reach it (a message without the time is still accepted).
//!
//! On a Redis Cluster a classic `PUBLISH` reaches every node of the cluster,
//! so the listener subscribes on any node; it moves to the next seed
//! whenever its node fails or stops answering (a failover). It holds two
//! subscriptions on different nodes at once, so that losing one node loses
//! no message: only when both were down together does the cache have to
//! be dropped, and a failover then keeps serving cached keys (SPEC §8).
//! Each message is applied once, whichever subscription brings it first. Pub/sub delivers at most once and forgets
//! what it sent while a subscriber was away, so after every re-subscription
//! the listener invalidates everything; the cache TTL bounds staleness if
//! pub/sub stays down (SPEC §8).

use core::fmt;
use core::time::Duration;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use cloro_auth_core::{AccountId, KeyHash};
use futures_util::StreamExt;
use jiff::Timestamp;
use redis::{Client, Msg};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::connection::{RedisConnection, RedisOptions};
use super::target::{RedisTarget, cluster_seeds};
use crate::invalidation::{ChangeNotifier, Invalidation, InvalidationSink};
use crate::log_limit::LogLimit;
use crate::store::StoreError;

/// The pub/sub channel every node listens on.
pub const INVALIDATION_CHANNEL: &str = "cloro:invalidate";

/// The first pause before resubscribing; doubles per failure up to
/// [`RedisOptions::reconnect_max_delay`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(50);
/// While Redis stays away, warn on the first failure and then every this many.
const WARN_EVERY: u32 = 30;

/// Applies changes to this node's sinks at once, then publishes them so that
/// every other node's listener applies them too.
pub struct RedisNotifier {
    connection: RedisConnection,
    sinks: Vec<Arc<dyn InvalidationSink>>,
}

impl fmt::Debug for RedisNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisNotifier")
            .field("url", &self.connection.masked_url())
            .field("sinks", &self.sinks.len())
            .finish_non_exhaustive()
    }
}

impl RedisNotifier {
    /// A notifier that publishes on `connection`, usually the store's
    /// ([`RedisStore::connection`](crate::RedisStore::connection)), within
    /// its command timeout and as its node, and applies changes locally to
    /// `sinks`.
    pub fn new(connection: &RedisConnection, sinks: Vec<Arc<dyn InvalidationSink>>) -> Self {
        RedisNotifier {
            connection: connection.clone(),
            sinks,
        }
    }
}

#[async_trait]
impl ChangeNotifier for RedisNotifier {
    async fn publish(&self, change: Invalidation) {
        for sink in &self.sinks {
            sink.invalidate(change);
        }
        let message = encode(&change, Timestamp::now(), self.connection.options().node_id);
        let mut command = redis::cmd("PUBLISH");
        command.arg(INVALIDATION_CHANNEL).arg(&message);
        // Retried once if Redis restarted since the last publish: a message
        // is worth one more try, and a duplicate only invalidates twice.
        let published = self
            .connection
            .bounded(self.connection.query::<i64>(&command))
            .await;
        let Err(error) = published else {
            return;
        };
        // A lost message is bounded by the cache TTL (SPEC §8); the admin
        // action that caused it has already committed and must not fail.
        // Every admin and portal action publishes: while Redis is failing,
        // a busy client would write a warning per action (SPEC §9).
        static PUBLISH_FAILED: LogLimit = LogLimit::per_second();
        if let Some(suppressed) = PUBLISH_FAILED.admit() {
            tracing::warn!(
                %error,
                suppressed,
                "could not publish a cache invalidation; other nodes catch up within the cache ttl"
            );
        }
    }
}

/// The pub/sub text of a change published at `sent` by node `origin`:
/// `<change> <sent µs> <origin hex>`.
fn encode(change: &Invalidation, sent: Timestamp, origin: u64) -> String {
    let sent = sent.as_microsecond();
    let change = match change {
        Invalidation::Key(hash) => format!("k:{}", String::from_utf8_lossy(&hash.to_hex())),
        Invalidation::Account(account) => format!("a:{account}"),
        Invalidation::Everything => "*".to_owned(),
    };
    format!("{change} {sent} {origin:016x}")
}

/// A decoded message: the change, and when and by whom it was published
/// where the message says so.
#[derive(Debug, PartialEq, Eq)]
struct Message {
    change: Invalidation,
    sent: Option<Timestamp>,
    origin: Option<u64>,
}

/// Reads [`encode`]'s text (older forms without time or origin too);
/// `None` for anything else.
fn decode(text: &str) -> Option<Message> {
    let mut parts = text.split(' ');
    let change = decode_change(parts.next()?)?;
    let sent = match parts.next() {
        Some(micros) => Some(
            micros
                .parse::<i64>()
                .ok()
                .and_then(|m| Timestamp::from_microsecond(m).ok())?,
        ),
        None => None,
    };
    let origin = match parts.next() {
        Some(hex) => Some(u64::from_str_radix(hex, 16).ok()?),
        None => None,
    };
    parts.next().is_none().then_some(Message {
        change,
        sent,
        origin,
    })
}

fn decode_change(text: &str) -> Option<Invalidation> {
    if text == "*" {
        return Some(Invalidation::Everything);
    }
    if let Some(hex) = text.strip_prefix("k:") {
        return KeyHash::from_hex(hex).map(Invalidation::Key);
    }
    text.strip_prefix("a:")
        .and_then(|account| AccountId::new(account).ok())
        .map(Invalidation::Account)
}

/// A background task that subscribes to [`INVALIDATION_CHANNEL`] and hands
/// every change to a sink, resubscribing forever when the connection drops.
/// Dropping the listener stops the task.
pub struct InvalidationListener {
    tasks: Vec<JoinHandle<()>>,
    subscriptions: watch::Receiver<u64>,
}

impl fmt::Debug for InvalidationListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InvalidationListener")
            .field("subscriptions", &*self.subscriptions.borrow())
            .finish_non_exhaustive()
    }
}

impl InvalidationListener {
    /// How many times the listener has subscribed so far (1 after the first
    /// subscription, +1 per re-subscription).
    pub fn subscriptions(&self) -> u64 {
        *self.subscriptions.borrow()
    }

    /// Waits until the listener has subscribed at least `count` times, so
    /// that callers (tests, readiness) need not sleep and hope.
    ///
    /// # Errors
    /// `Unavailable` if the listener task has ended.
    pub async fn wait_subscribed(&self, count: u64) -> Result<(), StoreError> {
        let mut subscriptions = self.subscriptions.clone();
        subscriptions
            .wait_for(|&subscribed| subscribed >= count)
            .await
            .map(drop)
            .map_err(|_| StoreError::unavailable("the invalidation listener has stopped"))
    }
}

impl Drop for InvalidationListener {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts listening for invalidations on the Redis at `url` (a tokio task)
/// and forwards each one to `sink`.
///
/// After every re-subscription, and after a first subscription that only
/// succeeded after failed attempts, the sink gets
/// [`Invalidation::Everything`]: messages published meanwhile are lost.
/// Malformed messages are ignored with a warning.
///
/// # Errors
/// `Unavailable` when the URL cannot be used (its password masked).
///
/// # Panics
/// Outside a tokio runtime.
pub fn spawn_invalidation_listener(
    url: &str,
    options: RedisOptions,
    sink: Arc<dyn InvalidationSink>,
) -> Result<InvalidationListener, StoreError> {
    let target = RedisTarget::new(url);
    let client = target.client(url)?;
    Ok(start_listener(vec![client], 1, options, target, sink))
}

/// [`spawn_invalidation_listener`] for a Redis Cluster reached through
/// `seeds` (comma-separated `redis://` URLs): the listener subscribes on
/// one seed at a time, and moves to the next whenever that one fails.
///
/// # Errors
/// `Unavailable` when the list is empty or a URL cannot be used (passwords
/// masked).
///
/// # Panics
/// Outside a tokio runtime.
pub fn spawn_cluster_invalidation_listener(
    seeds: &str,
    options: RedisOptions,
    sink: Arc<dyn InvalidationSink>,
) -> Result<InvalidationListener, StoreError> {
    let (urls, target) = cluster_seeds(seeds)?;
    let clients = urls
        .iter()
        .map(|url| RedisTarget::new(url).client(url))
        .collect::<Result<Vec<_>, _>>()?;
    let redundancy = clients.len().min(CLUSTER_SUBSCRIPTIONS);
    Ok(start_listener(clients, redundancy, options, target, sink))
}

/// Subscriptions a cluster listener holds at once, on different nodes.
const CLUSTER_SUBSCRIPTIONS: usize = 2;
/// Messages remembered to apply each one once when several subscriptions
/// bring it: far more than can arrive while one subscription lags another.
const RECENT_MESSAGES: usize = 256;

/// What a listener's subscriptions share.
struct Coverage {
    clients: Vec<Client>,
    options: RedisOptions,
    target: RedisTarget,
    sink: Arc<dyn InvalidationSink>,
    announce: watch::Sender<u64>,
    /// Subscriptions up right now.
    live: AtomicUsize,
    /// How many times no subscription at all was up: messages published
    /// then were heard by nobody.
    outages: AtomicU64,
    /// The latest payloads applied, oldest first.
    recent: Mutex<VecDeque<Vec<u8>>>,
}

impl Coverage {
    /// Whether `payload` is new (and remembers it); a payload brought by a
    /// second subscription is not. Only timed payloads are compared: one
    /// without a time (from an older node) may be a later, equal change.
    fn first_time(&self, payload: &[u8]) -> bool {
        if !payload.contains(&b' ') {
            return true;
        }
        let Ok(mut recent) = self.recent.lock() else {
            // A panic elsewhere poisoned the lock: applying twice is harmless.
            return true;
        };
        if recent.iter().any(|seen| seen == payload) {
            return false;
        }
        if recent.len() == RECENT_MESSAGES {
            recent.pop_front();
        }
        recent.push_back(payload.to_vec());
        true
    }
}

fn start_listener(
    clients: Vec<Client>,
    redundancy: usize,
    options: RedisOptions,
    target: RedisTarget,
    sink: Arc<dyn InvalidationSink>,
) -> InvalidationListener {
    let (announce, subscriptions) = watch::channel(0);
    let coverage = Arc::new(Coverage {
        clients,
        options,
        target,
        sink,
        announce,
        live: AtomicUsize::new(0),
        outages: AtomicU64::new(0),
        recent: Mutex::new(VecDeque::with_capacity(RECENT_MESSAGES)),
    });
    let tasks = (0..redundancy.max(1))
        .map(|first| tokio::spawn(listen(coverage.clone(), first)))
        .collect();
    InvalidationListener {
        tasks,
        subscriptions,
    }
}

/// The listener's loop: subscribe, forward until the connection is lost,
/// back off, repeat.
async fn listen(coverage: Arc<Coverage>, first: usize) {
    let Coverage {
        clients,
        options,
        target,
        sink,
        announce,
        ..
    } = coverage.as_ref();
    let mut subscriptions: u64 = 0;
    let mut failures: u32 = 0;
    // Whether messages may have been missed since the listener started.
    let mut missed = false;
    // The outage count when this subscription was lost: if it moved by the
    // time it is back, nobody heard some messages.
    let mut outages_at_loss = coverage.outages.load(Ordering::SeqCst);
    // Which client to try next: after a failure the next seed gets a turn,
    // so a dead node is left behind.
    let mut turn = first;
    loop {
        let client = &clients[turn % clients.len()];
        turn = turn.wrapping_add(1);
        match subscribe(client, options).await {
            Ok(pubsub) => {
                subscriptions += 1;
                let others_live = coverage.live.fetch_add(1, Ordering::SeqCst) > 0;
                let gap = if subscriptions > 1 {
                    coverage.outages.load(Ordering::SeqCst) != outages_at_loss
                } else {
                    missed && !others_live
                };
                if gap {
                    sink.invalidate(Invalidation::Everything);
                }
                if failures > 0 {
                    tracing::info!(url = %target.masked, "invalidation subscription is back");
                }
                failures = 0;
                announce.send_modify(|count| *count += 1);
                let why = forward(pubsub, options, &coverage).await;
                outages_at_loss = coverage.outages.load(Ordering::SeqCst);
                if coverage.live.fetch_sub(1, Ordering::SeqCst) == 1 {
                    coverage.outages.fetch_add(1, Ordering::SeqCst);
                }
                tracing::warn!(
                    url = %target.masked,
                    reason = %why,
                    "lost the invalidation subscription; resubscribing"
                );
            }
            Err(why) => {
                failures = failures.saturating_add(1);
                if failures == 1 || failures.is_multiple_of(WARN_EVERY) {
                    tracing::warn!(
                        url = %target.masked,
                        attempts = failures,
                        reason = %describe_failure(target, &why),
                        "cannot subscribe to invalidations; retrying"
                    );
                }
            }
        }
        missed = true;
        tokio::time::sleep(retry_delay(failures, options.reconnect_max_delay)).await;
    }
}

fn describe_failure(target: &RedisTarget, why: &SubscribeError) -> String {
    match why {
        SubscribeError::Redis(error) => target.describe(error),
        SubscribeError::Timeout => "no answer in time".to_owned(),
    }
}

enum SubscribeError {
    Redis(redis::RedisError),
    Timeout,
}

/// A fresh connection subscribed to the channel, within the connect timeout.
async fn subscribe(
    client: &Client,
    options: &RedisOptions,
) -> Result<redis::aio::PubSub, SubscribeError> {
    let attempt = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(INVALIDATION_CHANNEL).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    match tokio::time::timeout(options.connect_timeout, attempt).await {
        Ok(Ok(pubsub)) => Ok(pubsub),
        Ok(Err(error)) => Err(SubscribeError::Redis(error)),
        Err(_) => Err(SubscribeError::Timeout),
    }
}

/// Forwards messages until the connection ends or stops answering its
/// heartbeat, and says why it stopped. The heartbeat catches connections
/// that die silently (a hung server, a lost peer), which would otherwise
/// leave the node deaf with no error at all.
async fn forward(
    pubsub: redis::aio::PubSub,
    options: &RedisOptions,
    coverage: &Coverage,
) -> &'static str {
    let (mut control, mut messages) = pubsub.split();
    let mut heartbeat = tokio::time::interval(options.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; the subscription just proved the link.
    heartbeat.tick().await;
    loop {
        tokio::select! {
            message = messages.next() => match message {
                Some(message) => {
                    if coverage.first_time(message.get_payload_bytes()) {
                        deliver(&message, coverage.sink.as_ref(), options.node_id);
                    }
                }
                None => return "the connection closed",
            },
            _ = heartbeat.tick() => {
                let ping = control.ping::<redis::Value>();
                match tokio::time::timeout(options.connect_timeout, ping).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => return "the heartbeat failed",
                    Err(_) => return "the heartbeat got no answer in time",
                }
            }
        }
    }
}

fn deliver(message: &Msg, sink: &dyn InvalidationSink, own_node_id: u64) {
    let decoded = std::str::from_utf8(message.get_payload_bytes())
        .ok()
        .and_then(decode);
    match decoded {
        // Our own change, already applied when it was published.
        Some(Message {
            origin: Some(origin),
            ..
        }) if origin == own_node_id => {}
        Some(Message { change, sent, .. }) => {
            // A sender whose clock runs ahead would give a negative delay:
            // it counts as none rather than as a huge one.
            let delay = sent.map(|sent| {
                Timestamp::now()
                    .duration_since(sent)
                    .try_into()
                    .unwrap_or(Duration::ZERO)
            });
            sink.invalidate_published(change, delay);
        }
        // The payload is not echoed: whatever it is, it is not ours. Anyone
        // who can publish on the channel sets the pace, so it is limited.
        None => {
            static MALFORMED: LogLimit = LogLimit::per_second();
            if let Some(suppressed) = MALFORMED.admit() {
                tracing::warn!(
                    bytes = message.get_payload_bytes().len(),
                    suppressed,
                    "ignoring a malformed invalidation message"
                );
            }
        }
    }
}

/// Exponential from [`FIRST_RETRY_DELAY`], capped, with up to 50% jitter so
/// that nodes do not all reconnect in the same instant after a restart.
fn retry_delay(failures: u32, max: Duration) -> Duration {
    let exponent = failures.min(16);
    let base = FIRST_RETRY_DELAY
        .saturating_mul(1 << exponent)
        .min(max.max(FIRST_RETRY_DELAY));
    let mut random = [0u8; 1];
    let jitter = if getrandom::fill(&mut random).is_ok() {
        base.mul_f64(f64::from(random[0]) / 510.0)
    } else {
        Duration::ZERO
    };
    base + jitter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let changes = [
            Invalidation::Key(KeyHash::of(b"sk_test_example")),
            Invalidation::Account(AccountId::new("acct_1").unwrap()),
            Invalidation::Everything,
        ];
        for change in changes {
            let sent = Timestamp::from_microsecond(1_800_000_000_123_456).unwrap();
            let message = Message {
                change,
                sent: Some(sent),
                origin: Some(0xfeed),
            };
            assert_eq!(decode(&encode(&change, sent, 0xfeed)), Some(message));
        }
        let key = encode(&changes[0], Timestamp::UNIX_EPOCH, 1);
        assert!(
            key.starts_with("k:") && key.ends_with(" 0 0000000000000001"),
            "{key}"
        );
        // Messages from nodes that send no time or origin still count.
        let bare = Message {
            change: Invalidation::Everything,
            sent: None,
            origin: None,
        };
        assert_eq!(decode("*"), Some(bare));
        assert_eq!(decode("* 5 zz"), None);
        assert_eq!(decode("* 5 1 extra"), None);
    }

    #[test]
    fn malformed_messages_are_rejected() {
        for text in [
            "",
            "k:",
            "k:xyz",
            "a:",
            "a:bad account",
            "**",
            "x:1",
            "K:00",
            "* ",
            "* soon",
            "a:bad account",
        ] {
            assert_eq!(decode(text), None, "{text:?}");
        }
        let upper = format!("k:{}", "A".repeat(64));
        assert_eq!(decode(&upper), None);
    }

    #[test]
    fn retry_delays_grow_and_stay_capped() {
        let max = Duration::from_millis(500);
        assert!(retry_delay(0, max) < Duration::from_millis(76));
        for failures in 0..40 {
            assert!(retry_delay(failures, max) <= max + max / 2);
        }
    }
}
