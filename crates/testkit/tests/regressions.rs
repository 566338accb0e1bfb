//! Pinned regression scenarios, one per incident of docs/design.md, each named after it. R1, R3, R4
//! and R5 are scripted faults in the deterministic simulation (the seed fixes everything the
//! script leaves open); R2 is the builder and validator on one state. Each run also passes
//! the history checker (I1, I2, I5) and the simulation's continuous I1 check.

use alloy::consensus::TxEnvelope;
use alloy::primitives::{Address, U256};
use alloy::signers::local::PrivateKeySigner;
use keel_execution::{BlockEnvironment, BlockError, ListSource, build_block, validate_block};
use keel_primitives::{ChainSpec, SealedBlock, dev_accounts};
use keel_storage::Store;
use keel_testkit::sim::{SimFault, SimOptions, SimOutcome, run};
use std::time::Duration;

/// A scripted run's options: `(at_ms, fault, hold_ms)` each.
fn scripted(seed: u64, nodes: u64, safety_s: u64, script: &[(u64, SimFault, u64)]) -> SimOptions {
    SimOptions::scripted(seed, nodes, Duration::from_secs(safety_s), script)
}

fn scenario(seed: u64, nodes: u64, safety_s: u64, script: &[(u64, SimFault, u64)]) -> SimOutcome {
    run(&scripted(seed, nodes, safety_s, script)).unwrap_or_else(|error| panic!("{error}"))
}

/// R1 (Base mainnet, 2025-08-05): failover picked a standby still being provisioned. A
/// follower is down for 6 s and falls ~24 blocks behind; 20 ms after it restarts, while it is
/// still catching up, the leader is cut off. Leadership must go to the caught-up node (Raft's
/// vote refuses a shorter log; the I3 gate makes a new leader apply everything first), blocks
/// resume within the target, and no height ever gets a second hash.
#[test]
fn r1_base_2025_08_05_failover_skips_a_node_still_catching_up() {
    let outcome = scenario(
        101,
        3,
        16,
        &[
            (3_000, SimFault::CrashFollower, 6_000),
            (9_020, SimFault::PartitionLeader, 3_000),
        ],
    );
    assert_eq!(outcome.report.faults.values().sum::<usize>(), 2);
    assert!(outcome.report.highest_block > 40, "{}", outcome.report);
    assert!(
        outcome.report.longest_gap_ms < 5_000,
        "I5: {}",
        outcome.report
    );
}

/// A dev account's EIP-1559 transfer, with its sender.
fn transfer(signer: &PrivateKeySigner, nonce: u64, value: U256) -> (TxEnvelope, Address) {
    let to = Address::repeat_byte(0x77);
    (
        keel_testkit::transfer(signer, nonce, to, value),
        signer.address(),
    )
}

/// R2 (Base mainnet, 2026-06-25): the builder kept the state a failed invalid transaction
/// touched; the sealed block was invalid and the chain halted. Here an invalid transaction
/// (value above the sender's balance) sits between two valid ones: the builder leaves it out
/// and it leaves no trace in state (I4), and the validator accepts the block. Then a builder
/// made to leave that state behind (the block's header commits to a state where the failed
/// transaction still charged its sender) is caught by the validator before anything could be
/// proposed: stateRoot mismatch.
#[test]
fn r2_base_2026_06_25_a_failed_transaction_leaves_no_state_and_a_leaky_block_is_refused() {
    let chain = ChainSpec::dev();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("chain.redb"), &chain).unwrap();
    let parent = store.snapshot().unwrap();
    let (number, hash) = parent.head();
    let header = parent.header(number).unwrap().unwrap();
    let env = BlockEnvironment {
        parent_hash: hash,
        number: number + 1,
        timestamp: header.timestamp + 1,
        beneficiary: Address::repeat_byte(0xbe),
        gas_limit: header.gas_limit,
        base_fee: chain.next_base_fee(&header),
        prevrandao: hash,
        extra_data: Default::default(),
        origin: Default::default(),
        forced_cursor: 0,
    };
    let accounts = dev_accounts();
    let (first, failing, last) = (&accounts[0], &accounts[1], &accounts[2]);
    let balance = parent.account(&failing.address()).unwrap().unwrap().balance;
    let candidates = vec![
        transfer(first, 0, U256::from(1)),
        transfer(failing, 0, balance), // value + gas exceed the balance: invalid
        transfer(last, 0, U256::from(1)),
    ];
    let built = build_block(
        &chain,
        &parent,
        env.clone(),
        &mut ListSource::new(candidates.clone()),
    )
    .unwrap();
    let block = &built.executed.output.block;
    assert_eq!(
        block.transactions.len(),
        2,
        "the invalid transaction is left out"
    );
    assert!(
        block
            .transactions
            .iter()
            .all(|tx| tx.tx_hash() != candidates[1].0.tx_hash())
    );
    let validated = validate_block(&chain, &parent, block).expect("I4: the validator agrees");
    assert_eq!(validated.output.block.hash, block.hash);
    store
        .commit_block(validated.output.clone(), &validated.changes)
        .unwrap();
    let after = store.snapshot().unwrap();
    let failing_after = after.account(&failing.address()).unwrap().unwrap();
    assert_eq!(
        failing_after.nonce, 0,
        "the failed transaction left no nonce"
    );
    assert_eq!(failing_after.balance, balance, "nor a charge");

    // The leaky builder's block: the same transactions, but a header committing to a state in
    // which the failed transaction still ran (a smaller transfer from the same sender did).
    let leaked = build_block(
        &chain,
        &parent,
        env,
        &mut ListSource::new(vec![
            candidates[0].clone(),
            transfer(failing, 0, U256::from(1)),
            candidates[2].clone(),
        ]),
    )
    .unwrap();
    let mut forged = block.header.clone();
    forged.state_root = leaked.executed.output.block.header.state_root;
    let leaky = SealedBlock::new(forged, block.transactions.clone(), block.senders.clone());
    match validate_block(&chain, &parent, &leaky) {
        Err(BlockError::HeaderMismatch { field, .. }) => assert_eq!(field, "stateRoot"),
        Err(other) => panic!("R2: refused for the wrong reason: {other}"),
        Ok(accepted) => panic!(
            "R2: block {} carrying a failed transaction's state was accepted",
            accepted.output.block.hash
        ),
    }
}

