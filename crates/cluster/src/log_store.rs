//! The Raft log and vote, in a redb file of their own next to the chain.
//!
//! ### Correctness (openraft's storage contract)
//! Every write (entries, vote, purge, truncation) is one redb transaction committed with
//! `Durability::Immediate`: fsynced before the call returns, so the flush callback of
//! [`RaftLogStorage::append`] fires only for entries on disk. So is the committed log id,
//! which openraft makes optional (`save_committed`, called before the entries up to it are
//! applied): the chain store defers its blocks' fsync (`BlockDurability::Deferred`), so after
//! a crash openraft applies again, before the node serves anything, every entry up to it, and
//! the node comes back at a head at least as high as any it served. Entries are stored by index in
//! keel's binary codec (`codec`; blocks inside as their RLP, see `Proposal`).
//! - The committed log id is fsynced only when the entries it newly commits include one other
//!   than an intake entry (a block, a replacement, a membership change): those are what the
//!   chain store applied and may have lost with its deferred fsync. An intake entry writes
//!   nothing to the chain store, so a committed id that lost only intake entries to a crash
//!   costs nothing: the entries stay in this log (appends are fsynced), the pool refills from
//!   it, and Raft commits them again. The id is then written without an fsync; the next
//!   fsynced write of this log (any append) carries it. At 2,000 transfers/s this takes about
//!   one fsync in two off each node (an intake entry commits every few ms, a block every
//!   block time) and one off the leader's answer to each send.
//! - An index of the intake entries (index → encoded size) is written in the same transaction
//!   as the entries, truncated and purged with them: a restart finds the intake entries it
//!   must give back to the pool without decoding every block in the log
//!   ([`LogStore::intake_entries`], used by `StateMachine::refill_pool`).

use crate::{IntakeTransaction, NodeId, Proposal, TypeConfig};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, EntryPayload, LogId, LogState, RaftLogId, RaftLogReader, StorageError, StorageIOError,
    Vote,
};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

/// Index → entry.
const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_logs");
/// Index of an intake entry → its encoded size.
const INTAKE: TableDefinition<u64, u64> = TableDefinition::new("raft_intake");
/// Vote, committed id, last purged id.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

type StorageResult<T> = Result<T, StorageError<NodeId>>;

fn read_error(error: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_logs(&error).into()
}

fn write_error(error: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_logs(&error).into()
}

/// Entries a committed id may pass without an fsync, all of them intake entries, since the
/// last committed id written with one: bounds the index read that checks them.
const COMMITTED_UNSYNCED_ENTRIES_MAX: u64 = 4_096;

/// The log store. Clones share one database (the log reader is a clone).
#[derive(Debug, Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// The index of the committed log id last written with an fsync (or found on disk at open).
    synced_committed: Arc<parking_lot::Mutex<Option<u64>>>,
}

impl LogStore {
    /// Opens (or creates) the log at `path`.
    pub fn open(path: &Path) -> Result<Self, redb::Error> {
        Self::init(Database::create(path)?)
    }

    /// [`LogStore::open`] on storage of the caller's own instead of a file (the deterministic
    /// simulation's disk).
    pub fn open_with_backend(backend: impl redb::StorageBackend) -> Result<Self, redb::Error> {
        Self::init(Database::builder().create_with_backend(backend)?)
    }

    fn init(db: Database) -> Result<Self, redb::Error> {
        let txn = db.begin_write()?;
        txn.open_table(LOGS)?;
        txn.open_table(INTAKE)?;
        txn.open_table(META)?;
        txn.commit()?;
        let store = Self {
            db: Arc::new(db),
            synced_committed: Arc::default(),
        };
        // What is on disk at open is durable, however it was written.
        let on_disk = store
            .read_meta::<Option<LogId<NodeId>>>(COMMITTED)
            .map_err(|error| redb::Error::Corrupted(format!("raft_meta committed: {error}")))?
            .flatten();
        *store.synced_committed.lock() = on_disk.map(|id| id.index);
        Ok(store)
    }

