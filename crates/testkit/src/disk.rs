//! The simulation's disk: a redb `StorageBackend` in memory that knows which writes were
//! fsynced, so a simulated crash loses exactly what a power loss would.
//!
//! ```text
//!   redb write ──► visible (what reads see: the page cache) ──┐
//!                  unsynced (every write since the last sync) ─┤ sync_data ─► durable
//!   power loss ──► durable + a seeded choice of the unsynced writes: each one lands whole,
//!                  lands torn (whole sectors of it, from the start) or is lost ─► visible
//! ```
//!
//! Writes since the last `sync_data` may reach the platter in any order or not at all, and a
//! write larger than a sector may stop part way (sectors themselves are atomic, as drives
//! promise); what `sync_data` returned for is never lost. That is the contract redb's commit
//! protocol (and so keel's `Durability::Immediate` writes) relies on, and the simulation holds
//! the code to nothing weaker.
//!
//! A power cut can be armed to strike in the middle of I/O: after `n` more operations every
//! call fails with an I/O error, as a dying machine's would, until the driver crashes the host
//! and [`SimDisk::restore`] decides what survived. A host crashed between operations gets the
//! same treatment: its disks are cut first, so the clean-shutdown writes redb makes when a
//! `Database` is dropped never happen, and the restart finds a crashed file.
//!
//! Why a backend of its own: redb ships a file backend (whose writes survive any simulated
//! crash, since the real OS keeps them) and an in-memory one (which keeps everything); neither
//! can lose un-fsynced writes.

use crate::chaos::SplitMix64;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

/// The atomic unit of a write: a torn write keeps whole sectors only.
pub const SECTOR_BYTES: usize = 512;

/// One write since the last sync.
#[derive(Debug, Clone)]
enum Unsynced {
    Write { offset: usize, data: Vec<u8> },
    SetLen(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Power {
    On,
    /// Fails from the operation after this many more.
    CutAfter(u64),
    Off,
}

/// What a power loss did to the unsynced writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Loss {
    /// Operations written since the last sync.
    pub unsynced: usize,
    /// Of those, lost whole.
    pub lost: usize,
    /// Of those, written in part.
    pub torn: usize,
}

#[derive(Debug)]
struct State {
    visible: Vec<u8>,
    durable: Vec<u8>,
    unsynced: Vec<Unsynced>,
    power: Power,
}

/// One simulated disk (one redb file). Clones share it: the simulation keeps one across the
/// host's crashes and hands a clone to each `Database` it opens.
#[derive(Debug, Clone)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

impl Default for SimDisk {
    fn default() -> Self {
        Self::new()
    }
}

fn power_lost() -> io::Error {
    io::Error::other("simulated power loss: the disk is gone")
}

fn out_of_range() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "offset past the end of the disk",
    )
}

fn apply(bytes: &mut Vec<u8>, operation: &Unsynced) {
    match operation {
        Unsynced::Write { offset, data } => {
            let end = offset + data.len();
            if bytes.len() < end {
                bytes.resize(end, 0); // a write past the end extends the file
            }
            bytes[*offset..end].copy_from_slice(data);
        }
        Unsynced::SetLen(len) => bytes.resize(*len, 0),
    }
}

impl SimDisk {
    /// An empty disk with power on.
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                visible: Vec::new(),
                durable: Vec::new(),
                unsynced: Vec::new(),
                power: Power::On,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts one operation against an armed cut; fails if the power is (now) off.
    fn powered(state: &mut State) -> io::Result<()> {
        match state.power {
            Power::On => Ok(()),
            Power::Off => Err(power_lost()),
            Power::CutAfter(0) => {
                state.power = Power::Off;
                Err(power_lost())
            }
            Power::CutAfter(left) => {
                state.power = Power::CutAfter(left - 1);
                Ok(())
            }
        }
    }

    /// Arms a power cut: `operations` more calls succeed, then every call fails.
    pub fn cut_after(&self, operations: u64) {
        let mut state = self.lock();
        if state.power == Power::On {
            state.power = Power::CutAfter(operations);
        }
    }

    /// Cuts the power now.
    pub fn cut(&self) {
        self.lock().power = Power::Off;
    }

    /// Whether an armed cut has struck (or the power was cut) and [`SimDisk::restore`] has not
    /// run since.
    pub fn is_off(&self) -> bool {
        self.lock().power == Power::Off
    }