/// R3 (Base Sepolia, 2024-10-14): the leader gossiped a block, then failed to insert it; the
/// new leader was a block behind. Here the leader is cut off: it keeps sealing and proposing
/// blocks that cannot commit; then every node crashes (the old leader with those blocks in its
/// log only), all restart, and the partition heals. No block exists for anyone before commit:
/// no uncommitted block is ever applied (I1, checked on every apply), the old leader's extra
/// entries are overwritten, and the chain goes on from the committed head (I3, I5).
#[test]
fn r3_base_sepolia_2024_10_14_a_leader_crash_between_seal_and_commit_exposes_nothing() {
    let outcome = scenario(
        303,
        3,
        14,
        &[
            (3_000, SimFault::PartitionLeader, 5_000),
            (4_500, SimFault::RestartAll, 800),
        ],
    );
    assert!(outcome.report.highest_block > 20, "{}", outcome.report);
    assert!(
        outcome
            .trace
            .iter()
            .any(|line| line.contains("fault restart-all")),
        "the script ran"
    );
}

/// R4 (op-conductor issues): a node far behind, a snapshot install under load, a leader that
/// must apply a backlog before it builds. With a snapshot every 16 entries a follower down for
/// 8 s comes back ~32 blocks behind and installs a snapshot while blocks keep coming; just
/// after it restarts the leader is cut off, so a new leader is elected while the cluster is
/// still catching it up. The L1-reorg part of R4 waits for the L1 pipeline (part 4).
#[test]
fn r4_op_conductor_a_snapshot_install_under_load_and_a_new_leader_with_a_backlog() {
    let mut options = scripted(
        404,
        3,
        16,
        &[
            (2_000, SimFault::CrashFollower, 8_000),
            (10_050, SimFault::PartitionLeader, 2_000),
        ],
    );
    options.snapshot_entries = 16;
    let outcome = run(&options).unwrap_or_else(|error| panic!("{error}"));
    assert!(outcome.report.highest_block > 40, "{}", outcome.report);
    let by_snapshot = outcome
        .history
        .chains
        .iter()
        .filter(|chain| chain.blocks.first().is_some_and(|block| block.number > 0))
        .count();
    assert_eq!(by_snapshot, 1, "the lagging follower caught up by snapshot");
}

/// R5 (the system reset): every node restarts at once from disks at different heights. A
/// follower is cut off for 3 s (its disk stays behind), then every node crashes and all
/// restart together. Raft elects the most up-to-date log, the laggard catches up, nobody
/// builds before I3 holds, and no block any node applied is replaced (I1), none a client was
/// shown is lost (I2).
#[test]
fn r5_the_full_reset_from_different_heights_replaces_no_block() {
    let outcome = scenario(
        505,
        5,
        12,
        &[
            (2_000, SimFault::PartitionFollower, 4_000),
            (5_000, SimFault::RestartAll, 1_000),
        ],
    );
    assert!(outcome.report.transactions_acknowledged > 0);
    assert!(outcome.report.highest_block > 20, "{}", outcome.report);
}
