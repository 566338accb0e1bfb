//! Unit tests of the store: genesis, compare-and-append, persistence.

use super::*;
use alloy::consensus::Header;
use alloy::primitives::{Address, keccak256};

fn child_of(parent: &SealedBlock) -> SealedBlock {
    let header = Header {
        parent_hash: parent.hash,
        number: parent.number() + 1,
        timestamp: parent.header.timestamp + 1,
        ..parent.header.clone()
    };
    SealedBlock::new(header, Vec::new(), Vec::new())
}

fn applied(block: &SealedBlock) -> Arc<BlockWithReceipts> {
    Arc::new(BlockWithReceipts::new(block.clone(), Vec::new()))
}

#[test]
fn new_store_holds_the_genesis_and_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let chain = ChainSpec::dev();
    let store = Store::open(&dir.path().join("chain.redb"), &chain).unwrap();
    let snapshot = store.snapshot().unwrap();
    let genesis = chain.genesis_block();
    assert_eq!(snapshot.head(), (0, genesis.hash));
    assert_eq!(snapshot.block(0).unwrap().unwrap(), genesis);
    let funded = keel_primitives::dev_accounts()[0].address();
    let account = snapshot.account(&funded).unwrap().unwrap();
    assert_eq!(
        account.balance,
        U256::from(keel_primitives::chain::DEV_BALANCE_WEI)
    );
    assert_eq!(snapshot.accounts().unwrap().count(), 10);
}

/// I3 (compare-and-append): the store refuses any block that is not the head's child.
#[test]
fn commit_refuses_a_block_not_on_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let chain = ChainSpec::dev();
    let store = Store::open(&dir.path().join("chain.redb"), &chain).unwrap();
    let genesis = chain.genesis_block();
    let one = child_of(&genesis);
    store
        .commit_block(applied(&one), &StateChanges::default())
        .unwrap();
    // The same block again, a sibling, and a block skipping a height are all refused.
    let mut sibling = one.header.clone();
    sibling.timestamp += 5;
    let sibling = SealedBlock::new(sibling, Vec::new(), Vec::new());
    let mut skipping = child_of(&one);
    skipping.header.number += 1;
    let skipping = SealedBlock::new(skipping.header, Vec::new(), Vec::new());
    for refused in [&one, &sibling, &skipping] {
        let error = store
            .commit_block(applied(refused), &StateChanges::default())
            .unwrap_err();
        assert!(matches!(error, StorageError::NotOnHead { .. }), "{error}");
    }
    assert_eq!(store.snapshot().unwrap().head(), (1, one.hash));
}

/// I2 on one node: a committed block and its state survive a reopen.
#[test]
fn committed_state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.redb");
    let chain = ChainSpec::dev();
    let address = Address::repeat_byte(0x42);
    let hashed = keccak256(address);
    let slot = B256::repeat_byte(1);
    let one = child_of(&chain.genesis_block());
    {
        let store = Store::open(&path, &chain).unwrap();
        let changes = StateChanges {
            accounts: vec![(
                hashed,
                Some(AccountRecord {
                    nonce: 3,
                    ..Default::default()
                }),
            )],
            storage_wipes: vec![],
            storage: vec![(hashed, keccak256(slot), U256::from(9))],
            codes: vec![(B256::repeat_byte(7), Bytes::from_static(&[0x60, 0x00]))],
            // Written without bucket changes: the store rebuilds its cache by a walk.
            buckets: None,
        };
        store.commit_block(applied(&one), &changes).unwrap();
    }
    let store = Store::open(&path, &chain).unwrap();
    let snapshot = store.snapshot().unwrap();
    assert_eq!(snapshot.head(), (1, one.hash));
    assert_eq!(snapshot.account(&address).unwrap().unwrap().nonce, 3);
    assert_eq!(snapshot.storage(&address, &slot).unwrap(), U256::from(9));
    assert_eq!(snapshot.storage_slots(&hashed).unwrap().count(), 1);
    assert!(snapshot.code(&B256::repeat_byte(7)).unwrap().is_some());
    assert_eq!(snapshot.block_number(&one.hash).unwrap(), Some(1));

    // Wiping and deleting take effect in the next block.
    let two = child_of(&one);
    let changes = StateChanges {
        accounts: vec![(hashed, None)],
        storage_wipes: vec![hashed],
        ..Default::default()
    };
    store.commit_block(applied(&two), &changes).unwrap();
    let snapshot = store.snapshot().unwrap();
    assert!(snapshot.account(&address).unwrap().is_none());
    assert_eq!(snapshot.storage(&address, &slot).unwrap(), U256::ZERO);
}

