//! The leader loop on three in-process nodes: blocks are produced only by the leader, one hash
//! per height is ever applied anywhere (I1), and after the leader dies the survivors resume
//! on the committed head (I3, I5, DESIGN.md R3).

mod common;

use alloy::primitives::B256;
use keel_cluster::{
    APPLIED_BLOCKS_BUFFERED_MAX, AppliedBlock, LeaderLoop, LogStore, NodeId, StateMachine,
    TypeConfig,
};
use keel_primitives::ChainSpec;
use keel_storage::Store;
use openraft::{BasicNode, Raft};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every (height → hash) any node ever applied.
type Seen = Arc<Mutex<BTreeMap<u64, B256>>>;

struct TestNode {
    id: NodeId,
    raft: Raft<TypeConfig>,
    store: Arc<Store>,
    address: String,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

async fn start(id: NodeId, chain: &ChainSpec, seen: Seen) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("chain.redb"), chain).unwrap());
    let log = LogStore::open(&dir.path().join("raft.redb")).unwrap();
    let (sink, mut applied) =
        tokio::sync::mpsc::channel::<AppliedBlock>(APPLIED_BLOCKS_BUFFERED_MAX);
    let machine = StateMachine::new(chain.clone(), store.clone()).with_applied_sink(sink);
    let (raft, address, server) = common::serve_raft(id, log, machine).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let leader = LeaderLoop::new(
        id,
        raft.clone(),
        store.clone(),
        common::empty_block_builder(chain),
        Duration::from_millis(100),
    );
    let tasks = vec![
        server,
        tokio::spawn(leader.run(stopped)),
        tokio::spawn(async move {
            while let Some(block) = applied.recv().await {
                let mut seen = seen.lock().unwrap();
                let hash = *seen.entry(block.block.number()).or_insert(block.block.hash);
                assert_eq!(
                    hash,
                    block.block.hash,
                    "I1: two hashes applied at height {}",
                    block.block.number()
                );
            }
        }),
    ];
    TestNode {
        id,
        raft,
        store,
        address,
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
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(id, &chain, seen.clone()).await);
    }
    let members: BTreeMap<NodeId, BasicNode> = nodes
        .iter()
        .map(|node| (node.id, BasicNode::new(node.address.clone())))
        .collect();
    nodes[0].raft.initialize(members).await.unwrap();

    // Blocks flow and every node follows.
    wait_until("ten blocks on every node", || {
        nodes.iter().all(|node| head(node).0 >= 10)
    })
    .await;
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
    for node in &nodes {
        let snapshot = node.store.snapshot().unwrap();
        let (number, _) = snapshot.head();
        for height in 1..=number {
            let header = snapshot.header(height).unwrap().unwrap();
            assert_eq!(
                Some(header.parent_hash),
                snapshot.block_hash(height - 1).unwrap()
            );
        }
    }
    for node in nodes {
        let _ = node.stop.send(true);
        node.raft.shutdown().await.unwrap();
    }
}
