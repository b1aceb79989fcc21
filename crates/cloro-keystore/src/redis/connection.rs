//! `RedisConnection`: one handle over either a single Redis or a Redis
//! Cluster, so that the store, the limiter and the notifier send the same
//! commands and the same Lua to both.
//!
//! Every multi-key command the crate sends stays in one hash slot (see the
//! key layout in `store`), so the cluster client can route each one,
//! scripts included, by its first key. Scripts are sent as `EVALSHA` and,
//! when a server does not know them yet, as `EVAL` with the source: on a
//! cluster `SCRIPT LOAD` goes to every node and fails while one is down (a
//! failover), whereas `EVAL` goes only to the node that owns the slot.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, RedisError, RedisFuture, RedisResult, Script, Value};
use tokio::sync::OnceCell;

/// Retries the cluster client makes on its own (redirections, a node that
/// just went away); every call is bounded by the store's command timeout
/// anyway, so these only matter within it.
const CLUSTER_RETRIES: u32 = 3;

/// A connection to a single Redis or to a Redis Cluster. Cheap to clone:
/// clones share the underlying connections.
#[derive(Clone)]
pub(crate) enum RedisConnection {
    /// One Redis, reconnected in the background by the manager.
    Single(ConnectionManager),
    /// A cluster, connected on first use (so a node can start while the
    /// cluster is down and serve its cache, as with a single Redis).
    Cluster(Arc<LazyCluster>),
}

/// A cluster client and the connection it opens on first use.
pub(crate) struct LazyCluster {
    client: ClusterClient,
    connection: OnceCell<ClusterConnection>,
}

impl RedisConnection {
    /// A cluster connection through `seeds` (the first use connects).
    pub(crate) fn cluster(
        seeds: &[String],
        response_timeout: Duration,
        connect_timeout: Duration,
    ) -> RedisResult<Self> {
        let client = ClusterClient::builder(seeds.iter().map(String::as_str))
            .response_timeout(response_timeout)
            .connection_timeout(connect_timeout)
            .retries(CLUSTER_RETRIES)
            .min_retry_wait(10)
            .max_retry_wait(200)
            .build()?;
        Ok(RedisConnection::Cluster(Arc::new(LazyCluster {
            client,
            connection: OnceCell::new(),
        })))
    }

    /// Whether this talks to a cluster: commands that span slots must then
    /// be split.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, RedisConnection::Cluster(_))
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

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Single(manager) => manager.req_packed_command(cmd),
            RedisConnection::Cluster(lazy) => {
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
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Single(manager) => {
                manager.req_packed_commands(pipeline, offset, count)
            }
            RedisConnection::Cluster(lazy) => {
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
            RedisConnection::Single(manager) => manager.get_db(),
            // A cluster has only database 0.
            RedisConnection::Cluster(_) => 0,
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

    /// Runs the script with `keys` and `args` on `connection`.
    pub(crate) async fn run<T: FromRedisValue>(
        &self,
        connection: &mut RedisConnection,
        keys: &[String],
        args: &[String],
    ) -> RedisResult<T> {
        match self
            .command("EVALSHA", self.script.get_hash(), keys, args)
            .query_async(connection)
            .await
        {
            Err(error) if is_no_script(&error) => {
                self.command("EVAL", self.source, keys, args)
                    .query_async(connection)
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
