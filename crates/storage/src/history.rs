//! State history: the state at any block of the window, without a copy of the state per block.
//!
//! ```text
//!   commit_block(N) ─► change_sets:      N ─► every key N wrote, with its value before N
//!   index(through T) ─► account_history: keccak(address) ++ N ─► the account before N
//!   (blocks up to T)    storage_history: keccak(address) ++ keccak(slot) ++ N ─► the slot before N
//!
//!   read key at block B < head ─► the first index entry of key after B, up to the cursor
//!                              └► else the first change of key in the change sets above the
//!                                 cursor (decoded once per read view)
//!                              └► else the key has not changed since: read the state
//! ```
//!
//! This is Erigon's history table and reth's change set with its history index folded into one
//! table: the entries are keyed by the state key first, so a read at B is one range lookup (the
//! first entry at or after `key ++ B+1`), and carry the value before the block, so no second
//! lookup in the block's change set follows. The per-block change set stays beside it: it says
//! which keys a block wrote, which unwinding and pruning need and a key-first table cannot say.
//!
//! The index is written in batches (reth's history indexing stage does the same after its
//! execution stage): its keys fall at random in a large table, and redb copies every leaf an
//! insert touches once per write transaction. A block of 500 transfers touched about a
//! thousand leaves, half of its commit; a batch of 16 such blocks touches each changed
//! account's leaf once. Blocks committed every one fsynced index in their own commit; a
//! deferred store indexes in the fsynced write after every `DEFERRED_BLOCKS_MAX`-th block, off
//! the apply path when that write runs in the background (`background.rs`).
//!
//! ### Correctness
//! - The store answers state reads at every block from the *floor* (`history_floor`) to the
//!   head, and at no block below it. Invariant: every block above the floor has its change set,
//!   and, unless history is off, its index entries if it is at or below the *cursor*
//!   (`history_indexed`); no block above the cursor has entries, and at most
//!   `HISTORY_UNINDEXED_BLOCKS_MAX` blocks are above it. A read at B uses only entries and
//!   change sets of blocks above B, so pruning block F (its change set and entries) leaves
//!   reads at F exact: after pruning through F, the floor is F. Pruning stops at the cursor.
//! - The entries of a batch and the cursor move in one write transaction; a block's entries
//!   are removed in the transaction that unwinds it, which lowers the cursor: a crash at any
//!   instant leaves the window consistent.
//! - A wiped account (destroyed, or created anew) has every slot it held in its change set, so
//!   each such slot gets its own entry: reads of storage never consult the wipe.
//! - A store imported from a state image (Raft catch-up by snapshot) knows no state before the
//!   image's head: its history starts there (floor = cursor = the image's head).

use crate::change_set::ChangeSet;
use crate::tables::*;
use crate::{Result, StorageError};
use alloy::primitives::{B256, U256};
use keel_primitives::AccountRecord;
use redb::ReadableTable;

/// How much state history a store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateHistory {
    /// Every block's state, from the genesis (or from where history began) on: an archive.
    Archive,
    /// The state of the last `blocks` blocks besides the head (`--state-history-blocks N`);
    /// older history is pruned in the background, never above the finalized block (an unwind
    /// may still need it). `Window(0)` keeps the head's state only and writes no history.
    Window(u64),
}

impl StateHistory {
    /// Whether blocks write history entries.
    pub fn records(self) -> bool {
        self != Self::Window(0)
    }

    /// The highest block the pruner may remove, with `head` and `finalized` as they are: the
    /// window's edge, never above the finalized block; `None` for an archive.
    pub fn prune_target(self, head: u64, finalized: u64) -> Option<u64> {
        match self {
            Self::Archive => None,
            Self::Window(blocks) => Some(head.saturating_sub(blocks).min(finalized)),
        }
    }
}

pub(crate) fn account_key(hashed_address: &B256, number: u64) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..32].copy_from_slice(hashed_address.as_slice());
    key[32..].copy_from_slice(&number.to_be_bytes());
    key
}

pub(crate) fn storage_key(hashed_address: &B256, hashed_slot: &B256, number: u64) -> [u8; 72] {
    let mut key = [0u8; 72];
    key[..32].copy_from_slice(hashed_address.as_slice());
    key[32..64].copy_from_slice(hashed_slot.as_slice());
    key[64..].copy_from_slice(&number.to_be_bytes());
    key
}

/// Writes the index entries of every block above the cursor up to `through` (and moves the
/// cursor there), in ascending key order; `latest` is the change set of `through` when the
/// caller has it decoded.
pub(crate) fn index(
    tables: &mut WriteTables<'_>,
    through: u64,
    latest: Option<&ChangeSet>,
) -> Result<()> {
    let indexed = indexed(&tables.meta, through)?;
    if indexed >= through {
        return Ok(());
    }
    let mut accounts: Vec<([u8; 40], Option<AccountRecord>)> = Vec::new();
    let mut storage: Vec<([u8; 72], U256)> = Vec::new();
    let mut add = |number: u64, reverse: &ChangeSet| {
        for (hashed_address, before) in &reverse.accounts {
            accounts.push((account_key(hashed_address, number), *before));
        }
        for (hashed_address, hashed_slot, before) in &reverse.storage {
            storage.push((storage_key(hashed_address, hashed_slot, number), *before));
        }
    };
    for number in indexed + 1..=through {
        match latest {
            Some(reverse) if number == through => add(number, reverse),
            _ => {
                let guard = tables.change_sets.get(number)?.ok_or_else(|| {
                    StorageError::Corrupt(format!(
                        "block {number} above the history cursor {indexed} has no change set"
                    ))
                })?;
                add(number, &ChangeSet::decode(guard.value())?);
            }
        }
    }
    // In key order, each leaf is reached once and its neighbours' path is still cached.
    accounts.sort_unstable_by_key(|entry| entry.0);
    storage.sort_unstable_by_key(|entry| entry.0);
    for (key, before) in &accounts {
        match before {
            Some(record) => tables
                .account_history
                .insert(key, record.encode().as_slice())?,
            None => tables.account_history.insert(key, [].as_slice())?,
        };
    }
    for (key, before) in &storage {
        tables
            .storage_history
            .insert(key, &before.to_be_bytes::<32>())?;
    }
    tables.put_meta_u64(HISTORY_INDEXED_KEY, through)?;
    Ok(())
}

