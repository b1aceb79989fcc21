//! `RedisConnection`: one handle over either a single Redis or a Redis
//! Cluster, so that the store, the limiter and the notifier send the same
//! commands and the same Lua to both, and the plumbing every Redis call
//! needs, written once: the command timeout that turns a hung Redis into
//! [`StoreError::Unavailable`] ([`RedisConnection::bounded`]), one retry
//! when the connection was found dropped ([`RedisConnection::query`]),
//! and errors described through the target's scrubbing (`target`).
//!
//! Every multi-key command the crate sends stays in one hash slot (see the
//! key layout in `store`), so the cluster client can route each one,
//! scripts included, by its first key. Scripts are sent as `EVALSHA` and,
//! when a server does not know them yet, as `EVAL` with the source: on a
//! cluster `SCRIPT LOAD` goes to every node and fails while one is down (a
//! failover), whereas `EVAL` goes only to the node that owns the slot.

use core::fmt;
use core::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisError, RedisFuture, RedisResult, Script, Value};
use tokio::sync::OnceCell;

use super::target::{RedisTarget, cluster_seeds};
use crate::store::{StoreError, within};

/// Retries the cluster client makes on its own (redirections, a node that
/// just went away); every call is bounded by the command timeout anyway,
/// so these only matter within it.
const CLUSTER_RETRIES: u32 = 3;
/// Reconnect attempts in one background round before the manager gives up
/// until the next command; with a capped delay this covers a few minutes.
const RECONNECT_ATTEMPTS: usize = 300;

/// How the store, the limiter and the notifier talk to Redis.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisOptions {
    /// The most any store call may take, round trips included; past it the
    /// call is [`StoreError::Unavailable`] (SPEC §8: 250 ms by default).
    pub command_timeout: Duration,
    /// The most one connection attempt may take.
    pub connect_timeout: Duration,
    /// The longest pause between reconnection attempts (jitter may add as
    /// much again), so service resumes soon after Redis does.
    pub reconnect_max_delay: Duration,
    /// How often the invalidation listener pings its connection, to notice a
    /// connection that silently died.
    pub heartbeat_interval: Duration,
    /// This node's id in invalidation messages. A node's notifier and
    /// listener share it (give both the same options), so the listener can
    /// skip the node's own messages: the notifier already applied them, and
    /// applying an echo again would only drop a freshly filled cache entry.
    /// Random by default.
    pub node_id: u64,
}

impl Default for RedisOptions {
    fn default() -> Self {
        let mut random = [0u8; 8];
        // Without randomness, 0: a node then only re-applies its own echoes.
        let _ = getrandom::fill(&mut random);
        RedisOptions {
            command_timeout: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(1),
            reconnect_max_delay: Duration::from_millis(500),
            heartbeat_interval: Duration::from_secs(1),
            node_id: u64::from_le_bytes(random),
        }
    }
}

/// The connection a [`RedisStore`](crate::RedisStore) opened (see
/// [`RedisStore::connection`](crate::RedisStore::connection)), shared by
/// the [`RedisRateLimiter`](crate::RedisRateLimiter) and the
/// [`RedisNotifier`](crate::RedisNotifier) on the same Redis, with the
/// options and the masked URL that go with it. Cheap to clone: clones share
/// the underlying connections.
#[derive(Clone)]
pub struct RedisConnection {
    link: Link,
    options: RedisOptions,
    target: Arc<RedisTarget>,
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnection")
            .field("url", &self.target.masked)
            .field("cluster", &self.is_cluster())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The multiplexed connection itself.
#[derive(Clone)]
enum Link {
    /// One Redis, reconnected in the background by the manager.
    Single(ConnectionManager),
    /// A cluster, connected on first use (so a node can start while the
    /// cluster is down and serve its cache, as with a single Redis).
    Cluster(Arc<LazyCluster>),
}

/// A cluster client and the connection it opens on first use.
struct LazyCluster {
    client: ClusterClient,
    connection: OnceCell<ClusterConnection>,
}

impl RedisConnection {
    /// A connection to the Redis at `url`; the first use connects.
    ///
    /// # Errors
    /// `Unavailable` when the URL cannot be used (its password masked).
    ///
    /// # Panics
    /// Outside a tokio runtime: the connection manager spawns its task here.
    pub(crate) fn single(url: &str, options: RedisOptions) -> Result<Self, StoreError> {
        let target = RedisTarget::new(url);
        let client = target.client(url)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(options.command_timeout))
            .set_connection_timeout(Some(options.connect_timeout))
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(options.reconnect_max_delay)
            .set_number_of_retries(RECONNECT_ATTEMPTS);
        // Lazy, so a node can start while Redis is down and serve its cache
        // (SPEC §8); `new_with_config` would fail the start instead.
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|error| target.unavailable(&error))?;
        Ok(RedisConnection {
            link: Link::Single(manager),
            options,
            target: Arc::new(target),
        })
    }

    /// A connection to the cluster reached through `seeds`, a
    /// comma-separated list of `redis://` URLs; the first use connects.
    ///
    /// # Errors
    /// `Unavailable` when the list is empty or a URL cannot be used
    /// (passwords masked).
    pub(crate) fn cluster(seeds: &str, options: RedisOptions) -> Result<Self, StoreError> {
        let (urls, target) = cluster_seeds(seeds)?;
        let client = ClusterClient::builder(urls.iter().map(String::as_str))
            .response_timeout(options.command_timeout)
            .connection_timeout(options.connect_timeout)
            .retries(CLUSTER_RETRIES)
            .min_retry_wait(10)
            .max_retry_wait(200)
            .build()
            .map_err(|error| target.unavailable(&error))?;
        Ok(RedisConnection {
            link: Link::Cluster(Arc::new(LazyCluster {
                client,
                connection: OnceCell::new(),
            })),
            options,
            target: Arc::new(target),
        })
    }

    /// The options in force.
    pub fn options(&self) -> &RedisOptions {
        &self.options
    }

    /// The URL (or a cluster's seed list) with any password masked: safe
    /// for logs.
    pub fn masked_url(&self) -> &str {
        &self.target.masked
    }

    /// Whether this talks to a cluster: commands that span slots must then
    /// be split.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.link, Link::Cluster(_))
    }

    /// Runs `work`, however many round trips it makes, under the command
    /// timeout: a Redis that hangs instead of refusing gives `Unavailable`
    /// in time, never a hung caller.
    pub(crate) async fn bounded<T>(
        &self,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let timeout = self.options.command_timeout;
        within(timeout, work, || {
            StoreError::unavailable(format!(
                "redis at {} did not answer within {timeout:?}",
                self.target.masked
            ))
        })
        .await
    }

    /// Sends a request that may safely run twice. A connection found
    /// dropped (Redis restarted since the last call) is retried once on the
    /// connection the manager opens in its place, so the first call after a
    /// restart does not fail for nothing.
    pub(crate) async fn query<'a, T: FromRedisValue>(
        &self,
        request: impl Into<Request<'a>>,
    ) -> Result<T, StoreError> {
        let request = request.into();
        let mut link = self.link.clone();
        let result = match request.send(&mut link).await {
            Err(error) if error.is_connection_dropped() => request.send(&mut link).await,
            result => result,
        };
        result.map_err(|error| self.target.failure(&error))
    }

    /// Sends a request once, for writes that must not run twice (a commit
    /// retried after it ran would look like a lost race).
    pub(crate) async fn query_once<'a, T: FromRedisValue>(
        &self,
        request: impl Into<Request<'a>>,
    ) -> Result<T, StoreError> {
        let mut link = self.link.clone();
        request
            .into()
            .send(&mut link)
            .await
            .map_err(|error| self.target.failure(&error))
    }
}