    /// Whether every entry after `since` up to `up_to` is an intake entry, and there are at
    /// most [`COMMITTED_UNSYNCED_ENTRIES_MAX`] of them.
    fn only_intake_between(&self, since: u64, up_to: u64) -> StorageResult<bool> {
        if up_to <= since {
            return Ok(true);
        }
        let span = up_to - since;
        if span > COMMITTED_UNSYNCED_ENTRIES_MAX {
            return Ok(false);
        }
        let txn = self.db.begin_read().map_err(read_error)?;
        let index = txn.open_table(INTAKE).map_err(read_error)?;
        let intake = index.range(since + 1..=up_to).map_err(read_error)?.count() as u64;
        Ok(intake == span)
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> StorageResult<Option<T>> {
        let txn = self.db.begin_read().map_err(read_error)?;
        let table = txn.open_table(META).map_err(read_error)?;
        let Some(guard) = table.get(key).map_err(read_error)? else {
            return Ok(None);
        };
        crate::codec::decode(guard.value())
            .map(Some)
            .map_err(read_error)
    }

    fn write(
        &self,
        apply: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> StorageResult<()> {
        self.write_with(Durability::Immediate, apply)
    }

    fn write_with(
        &self,
        durability: Durability,
        apply: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> StorageResult<()> {
        let mut txn = self.db.begin_write().map_err(write_error)?;
        txn.set_durability(durability).map_err(write_error)?;
        apply(&txn).map_err(write_error)?;
        txn.commit().map_err(write_error)
    }

    fn write_meta<T: serde::Serialize>(
        &self,
        durability: Durability,
        key: &'static str,
        value: &T,
    ) -> StorageResult<()> {
        let bytes = crate::codec::encode(value).map_err(write_error)?;
        self.write_with(durability, |txn| {
            txn.open_table(META)?.insert(key, bytes.as_slice())?;
            Ok(())
        })
    }

    /// Writes `entries` (and their intake index) in one fsynced transaction.
    fn append_now(
        &self,
        entries: impl IntoIterator<Item = Entry<TypeConfig>>,
    ) -> StorageResult<()> {
        let mut encoded = Vec::new();
        for entry in entries {
            let bytes = crate::codec::encode(&entry).map_err(write_error)?;
            let intake = matches!(entry.payload, EntryPayload::Normal(Proposal::Intake(_)));
            encoded.push((entry.get_log_id().index, bytes, intake));
        }
        self.write(|txn| {
            let mut table = txn.open_table(LOGS)?;
            let mut intake = txn.open_table(INTAKE)?;
            for (index, bytes, is_intake) in &encoded {
                table.insert(*index, bytes.as_slice())?;
                // An entry appended over a truncated one replaces it in the index too.
                if *is_intake {
                    intake.insert(*index, bytes.len() as u64)?;
                } else {
                    intake.remove(*index)?;
                }
            }
            Ok(())
        })
    }

    /// The intake entries at or below `up_to`, oldest first: the newest ones whose encoded
    /// sizes add up to at most `bytes_max` (at least the newest one, if any). A restarted node
    /// gives their transactions back to its pool.
    pub fn intake_entries(
        &self,
        up_to: u64,
        bytes_max: u64,
    ) -> StorageResult<Vec<(LogId<NodeId>, Vec<IntakeTransaction>)>> {
        let txn = self.db.begin_read().map_err(read_error)?;
        let index = txn.open_table(INTAKE).map_err(read_error)?;
        let mut chosen = Vec::new();
        let mut bytes = 0u64;
        for item in index.range(..=up_to).map_err(read_error)?.rev() {
            let (at, size) = item.map_err(read_error)?;
            bytes = bytes.saturating_add(size.value());
            if bytes > bytes_max && !chosen.is_empty() {
                break;
            }
            chosen.push(at.value());
        }
        let logs = txn.open_table(LOGS).map_err(read_error)?;
        let mut entries = Vec::with_capacity(chosen.len());
        for at in chosen.into_iter().rev() {
            let Some(value) = logs.get(at).map_err(read_error)? else {
                continue; // not reached: the index and the log change in one transaction
            };
            let entry: Entry<TypeConfig> =
                crate::codec::decode(value.value()).map_err(read_error)?;
            if let EntryPayload::Normal(Proposal::Intake(transactions)) = entry.payload {
                entries.push((entry.log_id, transactions));
            }
        }
        Ok(entries)
    }

    fn last_entry_id(&self) -> StorageResult<Option<LogId<NodeId>>> {
        let txn = self.db.begin_read().map_err(read_error)?;
        let table = txn.open_table(LOGS).map_err(read_error)?;
        let Some((_, value)) = table.last().map_err(read_error)? else {
            return Ok(None);
        };
        let entry: Entry<TypeConfig> = crate::codec::decode(value.value()).map_err(read_error)?;
        Ok(Some(*entry.get_log_id()))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(start) => *start,
            Bound::Excluded(start) => start.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(end) => Some(*end),
            Bound::Excluded(0) => return Ok(Vec::new()),
            Bound::Excluded(end) => Some(end - 1),
            Bound::Unbounded => None,
        };
        let txn = self.db.begin_read().map_err(read_error)?;
        let table = txn.open_table(LOGS).map_err(read_error)?;
        let mut entries = Vec::new();
        let iter = match end {
            Some(end) if end < start => return Ok(entries),
            Some(end) => table.range(start..=end),
            None => table.range(start..),
        }
        .map_err(read_error)?;
        for item in iter {
            let (_, value) = item.map_err(read_error)?;
            entries.push(crate::codec::decode(value.value()).map_err(read_error)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged_log_id = self.read_meta::<LogId<NodeId>>(LAST_PURGED)?;
        let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        self.write_meta(Durability::Immediate, VOTE, vote)
            .map_err(|error| {
                StorageIOError::write_vote(&std::io::Error::other(error.to_string())).into()
            })
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        self.read_meta(VOTE)
    }

    /// Fsynced when it commits an entry other than an intake entry. openraft calls it before
    /// it applies the entries up to `committed`, and the chain store defers its blocks' fsync
    /// to this log (`BlockDurability::Deferred`): after a crash, `Raft::new` applies again
    /// every entry up to the last fsynced id before the node serves, so the node never comes
    /// back below a head it served. Intake entries change no head (module docs), so an id that
    /// passes only those is written without an fsync. (When the store fsynced every block,
    /// no id was fsynced: that fsync, one per commit, was measured at 4% of the leader's time
    /// at 2,000 transfers a second.)
    ///
    /// ### Correctness
    /// Every entry the state machine records as applied in the chain store (all but intake
    /// entries) is at or below an id written here with an fsync before it applied: a crash
    /// loses no applied position `Raft::new` must reach again.
    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        let mut synced = self.synced_committed.lock();
        let intake_only = match (committed, *synced) {
            (Some(id), Some(since)) => self.only_intake_between(since, id.index)?,
            _ => false,
        };
        if intake_only {
            return self.write_meta(Durability::None, COMMITTED, &committed);
        }
        self.write_meta(Durability::Immediate, COMMITTED, &committed)?;
        *synced = committed.map(|id| id.index);
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self
            .read_meta::<Option<LogId<NodeId>>>(COMMITTED)?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        self.append_now(entries)?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.write(|txn| {
            txn.open_table(LOGS)?
                .retain_in(log_id.index.., |_, _| false)?;
            txn.open_table(INTAKE)?
                .retain_in(log_id.index.., |_, _| false)?;
            Ok(())
        })
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let bytes = crate::codec::encode(&log_id).map_err(write_error)?;
        self.write(|txn| {
            txn.open_table(LOGS)?
                .retain_in(..=log_id.index, |_, _| false)?;
            txn.open_table(INTAKE)?
                .retain_in(..=log_id.index, |_, _| false)?;
            txn.open_table(META)?
                .insert(LAST_PURGED, bytes.as_slice())?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// redb's in-memory storage, counting its fsyncs.
    #[derive(Debug, Default)]
    struct CountingDisk {
        inner: redb::backends::InMemoryBackend,
        syncs: Arc<AtomicU64>,
    }

    impl redb::StorageBackend for CountingDisk {
        fn len(&self) -> Result<u64, std::io::Error> {
            self.inner.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
            self.inner.read(offset, out)
        }
        fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
            self.inner.set_len(len)
        }
        fn sync_data(&self) -> Result<(), std::io::Error> {
            self.syncs.fetch_add(1, Ordering::SeqCst);
            self.inner.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
            self.inner.write(offset, data)
        }
    }

    fn entry(index: u64, intake: bool) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: if intake {
                EntryPayload::Normal(Proposal::Intake(Vec::new()))
            } else {
                EntryPayload::Blank
            },
        }
    }

    fn id(index: u64) -> Option<LogId<NodeId>> {
        Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), index))
    }