/// Removes the history entries of block `number`, whose change set is `reverse` (unwinding
/// or pruning it).
pub(crate) fn erase(tables: &mut WriteTables<'_>, number: u64, reverse: &ChangeSet) -> Result<()> {
    for (hashed_address, _) in &reverse.accounts {
        tables
            .account_history
            .remove(&account_key(hashed_address, number))?;
    }
    for (hashed_address, hashed_slot, _) in &reverse.storage {
        tables
            .storage_history
            .remove(&storage_key(hashed_address, hashed_slot, number))?;
    }
    Ok(())
}

/// The account as it was at block `number`, if an indexed block after it changed it:
/// `Some(before)` from the first entry after `number`, up to the cursor `indexed`; `None` when
/// none did (a block above the cursor may have: see the change sets).
pub(crate) fn account_at(
    table: &impl ReadableTable<&'static [u8; 40], &'static [u8]>,
    hashed_address: &B256,
    number: u64,
    indexed: u64,
) -> Result<Option<Option<AccountRecord>>> {
    if number >= indexed {
        return Ok(None);
    }
    let start = account_key(hashed_address, number + 1);
    let end = account_key(hashed_address, indexed);
    let Some(entry) = table.range::<&[u8; 40]>(&start..=&end)?.next() else {
        return Ok(None);
    };
    let (_, value) = entry?;
    let bytes = value.value();
    if bytes.is_empty() {
        return Ok(Some(None));
    }
    Ok(Some(Some(AccountRecord::decode(bytes)?)))
}

/// The slot as it was at block `number`, if an indexed block after it changed it (see
/// [`account_at`]).
pub(crate) fn storage_at(
    table: &impl ReadableTable<&'static [u8; 72], &'static [u8; 32]>,
    hashed_address: &B256,
    hashed_slot: &B256,
    number: u64,
    indexed: u64,
) -> Result<Option<U256>> {
    if number >= indexed {
        return Ok(None);
    }
    let start = storage_key(hashed_address, hashed_slot, number + 1);
    let end = storage_key(hashed_address, hashed_slot, indexed);
    let Some(entry) = table.range::<&[u8; 72]>(&start..=&end)?.next() else {
        return Ok(None);
    };
    let (_, value) = entry?;
    Ok(Some(U256::from_be_bytes(*value.value())))
}

/// Prunes the oldest blocks' change sets and history entries, up to `target` and the index's
/// cursor and at most `max_blocks` of them; returns the highest block pruned so far (0: none).
///
/// ### Correctness
/// Runs in the caller's write transaction, so the entries, the change set and the cursors
/// move together. The floor never goes down here, and a block above `target` or the index's
/// cursor is never touched (indexing needs the change sets above the cursor).
pub(crate) fn prune(tables: &mut WriteTables<'_>, target: u64, max_blocks: u64) -> Result<u64> {
    let mut pruned = tables.meta_u64(HISTORY_PRUNED_KEY)?.unwrap_or(0);
    let (head, _) = crate::read_head(&tables.meta)?;
    let indexed = indexed(&tables.meta, head)?;
    let last = target
        .min(head)
        .min(indexed)
        .min(pruned.saturating_add(max_blocks));
    while pruned < last {
        let number = pruned + 1;
        let reverse = tables
            .change_sets
            .remove(number)?
            .map(|guard| ChangeSet::decode(guard.value()))
            .transpose()?;
        if let Some(reverse) = reverse {
            erase(tables, number, &reverse)?;
        }
        pruned = number;
    }
    tables.put_meta_u64(HISTORY_PRUNED_KEY, pruned)?;
    let floor = tables.meta_u64(HISTORY_FLOOR_KEY)?.unwrap_or(0);
    if pruned > floor {
        tables.put_meta_u64(HISTORY_FLOOR_KEY, pruned)?;
    }
    Ok(pruned)
}

/// The floor below which no state is served, read in a read transaction.
pub(crate) fn floor(meta: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<u64> {
    meta.get(HISTORY_FLOOR_KEY)?
        .map(|guard| decode_u64(HISTORY_FLOOR_KEY, guard.value()))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// The index's cursor; `head` for a store that has none (one written before the index was
/// batched indexed every block in its commit).
pub(crate) fn indexed(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    head: u64,
) -> Result<u64> {
    meta.get(HISTORY_INDEXED_KEY)?
        .map(|guard| decode_u64(HISTORY_INDEXED_KEY, guard.value()))
        .transpose()
        .map(|indexed| indexed.unwrap_or(head))
}

/// The error for a read below the floor, in the store's terms.
pub(crate) fn pruned(number: u64, floor: u64) -> StorageError {
    StorageError::StatePruned { number, floor }
}
