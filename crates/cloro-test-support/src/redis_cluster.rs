//! `RedisCluster`: a private Redis Cluster per test, built from
//! `redis-server` processes on free loopback ports and `redis-cli --cluster
//! create`, and killed when the handle drops.
//!
//! Each node's cluster bus listens on its port + 10000, so ports are picked
//! below 55000 with that bus port free as well, and never 6379. The node
//! timeout is short (1 s) so that a replica takes over a killed master in a
//! couple of seconds, which keeps failover tests fast.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::redis_server::{find_on_path, log_tail, spawn_with, stop, wait_ready_logged};

/// How long the cluster may take to agree on its shape after creation, or
/// on a new master after a failover; generous for a loaded 2-core machine.
const SETTLE_DEADLINE: Duration = Duration::from_secs(30);
/// Ports whose bus port (+10000) must still be a valid, free port.
const HIGHEST_PORT: u16 = 55_000;
const BUS_OFFSET: u16 = 10_000;
const SYSTEM_REDIS_PORT: u16 = 6379;
/// The cluster's failure detection time, in milliseconds.
const NODE_TIMEOUT_MS: u32 = 1000;
const START_ATTEMPTS: usize = 5;

/// One node of the cluster.
#[derive(Debug)]
struct Node {
    port: u16,
    /// `None` once killed.
    child: Option<Child>,
}

/// A Redis Cluster owned by a test: `masters` masters, each with
/// `replicas` replicas. Dropping it kills every node and removes their
/// directory, also when the test panics.
#[derive(Debug)]
pub struct RedisCluster {
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

impl RedisCluster {
    /// Starts `masters × (1 + replicas)` nodes, joins them into a cluster
    /// and waits until every node reports `cluster_state:ok`.
    ///
    /// # Panics
    /// When `redis-server` or `redis-cli` is missing, or the cluster does
    /// not form in time.
    pub fn start(masters: usize, replicas: usize) -> Self {
        let server = find_on_path("redis-server").unwrap_or_else(|| {
            panic!("redis-server not found on PATH; the Redis tests never skip")
        });
        let dir = tempfile::Builder::new()
            .prefix("cloro-redis-cluster-")
            .tempdir()
            .unwrap_or_else(|error| panic!("cannot create a directory for the cluster: {error}"));
        let total = masters * (1 + replicas);
        let mut cluster = RedisCluster {
            dir,
            nodes: Vec::with_capacity(total),
        };
        while cluster.nodes.len() < total {
            let node = cluster.start_node(&server);
            cluster.nodes.push(node);
        }
        let mut create = Command::new(cli_binary());
        create.arg("--cluster").arg("create");
        for node in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let output = create
            .arg("--cluster-replicas")
            .arg(replicas.to_string())
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|error| panic!("cannot run redis-cli --cluster create: {error}"));
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        cluster.wait_until("the cluster forms", |cluster| {
            cluster.live_ports().iter().all(|&port| {
                let info = cli(port, &["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{total}"))
            }) && cluster.masters().len() == masters
                && cluster.replicas_in_sync() == masters * replicas
        });
        cluster
    }