#[test]
fn a_store_of_another_chain_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.redb");
    Store::open(&path, &ChainSpec::dev()).unwrap();
    let mut other = ChainSpec::dev();
    other.genesis.timestamp += 1;
    let error = Store::open(&path, &other).unwrap_err();
    assert!(
        matches!(error, StorageError::GenesisMismatch { .. }),
        "{error}"
    );
}

/// A state image carries the head and the whole state (a Raft snapshot never lacks a head:
/// docs/design.md R4), imports into a store of the same genesis, and is refused otherwise.
#[test]
fn state_images_round_trip_and_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let chain = ChainSpec::dev();
    let source = Store::open(&dir.path().join("source.redb"), &chain).unwrap();
    let address = Address::repeat_byte(0x42);
    let hashed = keccak256(address);
    let one = child_of(&chain.genesis_block());
    let changes = StateChanges {
        accounts: vec![(
            hashed,
            Some(AccountRecord {
                nonce: 3,
                ..Default::default()
            }),
        )],
        storage: vec![(hashed, keccak256(B256::ZERO), U256::from(5))],
        codes: vec![(B256::repeat_byte(7), Bytes::from_static(&[0x60, 0x00]))],
        ..Default::default()
    };
    source
        .commit_block_with(applied(&one), &changes, &[("raft_applied", vec![1, 2])])
        .unwrap();
    let image = source.snapshot().unwrap().export().unwrap();

    let target = Store::open(&dir.path().join("target.redb"), &chain).unwrap();
    target.import(&image, &[("raft_applied", vec![9])]).unwrap();
    let snapshot = target.snapshot().unwrap();
    assert_eq!(snapshot.head(), (1, one.hash));
    assert_eq!(snapshot.account(&address).unwrap().unwrap().nonce, 3);
    assert_eq!(
        snapshot.storage(&address, &B256::ZERO).unwrap(),
        U256::from(5)
    );
    assert!(snapshot.code(&B256::repeat_byte(7)).unwrap().is_some());
    assert!(snapshot.block(0).unwrap().is_some(), "stored blocks stay");
    assert_eq!(snapshot.meta("raft_applied").unwrap(), Some(vec![9]));
    assert_eq!(
        snapshot.export().unwrap(),
        image,
        "an imported image exports the same bytes"
    );
    drop(snapshot);
    drop(target);
    // The store reopens on its imported head, not on a fresh genesis.
    let target = Store::open(&dir.path().join("target.redb"), &chain).unwrap();
    assert_eq!(target.snapshot().unwrap().head(), (1, one.hash));

    let mut other = ChainSpec::dev();
    other.genesis.timestamp += 1;
    let stranger = Store::open(&dir.path().join("stranger.redb"), &other).unwrap();
    assert!(matches!(
        stranger.import(&image, &[]),
        Err(StorageError::GenesisMismatch { .. })
    ));
    for cut in [0, 8, 40, image.len() - 1] {
        let error = target.import(&image[..cut], &[]).unwrap_err();
        assert!(
            matches!(error, StorageError::Corrupt(_)),
            "cut at {cut}: {error}"
        );
    }
    assert_eq!(
        target.snapshot().unwrap().head(),
        (1, one.hash),
        "a refused image changes nothing"
    );
}

