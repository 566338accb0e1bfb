//! Helpers shared by the cluster tests: sealing a block as a leader would.

#![allow(dead_code, unreachable_pub)]

use alloy::consensus::{TxEip1559, TxEnvelope};
use alloy::primitives::{Address, Bytes, TxKind, U256};
use keel_execution::{BlockEnvironment, ExecutedBlock, ListSource, build_block};
use keel_primitives::{ChainSpec, dev_accounts, sign_transaction};
use keel_storage::Store;

/// Builds (without committing) the child of `store`'s head with one transfer of nonce `nonce`
/// from the first dev account.
pub fn build_next(chain: &ChainSpec, store: &Store, nonce: u64) -> ExecutedBlock {
    let parent = store.snapshot().unwrap();
    let (number, hash) = parent.head();
    let header = parent.header(number).unwrap().unwrap();
    let signer = &dev_accounts()[0];
    let transfer: TxEnvelope = sign_transaction(
        signer,
        TxEip1559 {
            chain_id: chain.chain_id,
            nonce,
            gas_limit: 21_000,
            max_fee_per_gas: 10_000_000_000,
            max_priority_fee_per_gas: 1,
            to: TxKind::Call(Address::repeat_byte(9)),
            value: U256::from(1),
            ..Default::default()
        }
        .into(),
    );
    let env = BlockEnvironment {
        parent_hash: hash,
        number: number + 1,
        timestamp: header.timestamp + 1,
        beneficiary: Address::ZERO,
        gas_limit: header.gas_limit,
        base_fee: chain.next_base_fee(&header),
        prevrandao: hash,
        extra_data: Bytes::new(),
        origin: Default::default(),
        forced_cursor: 0,
    };
    let source = &mut ListSource::new(vec![(transfer, signer.address())]);
    build_block(chain, &parent, env, source).unwrap().executed
}

/// A leader's builder sealing empty blocks (the leader loop's tests need no transactions).
pub fn empty_block_builder(chain: &ChainSpec) -> keel_cluster::BuildBlock {
    let chain = chain.clone();
    std::sync::Arc::new(move |head: &keel_storage::Snapshot| {
        let (number, hash) = head.head();
        let failed = |reason: String| keel_execution::SealError::Build {
            number: number + 1,
            reason,
        };
        let header = head
            .header(number)
            .map_err(|error| failed(error.to_string()))?
            .ok_or_else(|| failed("no head header".into()))?;
        let env = BlockEnvironment {
            parent_hash: hash,
            number: number + 1,
            timestamp: header.timestamp,
            beneficiary: Address::ZERO,
            gas_limit: header.gas_limit,
            base_fee: chain.next_base_fee(&header),
            prevrandao: hash,
            extra_data: Bytes::new(),
            origin: Default::default(),
            forced_cursor: 0,
        };
        build_block(&chain, head, env, &mut ListSource::default())
            .map(|outcome| keel_cluster::Proposal::Block(outcome.executed.output.block.clone()))
            .map_err(|error| failed(error.to_string()))
    })
}

/// The secret every in-process test node shares.
pub const SECRET: &str = "a-test-cluster-secret";

/// Starts Raft for node `id` over `log` and `machine`, with the test timings, and serves its
/// peer endpoint on a fresh loopback port: the node, its address, and the server task.
pub async fn serve_raft(
    id: keel_cluster::NodeId,
    log: keel_cluster::LogStore,
    machine: keel_cluster::StateMachine,
) -> (
    openraft::Raft<keel_cluster::TypeConfig>,
    String,
    tokio::task::JoinHandle<()>,
) {
    let healthy: keel_cluster::HealthCheck = std::sync::Arc::new(|| Ok(()));
    serve_raft_with(id, log, machine, Default::default(), healthy).await
}

/// [`serve_raft`], with the building switches and the health the peer endpoint reports.
pub async fn serve_raft_with(
    id: keel_cluster::NodeId,
    log: keel_cluster::LogStore,
    machine: keel_cluster::StateMachine,
    control: std::sync::Arc<keel_cluster::LeaderControl>,
    health: keel_cluster::HealthCheck,
) -> (
    openraft::Raft<keel_cluster::TypeConfig>,
    String,
    tokio::task::JoinHandle<()>,
) {
    let config = openraft::Config {
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        ..Default::default()
    };
    serve_raft_configured(
        id,
        log,
        machine,
        control,
        health,
        Default::default(),
        config,
    )
    .await
}

/// [`serve_raft_with`], with Raft's timings and the dead-leader detector's state given.
pub async fn serve_raft_configured(
    id: keel_cluster::NodeId,
    log: keel_cluster::LogStore,
    machine: keel_cluster::StateMachine,
    control: std::sync::Arc<keel_cluster::LeaderControl>,
    health: keel_cluster::HealthCheck,
    failover: std::sync::Arc<keel_cluster::FailoverState>,
    config: openraft::Config,
) -> (
    openraft::Raft<keel_cluster::TypeConfig>,
    String,
    tokio::task::JoinHandle<()>,
) {
    let secret = keel_cluster::ClusterSecret::new(SECRET).unwrap();
    let raft = openraft::Raft::new(
        id,
        std::sync::Arc::new(config.validate().unwrap()),
        keel_cluster::PeerNetwork::new(secret.clone()),
        log,
        machine,
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let router = keel_cluster::peer_router(keel_cluster::PeerEndpoint {
        raft: raft.clone(),
        secret,
        control,
        health,
        failover,
    });
    let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (raft, address, server)
}
