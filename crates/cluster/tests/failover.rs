//! Failover on evidence (docs/cluster.md, "Failover"): when the leader's process dies, the
//! survivors elect one successor on that evidence, well before the leader's lease would let
//! any of them vote, with one term increment; and its blocks extend the committed head (I1,
//! I3).

mod common;

use alloy::primitives::B256;
use keel_cluster::{
    ClusterSecret, DeadLeaderDetector, FailoverState, HealthCheck, LeaderControl, LeaderLoop,
    LogStore, NodeId, PeerNetwork, StateMachine, TypeConfig,
};
use keel_primitives::ChainSpec;
use keel_storage::Store;
use openraft::{BasicNode, Raft, ServerState};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The election timeout's bounds here: the lease (the upper bound) alone outlasts the
/// failover the test demands, so only evidence can meet it.
const ELECTION_MIN_MS: u64 = 3_000;
const ELECTION_MAX_MS: u64 = 3_600;
/// What the test demands of a failover on evidence: under the lease, so no timer could have
/// done it (the timer path takes the lease plus an election timeout, over 6 s here).
const FAILOVER_DEMANDED: Duration = Duration::from_millis(ELECTION_MAX_MS - 600);

struct TestNode {
    id: NodeId,
    raft: Raft<TypeConfig>,
    store: Arc<Store>,
    address: String,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

async fn start(id: NodeId, chain: &ChainSpec) -> (TestNode, Arc<FailoverState>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("chain.redb"), chain).unwrap());
    let log = LogStore::open(&dir.path().join("raft.redb")).unwrap();
    let machine = StateMachine::new(chain.clone(), store.clone());
    let control = Arc::new(LeaderControl::default());
    let healthy: HealthCheck = Arc::new(|| Ok(()));
    let failover = Arc::new(FailoverState::default());
    let config = openraft::Config {
        heartbeat_interval: 100,
        election_timeout_min: ELECTION_MIN_MS,
        election_timeout_max: ELECTION_MAX_MS,
        ..Default::default()
    };
    let (raft, address, server) = common::serve_raft_configured(
        id,
        log,
        machine,
        control.clone(),
        healthy,
        failover.clone(),
        config,
    )
    .await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let leader = LeaderLoop::new(
        id,
        raft.clone(),
        store.clone(),
        common::empty_block_builder(chain),
        Duration::from_millis(100),
    )
    .with_control(control);
    let node = TestNode {
        id,
        raft,
        store,
        address,
        stop,
        tasks: vec![server, tokio::spawn(leader.run(stopped))],
        _dir: dir,
    };
    (node, failover)
}

fn head(node: &TestNode) -> (u64, B256) {
    node.store.snapshot().unwrap().head()
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts `voters` nodes with their detectors, kills the leader `kills` times, and checks
/// each failover: a successor within [`FAILOVER_DEMANDED`], one term increment, and a chain
/// that extends the dead leader's head.
async fn kill_leaders(voters: u64, kills: usize) {
    let chain = ChainSpec::dev();
    let mut nodes = Vec::new();
    let mut states = Vec::new();
    for id in 1..=voters {
        let (node, state) = start(id, &chain).await;
        nodes.push(node);
        states.push(state);
    }
    let addresses: BTreeMap<NodeId, String> = nodes
        .iter()
        .map(|node| (node.id, node.address.clone()))
        .collect();
    for (node, state) in nodes.iter_mut().zip(states) {
        let detector = DeadLeaderDetector {
            node_id: node.id,
            raft: node.raft.clone(),
            network: PeerNetwork::new(ClusterSecret::new(common::SECRET).unwrap()),
            addresses: addresses.clone(),
            health: Arc::new(|| Ok(())),
            control: Arc::default(),
            state,
        };
        node.tasks
            .push(tokio::spawn(detector.run(node.stop.subscribe())));
    }
    let members: BTreeMap<NodeId, BasicNode> = addresses
        .iter()
        .map(|(id, address)| (*id, BasicNode::new(address.clone())))
        .collect();
    nodes[0].raft.initialize(members).await.unwrap();
    wait_until("blocks on every node", || {
        nodes.iter().all(|node| head(node).0 >= 5)
    })
    .await;

    for kill in 0..kills {
        let leader_id = nodes[0].raft.metrics().borrow().current_leader.unwrap();
        let term = nodes[0].raft.metrics().borrow().current_term;
        let index = nodes.iter().position(|node| node.id == leader_id).unwrap();
        // Followers watch the leader once they know it; give them a moment to open the watch.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let old = nodes.remove(index);
        let (old_number, old_hash) = head(&old);
        // The leader's process dies: its sockets close, its port refuses.
        let killed = Instant::now();
        let _ = old.stop.send(true);
        for task in &old.tasks {
            task.abort();
        }
        old.raft.shutdown().await.unwrap();
        wait_until("a new leader among the survivors", || {
            nodes
                .iter()
                .any(|node| node.raft.metrics().borrow().state == ServerState::Leader)
        })
        .await;
        let took = killed.elapsed();
        assert!(
            took < FAILOVER_DEMANDED,
            "kill {kill}: the successor took {took:?}: that is the timer's path, not evidence"
        );
        let new_term = nodes
            .iter()
            .map(|node| node.raft.metrics().borrow().current_term)
            .max()
            .unwrap();
        assert_eq!(new_term, term + 1, "kill {kill}: one campaign, one term");
        // I1/I3: the new leader extends the old leader's head.
        wait_until("blocks past the old leader's head", || {
            nodes.iter().all(|node| head(node).0 > old_number + 3)
        })
        .await;
        for node in &nodes {
            let at = node
                .store
                .snapshot()
                .unwrap()
                .block_hash(old_number)
                .unwrap();
            assert_eq!(at, Some(old_hash), "I1: node {} forked", node.id);
        }
    }
    for node in nodes {
        let _ = node.stop.send(true);
        node.raft.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_leaders_successor_is_elected_on_evidence_before_its_lease_ends() {
    kill_leaders(3, 1).await;
}

/// With five voters, three or four survivors must agree on one successor, twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_voters_agree_on_one_successor_after_each_of_two_leader_deaths() {
    kill_leaders(5, 2).await;
}
