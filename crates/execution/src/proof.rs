//! EIP-1186 proofs (`eth_getProof`): an account's path in the state trie and its slots' paths
//! in its storage trie, consistent with the block's `stateRoot`.
//!
//! ```text
//!   state trie:   every bucket by its cached branch hash, but the target's bucket by its
//!                 accounts (one walk of the bucket), or every account when no cache describes
//!                 the head ─► alloy-trie HashBuilder with a ProofRetainer on the target
//!   storage trie: every slot of the account ─► HashBuilder with a retainer on the slots
//! ```
//!
//! ### Correctness
//! The root the proof builder computes is checked against the state root of the block the
//! view reads: a proof that would not verify is never served.

use crate::state::StateReadError;
use alloy::consensus::EMPTY_ROOT_HASH;
use alloy::consensus::constants::KECCAK_EMPTY;
use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use keel_primitives::{AccountRecord, trie};
use keel_storage::Snapshot;

/// An account with the proofs of it and of some of its slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountProof {
    /// The account (`None`: absent; its proof shows where its path leaves the trie).
    pub account: Option<AccountRecord>,
    /// The nodes from the state root down to the account.
    pub account_proof: Vec<Bytes>,
    /// Each asked slot: its value and the nodes from the storage root down to it.
    pub storage: Vec<(B256, U256, Vec<Bytes>)>,
}

/// Proves `address` and its `slots` in the state `view` reads, whose block has `state_root`.
pub fn account_proof(
    view: &Snapshot,
    state_root: B256,
    address: &Address,
    slots: &[B256],
) -> Result<AccountProof, StateReadError> {
    let hashed = keccak256(address);
    let account = view.account_hashed(&hashed)?;
    let proof = match view.account_buckets() {
        Some(cache) => {
            let mut root = trie::RootBuilder::with_proofs(&[hashed]);
            let target = trie::bucket_index(&hashed, cache.depth);
            let mut members = Vec::new();
            for (index, cached) in cache.buckets.iter().enumerate() {
                if index == target || *cached == trie::Bucket::Leaves {
                    let (first, last) = trie::bucket_range(index, cache.depth);
                    members.clear();
                    for entry in view.accounts_in(&first, &last)? {
                        members.push(entry?);
                    }
                    root.add_bucket(index, cache.depth, trie::Bucket::Leaves, &members);
                } else {
                    root.add_bucket(index, cache.depth, *cached, &[]);
                }
            }
            root.proof()
        }
        None => {
            let mut root = trie::RootBuilder::with_proofs(&[hashed]);
            for entry in view.accounts()? {
                let (key, record) = entry?;
                root.add_account(&key, &record);
            }
            root.proof()
        }
    };
    if proof.root != state_root {
        return Err(StateReadError(format!(
            "the state trie's root {} is not the block's state root {state_root}",
            proof.root
        )));
    }
    let hashed_slots: Vec<B256> = slots.iter().map(keccak256).collect();
    let storage_root = account.map_or(EMPTY_ROOT_HASH, |account| account.storage_root);
    let mut storage = Vec::with_capacity(slots.len());
    if storage_root == EMPTY_ROOT_HASH {
        storage.extend(slots.iter().map(|slot| (*slot, U256::ZERO, Vec::new())));
    } else {
        let mut all = Vec::new();
        for entry in view.storage_slots(&hashed)? {
            all.push(entry?);
        }
        let storage_proof = trie::storage_proof(all, &hashed_slots);
        if storage_proof.root != storage_root {
            return Err(StateReadError(format!(
                "the storage trie's root {} is not the account's storage root {storage_root}",
                storage_proof.root
            )));
        }
        for (slot, hashed_slot) in slots.iter().zip(&hashed_slots) {
            let value = view.storage_hashed(&hashed, hashed_slot)?;
            storage.push((*slot, value, storage_proof.path(hashed_slot)));
        }
    }
    Ok(AccountProof {
        account,
        account_proof: proof.path(&hashed),
        storage,
    })
}

/// The code hash EIP-1186 reports for an account (`KECCAK_EMPTY` when absent).
pub fn code_hash(account: Option<&AccountRecord>) -> B256 {
    account.map_or(KECCAK_EMPTY, |account| account.code_hash)
}