    fn start_node(&self, server: &std::path::Path) -> Node {
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_cluster_port();
            let log = format!("redis-{port}.log");
            let extra = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &format!("nodes-{port}.conf"),
                "--cluster-node-timeout",
                &NODE_TIMEOUT_MS.to_string(),
                // A replica may always take over, however long it has been
                // apart from its master: the tests want failover, not safety
                // against stale replicas.
                "--cluster-replica-validity-factor",
                "0",
            ]
            .map(str::to_owned);
            let mut child = spawn_with(server, port, self.dir.path(), &log, &extra);
            match wait_ready_logged(&mut child, port, self.dir.path(), &log) {
                Ok(()) => {
                    return Node {
                        port,
                        child: Some(child),
                    };
                }
                Err(failure) => {
                    stop(&mut child);
                    failures.push(failure);
                }
            }
        }
        panic!(
            "a cluster node did not start in {START_ATTEMPTS} attempts:\n{}",
            failures.join("\n")
        );
    }

    /// Every node as a `redis://` URL, comma-separated: the seed list for
    /// `--redis-url` with `--redis-cluster`.
    pub fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("redis://127.0.0.1:{}", node.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The ports of the nodes still running.
    pub fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|node| node.child.is_some())
            .map(|node| node.port)
            .collect()
    }

    /// The hash slot of `key` (asked of a live node).
    ///
    /// # Panics
    /// When no node answers.
    pub fn slot_of(&self, key: &str) -> u16 {
        let port = self.live_ports()[0];
        cli(port, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("CLUSTER KEYSLOT {key} gave no number"))
    }

    /// The port of the master serving `slot`, as a live node sees it.
    pub fn master_of_slot(&self, slot: u16) -> Option<u16> {
        self.masters()
            .into_iter()
            .find(|(_, ranges)| {
                ranges
                    .iter()
                    .any(|&(low, high)| low <= slot && slot <= high)
            })
            .map(|(port, _)| port)
    }

    /// Kills the master on `port` (SIGKILL) and keeps it dead.
    ///
    /// # Panics
    /// When `port` is not a running node.
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|node| node.port == port)
            .unwrap_or_else(|| panic!("no cluster node on port {port}"));
        let mut child = node
            .child
            .take()
            .unwrap_or_else(|| panic!("the node on port {port} is already dead"));
        stop(&mut child);
    }

    /// Waits until every slot has a live master and every live node says
    /// `cluster_state:ok`: after [`Self::kill`], that a replica took over.
    ///
    /// # Panics
    /// When that does not happen in time.
    pub fn wait_for_failover(&self) {
        let dead: Vec<u16> = self
            .nodes
            .iter()
            .filter(|node| node.child.is_none())
            .map(|node| node.port)
            .collect();
        self.wait_until("a replica takes over", |cluster| {
            let masters = cluster.masters();
            let covered: usize = masters
                .iter()
                .filter(|(port, _)| !dead.contains(port))
                .flat_map(|(_, ranges)| ranges.iter())
                .map(|&(low, high)| usize::from(high - low) + 1)
                .sum();
            covered == 16384
                && cluster
                    .live_ports()
                    .iter()
                    .all(|&port| cli(port, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        });
    }

    /// Masters with their slot ranges, from a live node's `CLUSTER NODES`.
    fn masters(&self) -> BTreeMap<u16, Vec<(u16, u16)>> {
        let Some(&port) = self.live_ports().first() else {
            return BTreeMap::new();
        };
        let mut masters = BTreeMap::new();
        for line in cli(port, &["CLUSTER", "NODES"]).lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let Some(node_port) = fields[1]
                .split(['@', ','])
                .next()
                .and_then(|address| address.rsplit(':').next())
                .and_then(|port| port.parse::<u16>().ok())
            else {
                continue;
            };
            let ranges = fields[8..]
                .iter()
                .filter(|range| !range.starts_with('['))
                .filter_map(|range| match range.split_once('-') {
                    Some((low, high)) => Some((low.parse().ok()?, high.parse().ok()?)),
                    None => range.parse().ok().map(|slot| (slot, slot)),
                })
                .collect::<Vec<_>>();
            if !ranges.is_empty() {
                masters.insert(node_port, ranges);
            }
        }
        masters
    }

    /// How many live replicas report a link to their master that is up.
    fn replicas_in_sync(&self) -> usize {
        self.live_ports()
            .iter()
            .filter(|&&port| {
                let info = cli(port, &["INFO", "replication"]);
                info.contains("role:slave") && info.contains("master_link_status:up")
            })
            .count()
    }

    fn wait_until(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let started = Instant::now();
        while !done(self) {
            if started.elapsed() > SETTLE_DEADLINE {
                let logs: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|node| {
                        format!(
                            "-- {}:\n{}",
                            node.port,
                            log_tail(self.dir.path(), &format!("redis-{}.log", node.port))
                        )
                    })
                    .collect();
                panic!(
                    "waited {SETTLE_DEADLINE:?} for {what}; logs:\n{}",
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                stop(child);
            }
        }
    }
}

fn cli_binary() -> PathBuf {
    find_on_path("redis-cli")
        .unwrap_or_else(|| panic!("redis-cli not found on PATH; the Redis tests never skip"))
}

/// One `redis-cli` command against the node on `port`; its output, or ""
/// when it cannot run (a dead node reads as one that says nothing).
fn cli(port: u16, args: &[&str]) -> String {
    Command::new(cli_binary())
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        .unwrap_or_default()
}

/// A free loopback port below [`HIGHEST_PORT`] whose bus port is free too.
/// Another process may still take either before the node binds; the node
/// then fails to start and `start_node` tries another.
fn free_cluster_port() -> u16 {
    loop {
        let Ok(listener) = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)) else {
            continue;
        };
        let Ok(address) = listener.local_addr() else {
            continue;
        };
        let port = address.port();
        if port >= HIGHEST_PORT
            || port == SYSTEM_REDIS_PORT
            || port + BUS_OFFSET == SYSTEM_REDIS_PORT
        {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port + BUS_OFFSET)).is_ok() {
            return port;
        }
    }
}
