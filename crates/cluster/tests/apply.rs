//! The state machine on block entries: compare-and-append (I3), validation (I4), the applied
//! position durable with its block, and snapshots that carry a head (R4); and on intake
//! entries ("accepted means kept").

mod common;

use alloy::primitives::B256;
use keel_cluster::{ApplyOutcome, LogStore, Proposal, StateMachine, TypeConfig};
use keel_primitives::{ChainSpec, SealedBlock};
use keel_storage::Store;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder};
use std::sync::Arc;

fn log_id(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

fn entry(index: u64, block: &SealedBlock) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Proposal::Block(block.clone())),
    }
}

/// Seals the next block on `store` (a stand-in leader) with one transfer, and commits it there.
fn next_block(chain: &ChainSpec, store: &Store, nonce: u64) -> SealedBlock {
    let built = common::build_next(chain, store, nonce);
    store
        .commit_block(built.output.clone(), &built.changes)
        .unwrap();
    built.output.block.clone()
}

struct Node {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    machine: StateMachine,
}

fn node(chain: &ChainSpec) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("chain.redb"), chain).unwrap());
    let machine = StateMachine::new(chain.clone(), store.clone());
    Node {
        _dir: dir,
        store,
        machine,
    }
}

#[tokio::test]
async fn blocks_apply_only_on_the_head_and_only_when_valid() {
    let chain = ChainSpec::dev();
    let leader = node(&chain);
    let mut follower = node(&chain);
    let one = next_block(&chain, &leader.store, 0);
    let two = next_block(&chain, &leader.store, 1);

    // I3: the same block twice, and a block skipping a height, are recorded no-ops.
    let outcomes = follower
        .machine
        .apply([entry(1, &one), entry(2, &one), entry(3, &two)])
        .await
        .unwrap();
    assert_eq!(
        outcomes[0],
        ApplyOutcome::Applied {
            number: 1,
            hash: one.hash
        }
    );
    assert!(
        matches!(outcomes[1], ApplyOutcome::Rejected { number: 1, .. }),
        "{:?}",
        outcomes[1]
    );
    assert_eq!(
        outcomes[2],
        ApplyOutcome::Applied {
            number: 2,
            hash: two.hash
        }
    );
    assert_eq!(follower.store.snapshot().unwrap().head(), (2, two.hash));
    let skipping = next_block(&chain, &leader.store, 2);
    let far = next_block(&chain, &leader.store, 3);
    let outcomes = follower.machine.apply([entry(4, &far)]).await.unwrap();
    assert!(matches!(
        outcomes[0],
        ApplyOutcome::Rejected { number: 4, .. }
    ));
    let (applied, _) = follower.machine.applied_state().await.unwrap();
    assert_eq!(
        applied,
        Some(log_id(4)),
        "a rejected entry is still applied (as a no-op)"
    );

    // I4: a block on the head whose header lies is refused; the node halts, the head stays.
    let mut forged = skipping.clone();
    forged.header.state_root = B256::repeat_byte(1);
    let forged = SealedBlock::new(forged.header, forged.transactions, forged.senders);
    assert!(follower.machine.apply([entry(5, &forged)]).await.is_err());
    assert_eq!(follower.store.snapshot().unwrap().head(), (2, two.hash));
    let (applied, _) = follower.machine.applied_state().await.unwrap();
    assert_eq!(
        applied,
        Some(log_id(4)),
        "the refused entry was not applied"
    );

    // The applied position is durable with the block: a reopened store reports it.
    follower.machine.apply([entry(5, &skipping)]).await.unwrap();
    let dir = follower._dir;
    drop(follower.machine);
    drop(follower.store);
    let store = Arc::new(Store::open(&dir.path().join("chain.redb"), &chain).unwrap());
    let mut machine = StateMachine::new(chain.clone(), store.clone());
    let (applied, _) = machine.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(5)));
    assert_eq!(store.snapshot().unwrap().head(), (3, skipping.hash));
}