    /// Disarms a cut that has not struck.
    pub fn disarm(&self) {
        let mut state = self.lock();
        if let Power::CutAfter(_) = state.power {
            state.power = Power::On;
        }
    }

    /// The process that wrote the disk was killed, its kernel lives on: power comes back on
    /// for the restarted process, which reads every write the killed one made (the page
    /// cache holds them); those not fsynced stay unsynced, for a later fsync or power loss.
    /// (Cut first, [`SimDisk::cut`], so that no write the killed process would not have made,
    /// such as redb's clean shutdown, lands meanwhile.) Returns how many writes were unsynced.
    pub fn revive(&self) -> usize {
        let mut state = self.lock();
        state.power = Power::On;
        state.unsynced.len()
    }

    /// The power loss: what was synced stays; each unsynced operation, in order, lands whole,
    /// lands torn or is lost, as `seed` decides. Power comes back on; reads see what survived.
    pub fn restore(&self, seed: u64) -> Loss {
        let mut random = SplitMix64::new(seed);
        let mut state = self.lock();
        let unsynced = std::mem::take(&mut state.unsynced);
        let mut loss = Loss {
            unsynced: unsynced.len(),
            ..Loss::default()
        };
        let mut durable = std::mem::take(&mut state.durable);
        for operation in &unsynced {
            match random.next_u64() % 3 {
                0 => apply(&mut durable, operation),
                1 => loss.lost += 1,
                _ => match operation {
                    Unsynced::Write { offset, data } if data.len() > SECTOR_BYTES => {
                        let sectors = data.len().div_ceil(SECTOR_BYTES) as u64;
                        let kept = random.between(1, sectors - 1) as usize * SECTOR_BYTES;
                        let torn = Unsynced::Write {
                            offset: *offset,
                            data: data[..kept].to_vec(),
                        };
                        apply(&mut durable, &torn);
                        loss.torn += 1;
                    }
                    // A sector or less, or a length change: atomic, so whole or nothing.
                    _ => loss.lost += 1,
                },
            }
        }
        state.visible = durable.clone();
        state.durable = durable;
        state.power = Power::On;
        loss
    }
}

impl redb::StorageBackend for SimDisk {
    fn len(&self) -> io::Result<u64> {
        let mut state = self.lock();
        Self::powered(&mut state)?;
        Ok(state.visible.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let mut state = self.lock();
        Self::powered(&mut state)?;
        let offset = usize::try_from(offset).map_err(|_| out_of_range())?;
        let source = state
            .visible
            .get(offset..offset + out.len())
            .ok_or_else(out_of_range)?;
        out.copy_from_slice(source);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.lock();
        Self::powered(&mut state)?;
        let len = usize::try_from(len).map_err(|_| out_of_range())?;
        let operation = Unsynced::SetLen(len);
        apply(&mut state.visible, &operation);
        state.unsynced.push(operation);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.lock();
        Self::powered(&mut state)?;
        let unsynced = std::mem::take(&mut state.unsynced);
        for operation in &unsynced {
            apply(&mut state.durable, operation);
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = self.lock();
        Self::powered(&mut state)?;
        let offset = usize::try_from(offset).map_err(|_| out_of_range())?;
        if offset + data.len() > state.visible.len() {
            return Err(out_of_range()); // redb sets the length before it writes
        }
        let operation = Unsynced::Write {
            offset,
            data: data.to_vec(),
        };
        apply(&mut state.visible, &operation);
        state.unsynced.push(operation);
        Ok(())
    }
}

/// A slow disk: how long each write to a host's Raft log and state machine takes, in
/// simulated milliseconds (0: as fast as memory). The driver sets it; [`SlowLog`] and
/// [`SlowMachine`] wait it out before every write.
///
/// The wait is simulated time, so it has to sit at an `await`: redb's backend calls are
/// synchronous, so the delay wraps openraft's storage calls instead of the backend, around the
/// real log store and state machine, which run unchanged. A slow append stalls the Raft core
/// as a slow fsync would (openraft awaits its log writes in line).
#[derive(Debug, Clone, Default)]
pub struct DiskLatency(Arc<std::sync::atomic::AtomicU64>);

impl DiskLatency {
    /// Sets every write's latency.
    pub fn set(&self, latency_ms: u64) {
        self.0
            .store(latency_ms, std::sync::atomic::Ordering::Relaxed);
    }

    async fn wait(&self) {
        let latency_ms = self.0.load(std::sync::atomic::Ordering::Relaxed);
        if latency_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(latency_ms)).await;
        }
    }
}

