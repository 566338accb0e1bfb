//! The leader loop on three in-process nodes: blocks are produced only by the leader, one hash
//! per height is ever applied anywhere (I1), and after the leader dies the survivors resume
//! on the committed head (I3, I5, docs/design.md R3). Leadership transfer, by an operator and by
//! the health monitor, moves leadership only to ready voters and never forks (R1).

mod common;

use alloy::primitives::B256;
use keel_cluster::{
    ClusterSecret, HealthCheck, HealthMonitor, LeaderControl, LeaderLoop, LogStore, NodeId,
    NotHealthy, PeerNetwork, StateMachine, TypeConfig, transfer_leadership,
};
use keel_primitives::ChainSpec;
use keel_storage::Store;
use openraft::{BasicNode, Raft};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every (height → hash) any node ever applied.
type Seen = Arc<Mutex<BTreeMap<u64, B256>>>;

struct TestNode {
    id: NodeId,
    raft: Raft<TypeConfig>,
    store: Arc<Store>,
    address: String,
    control: Arc<LeaderControl>,
    /// Set: this node's health check fails.
    sick: Arc<AtomicBool>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

async fn start(id: NodeId, chain: &ChainSpec, seen: Seen) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("chain.redb"), chain).unwrap());
    let log = LogStore::open(&dir.path().join("raft.redb")).unwrap();
    // Every block this node applies, from the store's stream (none missed).
    let mut applied = store.subscribe();
    let machine = StateMachine::new(chain.clone(), store.clone());
    let control = Arc::new(LeaderControl::default());
    let sick = Arc::new(AtomicBool::new(false));
    let health: HealthCheck = {
        let sick = sick.clone();
        Arc::new(move || {
            if sick.load(Ordering::Relaxed) {
                Err(NotHealthy {
                    reason: "made sick by the test".into(),
                })
            } else {
                Ok(())
            }
        })
    };
    let (raft, address, server) =
        common::serve_raft_with(id, log, machine, control.clone(), health.clone()).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let leader = LeaderLoop::new(
        id,
        raft.clone(),
        store.clone(),
        common::empty_block_builder(chain),
        Duration::from_millis(100),
    )
    .with_control(control.clone());
    let tasks = vec![
        server,
        tokio::spawn(leader.run(stopped.clone())),
        tokio::spawn(async move {
            while let Some(event) = applied.next().await {
                let block = event.expect("the store reads").block().clone();
                let mut seen = seen.lock().unwrap();
                let hash = *seen.entry(block.number()).or_insert(block.hash());
                assert_eq!(
                    hash,
                    block.hash(),
                    "I1: two hashes applied at height {}",
                    block.number()
                );
            }
        }),
    ];
    TestNode {
        id,
        raft,
        store,
        address,
        control,
        sick,
        stop,
        tasks,
        _dir: dir,
    }
}

