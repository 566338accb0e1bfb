//! Cluster mode: the node's chain replicated through Raft.
//!
//! ```text
//!  leader loop (only start of production; I3 gate) ─ Sealer::seal ─► raft.client_write
//!  every node: StateMachine::apply (compare-and-append, validate) ─► store.commit_block
//!      ─► the store's stream of applied blocks ─► Announcer (pool, waiters, health)
//!  followers: eth_sendRawTransaction[Sync] forwarded to the leader's JSON-RPC
//! ```
//!
//! The member with the lowest id initialises the cluster on its first start; every later
//! start (of any node) finds the membership in its own log.

use crate::health::Health;
use crate::producer::Sealer;
use crate::{NodeError, Seams};
use keel_cluster::{
    ClusterSecret, HealthCheck, HealthMonitor, LeaderControl, LeaderLoop, NodeId, PeerEndpoint,
    PeerNetwork, StateMachine, TypeConfig, peer_router,
};
use keel_primitives::ChainSpec;
use keel_rpc::{Route, WriteRoute};
use keel_storage::Store;
use openraft::storage::RaftLogStorage as _;
use openraft::{BasicNode, Raft, ServerState};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// One member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Where peers reach its peer (Raft) endpoint.
    pub raft_addr: SocketAddr,
    /// Where its peer endpoint listens (`raft_addr` unless a proxy or NAT sits between); peer
    /// requests it sends leave from this address's IP unless that is unspecified.
    pub raft_listen: SocketAddr,
    /// Where its JSON-RPC listens (writes are forwarded there when it leads).
    pub rpc_addr: SocketAddr,
    /// Where its admin API listens, if the cluster file says: a follower asked for what only
    /// the leader does names the leader's.
    pub admin_addr: Option<SocketAddr>,
    /// Where its operations endpoint listens, if the cluster file says: the others' dashboards
    /// read it.
    pub ops_addr: Option<SocketAddr>,
    /// Starts outside the voters: it joins when an operator adds it as a learner, and votes
    /// once promoted (docs/design.md R1).
    pub learner: bool,
}

/// This node's place in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's id, a key of `members`.
    pub node_id: NodeId,
    /// Every member, by id.
    pub members: BTreeMap<NodeId, Member>,
    /// The secret peer requests carry.
    pub secret: ClusterSecret,
    /// Raft heartbeat interval.
    pub heartbeat_ms: u64,
    /// Raft election timeout, lower bound.
    pub election_timeout_ms: u64,
    /// Raft election timeout, upper bound; also how long a follower refuses to vote for
    /// another candidate after hearing from its leader (openraft's leader lease).
    pub election_timeout_max_ms: u64,
    /// Entries between snapshots; a node further behind than the log kept catches up by
    /// snapshot.
    pub snapshot_entries: u64,
    /// Where the admin API listens, with the token its requests must carry; `None` serves none.
    pub admin: Option<(SocketAddr, ClusterSecret)>,
    /// How long a healthy leader leads before it hands over to the next ready voter (rotating
    /// leadership); `None`: no rotation.
    pub rotation_interval: Option<Duration>,
}

struct LeaderRoute {
    node_id: NodeId,
    raft: Raft<TypeConfig>,
    members: BTreeMap<NodeId, Member>,
}

impl std::fmt::Debug for LeaderRoute {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("LeaderRoute")
            .field("node_id", &self.node_id)
            .finish()
    }
}

impl WriteRoute for LeaderRoute {
    fn route(&self) -> Route {
        let metrics = self.raft.metrics().borrow().clone();
        match metrics.current_leader {
            Some(leader) if leader == self.node_id => Route::Local,
            Some(leader) => match self.members.get(&leader) {
                Some(member) => Route::Forward(format!("http://{}", member.rpc_addr)),
                None => Route::NoLeader,
            },
            None => Route::NoLeader,
        }
    }
}