/// The stream of applied blocks: every consumer sees every block once, in order, whether it
/// keeps up (ring), falls far behind (disk), or starts below the head; a snapshot install is
/// reported as one `Installed` event, after which the stream continues on the new head.
#[tokio::test]
async fn block_stream_misses_no_block_and_reports_an_install() {
    let dir = tempfile::tempdir().unwrap();
    let chain = ChainSpec::dev();
    let store = Arc::new(Store::open(&dir.path().join("chain.redb"), &chain).unwrap());
    let mut keeping_up = store.subscribe();
    let mut lagging = store.subscribe();
    assert!(keeping_up.try_next().is_none(), "nothing applied yet");
    let mut parent = chain.genesis_block();
    let mut hashes = vec![parent.hash];
    let blocks = keel_primitives::limits::RECENT_BLOCKS_MAX as u64 * 2 + 5;
    for _ in 0..blocks {
        let block = child_of(&parent);
        store
            .commit_block(applied(&block), &StateChanges::default())
            .unwrap();
        let event = keeping_up.next().await.unwrap().unwrap();
        assert_eq!(event, ChainEvent::Applied(applied(&block)));
        hashes.push(block.hash);
        parent = block;
    }
    // The lagging consumer reads the first blocks from disk, the last ones from the ring.
    for number in 1..=blocks {
        let event = lagging.try_next().expect("applied").unwrap();
        assert!(matches!(event, ChainEvent::Applied(_)));
        assert_eq!(
            event.block().hash(),
            hashes[number as usize],
            "height {number}"
        );
    }
    assert!(lagging.try_next().is_none());
    let mut from_genesis = store.subscribe_from(0);
    assert_eq!(
        from_genesis.next().await.unwrap().unwrap().block().hash(),
        hashes[0]
    );

    // A snapshot of a longer chain installed on a fresh store: the stream jumps once.
    let image = store.snapshot().unwrap().export().unwrap();
    let target = Arc::new(Store::open(&dir.path().join("target.redb"), &chain).unwrap());
    let mut follower = target.subscribe();
    target.import(&image, &[]).unwrap();
    let event = follower.next().await.unwrap().unwrap();
    assert_eq!(event, ChainEvent::Installed(applied(&parent)));
    let next = child_of(&parent);
    target
        .commit_block(applied(&next), &StateChanges::default())
        .unwrap();
    let event = follower.next().await.unwrap().unwrap();
    assert_eq!(event, ChainEvent::Applied(applied(&next)));
    // A stream opened below the install jumps to it, then follows.
    let mut late = target.subscribe_from(1);
    assert_eq!(
        late.next().await.unwrap().unwrap(),
        ChainEvent::Installed(applied(&parent))
    );
    assert_eq!(
        late.next().await.unwrap().unwrap(),
        ChainEvent::Applied(applied(&next))
    );
    // After a reopen the store no longer knows where the install was: it jumps to the head.
    drop((follower, late));
    drop(Arc::into_inner(target).expect("no stream holds the store"));
    let target = Arc::new(Store::open(&dir.path().join("target.redb"), &chain).unwrap());
    let mut reopened = target.subscribe_from(1);
    assert_eq!(
        reopened.next().await.unwrap().unwrap(),
        ChainEvent::Installed(applied(&next))
    );
    assert!(reopened.try_next().is_none());
}