fn head(node: &TestNode) -> (u64, B256) {
    node.store.snapshot().unwrap().head()
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_builds_and_the_survivors_resume_on_the_committed_head() {
    let chain = ChainSpec::dev();
    let seen: Seen = Default::default();
    // Blocks flow and every node follows: ten blocks on every node.
    let mut nodes = three_nodes(&chain, &seen, 10).await;
    let leader_id = nodes[0].raft.metrics().borrow().current_leader.unwrap();

    // The leader dies without a goodbye.
    let index = nodes.iter().position(|node| node.id == leader_id).unwrap();
    let old = nodes.remove(index);
    let _ = old.stop.send(true);
    old.raft.shutdown().await.unwrap();
    for task in &old.tasks {
        task.abort();
    }
    let (old_number, old_hash) = head(&old);
    // I2/I3: whatever the old leader applied is on the survivors' chain, at the same height.
    wait_until("the survivors to pass the old leader's head", || {
        nodes.iter().all(|node| head(node).0 > old_number + 5)
    })
    .await;
    for node in &nodes {
        let hash = node
            .store
            .snapshot()
            .unwrap()
            .block_hash(old_number)
            .unwrap();
        assert_eq!(
            hash,
            Some(old_hash),
            "node {} replaced block {old_number}",
            node.id
        );
    }
    let new_leader = nodes[0].raft.metrics().borrow().current_leader.unwrap();
    assert_ne!(new_leader, leader_id);
    // Heads link on every survivor, and every height has one hash everywhere (checked as applied).
    assert_chains_link(&nodes);
    stop_all(nodes).await;
}

/// Starts three nodes and a cluster of them; returns them once every node has `blocks` blocks.
async fn three_nodes(chain: &ChainSpec, seen: &Seen, blocks: u64) -> Vec<TestNode> {
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(id, chain, seen.clone()).await);
    }
    let members: BTreeMap<NodeId, BasicNode> = nodes
        .iter()
        .map(|node| (node.id, BasicNode::new(node.address.clone())))
        .collect();
    nodes[0].raft.initialize(members).await.unwrap();
    wait_until("blocks on every node", || {
        nodes.iter().all(|node| head(node).0 >= blocks)
    })
    .await;
    nodes
}

fn addresses(nodes: &[TestNode]) -> BTreeMap<NodeId, String> {
    nodes
        .iter()
        .map(|node| (node.id, node.address.clone()))
        .collect()
}

fn network() -> PeerNetwork {
    PeerNetwork::new(ClusterSecret::new(common::SECRET).unwrap())
}

/// A health monitor for `node`, checking every 100 ms, healthy while its `sick` flag is off.
fn monitor(node: &TestNode, nodes: &[TestNode], rotation: Option<Duration>) -> HealthMonitor {
    let sick = node.sick.clone();
    HealthMonitor {
        raft: node.raft.clone(),
        control: node.control.clone(),
        network: network(),
        addresses: addresses(nodes),
        health: Arc::new(move || {
            if sick.load(Ordering::Relaxed) {
                Err(NotHealthy {
                    reason: "made sick by the test".into(),
                })
            } else {
                Ok(())
            }
        }),
        interval: Duration::from_millis(100),
        rotation,
    }
}

fn leader_of(nodes: &[TestNode]) -> Option<NodeId> {
    let leaders: Vec<NodeId> = nodes
        .iter()
        .filter(|node| node.raft.metrics().borrow().state == openraft::ServerState::Leader)
        .map(|node| node.id)
        .collect();
    (leaders.len() == 1).then(|| leaders[0])
}

/// Every node's chain links from genesis to its head (one hash per height is checked as
/// blocks are applied, into `seen`).
fn assert_chains_link(nodes: &[TestNode]) {
    for node in nodes {
        let snapshot = node.store.snapshot().unwrap();
        for height in 1..=snapshot.head().0 {
            let header = snapshot.header(height).unwrap().unwrap();
            assert_eq!(
                Some(header.parent_hash),
                snapshot.block_hash(height - 1).unwrap(),
                "I1: node {} block {height} does not link",
                node.id
            );
        }
    }
}

