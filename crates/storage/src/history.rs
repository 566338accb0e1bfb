//! State history: the state at any block of the window, without a copy of the state per block.
//!
//! ```text
//!   commit_block(N) ─► change_sets:      N ─► every key N wrote, with its value before N
//!                  └─► account_history:  keccak(address) ++ N ─► the account before N
//!                      storage_history:  keccak(address) ++ keccak(slot) ++ N ─► the slot before N
//!
//!   read key at block B < head ─► the first history entry of key after B ─► its "before" value
//!                                 (none after B: the key has not changed since; read the state)
//! ```
//!
//! This is Erigon's history table and reth's change set with its history index folded into one
//! table: the entries are keyed by the state key first, so a read at B is one range lookup (the
//! first entry at or after `key ++ B+1`), and carry the value before the block, so no second
//! lookup in the block's change set follows. The per-block change set stays beside it: it says
//! which keys a block wrote, which unwinding and pruning need and a key-first table cannot say.
//!
//! ### Correctness
//! - The store answers state reads at every block from the *floor* (`history_floor`) to the
//!   head, and at no block below it. Invariant: every block above the floor has its change set
//!   and, unless history is off, its history entries. A read at B uses only entries of blocks
//!   above B, so pruning block F (its change set and entries) leaves reads at F exact: after
//!   pruning through F, the floor is F.
//! - The entries of a block are written in the block's own write transaction, and removed in
//!   the transaction that unwinds it: a crash at any instant leaves the window consistent.
//! - A wiped account (destroyed, or created anew) has every slot it held in its change set, so
//!   each such slot gets its own entry: reads of storage never consult the wipe.
//! - A store imported from a state image (Raft catch-up by snapshot) knows no state before the
//!   image's head: its history starts there (floor = the image's head).

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

/// Writes the history entries of block `number`, whose change set is `reverse`.
pub(crate) fn record(tables: &mut WriteTables<'_>, number: u64, reverse: &ChangeSet) -> Result<()> {
    for (hashed_address, before) in &reverse.accounts {
        let key = account_key(hashed_address, number);
        match before {
            Some(record) => tables
                .account_history
                .insert(&key, record.encode().as_slice())?,
            None => tables.account_history.insert(&key, [].as_slice())?,
        };
    }
    for (hashed_address, hashed_slot, before) in &reverse.storage {
        tables.storage_history.insert(
            &storage_key(hashed_address, hashed_slot, number),
            &before.to_be_bytes::<32>(),
        )?;
    }
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

/// The account as it was at block `number`, if it changed after it: `Some(before)` from the
/// first entry after `number`; `None` when it has not changed since (the state holds it).
pub(crate) fn account_at(
    table: &impl ReadableTable<&'static [u8; 40], &'static [u8]>,
    hashed_address: &B256,
    number: u64,
) -> Result<Option<Option<AccountRecord>>> {
    let Some(after) = number.checked_add(1) else {
        return Ok(None);
    };
    let start = account_key(hashed_address, after);
    let end = account_key(hashed_address, u64::MAX);
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

/// The slot as it was at block `number`, if it changed after it (see [`account_at`]).
pub(crate) fn storage_at(
    table: &impl ReadableTable<&'static [u8; 72], &'static [u8; 32]>,
    hashed_address: &B256,
    hashed_slot: &B256,
    number: u64,
) -> Result<Option<U256>> {
    let Some(after) = number.checked_add(1) else {
        return Ok(None);
    };
    let start = storage_key(hashed_address, hashed_slot, after);
    let end = storage_key(hashed_address, hashed_slot, u64::MAX);
    let Some(entry) = table.range::<&[u8; 72]>(&start..=&end)?.next() else {
        return Ok(None);
    };
    let (_, value) = entry?;
    Ok(Some(U256::from_be_bytes(*value.value())))
}

/// Prunes the oldest blocks' change sets and history entries, up to `target` and at most
/// `max_blocks` of them; returns the highest block pruned so far (0: none).
///
/// ### Correctness
/// Runs in the caller's write transaction, so the entries, the change set and the two cursors
/// move together. The floor never goes down here, and a block above `target` is never touched.
pub(crate) fn prune(tables: &mut WriteTables<'_>, target: u64, max_blocks: u64) -> Result<u64> {
    let mut pruned = tables.meta_u64(HISTORY_PRUNED_KEY)?.unwrap_or(0);
    let (head, _) = crate::read_head(&tables.meta)?;
    let last = target.min(head).min(pruned.saturating_add(max_blocks));
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

/// The error for a read below the floor, in the store's terms.
pub(crate) fn pruned(number: u64, floor: u64) -> StorageError {
    StorageError::StatePruned { number, floor }
}