/// An unwind (derivation's reset, the replacement of unbatched unsafe blocks): a stream that
/// delivered the removed blocks reports `Unwound` with the new head, then the new blocks; a
/// stream that had not reached them sees only the new ones; the store refuses to unwind below
/// a block without a change set, and past its head.
#[tokio::test]
async fn unwinding_is_reported_to_every_stream_that_saw_the_removed_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let chain = ChainSpec::dev();
    let store = Arc::new(Store::open(&dir.path().join("chain.redb"), &chain).unwrap());
    let mut caught_up = store.subscribe();
    let mut behind = store.subscribe();
    let mut chain_blocks = vec![chain.genesis_block()];
    for _ in 0..6 {
        let block = child_of(chain_blocks.last().unwrap());
        store
            .commit_block(applied(&block), &StateChanges::default())
            .unwrap();
        chain_blocks.push(block);
    }
    for number in 1..=6 {
        let event = caught_up.next().await.unwrap().unwrap();
        assert_eq!(event.block().number(), number);
    }
    for number in 1..=2 {
        let event = behind.next().await.unwrap().unwrap();
        assert_eq!(event.block().number(), number);
    }
    let removed = store.unwind_to(3, &[("marker", vec![1])]).unwrap();
    let removed_numbers: Vec<u64> = removed.iter().map(|block| block.number()).collect();
    assert_eq!(removed_numbers, vec![6, 5, 4]);
    let snapshot = store.snapshot().unwrap();
    assert_eq!(snapshot.head(), (3, chain_blocks[3].hash));
    assert_eq!(snapshot.block(4).unwrap(), None);
    assert_eq!(snapshot.block_number(&chain_blocks[5].hash).unwrap(), None);
    assert_eq!(snapshot.meta("marker").unwrap(), Some(vec![1]));
    drop(snapshot);
    // A different block 4 on the unwound head.
    let mut replacement = child_of(&chain_blocks[3]);
    replacement.header.timestamp += 100;
    let replacement = SealedBlock::new(replacement.header, Vec::new(), Vec::new());
    store
        .commit_block(applied(&replacement), &StateChanges::default())
        .unwrap();
    assert_eq!(
        caught_up.next().await.unwrap().unwrap(),
        ChainEvent::Unwound(applied(&chain_blocks[3]))
    );
    assert_eq!(
        caught_up.next().await.unwrap().unwrap(),
        ChainEvent::Applied(applied(&replacement))
    );
    assert!(caught_up.try_next().is_none());
    // The stream at height 3 never saw a removed block: 3, then the replacement.
    assert_eq!(
        behind.next().await.unwrap().unwrap(),
        ChainEvent::Applied(applied(&chain_blocks[3]))
    );
    assert_eq!(
        behind.next().await.unwrap().unwrap(),
        ChainEvent::Applied(applied(&replacement))
    );
    // Past the head is refused; down to the genesis works.
    assert!(matches!(
        store.unwind_to(9, &[]),
        Err(StorageError::UnwindTooDeep { .. })
    ));
    assert_eq!(store.unwind_to(0, &[]).unwrap().len(), 4);
    assert_eq!(store.snapshot().unwrap().head().0, 0);
    // Below a snapshot's head there is no change set to unwind with.
    for _ in 0..3 {
        let parent = store
            .snapshot()
            .unwrap()
            .block(store.snapshot().unwrap().head().0);
        let block = child_of(&parent.unwrap().unwrap());
        store
            .commit_block(applied(&block), &StateChanges::default())
            .unwrap();
    }
    let image = store.snapshot().unwrap().export().unwrap();
    let installed = Store::open(&dir.path().join("installed.redb"), &chain).unwrap();
    installed.import(&image, &[]).unwrap();
    let error = installed.unwind_to(1, &[]).unwrap_err();
    assert!(error.to_string().contains("no change set"), "{error}");
}

/// The state history's tests: every read at every block against a model of the state.
mod history {
    use super::*;
    use std::collections::BTreeMap;

    /// The whole state after one block, as the model holds it.
    #[derive(Clone, Default)]
    struct ModelState {
        accounts: BTreeMap<B256, AccountRecord>,
        storage: BTreeMap<(B256, B256), U256>,
    }

