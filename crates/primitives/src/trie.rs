//! Ethereum Merkle-Patricia roots over keel's values, computed with alloy-trie.
//!
//! Both functions take their leaves already sorted by hashed key, as storage iterates them, so
//! that no root computation sorts or allocates the whole set again.

use crate::AccountRecord;
use alloy::primitives::{B256, U256};
use alloy::rlp::Encodable;
use alloy_trie::{EMPTY_ROOT_HASH, HashBuilder, Nibbles};

/// Root of one account's storage trie from `(keccak(slot), value)` pairs sorted by key.
/// Zero values must not be passed: a zero slot is absent from the trie.
pub fn storage_root_sorted(slots: impl IntoIterator<Item = (B256, U256)>) -> B256 {
    let mut builder = HashBuilder::default();
    let mut value = Vec::with_capacity(33);
    let mut any = false;
    for (hashed_slot, slot_value) in slots {
        debug_assert!(
            !slot_value.is_zero(),
            "zero storage values are not in the trie"
        );
        value.clear();
        slot_value.encode(&mut value);
        builder.add_leaf(Nibbles::unpack(hashed_slot), &value);
        any = true;
    }
    if any { builder.root() } else { EMPTY_ROOT_HASH }
}

/// Root of the state trie from `(keccak(address), account)` pairs sorted by key.
pub fn state_root_sorted(accounts: impl IntoIterator<Item = (B256, AccountRecord)>) -> B256 {
    let mut builder = HashBuilder::default();
    let mut value = Vec::with_capacity(110);
    let mut any = false;
    for (hashed_address, account) in accounts {
        value.clear();
        account.trie_account().encode(&mut value);
        builder.add_leaf(Nibbles::unpack(hashed_address), &value);
        any = true;
    }
    if any { builder.root() } else { EMPTY_ROOT_HASH }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::keccak256;

    #[test]
    fn matches_alloy_trie_reference_roots() {
        let mut slots: Vec<(B256, U256)> = (1u64..50)
            .map(|i| (keccak256(B256::from(U256::from(i))), U256::from(i * 1000)))
            .collect();
        slots.sort_by_key(|(key, _)| *key);
        assert_eq!(
            storage_root_sorted(slots.clone()),
            alloy_trie::root::storage_root(slots.clone())
        );
        let mut accounts: Vec<(B256, AccountRecord)> = (1u64..50)
            .map(|i| {
                let record = AccountRecord {
                    nonce: i,
                    balance: U256::from(i),
                    ..Default::default()
                };
                (keccak256(B256::from(U256::from(i))), record)
            })
            .collect();
        accounts.sort_by_key(|(key, _)| *key);
        let reference = alloy_trie::root::state_root(
            accounts
                .iter()
                .map(|(key, record)| (*key, record.trie_account())),
        );
        assert_eq!(state_root_sorted(accounts), reference);
        assert_eq!(state_root_sorted(Vec::new()), EMPTY_ROOT_HASH);
    }
}
