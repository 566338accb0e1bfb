//! Three keel Raft nodes in one process, on loopback, with the real peer network, log store
//! and state machine: blocks replicate to every node (I2), a new leader builds only on the
//! committed head after the old one dies (I3, docs/design.md R3), a proposal on a stale parent is
//! a no-op everywhere, and peer requests without the cluster secret are refused.

mod common;

use keel_cluster::{ApplyOutcome, LogStore, NodeId, Proposal, StateMachine, TypeConfig};
use keel_primitives::ChainSpec;
use keel_storage::Store;
use openraft::{BasicNode, Raft};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct TestNode {
    id: NodeId,
    raft: Raft<TypeConfig>,
    store: Arc<Store>,
    address: String,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start(id: NodeId, chain: &ChainSpec) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("chain.redb"), chain).unwrap());
    let log = LogStore::open(&dir.path().join("raft.redb")).unwrap();
    let machine = StateMachine::new(chain.clone(), store.clone());
    let (raft, address, server) = common::serve_raft(id, log, machine).await;
    TestNode {
        id,
        raft,
        store,
        address,
        server,
        _dir: dir,
    }
}

async fn wait_for_leader(nodes: &[&TestNode], not: Option<NodeId>) -> NodeId {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for node in nodes {
            let metrics = node.raft.metrics().borrow().clone();
            if metrics.current_leader == Some(node.id) && Some(node.id) != not {
                return node.id;
            }
        }
        assert!(Instant::now() < deadline, "no leader elected in 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for_head(nodes: &[&TestNode], number: u64, hash: alloy::primitives::B256) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for node in nodes {
        while node.store.snapshot().unwrap().head() != (number, hash) {
            assert!(
                Instant::now() < deadline,
                "node {} did not reach block {number}",
                node.id
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Proposes the child of `leader`'s head and returns its outcome.
async fn propose_next(
    chain: &ChainSpec,
    leader: &TestNode,
    nonce: u64,
) -> (ApplyOutcome, keel_primitives::SealedBlock) {
    // I3: a leader builds only after applying everything committed so far.
    leader.raft.ensure_linearizable().await.unwrap();
    let block = common::build_next(chain, &leader.store, nonce)
        .output
        .block
        .clone();
    let response = leader
        .raft
        .client_write(Proposal::Block(block.clone()))
        .await
        .unwrap();
    (response.data, block)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_replicate_and_a_new_leader_builds_on_the_committed_head() {
    let chain = ChainSpec::dev();
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(id, &chain).await);
    }
    let members: BTreeMap<NodeId, BasicNode> = nodes
        .iter()
        .map(|node| (node.id, BasicNode::new(node.address.clone())))
        .collect();
    nodes[0].raft.initialize(members).await.unwrap();
    let all: Vec<&TestNode> = nodes.iter().collect();
    let leader_id = wait_for_leader(&all, None).await;
    let leader = nodes.iter().find(|node| node.id == leader_id).unwrap();

    let mut last = None;
    for nonce in 0..3 {
        let (outcome, block) = propose_next(&chain, leader, nonce).await;
        assert_eq!(
            outcome,
            ApplyOutcome::Applied {
                number: block.number(),
                hash: block.hash
            }
        );
        last = Some(block);
    }
    let last = last.unwrap();
    wait_for_head(&all, 3, last.hash).await;

    // A proposal on a stale parent is a recorded no-op on every node: the chain cannot fork.
    let stale = common::build_next(
        &chain,
        &nodes.iter().find(|n| n.id != leader_id).unwrap().store,
        99,
    )
    .output
    .block
    .clone();
    let mut forked = stale.clone();
    forked.header.parent_hash = alloy::primitives::B256::repeat_byte(7);
    let forked =
        keel_primitives::SealedBlock::new(forked.header, forked.transactions, forked.senders);
    let response = leader
        .raft
        .client_write(Proposal::Block(forked))
        .await
        .unwrap();
    assert!(
        matches!(response.data, ApplyOutcome::Rejected { .. }),
        "{:?}",
        response.data
    );
    wait_for_head(&all, 3, last.hash).await;

    // The leader dies; a new one is elected and builds on exactly the committed head (R3).
    let old = nodes.iter().position(|node| node.id == leader_id).unwrap();
    let old = nodes.remove(old);
    old.raft.shutdown().await.unwrap();
    old.server.abort();
    let survivors: Vec<&TestNode> = nodes.iter().collect();
    let new_id = wait_for_leader(&survivors, Some(leader_id)).await;
    let new_leader = nodes.iter().find(|node| node.id == new_id).unwrap();
    let (outcome, four) = propose_next(&chain, new_leader, 3).await;
    assert_eq!(
        four.header.parent_hash, last.hash,
        "the new leader built on the committed head"
    );
    assert_eq!(
        outcome,
        ApplyOutcome::Applied {
            number: 4,
            hash: four.hash
        }
    );
    wait_for_head(&survivors, 4, four.hash).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_requests_without_the_secret_are_refused() {
    let chain = ChainSpec::dev();
    let node = start(1, &chain).await;
    let client = reqwest::Client::new();
    for (authorization, status) in [
        (None, 401),
        (Some("Bearer wrong-secret-of-some-length"), 401),
    ] {
        let mut request = client
            .post(format!("http://{}/raft/vote", node.address))
            .body("{}");
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        assert_eq!(request.send().await.unwrap().status(), status);
    }
    node.raft.shutdown().await.unwrap();
}