/// R4: a snapshot is the head plus its state; a fresh node installs it and goes on applying.
#[tokio::test]
async fn snapshots_carry_a_head_and_a_fresh_node_continues_from_one() {
    let chain = ChainSpec::dev();
    let leader = node(&chain);
    let mut source = node(&chain);
    let blocks: Vec<SealedBlock> = (0..3)
        .map(|nonce| next_block(&chain, &leader.store, nonce))
        .collect();
    let entries: Vec<_> = blocks
        .iter()
        .enumerate()
        .map(|(i, b)| entry(i as u64 + 1, b))
        .collect();
    source.machine.apply(entries).await.unwrap();
    let snapshot = source
        .machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(3)));
    assert!(
        snapshot
            .meta
            .snapshot_id
            .contains(&blocks[2].hash.to_string()),
        "the id names the head"
    );

    let mut fresh = node(&chain);
    fresh
        .machine
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .unwrap();
    assert_eq!(fresh.store.snapshot().unwrap().head(), (3, blocks[2].hash));
    assert_eq!(
        fresh.machine.applied_state().await.unwrap().0,
        Some(log_id(3))
    );
    let four = next_block(&chain, &leader.store, 3);
    let outcomes = fresh.machine.apply([entry(4, &four)]).await.unwrap();
    assert_eq!(
        outcomes[0],
        ApplyOutcome::Applied {
            number: 4,
            hash: four.hash
        }
    );
    let current = fresh.machine.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta.last_log_id, Some(log_id(3)));
}

/// Block entries survive the log store's encoding, senders included.
#[tokio::test]
async fn block_entries_round_trip_through_the_log() {
    let chain = ChainSpec::dev();
    let leader = node(&chain);
    let block = next_block(&chain, &leader.store, 0);
    let (_dir, mut log) = temp_log();
    let entries = vec![entry(1, &block)];
    log.blocking_append(entries).await.unwrap();
    let read = log.try_get_log_entries(1..2).await.unwrap();
    match &read[0].payload {
        EntryPayload::Normal(Proposal::Block(decoded)) => assert_eq!(decoded, &block),
        other => panic!("expected a block entry, got {other:?}"),
    }
}

/// A replacement (the cluster adopting blocks derived from the L1 in place of unsafe ones)
/// applies on every node alike: unwound to its base, then its blocks, each validated (I4); a
/// replacement whose base this chain does not hold is a recorded no-op, like a block off the
/// head (I3); an unwind alone (no block) is allowed.
#[tokio::test]
async fn replacements_apply_only_on_their_base() {
    let chain = ChainSpec::dev();
    let leader = node(&chain);
    let mut follower = node(&chain);
    let blocks: Vec<SealedBlock> = (0..3)
        .map(|nonce| next_block(&chain, &leader.store, nonce))
        .collect();
    let entries: Vec<_> = blocks
        .iter()
        .enumerate()
        .map(|(index, block)| entry(index as u64 + 1, block))
        .collect();
    follower.machine.apply(entries).await.unwrap();
    // The node hears what each replacement removed (to return it to its pool).
    let heard: Arc<std::sync::Mutex<Vec<Vec<B256>>>> = Arc::default();
    let hook_heard = heard.clone();
    follower.machine = follower
        .machine
        .clone()
        .on_replaced(Arc::new(move |removed| {
            hook_heard
                .lock()
                .unwrap()
                .push(removed.iter().map(|block| block.block.hash).collect());
        }));
    // The "derived" chain: block 1, then another block 2.
    let derived = node(&chain);
    derived
        .store
        .commit_block(
            std::sync::Arc::new(keel_primitives::BlockWithReceipts::new(
                blocks[0].clone(),
                leader
                    .store
                    .snapshot()
                    .unwrap()
                    .receipts(1)
                    .unwrap()
                    .unwrap(),
            )),
            &common::build_next(&chain, &derived.store, 0).changes,
        )
        .unwrap();
    let other_two = common::build_next(&chain, &derived.store, 1);
    let replace = |index: u64, base: (u64, B256), blocks: Vec<SealedBlock>| Entry::<TypeConfig> {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Proposal::Replace { base, blocks }),
    };
    let outcomes = follower
        .machine
        .apply([
            replace(
                4,
                (1, B256::repeat_byte(9)),
                vec![other_two.output.block.clone()],
            ),
            replace(5, (1, blocks[0].hash), vec![other_two.output.block.clone()]),
        ])
        .await
        .unwrap();
    assert!(
        matches!(outcomes[0], ApplyOutcome::Rejected { .. }),
        "{:?}",
        outcomes[0]
    );
    assert_eq!(
        outcomes[1],
        ApplyOutcome::Replaced {
            base: 1,
            removed: 2,
            head: (2, other_two.output.block.hash)
        }
    );
    assert_eq!(
        follower.store.snapshot().unwrap().head(),
        (2, other_two.output.block.hash)
    );
    assert_eq!(
        *heard.lock().unwrap(),
        vec![vec![blocks[2].hash, blocks[1].hash]],
        "the hook heard the removed blocks, newest first, and nothing of the rejected entry"
    );
    // An unwind alone.
    let outcomes = follower
        .machine
        .apply([replace(6, (1, blocks[0].hash), vec![])])
        .await
        .unwrap();
    assert!(matches!(
        outcomes[0],
        ApplyOutcome::Replaced {
            removed: 1,
            head: (1, _),
            ..
        }
    ));
    let (applied, _) = follower.machine.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(6)));
    assert_eq!(heard.lock().unwrap().len(), 2);
}