    /// I2 after a crash of a member with a deferred chain store: a committed id is fsynced
    /// whenever it passes an entry the chain store applies (here a blank one, as a block),
    /// and only then; one that passes only intake entries is not.
    #[test]
    fn i2_the_committed_id_is_fsynced_when_it_passes_anything_but_intake() {
        let disk = CountingDisk::default();
        let syncs = disk.syncs.clone();
        let mut log = LogStore::open_with_backend(disk).expect("open");
        log.append_now([
            entry(1, false),
            entry(2, true),
            entry(3, true),
            entry(4, false),
            entry(5, true),
        ])
        .expect("append");
        let fsynced = |log: &mut LogStore, index: u64| {
            let before = syncs.load(Ordering::SeqCst);
            futures::executor::block_on(log.save_committed(id(index))).expect("save");
            assert_eq!(
                futures::executor::block_on(log.read_committed()).expect("read"),
                id(index)
            );
            syncs.load(Ordering::SeqCst) > before
        };
        assert!(
            fsynced(&mut log, 1),
            "the first committed id, over a blank entry"
        );
        assert!(!fsynced(&mut log, 2), "an intake entry alone");
        assert!(
            !fsynced(&mut log, 3),
            "intake entries since the last fsynced id"
        );
        assert!(fsynced(&mut log, 5), "a run that holds the blank entry 4");
        assert!(!fsynced(&mut log, 5), "the same id again");
        assert_eq!(*log.synced_committed.lock(), Some(5));
    }

    /// The check that lets an id skip its fsync reads at most
    /// `COMMITTED_UNSYNCED_ENTRIES_MAX` index entries: past that, the id is fsynced.
    #[test]
    fn a_long_run_of_intake_entries_is_fsynced_past_the_limit() {
        let log = LogStore::open_with_backend(CountingDisk::default()).expect("open");
        let count = COMMITTED_UNSYNCED_ENTRIES_MAX + 1;
        log.append_now((1..=count).map(|index| entry(index, true)))
            .expect("append");
        assert!(log.only_intake_between(0, count - 1).expect("read"));
        assert!(!log.only_intake_between(0, count).expect("read"));
        assert!(log.only_intake_between(3, 3).expect("read"));
    }
}