    /// A small seeded generator (xorshift64*), so a failure names its seed and replays.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }
    }

    const ADDRESSES: u8 = 6;
    const SLOTS: u8 = 5;

    fn hashed_address(index: u64) -> B256 {
        keccak256([index as u8 + 1; 20])
    }

    fn hashed_slot(index: u64) -> B256 {
        keccak256([index as u8; 32])
    }

    /// Random changes on `state`, applied to it as the store applies them.
    fn random_changes(rng: &mut Rng, state: &mut ModelState) -> StateChanges {
        let mut changes = StateChanges::default();
        let mut written = std::collections::BTreeSet::new();
        for _ in 0..rng.below(4) {
            let address = hashed_address(rng.below(ADDRESSES as u64));
            if !written.insert(address) {
                continue;
            }
            if rng.below(5) == 0 {
                changes.accounts.push((address, None));
                state.accounts.remove(&address);
            } else {
                let record = AccountRecord {
                    nonce: rng.below(100),
                    balance: U256::from(rng.below(1_000_000)),
                    ..Default::default()
                };
                changes.accounts.push((address, Some(record)));
                state.accounts.insert(address, record);
            }
        }
        if rng.below(6) == 0 {
            let address = hashed_address(rng.below(ADDRESSES as u64));
            changes.storage_wipes.push(address);
            state.storage.retain(|(owner, _), _| *owner != address);
        }
        let mut slots = std::collections::BTreeSet::new();
        for _ in 0..rng.below(6) {
            let key = (
                hashed_address(rng.below(ADDRESSES as u64)),
                hashed_slot(rng.below(SLOTS as u64)),
            );
            if !slots.insert(key) {
                continue;
            }
            // One in four writes clears the slot.
            let value = match rng.below(4) {
                0 => U256::ZERO,
                _ => U256::from(rng.below(1_000) + 1),
            };
            changes.storage.push((key.0, key.1, value));
            if value.is_zero() {
                state.storage.remove(&key);
            } else {
                state.storage.insert(key, value);
            }
        }
        changes
    }

    /// Every key of the model's universe read at block `number` through the store's history
    /// equals the model's state after that block.
    fn assert_reads_at(store: &Store, number: u64, model: &ModelState, seed: u64) {
        let view = store.snapshot().unwrap().at(number).unwrap();
        assert_eq!(view.state_block().0, number);
        // Walks over the whole state (eth_getProof's) see the same state as single reads.
        let universe: Vec<B256> = (0..ADDRESSES as u64).map(hashed_address).collect();
        let walked: BTreeMap<B256, AccountRecord> = view
            .accounts()
            .unwrap()
            .map(Result::unwrap)
            .filter(|(hashed, _)| universe.contains(hashed))
            .collect();
        assert_eq!(
            walked, model.accounts,
            "seed {seed}: accounts walked at block {number}"
        );
        for hashed in &universe {
            let slots: BTreeMap<(B256, B256), U256> = view
                .storage_slots(hashed)
                .unwrap()
                .map(|entry| {
                    let (slot, value) = entry.unwrap();
                    ((*hashed, slot), value)
                })
                .collect();
            let expected: BTreeMap<(B256, B256), U256> = model
                .storage
                .iter()
                .filter(|((owner, _), _)| owner == hashed)
                .map(|(key, value)| (*key, *value))
                .collect();
            assert_eq!(
                slots, expected,
                "seed {seed}: slots walked at block {number}"
            );
        }
        for address in 0..ADDRESSES as u64 {
            let hashed = hashed_address(address);
            assert_eq!(
                view.account_hashed(&hashed).unwrap(),
                model.accounts.get(&hashed).copied(),
                "seed {seed}: account {address} at block {number}"
            );
            for slot in 0..SLOTS as u64 {
                let hashed_slot = hashed_slot(slot);
                assert_eq!(
                    view.storage_hashed(&hashed, &hashed_slot).unwrap(),
                    model
                        .storage
                        .get(&(hashed, hashed_slot))
                        .copied()
                        .unwrap_or_default(),
                    "seed {seed}: slot {slot} of account {address} at block {number}"
                );
            }
        }
    }

    /// Commits `count` random blocks on the store's head, pushing each block's state.
    fn grow(
        store: &Store,
        rng: &mut Rng,
        states: &mut Vec<ModelState>,
        head: &mut SealedBlock,
        count: usize,
    ) {
        for _ in 0..count {
            let mut state = states.last().unwrap().clone();
            let changes = random_changes(rng, &mut state);
            let mut next = child_of(head);
            // A distinct hash per branch (an unwound height sealed again differs).
            next.header.extra_data = rng.next().to_be_bytes().to_vec().into();
            let next = SealedBlock::new(next.header, Vec::new(), Vec::new());
            store.commit_block(applied(&next), &changes).unwrap();
            states.push(state);
            *head = next;
        }
    }

    /// The history index's cursor (`history.rs`).
    fn indexed(store: &Store) -> u64 {
        let bytes = store.snapshot().unwrap().meta("history_indexed").unwrap();
        u64::from_be_bytes(bytes.unwrap().try_into().unwrap())
    }

    /// State history: reads at every block of the chain match the model, through unwinds
    /// (whose entries must go), a reopen, and a prune (which keeps reads from the floor exact
    /// and refuses those below it); for a store that indexes every block in its commit, and
    /// for a deferred one that indexes each batch later, whose reads above the index's cursor
    /// come from the change sets.
    #[test]
    fn reads_at_every_block_match_a_model_through_unwinds_prunes_and_reopens() {
        for durability in [BlockDurability::Immediate, BlockDurability::Deferred] {
            for seed in 1..=6u64 {
                reads_match_the_model(durability, seed);
            }
        }
    }

    fn reads_match_the_model(durability: BlockDurability, seed: u64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.redb");
        let chain = ChainSpec::dev();
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let store = Store::open(&path, &chain).unwrap();
        store.set_block_durability(durability);
        let mut head = chain.genesis_block();
        // The model's universe holds none of the genesis accounts.
        let mut states = vec![ModelState::default()];
        grow(&store, &mut rng, &mut states, &mut head, 40);
        // A deferred store indexes with the fsync after every 16th block: 8 blocks wait.
        let expected = match durability {
            BlockDurability::Immediate => 40,
            BlockDurability::Deferred => 32,
        };
        assert_eq!(indexed(&store), expected, "seed {seed} {durability:?}");
        for number in 0..=40 {
            assert_reads_at(&store, number, &states[number as usize], seed);
        }

        // Unwind to a random height and grow another branch over it.
        let back = 20 + rng.below(15);
        store.unwind_to(back, &[]).unwrap();
        states.truncate(back as usize + 1);
        head = store.snapshot().unwrap().block(back).unwrap().unwrap();
        grow(&store, &mut rng, &mut states, &mut head, 30);
        let top = states.len() as u64 - 1;
        for number in 0..=top {
            assert_reads_at(&store, number, &states[number as usize], seed);
        }

        // Reopened, the history is the same (and all of it indexed).
        drop(store);
        let store = Store::open(&path, &chain).unwrap();
        store.set_block_durability(durability);
        assert_eq!(indexed(&store), top, "seed {seed} {durability:?}");
        for number in 0..=top {
            assert_reads_at(&store, number, &states[number as usize], seed);
        }

        // Pruned in steps up to a target, the floor follows and reads above stay exact.
        store.set_state_history(StateHistory::Window(25));
        let target = StateHistory::Window(25).prune_target(top, top).unwrap();
        assert_eq!(store.prune_history(target, 3).unwrap(), 3, "seed {seed}");
        let floor = loop {
            let floor = store.prune_history(target, 3).unwrap();
            if floor == target {
                break floor;
            }
        };
        for number in floor..=top {
            assert_reads_at(&store, number, &states[number as usize], seed);
        }
        let refused = store.snapshot().unwrap().at(floor - 1).unwrap_err();
        assert!(
            matches!(refused, StorageError::StatePruned { number, floor: at } if number == floor - 1 && at == floor),
            "seed {seed}: {refused}"
        );
        // No unwind below the floor: the change sets are gone.
        assert!(matches!(
            store.unwind_to(floor - 1, &[]),
            Err(StorageError::UnwindTooDeep { .. })
        ));
        // An unwind above it works, and the window keeps serving.
        store.unwind_to(top - 2, &[]).unwrap();
        states.truncate(top as usize - 1);
        head = store.snapshot().unwrap().block(top - 2).unwrap().unwrap();
        grow(&store, &mut rng, &mut states, &mut head, 5);
        for number in floor..states.len() as u64 {
            assert_reads_at(&store, number, &states[number as usize], seed);
        }

        // Pruning stops at the index's cursor: the change sets above it are still to be
        // indexed.
        let top = states.len() as u64 - 1;
        let cursor = indexed(&store);
        assert_eq!(
            store.prune_history(top, u64::MAX).unwrap(),
            cursor,
            "seed {seed}"
        );
        for number in cursor..=top {
            assert_reads_at(&store, number, &states[number as usize], seed);
        }
        store.sync().unwrap();
        assert_eq!(indexed(&store), top, "seed {seed} {durability:?}");
        for number in cursor..=top {
            assert_reads_at(&store, number, &states[number as usize], seed);
        }
    }

    /// History off (`--state-history-blocks 0`): no entries, the head's state only, and
    /// turning it on again starts the window at the head of that moment.
    #[test]
    fn history_off_serves_the_head_only_and_on_again_starts_at_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let chain = ChainSpec::dev();
        let store = Store::open(&dir.path().join("chain.redb"), &chain).unwrap();
        let mut rng = Rng(7);
        let mut head = chain.genesis_block();
        let mut states = vec![ModelState::default()];
        store.set_state_history(StateHistory::Window(0));
        grow(&store, &mut rng, &mut states, &mut head, 5);
        assert_reads_at(&store, 5, &states[5], 7);
        assert!(matches!(
            store.snapshot().unwrap().at(4),
            Err(StorageError::StatePruned {
                number: 4,
                floor: 5
            })
        ));
        // Unwinds still work: the change sets are kept.
        store.unwind_to(3, &[]).unwrap();
        states.truncate(4);
        head = store.snapshot().unwrap().block(3).unwrap().unwrap();
        assert_reads_at(&store, 3, &states[3], 7);
        store.set_state_history(StateHistory::Archive);
        grow(&store, &mut rng, &mut states, &mut head, 4);
        for number in 3..=7 {
            assert_reads_at(&store, number, &states[number as usize], 7);
        }
        assert!(store.snapshot().unwrap().at(2).is_err());
    }

    /// A node caught up by a state image knows no state before the image's head: its window
    /// starts there (docs/design.md R4's snapshot catch-up).
    #[test]
    fn an_imported_image_starts_the_window_at_its_head() {
        let dir = tempfile::tempdir().unwrap();
        let chain = ChainSpec::dev();
        let source = Store::open(&dir.path().join("source.redb"), &chain).unwrap();
        let mut rng = Rng(11);
        let mut head = chain.genesis_block();
        let mut states = vec![ModelState::default()];
        grow(&source, &mut rng, &mut states, &mut head, 6);
        let image = source.snapshot().unwrap().export().unwrap();
        let target = Store::open(&dir.path().join("target.redb"), &chain).unwrap();
        let mut other_head = chain.genesis_block();
        let mut other = vec![ModelState::default()];
        grow(&target, &mut Rng(12), &mut other, &mut other_head, 3);
        target.import(&image, &[]).unwrap();
        assert_reads_at(&target, 6, &states[6], 11);
        assert!(matches!(
            target.snapshot().unwrap().at(3),
            Err(StorageError::StatePruned {
                number: 3,
                floor: 6
            })
        ));
        // Blocks after the image record history again.
        grow(&target, &mut rng, &mut states, &mut head, 3);
        for number in 6..=9 {
            assert_reads_at(&target, number, &states[number as usize], 11);
        }
        // A walk over the whole state is for the head only.
        let old = target.snapshot().unwrap().at(7).unwrap();
        assert!(matches!(
            old.export(),
            Err(StorageError::NotHead { number: 7 })
        ));
    }
}