/// Records the intake entries it is handed, with the head each was applied on, and refuses the
/// second transaction of each.
#[derive(Default)]
struct RecordingSink {
    seen: parking_lot::Mutex<Vec<(u64, Vec<keel_cluster::IntakeTransaction>)>>,
}

impl keel_cluster::IntakeSink for RecordingSink {
    fn admit(
        &self,
        transactions: &[keel_cluster::IntakeTransaction],
        head: &keel_storage::Snapshot,
    ) -> Vec<keel_cluster::IntakeRefusal> {
        self.seen
            .lock()
            .push((head.head().0, transactions.to_vec()));
        (transactions.len() > 1)
            .then(|| keel_cluster::IntakeRefusal {
                index: 1,
                code: -32000,
                message: "already known".into(),
            })
            .into_iter()
            .collect()
    }

    /// Everything it was handed, in order, within `bytes_max`.
    fn pending(&self, bytes_max: u64) -> Vec<keel_cluster::IntakeTransaction> {
        let mut bytes = 0u64;
        self.seen
            .lock()
            .iter()
            .flat_map(|(_, transactions)| transactions.iter().cloned())
            .take_while(|transaction| {
                bytes += transaction.raw.len() as u64;
                bytes <= bytes_max
            })
            .collect()
    }
}

/// An intake entry at `index` carrying `intake(count)`.
fn intake_entry(index: u64, count: u8) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Proposal::Intake(intake(count))),
    }
}

/// A Raft log in a directory of its own (kept while the directory lives).
fn temp_log() -> (tempfile::TempDir, LogStore) {
    let dir = tempfile::tempdir().unwrap();
    let log = LogStore::open(&dir.path().join("raft.redb")).unwrap();
    (dir, log)
}

fn intake(count: u8) -> Vec<keel_cluster::IntakeTransaction> {
    (0..count)
        .map(|byte| keel_cluster::IntakeTransaction {
            raw: vec![0x02, byte].into(),
            sender: alloy::primitives::Address::repeat_byte(byte),
        })
        .collect()
}

/// "Accepted means kept", on one node: an intake entry reaches the pool in log order, against
/// the head at its point of the log; it is not durable in the store, so a restarted state
/// machine reports the position before it (openraft applies it again and the pool refills), and
/// no snapshot claims it. A snapshot carries the pool instead: a fresh node that installs it
/// admits what the pool held, against the image's head.
#[tokio::test]
async fn intake_entries_reach_the_pool_in_order_and_replay_after_a_restart() {
    let chain = ChainSpec::dev();
    let leader = node(&chain);
    let one = next_block(&chain, &leader.store, 0);
    let follower = node(&chain);
    let sink = Arc::new(RecordingSink::default());
    let mut machine = follower.machine.clone().with_intake(sink.clone());
    let outcomes = machine
        .apply([entry(1, &one), intake_entry(2, 3)])
        .await
        .unwrap();
    assert_eq!(
        outcomes[1],
        ApplyOutcome::Intake {
            refused: vec![keel_cluster::IntakeRefusal {
                index: 1,
                code: -32000,
                message: "already known".into(),
            }]
        }
    );
    assert_eq!(
        *sink.seen.lock(),
        vec![(1, intake(3))],
        "on the head block 1 made"
    );
    assert_eq!(machine.applied_state().await.unwrap().0, Some(log_id(2)));

    let mut restarted = StateMachine::new(chain.clone(), follower.store.clone());
    assert_eq!(
        restarted.applied_state().await.unwrap().0,
        Some(log_id(1)),
        "after a restart the intake entry is applied again"
    );
    let snapshot = machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(1)));

    let fresh = node(&chain);
    let fresh_sink = Arc::new(RecordingSink::default());
    let mut fresh_machine = fresh.machine.clone().with_intake(fresh_sink.clone());
    fresh_machine
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .unwrap();
    assert_eq!(fresh.store.snapshot().unwrap().head(), (1, one.hash));
    assert_eq!(
        *fresh_sink.seen.lock(),
        vec![(1, intake(3))],
        "the snapshot's pending transactions, on the image's head"
    );
}