/// The running cluster parts of a node.
pub(crate) struct Running {
    pub(crate) raft: Raft<TypeConfig>,
    /// Raft's own runtime (none in the simulation); stopped after Raft.
    pub(crate) runtime: Option<crate::runtime::OwnRuntime>,
    pub(crate) stop: tokio::sync::watch::Sender<bool>,
    pub(crate) tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Running").finish_non_exhaustive()
    }
}

/// Starts Raft, the peer endpoint, the leader loop, the health monitor, and the write route
/// and the intake of `rpc` (the node's JSON-RPC context).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn start<S: Seams>(
    seams: &S,
    cluster: &ClusterConfig,
    chain: &ChainSpec,
    store: Arc<Store>,
    sealer: Sealer,
    rpc: Arc<keel_rpc::RpcContext>,
    health: Arc<Health>,
    block_time: Duration,
) -> Result<Running, NodeError> {
    let me = cluster
        .members
        .get(&cluster.node_id)
        .ok_or_else(|| NodeError::Config(format!("node id {} is not a member", cluster.node_id)))?;
    let mut log = seams.open_log()?;
    let returns = (chain.clone(), store.clone(), sealer.mempool.clone());
    let on_replaced: keel_cluster::OnReplaced = Arc::new(move |removed| {
        let (chain, store, mempool) = &returns;
        if let Err(error) = crate::producer::return_to_pool(chain, store, mempool, removed) {
            tracing::warn!(%error, "returning replaced blocks' transactions to the pool");
        }
    });
    let pool_intake = Arc::new(crate::intake::PoolIntake {
        chain: chain.clone(),
        mempool: sealer.mempool.clone(),
    });
    let own_block = keel_cluster::OwnBlock::default();
    let machine = StateMachine::new(chain.clone(), store.clone())
        .on_replaced(on_replaced)
        .with_intake(pool_intake)
        .with_own_block(own_block.clone());
    // What was pending before the restart, from intake entries older than the last block: back
    // into the pool before Raft starts (docs/cluster.md, "Accepted means kept").
    let (read, taken) = machine
        .refill_pool(&log.get_log_reader().await)
        .map_err(|error| NodeError::Cluster {
            doing: "refilling the pool from the Raft log",
            reason: error.to_string(),
        })?;
    if read > 0 {
        tracing::info!(
            read,
            pending = taken,
            "refilled the pool from the Raft log's intake entries"
        );
    }
    let machine = seams.machine(machine);
    let config = openraft::Config {
        cluster_name: "keel".into(),
        heartbeat_interval: cluster.heartbeat_ms,
        election_timeout_min: cluster.election_timeout_ms,
        election_timeout_max: cluster.election_timeout_max_ms,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cluster.snapshot_entries),
        max_in_snapshot_log_to_keep: cluster.snapshot_entries / 2,
        ..Default::default()
    }
    .validate()
    .map_err(|error| NodeError::Config(format!("raft configuration: {error}")))?;
    let network = PeerNetwork::with_transport(cluster.secret.clone(), seams.transport(me));
    // Raft's core, replication streams and state machine are spawned by `Raft::new`, onto the
    // runtime it runs on: Raft's own, where the seams give one (crate::runtime).
    let runtime = seams.raft_runtime()?;
    let starting = Raft::new(
        cluster.node_id,
        Arc::new(config),
        network.clone(),
        log,
        machine,
    );
    let raft = match &runtime {
        Some(runtime) => runtime.run(starting).await,
        None => starting.await,
    }
    .map_err(|error| NodeError::Cluster {
        doing: "starting Raft",
        reason: error.to_string(),
    })?;
    let control = Arc::new(LeaderControl::default());
    let check: HealthCheck = {
        let health = health.clone();
        Arc::new(move || health.check().map_err(keel_cluster::NotHealthy::from))
    };
    let failover = Arc::new(keel_cluster::FailoverState::default());
    let router = peer_router(PeerEndpoint {
        raft: raft.clone(),
        secret: cluster.secret.clone(),
        control: control.clone(),
        health: check.clone(),
        failover: failover.clone(),
    });
    let mut tasks = vec![seams.serve_peers(me, router, runtime.as_ref()).await?];
    let addresses: BTreeMap<NodeId, String> = cluster
        .members
        .iter()
        .map(|(id, member)| (*id, seams.peer_address(*id, member)))
        .collect();

    // The first start of the lowest member creates the cluster; later starts find it in the log.
    if cluster.members.keys().next() == Some(&cluster.node_id) {
        let members: BTreeMap<NodeId, BasicNode> = cluster
            .members
            .iter()
            .filter(|(_, member)| !member.learner)
            .map(|(id, _)| (*id, BasicNode::new(addresses[id].clone())))
            .collect();
        // Asked first: openraft logs an ERROR when a formed cluster is initialised again, and a
        // restart is not an error.
        let formed = raft
            .is_initialized()
            .await
            .map_err(|error| NodeError::Config(format!("raft stopped at start: {error}")))?;
        if formed {
            tracing::info!("cluster membership read from the log");
        } else {
            match raft.initialize(members).await {
                Ok(()) => tracing::info!("cluster initialised"),
                Err(error) => tracing::info!(%error, "cluster already initialised"),
            }
        }
    }

    rpc.set_route(Arc::new(LeaderRoute {
        node_id: cluster.node_id,
        raft: raft.clone(),
        members: cluster.members.clone(),
    }));
    // What this node admits as the leader reaches every pool through the log first (set even
    // with no JSON-RPC served: the simulation's workload submits through the context).
    let (intake, drain) = crate::intake::RaftIntake::start(raft.clone(), control.clone());
    rpc.set_intake(Arc::new(intake));
    tasks.push(drain);
    // Raft's view, as metrics; and a state machine that stops (a committed block failed
    // validation) stops Raft: report it.
    let mut watched = raft.metrics();
    let watcher_health = health.clone();
    tasks.push(tokio::spawn(async move {
        let health = watcher_health;
        let mut exporter = RaftMetricsExporter::default();
        loop {
            let metrics = watched.borrow().clone();
            if let Err(fatal) = &metrics.running_state {
                health.halt(format!("raft stopped: {fatal}"));
                return;
            }
            // Entries in the log not applied yet (openraft 0.9's metrics carry no commit index
            // on a follower; on a leader at most the one proposal in flight is uncommitted).
            let applied = metrics.last_applied.map(|id| id.index).unwrap_or(0);
            let logged = metrics.last_log_index.unwrap_or(0);
            health.set_apply_lag(logged.saturating_sub(applied));
            exporter.export(&metrics);
            if watched.changed().await.is_err() {
                return;
            }
        }
    }));

    let mempool = sealer.mempool.clone();
    let seal_health = health.clone();
    let build: keel_cluster::BuildBlock = Arc::new(move |head| {
        // On tokio's clock, which the simulation drives: the health monitor acts on this
        // figure, and in a simulated run no decision may read the machine's clock.
        let started = tokio::time::Instant::now();
        let sealed = sealer.seal(head);
        seal_health.seal_took(started.elapsed());
        // A reset (the safe chain moved past this head's forced cursor, or the head's L1
        // origin is gone): propose the derived blocks in place of the unsafe ones.
        if let Err(error) = &sealed
            && error.kind() == keel_primitives::ErrorKind::Reset
            && let Some(rule) = &sealer.origin
        {
            match rule.adoption(head) {
                Ok(Some(adoption)) => {
                    tracing::warn!(
                        base = adoption.base.0,
                        blocks = adoption.blocks.len(),
                        "proposing the chain derived from the L1 in place of unsafe blocks"
                    );
                    return Ok(keel_cluster::Proposal::Replace {
                        base: adoption.base,
                        blocks: adoption.blocks,
                    });
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "reading the derived chain to adopt it"),
            }
        }
        match &sealed {
            Err(error) if error.kind() != keel_primitives::ErrorKind::Halt => {
                seal_health.sealing_blocked(Some(error.to_string()));
            }
            _ => seal_health.sealing_blocked(None),
        }
        let (validated, invalid) = sealed?;
        mempool.drop_invalid(&invalid, head);
        let block = validated.output.block.clone();
        // This node's state machine commits the validator's result when the block applies,
        // instead of executing it a third time (keel_cluster::OwnBlock).
        own_block.keep(validated);
        Ok(keel_cluster::Proposal::Block(block))
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let backup_store = store.clone();
    let mut leader = LeaderLoop::new(cluster.node_id, raft.clone(), store, build, block_time)
        .with_control(control.clone());
    if seams.build_inline() {
        leader = leader.with_inline_build();
    }
    // A leader whose process died is replaced on evidence, not after its lease
    // (docs/cluster.md, "Failover").
    let detector = keel_cluster::DeadLeaderDetector {
        node_id: cluster.node_id,
        raft: raft.clone(),
        network: network.clone(),
        addresses: addresses.clone(),
        health: check.clone(),
        control: control.clone(),
        state: failover,
    };
    // On Raft's runtime where there is one: EVM work must not delay the verdict.
    tasks.push(match &runtime {
        Some(runtime) => runtime.handle().spawn(detector.run(stopped.clone())),
        None => tokio::spawn(detector.run(stopped.clone())),
    });
    let monitor = HealthMonitor {
        raft: raft.clone(),
        control: control.clone(),
        network: network.clone(),
        addresses: addresses.clone(),
        health: check,
        interval: block_time.max(HEALTH_CHECK_INTERVAL_MIN),
        rotation: cluster.rotation_interval,
    };
    tasks.push(tokio::spawn(monitor.run(stopped.clone())));
    if let Some((address, token)) = &cluster.admin {
        let admin = crate::admin::Admin {
            node_id: cluster.node_id,
            raft: raft.clone(),
            members: cluster.members.clone(),
            control: control.clone(),
            network,
            addresses,
            token: token.clone(),
            store: backup_store,
            chain_id: chain.chain_id,
            backing_up: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        tasks.push(
            seams
                .serve_admin(*address, crate::admin::router(admin))
                .await?,
        );
    }
    tasks.push(tokio::spawn(leader.run(stopped)));
    Ok(Running {
        raft,
        runtime,
        stop,
        tasks,
    })
}

/// The health monitor checks at most this often (at most once per block time).
pub const HEALTH_CHECK_INTERVAL_MIN: std::time::Duration = std::time::Duration::from_millis(500);

/// Turns openraft's metrics into keel's Prometheus series.
#[derive(Debug, Default)]
struct RaftMetricsExporter {
    leader: Option<NodeId>,
    leaderless_since: Option<std::time::Instant>,
}

impl RaftMetricsExporter {
    fn export(&mut self, metrics: &openraft::RaftMetrics<NodeId, BasicNode>) {
        let role = match metrics.state {
            ServerState::Follower => 0.0,
            ServerState::Candidate => 1.0,
            ServerState::Leader => 2.0,
            ServerState::Learner => 3.0,
            ServerState::Shutdown => 4.0,
        };
        metrics::gauge!("keel_raft_role").set(role);
        metrics::gauge!("keel_raft_term").set(metrics.current_term as f64);
        metrics::gauge!("keel_raft_last_log_index").set(metrics.last_log_index.unwrap_or(0) as f64);
        let applied = metrics.last_applied.map(|id| id.index).unwrap_or(0);
        metrics::gauge!("keel_raft_applied_index").set(applied as f64);
        if let Some(replication) = &metrics.replication {
            let last = metrics.last_log_index.unwrap_or(0);
            // The commit index, as the leader knows it: the highest index a quorum of voters
            // holds (openraft 0.9's metrics do not carry it).
            let voters: Vec<NodeId> = metrics.membership_config.membership().voter_ids().collect();
            let mut held: Vec<u64> = voters
                .iter()
                .map(|id| keel_cluster::matched_index(metrics, *id).unwrap_or(0))
                .collect();
            held.sort_unstable_by(|a, b| b.cmp(a));
            if let Some(committed) = held.get(voters.len() / 2) {
                metrics::gauge!("keel_raft_commit_index").set(*committed as f64);
            }
            for peer in replication.keys() {
                let matched = keel_cluster::matched_index(metrics, *peer).unwrap_or(0);
                let lag = last.saturating_sub(matched);
                metrics::gauge!("keel_raft_replication_lag_entries", "peer" => peer.to_string())
                    .set(lag as f64);
            }
        }
        if metrics.current_leader != self.leader {
            metrics::counter!("keel_raft_leader_changes_total").increment(1);
            self.leader = metrics.current_leader;
            match (self.leader, self.leaderless_since) {
                (None, None) => self.leaderless_since = Some(std::time::Instant::now()),
                (Some(_), Some(since)) => {
                    metrics::histogram!("keel_raft_failover_seconds")
                        .record(since.elapsed().as_secs_f64());
                    self.leaderless_since = None;
                }
                _ => {}
            }
        }
        metrics::gauge!("keel_raft_leaderless").set(f64::from(u8::from(self.leader.is_none())));
    }
}

/// The cluster view for `/cluster` on the operations endpoint.
pub(crate) fn status(raft: &Raft<TypeConfig>, node_id: NodeId) -> serde_json::Value {
    let metrics = raft.metrics().borrow().clone();
    let lease_ms = raft.config().election_timeout_max;
    let role = match metrics.state {
        ServerState::Leader if leads_confirmed(metrics.millis_since_quorum_ack, lease_ms) => {
            "leader"
        }
        ServerState::Leader => "unconfirmed-leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    };
    serde_json::json!({
        "node_id": node_id,
        "role": role,
        "leader": metrics.current_leader,
        "term": metrics.current_term,
        "last_log_index": metrics.last_log_index,
        "last_applied_index": metrics.last_applied.map(|id| id.index),
        "quorum_ack_ms": metrics.millis_since_quorum_ack,
    })
}

/// Whether a node in openraft's leader state has been acknowledged by a quorum within the
/// leader lease (`lease_ms`, the election timeout's upper bound: no other node can have been
/// elected meanwhile). openraft makes a node that led before its restart the leader of its
/// stored vote at once (`Engine::startup`), before any peer has answered; and a leader cut off
/// in a minority stays in the leader state. Either may have been replaced: `/cluster` calls it
/// an "unconfirmed-leader", so that no operator, dashboard or tool sees two leaders. (Its
/// blocks are never at stake: a turn starts only after `ensure_linearizable`.)
fn leads_confirmed(millis_since_quorum_ack: Option<u64>, lease_ms: u64) -> bool {
    millis_since_quorum_ack.is_some_and(|since| since <= lease_ms)
}

#[cfg(test)]
mod tests {
    use super::leads_confirmed;

    /// `/cluster` shows one leader: a node in the leader state that no quorum has answered
    /// (restored from its vote at startup) or none has for a lease (cut off) is not it.
    #[test]
    fn a_leader_no_quorum_answered_within_the_lease_is_unconfirmed() {
        assert!(!leads_confirmed(None, 1_000), "restored, never answered");
        assert!(leads_confirmed(Some(0), 1_000), "answered just now");
        assert!(leads_confirmed(Some(1_000), 1_000), "answered a lease ago");
        assert!(
            !leads_confirmed(Some(1_001), 1_000),
            "cut off for longer than a lease"
        );
    }
}