/// What [`RedisConnection::query`] sends: a command, a pipeline, or a Lua
/// script with its keys and arguments.
pub(crate) enum Request<'a> {
    Command(&'a Cmd),
    Pipeline(&'a Pipeline),
    Script {
        script: &'a LuaScript,
        keys: &'a [String],
        args: &'a [String],
    },
}

impl<'a> From<&'a Cmd> for Request<'a> {
    fn from(command: &'a Cmd) -> Self {
        Request::Command(command)
    }
}

impl<'a> From<&'a mut Cmd> for Request<'a> {
    fn from(command: &'a mut Cmd) -> Self {
        Request::Command(command)
    }
}

impl<'a> From<&'a Pipeline> for Request<'a> {
    fn from(pipeline: &'a Pipeline) -> Self {
        Request::Pipeline(pipeline)
    }
}

impl Request<'_> {
    async fn send<T: FromRedisValue>(&self, link: &mut Link) -> RedisResult<T> {
        match self {
            Request::Command(command) => command.query_async(link).await,
            Request::Pipeline(pipeline) => pipeline.query_async(link).await,
            Request::Script { script, keys, args } => script.run(link, keys, args).await,
        }
    }
}

impl LazyCluster {
    /// The cluster connection, opened now if it is not yet. A failed
    /// attempt leaves nothing behind, so the next call tries again.
    async fn connection(&self) -> RedisResult<ClusterConnection> {
        self.connection
            .get_or_try_init(|| self.client.get_async_connection())
            .await
            .cloned()
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Single(manager) => manager.req_packed_command(cmd),
            Link::Cluster(lazy) => {
                let lazy = lazy.clone();
                Box::pin(async move {
                    let mut connection = lazy.connection().await?;
                    connection.req_packed_command(cmd).await
                })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Single(manager) => manager.req_packed_commands(pipeline, offset, count),
            Link::Cluster(lazy) => {
                let lazy = lazy.clone();
                Box::pin(async move {
                    let mut connection = lazy.connection().await?;
                    connection
                        .req_packed_commands(pipeline, offset, count)
                        .await
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(manager) => manager.get_db(),
            // A cluster has only database 0.
            Link::Cluster(_) => 0,
        }
    }
}

/// A Lua script and its source, run by key on whichever server owns the
/// first key's slot (see the module docs for why not `SCRIPT LOAD`).
pub(crate) struct LuaScript {
    script: Script,
    source: &'static str,
}

impl LuaScript {
    pub(crate) fn new(source: &'static str) -> Self {
        LuaScript {
            script: Script::new(source),
            source,
        }
    }

    /// A run of the script with `keys` and `args`, to send.
    pub(crate) fn with<'a>(&'a self, keys: &'a [String], args: &'a [String]) -> Request<'a> {
        Request::Script {
            script: self,
            keys,
            args,
        }
    }

    async fn run<T: FromRedisValue>(
        &self,
        link: &mut Link,
        keys: &[String],
        args: &[String],
    ) -> RedisResult<T> {
        match self
            .command("EVALSHA", self.script.get_hash(), keys, args)
            .query_async(link)
            .await
        {
            Err(error) if is_no_script(&error) => {
                self.command("EVAL", self.source, keys, args)
                    .query_async(link)
                    .await
            }
            result => result,
        }
    }

    fn command(&self, verb: &str, body: &str, keys: &[String], args: &[String]) -> Cmd {
        let mut command = redis::cmd(verb);
        command.arg(body).arg(keys.len()).arg(keys).arg(args);
        command
    }
}

fn is_no_script(error: &RedisError) -> bool {
    error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}