/// "Accepted means kept" across a restart: the transactions of an intake entry older than the
/// last block are read back from the log into the pool before Raft starts (openraft re-applies
/// only what follows the durable position), against the head now, in log order; the log's
/// intake index follows truncation and purging, and the refill is bounded by bytes, newest
/// entries first.
#[tokio::test]
async fn intake_entries_before_the_last_block_refill_the_pool_after_a_restart() {
    let chain = ChainSpec::dev();
    let leader = node(&chain);
    let one = next_block(&chain, &leader.store, 0);
    let follower = node(&chain);
    let (_dir, mut log) = temp_log();
    let entries = vec![
        intake_entry(1, 1),
        intake_entry(2, 2),
        entry(3, &one),
        intake_entry(4, 3),
    ];
    log.blocking_append(entries.clone()).await.unwrap();
    let mut machine = follower
        .machine
        .clone()
        .with_intake(Arc::new(RecordingSink::default()));
    machine.apply(entries).await.unwrap();
    // An entry that a new leader overwrote, and one appended over it, leave the index alike.
    log.blocking_append(vec![intake_entry(5, 1)]).await.unwrap();
    log.truncate(log_id(5)).await.unwrap();
    log.blocking_append(vec![entry(5, &one)]).await.unwrap();
    log.truncate(log_id(5)).await.unwrap();

    // The restart: entries 1 and 2 are below the durable position (block 3's), entry 4 above.
    let sink = Arc::new(RecordingSink::default());
    let mut restarted =
        StateMachine::new(chain.clone(), follower.store.clone()).with_intake(sink.clone());
    assert_eq!(
        restarted.applied_state().await.unwrap().0,
        Some(log_id(3)),
        "openraft re-applies entry 4 itself"
    );
    assert_eq!(restarted.refill_pool(&log).unwrap(), (3, 2));
    assert_eq!(
        *sink.seen.lock(),
        vec![(1, intake(1)), (1, intake(2))],
        "entries 1 and 2, in log order, against the head now (block 1)"
    );
    // The bound keeps the newest entries whose sizes fit, at least one.
    let newest = log.intake_entries(3, 1).unwrap();
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0].0, log_id(2));
    // Purged entries are gone from the index.
    log.purge(log_id(1)).await.unwrap();
    let left: Vec<_> = log
        .intake_entries(u64::MAX, u64::MAX)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id.index)
        .collect();
    assert_eq!(left, vec![2, 4]);
}

/// I4 on the leader without a third execution: the block its builder validated applies from the
/// kept result (`OwnBlock`), and a kept result never vouches for another block: a forged block
/// (same height and parent, a lying state root) is still re-executed and refused.
#[tokio::test]
async fn an_own_validated_block_applies_without_vouching_for_another() {
    let chain = ChainSpec::dev();
    let leader = node(&chain);
    let own = keel_cluster::OwnBlock::default();
    let mut machine = leader.machine.clone().with_own_block(own.clone());

    let validated = common::build_next(&chain, &leader.store, 0);
    let honest = validated.output.block.clone();
    let mut forged = honest.header.clone();
    forged.state_root = B256::repeat_byte(1);
    let forged = SealedBlock::new(forged, honest.transactions.clone(), honest.senders.clone());
    own.keep(validated);
    assert!(
        machine.apply([entry(1, &forged)]).await.is_err(),
        "the forged block is re-executed and refused"
    );
    assert_eq!(leader.store.snapshot().unwrap().head().0, 0);
    assert_eq!(
        format!("{own:?}"),
        format!("OwnBlock(Some({}))", honest.hash),
        "the kept result stays for its own block"
    );

    let outcomes = machine.apply([entry(1, &honest)]).await.unwrap();
    assert_eq!(
        outcomes[0],
        ApplyOutcome::Applied {
            number: 1,
            hash: honest.hash
        }
    );
    assert_eq!(format!("{own:?}"), "OwnBlock(None)", "taken by the apply");
    // The same chain a follower's re-execution gives.
    let follower = node(&chain);
    let mut follower_machine = follower.machine.clone();
    follower_machine.apply([entry(1, &honest)]).await.unwrap();
    let (leader_view, follower_view) = (
        leader.store.snapshot().unwrap(),
        follower.store.snapshot().unwrap(),
    );
    assert_eq!(leader_view.head(), follower_view.head());
    assert_eq!(
        leader_view.header(1).unwrap().unwrap().state_root,
        follower_view.header(1).unwrap().unwrap().state_root
    );
}