/// An online backup is the store as of one commit, taken while blocks keep being committed:
/// it opens as a store of the same chain, with the same blocks and state up to its head; it
/// never overwrites a file, and a crashed backup's partial copy is not mistaken for one.
#[test]
fn an_online_backup_is_a_consistent_store_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let chain = ChainSpec::dev();
    let store = Arc::new(Store::open(&dir.path().join("chain.redb"), &chain).unwrap());
    let address = Address::repeat_byte(0x42);
    let hashed = keccak256(address);
    let mut parent = chain.genesis_block();
    let commit = move |store: &Store, parent: &mut SealedBlock, nonce: u64| {
        let block = child_of(parent);
        let changes = StateChanges {
            accounts: vec![(
                hashed,
                Some(AccountRecord {
                    nonce,
                    ..Default::default()
                }),
            )],
            storage: vec![(
                hashed,
                keccak256(B256::from(U256::from(nonce))),
                U256::from(nonce),
            )],
            codes: vec![(B256::repeat_byte(7), Bytes::from_static(&[0x60, 0x00]))],
            ..Default::default()
        };
        store.commit_block(applied(&block), &changes).unwrap();
        *parent = block;
    };
    for nonce in 1..=20 {
        commit(&store, &mut parent, nonce);
    }
    // Blocks go on being committed while the backup runs.
    let writer = {
        let store = store.clone();
        let mut parent = parent.clone();
        std::thread::spawn(move || {
            for nonce in 21..=200 {
                commit(&store, &mut parent, nonce);
            }
        })
    };
    let path = dir.path().join("backup.redb");
    let mut tables = Vec::new();
    let backup = store
        .backup(&path, &mut |progress| {
            tables.push((progress.table.to_string(), progress.done))
        })
        .unwrap();
    writer.join().unwrap();
    assert_eq!(tables.len(), 14, "{tables:?}");
    assert_eq!(tables.last().unwrap().1, 14);
    assert!(
        backup.head >= 20 && backup.bytes > 0 && backup.rows > 0,
        "{backup:?}"
    );

    let copy = Store::open(&path, &chain).unwrap();
    let (copied, source) = (copy.snapshot().unwrap(), store.snapshot().unwrap());
    assert_eq!(copied.head(), (backup.head, backup.hash));
    for number in 0..=backup.head {
        assert_eq!(
            copied.block_hash(number).unwrap(),
            source.block_hash(number).unwrap(),
            "block {number}"
        );
    }
    // The state is the state at the copy's head: the nonce written by that block, and the
    // slots of every block up to it.
    assert_eq!(
        copied.account(&address).unwrap().unwrap().nonce,
        backup.head
    );
    assert_eq!(
        copied.storage_slots(&hashed).unwrap().count() as u64,
        backup.head
    );
    assert!(copied.code(&B256::repeat_byte(7)).unwrap().is_some());
    drop(copied);

    // Never over a file; a partial copy left by a crash is replaced.
    let again = store.backup(&path, &mut |_| {}).unwrap_err();
    assert!(
        matches!(again, StorageError::BackupTarget { .. }),
        "{again}"
    );
    assert!(again.to_string().contains("exists already"), "{again}");
    let second = dir.path().join("second.redb");
    std::fs::write(dir.path().join("second.redb.partial"), b"half a copy").unwrap();
    store.backup(&second, &mut |_| {}).unwrap();
    assert!(!dir.path().join("second.redb.partial").exists());
    Store::open(&second, &chain).unwrap();
}