async fn stop_all(nodes: Vec<TestNode>) {
    for node in nodes {
        let _ = node.stop.send(true);
        node.raft.shutdown().await.unwrap();
        for task in &node.tasks {
            task.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_leadership_transfers_in_a_loop_to_named_and_chosen_voters_without_a_fork() {
    let chain = ChainSpec::dev();
    let seen: Seen = Default::default();
    let nodes = three_nodes(&chain, &seen, 5).await;
    let network = network();
    let addresses = addresses(&nodes);
    for round in 0..8 {
        let leader = leader_of(&nodes).expect("one leader");
        let from = nodes.iter().find(|node| node.id == leader).unwrap();
        // Every other round names the target; the others let the leader choose.
        let named = (round % 2 == 0).then(|| leader % 3 + 1);
        let before = head(from).0;
        let done = transfer_leadership(&from.raft, &from.control, &network, &addresses, named)
            .await
            .unwrap_or_else(|error| panic!("round {round}: transfer from {leader}: {error}"));
        assert_ne!(done.to, leader);
        if let Some(named) = named {
            assert_eq!(done.to, named, "round {round}");
        }
        assert!(!from.control.handing_over(), "building switched back on");
        // I5: the new leader seals on; everyone follows.
        wait_until("blocks after the transfer", || {
            nodes.iter().all(|node| head(node).0 >= before + 3)
        })
        .await;
        assert_eq!(leader_of(&nodes), Some(done.to), "round {round}");
    }
    assert_chains_link(&nodes);
    // A transfer asked of a follower, or to a node that is not a voter, is refused.
    let leader = leader_of(&nodes).unwrap();
    let follower = nodes.iter().find(|node| node.id != leader).unwrap();
    let refused = transfer_leadership(
        &follower.raft,
        &follower.control,
        &network,
        &addresses,
        None,
    )
    .await;
    assert!(matches!(
        refused,
        Err(keel_cluster::TransferError::NotLeader(_))
    ));
    let from = nodes.iter().find(|node| node.id == leader).unwrap();
    let refused =
        transfer_leadership(&from.raft, &from.control, &network, &addresses, Some(9)).await;
    assert_eq!(refused, Err(keel_cluster::TransferError::NotAVoter(9)));
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_an_unhealthy_leader_hands_over_without_ping_pong_and_leads_on_when_none_is_ready() {
    let chain = ChainSpec::dev();
    let seen: Seen = Default::default();
    let nodes = three_nodes(&chain, &seen, 3).await;
    let (stop_monitors, monitors_stopped) = tokio::sync::watch::channel(false);
    for node in &nodes {
        tokio::spawn(monitor(node, &nodes, None).run(monitors_stopped.clone()));
    }
    let node = |id: NodeId| nodes.iter().find(|node| node.id == id).unwrap();

    // The first leader falls ill: leadership moves to a healthy voter.
    let first = leader_of(&nodes).expect("one leader");
    node(first).sick.store(true, Ordering::Relaxed);
    wait_until("a healthy leader", || {
        leader_of(&nodes).is_some_and(|leader| leader != first)
    })
    .await;
    let second = leader_of(&nodes).unwrap();
    // The first recovers and the second falls ill: the third leads, not the first again.
    node(first).sick.store(false, Ordering::Relaxed);
    node(second).sick.store(true, Ordering::Relaxed);
    wait_until("a leader other than the second", || {
        leader_of(&nodes).is_some_and(|leader| leader != second)
    })
    .await;
    let third = leader_of(&nodes).unwrap();
    assert_ne!(
        third, first,
        "leadership went back to the node that handed it over"
    );
    assert_ne!(third, second);

    // Every voter ill: the leader keeps sequencing rather than hand over to a node that
    // cannot (R1).
    for node in &nodes {
        node.sick.store(true, Ordering::Relaxed);
    }
    let before = head(node(third)).0;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        leader_of(&nodes),
        Some(third),
        "leadership moved to an unready node"
    );
    assert!(
        head(node(third)).0 > before + 5,
        "the leader stopped sequencing"
    );
    assert_chains_link(&nodes);
    let _ = stop_monitors.send(true);
    stop_all(nodes).await;
}

/// Rotating leadership: a healthy leader hands over to the next voter in id order after its
/// interval, round and round, skipping a voter that is not ready; the chain links throughout
/// and every new leader seals (I5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_moves_leadership_round_robin_and_skips_an_unready_voter() {
    let chain = ChainSpec::dev();
    let seen: Seen = Default::default();
    let nodes = three_nodes(&chain, &seen, 3).await;
    let (stop_monitors, monitors_stopped) = tokio::sync::watch::channel(false);
    for node in &nodes {
        let rotation = Some(Duration::from_millis(700));
        tokio::spawn(monitor(node, &nodes, rotation).run(monitors_stopped.clone()));
    }
    let mut order = vec![leader_of(&nodes).expect("one leader")];
    while order.len() < 5 {
        let last = *order.last().unwrap();
        wait_until("the next rotation", || {
            leader_of(&nodes).is_some_and(|leader| leader != last)
        })
        .await;
        order.push(leader_of(&nodes).unwrap());
    }
    for pair in order.windows(2) {
        assert_eq!(pair[1], pair[0] % 3 + 1, "not round-robin: {order:?}");
    }
    // The voter next in line is not ready: the rotation passes it over.
    let current = *order.last().unwrap();
    let next = current % 3 + 1;
    nodes
        .iter()
        .find(|node| node.id == next)
        .unwrap()
        .sick
        .store(true, Ordering::Relaxed);
    wait_until("a rotation past the unready voter", || {
        leader_of(&nodes).is_some_and(|leader| leader != current)
    })
    .await;
    assert_eq!(
        leader_of(&nodes),
        Some(next % 3 + 1),
        "rotated onto an unready voter"
    );
    let before = nodes.iter().map(|node| head(node).0).max().unwrap();
    wait_until("blocks after the rotations", || {
        nodes.iter().all(|node| head(node).0 >= before + 2)
    })
    .await;
    let _ = stop_monitors.send(true);
    assert_chains_link(&nodes);
    stop_all(nodes).await;
}

/// I3: a block sealed while the leadership check runs is proposed only on the head the check
/// leaves. Here the head moves during the turn's first seal: the builder commits a block
/// through Raft behind the turn's back, as a new leader's catch-up or a replacement applies
/// meanwhile. The turn drops its block and seals again on the new head, and the block it
/// proposes applies; proposed on the old head, it would be refused (compare-and-append).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i3_a_block_sealed_on_a_head_that_moved_during_the_check_is_sealed_again() {
    let chain = ChainSpec::dev();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("chain.redb"), &chain).unwrap());
    let log = LogStore::open(&dir.path().join("raft.redb")).unwrap();
    let machine = StateMachine::new(chain.clone(), store.clone());
    let (raft, address, server) = common::serve_raft(1, log, machine).await;
    raft.initialize(BTreeMap::from([(1, BasicNode::new(address))]))
        .await
        .unwrap();
    wait_until("the node to lead", || {
        raft.metrics().borrow().current_leader == Some(1)
    })
    .await;

    let seals = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let build: keel_cluster::BuildBlock = {
        let (chain, store, raft, seals) =
            (chain.clone(), store.clone(), raft.clone(), seals.clone());
        let runtime = tokio::runtime::Handle::current();
        let empty = common::empty_block_builder(&chain);
        Arc::new(move |head| {
            let proposal = empty(head)?;
            if seals.fetch_add(1, Ordering::SeqCst) == 0 {
                // The first seal: another entry commits and applies while it runs.
                let other = common::build_next(&chain, &store, 0).output.block.clone();
                runtime
                    .block_on(raft.client_write(keel_cluster::Proposal::Block(other)))
                    .unwrap();
            }
            Ok(proposal)
        })
    };
    let before = store.snapshot().unwrap().head().0;
    let leader = LeaderLoop::new(
        1,
        raft.clone(),
        store.clone(),
        build,
        Duration::from_millis(100),
    );
    let turn = leader.turn().await;
    assert!(
        matches!(
            turn,
            keel_cluster::Turn::Proposed(keel_cluster::ApplyOutcome::Applied { .. })
        ),
        "the turn proposed on a head that had moved: {turn:?}"
    );
    assert_eq!(
        seals.load(Ordering::SeqCst),
        2,
        "sealed once more on the new head"
    );
    assert_eq!(store.snapshot().unwrap().head().0, before + 2);
    raft.shutdown().await.unwrap();
    server.abort();
}