type RaftResult<T> = Result<T, openraft::StorageError<keel_cluster::NodeId>>;
type Config = keel_cluster::TypeConfig;

/// keel's Raft log store behind a [`DiskLatency`].
#[derive(Debug, Clone)]
pub struct SlowLog {
    /// The real log store.
    pub inner: keel_cluster::LogStore,
    /// Its latency.
    pub latency: DiskLatency,
}

impl openraft::RaftLogReader<Config> for SlowLog {
    async fn try_get_log_entries<
        RB: std::ops::RangeBounds<u64> + Clone + std::fmt::Debug + Send,
    >(
        &mut self,
        range: RB,
    ) -> RaftResult<Vec<openraft::Entry<Config>>> {
        self.inner.try_get_log_entries(range).await
    }
}

impl openraft::storage::RaftLogStorage<Config> for SlowLog {
    type LogReader = keel_cluster::LogStore;

    async fn get_log_state(&mut self) -> RaftResult<openraft::LogState<Config>> {
        self.inner.get_log_state().await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.inner.get_log_reader().await
    }

    async fn save_vote(&mut self, vote: &openraft::Vote<keel_cluster::NodeId>) -> RaftResult<()> {
        self.latency.wait().await;
        self.inner.save_vote(vote).await
    }

    async fn read_vote(&mut self) -> RaftResult<Option<openraft::Vote<keel_cluster::NodeId>>> {
        self.inner.read_vote().await
    }

    async fn save_committed(
        &mut self,
        committed: Option<openraft::LogId<keel_cluster::NodeId>>,
    ) -> RaftResult<()> {
        self.latency.wait().await;
        self.inner.save_committed(committed).await
    }

    async fn read_committed(
        &mut self,
    ) -> RaftResult<Option<openraft::LogId<keel_cluster::NodeId>>> {
        self.inner.read_committed().await
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: openraft::storage::LogFlushed<Config>,
    ) -> RaftResult<()>
    where
        I: IntoIterator<Item = openraft::Entry<Config>> + Send,
        I::IntoIter: Send,
    {
        self.latency.wait().await;
        self.inner.append(entries, callback).await
    }

    async fn truncate(&mut self, log_id: openraft::LogId<keel_cluster::NodeId>) -> RaftResult<()> {
        self.latency.wait().await;
        self.inner.truncate(log_id).await
    }

    async fn purge(&mut self, log_id: openraft::LogId<keel_cluster::NodeId>) -> RaftResult<()> {
        self.latency.wait().await;
        self.inner.purge(log_id).await
    }
}

/// keel's state machine behind a [`DiskLatency`].
#[derive(Clone)]
pub struct SlowMachine {
    /// The real state machine.
    pub inner: keel_cluster::StateMachine,
    /// Its latency.
    pub latency: DiskLatency,
}

impl openraft::storage::RaftStateMachine<Config> for SlowMachine {
    type SnapshotBuilder = keel_cluster::StateMachine;

    async fn applied_state(
        &mut self,
    ) -> RaftResult<(
        Option<openraft::LogId<keel_cluster::NodeId>>,
        openraft::StoredMembership<keel_cluster::NodeId, openraft::BasicNode>,
    )> {
        self.inner.applied_state().await
    }

    async fn apply<I>(&mut self, entries: I) -> RaftResult<Vec<keel_cluster::ApplyOutcome>>
    where
        I: IntoIterator<Item = openraft::Entry<Config>> + Send,
        I::IntoIter: Send,
    {
        self.latency.wait().await;
        self.inner.apply(entries).await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.inner.get_snapshot_builder().await
    }

    async fn begin_receiving_snapshot(&mut self) -> RaftResult<Box<std::io::Cursor<Vec<u8>>>> {
        self.inner.begin_receiving_snapshot().await
    }