/// "Accepted means kept" across a restart after a snapshot purged the log: the pool that the
/// node's last snapshot carried is kept in its store, so the intake entries openraft purged
/// after building (or installing) it still refill the pool, against the head now.
#[tokio::test]
async fn intake_entries_a_snapshot_purged_refill_the_pool_after_a_restart() {
    let chain = ChainSpec::dev();
    let leader = node(&chain);
    let one = next_block(&chain, &leader.store, 0);
    let follower = node(&chain);
    let (_dir, mut log) = temp_log();
    let entries = vec![intake_entry(1, 1), intake_entry(2, 2), entry(3, &one)];
    log.blocking_append(entries.clone()).await.unwrap();
    let mut machine = follower
        .machine
        .clone()
        .with_intake(Arc::new(RecordingSink::default()));
    machine.apply(entries).await.unwrap();
    let snapshot = machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(3)));
    // What openraft does once the snapshot is built: the entries up to it may go.
    log.purge(log_id(3)).await.unwrap();
    assert!(log.intake_entries(u64::MAX, u64::MAX).unwrap().is_empty());

    let sink = Arc::new(RecordingSink::default());
    let restarted =
        StateMachine::new(chain.clone(), follower.store.clone()).with_intake(sink.clone());
    let pooled: Vec<_> = intake(1).into_iter().chain(intake(2)).collect();
    assert_eq!(
        restarted.refill_pool(&log).unwrap(),
        (3, 2),
        "the snapshot's pool: three read, one refused by the sink"
    );
    assert_eq!(
        *sink.seen.lock(),
        vec![(1, pooled.clone())],
        "the purged entries' transactions, against the head now (block 1)"
    );

    // A node that installed the snapshot keeps its pool the same way.
    let fresh = node(&chain);
    let mut fresh_machine = fresh
        .machine
        .clone()
        .with_intake(Arc::new(RecordingSink::default()));
    fresh_machine
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .unwrap();
    let (_empty_dir, empty_log) = temp_log();
    let sink = Arc::new(RecordingSink::default());
    let restarted = StateMachine::new(chain.clone(), fresh.store.clone()).with_intake(sink.clone());
    assert_eq!(restarted.refill_pool(&empty_log).unwrap(), (3, 2));
    assert_eq!(*sink.seen.lock(), vec![(1, pooled)]);
}

#[test]
fn intake_entries_round_trip_and_oversized_ones_are_refused() {
    let entry = intake_entry(7, 5);
    let bytes = keel_cluster::codec::encode(&entry).unwrap();
    let decoded: Entry<TypeConfig> = keel_cluster::codec::decode(&bytes).unwrap();
    assert_eq!(decoded.payload, entry.payload);

    let oversized: Entry<TypeConfig> = Entry {
        log_id: log_id(8),
        payload: EntryPayload::Normal(Proposal::Intake(
            (0..=keel_cluster::INTAKE_TRANSACTIONS_MAX)
                .map(|_| intake(1).remove(0))
                .collect(),
        )),
    };
    let bytes = keel_cluster::codec::encode(&oversized).unwrap();
    // postcard keeps no custom message: the entry is refused, which is what matters.
    assert!(keel_cluster::codec::decode::<Entry<TypeConfig>>(&bytes).is_err());
}