    async fn install_snapshot(
        &mut self,
        meta: &openraft::SnapshotMeta<keel_cluster::NodeId, openraft::BasicNode>,
        snapshot: Box<std::io::Cursor<Vec<u8>>>,
    ) -> RaftResult<()> {
        self.latency.wait().await;
        self.inner.install_snapshot(meta, snapshot).await
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> RaftResult<Option<openraft::storage::Snapshot<Config>>> {
        self.inner.get_current_snapshot().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{Database, ReadableDatabase, StorageBackend, TableDefinition};

    const TABLE: TableDefinition<u64, u64> = TableDefinition::new("t");

    fn put(db: &Database, key: u64, durability: redb::Durability) -> Result<(), redb::Error> {
        let mut txn = db.begin_write()?;
        txn.set_durability(durability)?;
        txn.open_table(TABLE)?.insert(key, key * 10)?;
        txn.commit()?;
        Ok(())
    }

    fn open(disk: &SimDisk, seed: u64) -> Database {
        Database::builder()
            .create_with_backend(disk.clone())
            .unwrap_or_else(|error| panic!("seed {seed}: redb could not open: {error}"))
    }

    /// The simulation's crash on one disk: the power goes before the `Database` drops (so its
    /// clean shutdown writes nothing), the seed decides what survived, and redb reopens it.
    fn crash_and_reopen(disk: &SimDisk, db: Database, seed: u64) -> (Database, Loss) {
        disk.cut();
        drop(db);
        let loss = disk.restore(seed);
        (open(disk, seed), loss)
    }

    fn keys(db: &Database) -> Vec<u64> {
        let txn = db.begin_read().expect("read");
        let Ok(table) = txn.open_table(TABLE) else {
            return Vec::new();
        };
        use redb::ReadableTable;
        table
            .iter()
            .expect("iter")
            .map(|item| item.expect("item").0.value())
            .collect()
    }

    #[test]
    fn synced_writes_survive_and_unsynced_ones_may_not() {
        let disk = SimDisk::new();
        disk.set_len(4 * SECTOR_BYTES as u64).unwrap();
        disk.write(0, &[1; SECTOR_BYTES]).unwrap();
        disk.sync_data().unwrap();
        disk.write(SECTOR_BYTES as u64, &[2; 2 * SECTOR_BYTES])
            .unwrap();
        disk.cut();
        assert!(disk.is_off());
        assert!(
            disk.read(0, &mut [0; 4]).is_err(),
            "a dead disk answers nothing"
        );
        // Over many seeds the unsynced write lands whole, torn and not at all; the synced
        // sector is always there.
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let copy = SimDisk::new();
            copy.set_len(4 * SECTOR_BYTES as u64).unwrap();
            copy.write(0, &[1; SECTOR_BYTES]).unwrap();
            copy.sync_data().unwrap();
            copy.write(SECTOR_BYTES as u64, &[2; 2 * SECTOR_BYTES])
                .unwrap();
            copy.cut();
            let loss = copy.restore(seed);
            let mut first = [0; SECTOR_BYTES];
            copy.read(0, &mut first).unwrap();
            assert_eq!(
                first, [1; SECTOR_BYTES],
                "seed {seed}: a synced write was lost"
            );
            let mut rest = vec![0; 2 * SECTOR_BYTES];
            copy.read(SECTOR_BYTES as u64, &mut rest).unwrap();
            let landed = rest.iter().filter(|byte| **byte == 2).count();
            assert_eq!(landed % SECTOR_BYTES, 0, "seed {seed}: sectors are atomic");
            seen.insert((landed / SECTOR_BYTES, loss.lost, loss.torn));
        }
        // whole, torn (one sector of two) and lost were all drawn
        assert!(seen.contains(&(2, 0, 0)), "{seen:?}");
        assert!(seen.contains(&(1, 0, 1)), "{seen:?}");
        assert!(seen.contains(&(0, 1, 0)), "{seen:?}");
    }

    #[test]
    fn an_armed_cut_fails_every_call_after_it() {
        let disk = SimDisk::new();
        disk.cut_after(2);
        disk.set_len(16).unwrap();
        disk.write(0, &[7; 16]).unwrap();
        assert!(disk.sync_data().is_err(), "the third call meets the cut");
        assert!(disk.is_off());
        assert!(disk.len().is_err());
        disk.restore(1);
        assert!(!disk.is_off());
        assert!(disk.len().is_ok(), "power is back after the restore");
    }

    /// The simulation's crash, on redb itself: every commit made with `Durability::Immediate`
    /// before a power cut that strikes in the middle of later commits is there after the
    /// restart, whatever the seed makes of the unsynced writes; redb opens the crashed file.
    #[test]
    fn redb_keeps_every_immediate_commit_across_power_cuts_mid_commit() {
        let mut damaged = 0;
        for seed in 0..40u64 {
            let disk = SimDisk::new();
            let db = open(&disk, seed);
            for key in 0..5 {
                put(&db, key, redb::Durability::Immediate).expect("commit");
            }
            disk.cut_after(seed % 13);
            let mut committed = (0..5).collect::<Vec<_>>();
            for key in 5..40 {
                if put(&db, key, redb::Durability::Immediate).is_ok() {
                    committed.push(key);
                } else {
                    break;
                }
            }
            let (db, loss) = crash_and_reopen(&disk, db, seed);
            damaged += loss.lost + loss.torn;
            let found = keys(&db);
            for key in &committed {
                assert!(
                    found.contains(key),
                    "seed {seed}: committed key {key} lost; found {found:?}"
                );
            }
            assert!(
                found.len() <= committed.len() + 1,
                "seed {seed}: more than the one in-flight commit appeared: {found:?}"
            );
        }
        assert!(
            damaged > 0,
            "no cut struck mid-commit: the test proved nothing"
        );
    }

    /// The other side: a commit that was never fsynced (`Durability::None`) can vanish, so the
    /// disk really does lose what was not synced.
    #[test]
    fn an_unsynced_commit_can_be_lost() {
        let mut lost = 0;
        for seed in 0..20u64 {
            let disk = SimDisk::new();
            let db = open(&disk, seed);
            put(&db, 1, redb::Durability::Immediate).expect("commit");
            put(&db, 2, redb::Durability::None).expect("commit");
            let (db, _) = crash_and_reopen(&disk, db, seed);
            let found = keys(&db);
            assert!(found.contains(&1), "seed {seed}: a synced commit was lost");
            if !found.contains(&2) {
                lost += 1;
            }
        }
        assert!(lost > 0, "no seed lost the unsynced commit");
    }

    /// Derivation's store defers its blocks' fsync to the cursor it writes after each L1 block,
    /// a cluster member's to its Raft log (`BlockDurability::Deferred`): a power cut keeps
    /// every block before the last fsynced write and the store's head is always a whole block;
    /// the blocks after it may be gone, at most `DEFERRED_BLOCKS_MAX` of them.
    #[test]
    fn deferred_blocks_reach_the_disk_with_the_next_fsynced_write() {
        use keel_primitives::{BlockWithReceipts, ChainSpec, SealedBlock};
        use keel_storage::{BlockDurability, StateChanges, Store};
        use std::sync::Arc;

        fn child_of(parent: &SealedBlock) -> SealedBlock {
            let header = alloy::consensus::Header {
                parent_hash: parent.hash,
                number: parent.number() + 1,
                timestamp: parent.header.timestamp + 1,
                ..parent.header.clone()
            };
            SealedBlock::new(header, Vec::new(), Vec::new())
        }

        /// A store on `disk` that defers its blocks' fsync.
        fn open_deferred(disk: &SimDisk, chain: &ChainSpec) -> Store {
            let store = Store::open_with_backend(disk.clone(), chain).expect("open");
            store.set_block_durability(BlockDurability::Deferred);
            store
        }

        /// Commits the child of the last of `blocks` and appends it, if the store takes it.
        fn try_commit_child(
            store: &Store,
            blocks: &mut Vec<SealedBlock>,
        ) -> keel_storage::Result<()> {
            let block = child_of(&blocks[blocks.len() - 1]);
            let applied = Arc::new(BlockWithReceipts::new(block.clone(), Vec::new()));
            store.commit_block(applied, &StateChanges::default())?;
            blocks.push(block);
            Ok(())
        }

        /// Commits the child of the last of `blocks` and appends it.
        fn commit_child(store: &Store, blocks: &mut Vec<SealedBlock>) {
            try_commit_child(store, blocks).expect("commit");
        }

        /// Cuts the power under `store` (a handle of it), then reopens what `disk` kept as
        /// `seed` decides.
        fn power_cut<S>(disk: &SimDisk, store: S, chain: &ChainSpec, seed: u64) -> Store {
            disk.cut();
            drop(store);
            disk.restore(seed);
            Store::open_with_backend(disk.clone(), chain)
                .unwrap_or_else(|error| panic!("seed {seed}: the store did not reopen: {error}"))
        }

        let chain = ChainSpec::dev();
        let mut lost = 0;
        for seed in 0..20u64 {
            let disk = SimDisk::new();
            let store = open_deferred(&disk, &chain);
            let mut blocks = vec![chain.genesis_block()];
            for number in 1..=6 {
                commit_child(&store, &mut blocks);
                if number == 3 {
                    store
                        .put_meta(&[("cursor", vec![3])])
                        .expect("fsynced write");
                }
            }
            let store = power_cut(&disk, store, &chain, seed);
            let snapshot = store.snapshot().expect("snapshot");
            let (head, hash) = snapshot.head();
            assert!(
                (3..=6).contains(&head),
                "seed {seed}: head {head}: a block before the fsynced write was lost"
            );
            assert_eq!(hash, blocks[head as usize].hash, "seed {seed}: head {head}");
            for number in 1..=head {
                assert_eq!(
                    snapshot.block_hash(number).expect("read"),
                    Some(blocks[number as usize].hash),
                    "seed {seed}: block {number} under head {head}"
                );
            }
            assert_eq!(
                snapshot.meta("cursor").expect("read"),
                Some(vec![3]),
                "seed {seed}"
            );
            if head < 6 {
                lost += 1;
            }
        }
        assert!(
            lost > 0,
            "no seed lost a deferred block: nothing was deferred"
        );

        // `Store::sync` (a clean stop, `keel recover`) is such a write, with nothing in it.
        for seed in 0..20u64 {
            let disk = SimDisk::new();
            let store = open_deferred(&disk, &chain);
            let mut blocks = vec![chain.genesis_block()];
            for _ in 0..3 {
                commit_child(&store, &mut blocks);
            }
            store.sync().expect("sync");
            commit_child(&store, &mut blocks);
            let store = power_cut(&disk, store, &chain, seed);
            let (head, hash) = store.snapshot().expect("snapshot").head();
            assert!(
                (3..=4).contains(&head),
                "seed {seed}: head {head}: a block before the sync was lost"
            );
            assert_eq!(hash, blocks[head as usize].hash, "seed {seed}: head {head}");
        }

        // With no other fsynced write (a cluster member between snapshots), every
        // `DEFERRED_BLOCKS_MAX`-th block in a row is fsynced once committed: a power cut after
        // its commit returned takes fewer. The same with that fsync on the store's own thread
        // (`Store::sync_in_background`, a cluster member's): the next commit waits for it.
        let max = keel_primitives::limits::DEFERRED_BLOCKS_MAX;
        for background in [false, true] {
            let mut lost = 0;
            for seed in 0..20u64 {
                let disk = SimDisk::new();
                let store = Arc::new(open_deferred(&disk, &chain));
                if background {
                    store.sync_in_background().expect("syncer thread");
                }
                let mut blocks = vec![chain.genesis_block()];
                for _ in 0..2 * max + 3 {
                    commit_child(&store, &mut blocks);
                }
                let store = power_cut(&disk, store, &chain, seed);
                let (head, hash) = store.snapshot().expect("snapshot").head();
                assert!(
                    (2 * max..=2 * max + 3).contains(&head),
                    "seed {seed}, background {background}: head {head}: more than the deferred blocks were lost"
                );
                assert_eq!(
                    hash, blocks[head as usize].hash,
                    "seed {seed}, background {background}: head {head}"
                );
                if head < 2 * max + 3 {
                    lost += 1;
                }
            }
            assert!(
                lost > 0,
                "background {background}: no seed lost a deferred block: nothing was deferred"
            );
        }

        // A background fsync that fails is not lost: the next commit and `Store::sync` return
        // it, so the node halts as for any database error.
        let disk = SimDisk::new();
        let store = Arc::new(open_deferred(&disk, &chain));
        store.sync_in_background().expect("syncer thread");
        let mut blocks = vec![chain.genesis_block()];
        for _ in 1..max {
            commit_child(&store, &mut blocks);
        }
        disk.cut();
        // The `DEFERRED_BLOCKS_MAX`-th commits without touching the disk; its fsync fails.
        commit_child(&store, &mut blocks);
        let refused = try_commit_child(&store, &mut blocks);
        assert!(
            matches!(refused, Err(keel_storage::StorageError::BackgroundSync(_))),
            "the commit after a failed background fsync: {refused:?}"
        );
        assert!(matches!(
            store.sync(),
            Err(keel_storage::StorageError::BackgroundSync(_))
        ));
    }
}
