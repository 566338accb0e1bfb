//! Ethereum Merkle-Patricia roots over keel's values, computed with alloy-trie.
//!
//! Both functions take their leaves already sorted by hashed key, as storage iterates them, so
//! that no root computation sorts or allocates the whole set again.

use crate::AccountRecord;
use alloy::primitives::Bytes;
use alloy::primitives::{B256, U256};
use alloy::rlp::Encodable;
use alloy_trie::proof::{ProofNodes, ProofRetainer};
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

/// A trie's root with the nodes on the paths to some keys: what EIP-1186's `eth_getProof`
/// answers (the nodes from the root down, each RLP-encoded; for a key absent from the trie,
/// the nodes down to where its path leaves the trie).
#[derive(Debug, Clone)]
pub struct TrieProof {
    /// The trie's root.
    pub root: B256,
    nodes: ProofNodes,
}

impl TrieProof {
    /// The proof of `key` (one of the keys the proof was built for), root first.
    pub fn path(&self, key: &B256) -> Vec<Bytes> {
        self.nodes
            .matching_nodes_sorted(&Nibbles::unpack(key))
            .into_iter()
            .map(|(_, node)| node)
            .collect()
    }
}

/// The storage trie of `(keccak(slot), value)` pairs sorted by key (no zero values) with the
/// proofs of the slots `targets`.
pub fn storage_proof(slots: impl IntoIterator<Item = (B256, U256)>, targets: &[B256]) -> TrieProof {
    let retainer = ProofRetainer::new(targets.iter().map(Nibbles::unpack).collect());
    let mut builder = HashBuilder::default().with_proof_retainer(retainer);
    let mut value = Vec::with_capacity(33);
    let mut any = false;
    for (hashed_slot, slot_value) in slots {
        value.clear();
        slot_value.encode(&mut value);
        builder.add_leaf(Nibbles::unpack(hashed_slot), &value);
        any = true;
    }
    let root = if any { builder.root() } else { EMPTY_ROOT_HASH };
    TrieProof {
        root,
        nodes: builder.take_proof_nodes(),
    }
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

/// The most nibbles a bucket prefix has: 16^4 = 65,536 buckets.
pub const BUCKET_DEPTH_MAX: usize = 4;

/// The bucket depth for a state of `accounts` accounts: about four or more accounts per
/// bucket, so that nearly every bucket branches right below its prefix and can be cached.
pub fn bucket_depth_for(accounts: usize) -> usize {
    let mut depth = 0;
    while depth < BUCKET_DEPTH_MAX && 4 * 16usize.pow(depth as u32 + 1) <= accounts {
        depth += 1;
    }
    depth
}

/// The bucket (the first `depth` nibbles, as a number) of a hashed key.
pub fn bucket_index(hashed: &B256, depth: usize) -> usize {
    if depth == 0 {
        return 0;
    }
    let prefix = u32::from_be_bytes(hashed[..4].try_into().expect("4 bytes"));
    (prefix >> (32 - 4 * depth as u32)) as usize
}

/// The first and last hashed keys of a bucket.
pub fn bucket_range(index: usize, depth: usize) -> (B256, B256) {
    let mut first = B256::ZERO;
    let mut last = B256::repeat_byte(0xff);
    if depth > 0 {
        let shift = 32 - 4 * depth as u32;
        let low = (index as u32) << shift;
        let high = low | ((1u64 << shift) - 1) as u32;
        first[..4].copy_from_slice(&low.to_be_bytes());
        last[..4].copy_from_slice(&high.to_be_bytes());
    }
    (first, last)
}

/// What one bucket of the account trie contributes to the state root.
///
/// ### Correctness
/// `Branch(hash)` is the hash of the branch node at exactly the bucket's path: the bucket's
/// keys differ at the first nibble after the prefix. Only then can the root builder take the
/// whole bucket as one hash (a node at that path that is a leaf or an extension would merge with
/// the nodes above it). Any other non-empty bucket is `Leaves`: its accounts are fed one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Bucket {
    /// No account has this prefix.
    #[default]
    Empty,
    /// The accounts branch right below the prefix; the branch node's hash.
    Branch(B256),
    /// The accounts do not branch right below the prefix (one account, or a longer shared
    /// prefix): fed as leaves.
    Leaves,
}

/// Summarises the sorted accounts of one bucket.
pub fn bucket_of(accounts: &[(B256, AccountRecord)], depth: usize) -> Bucket {
    match accounts {
        [] => Bucket::Empty,
        [_] => Bucket::Leaves,
        [first, .., last] => {
            let nibble = |key: &B256| Nibbles::unpack(key).get_unchecked(depth);
            if nibble(&first.0) == nibble(&last.0) {
                return Bucket::Leaves;
            }
            // With the prefix stripped, the keys branch at their first nibble: the root of their
            // trie is the bucket's branch node, whose children keep their relative paths.
            let mut builder = HashBuilder::default();
            let mut value = Vec::with_capacity(110);
            for (hashed, account) in accounts {
                value.clear();
                account.trie_account().encode(&mut value);
                builder.add_leaf(Nibbles::unpack(hashed).slice(depth..), &value);
            }
            Bucket::Branch(builder.root())
        }
    }
}

/// Builds the state root from buckets in ascending order, each either a cached branch hash or
/// its accounts.
#[derive(Debug, Default)]
pub struct RootBuilder {
    builder: HashBuilder,
    value: Vec<u8>,
    any: bool,
}

impl RootBuilder {
    /// A builder that also keeps the proofs of the accounts `targets` (hashed addresses): the
    /// bucket holding a target must be added by its accounts, not by its branch hash.
    pub fn with_proofs(targets: &[B256]) -> Self {
        let retainer = ProofRetainer::new(targets.iter().map(Nibbles::unpack).collect());
        Self {
            builder: HashBuilder::default().with_proof_retainer(retainer),
            ..Self::default()
        }
    }

    /// The root with the proofs the builder kept ([`RootBuilder::with_proofs`]).
    pub fn proof(mut self) -> TrieProof {
        // The root's computation emits the top nodes: take the proofs after it.
        let root = if self.any {
            self.builder.root()
        } else {
            EMPTY_ROOT_HASH
        };
        TrieProof {
            root,
            nodes: self.builder.take_proof_nodes(),
        }
    }

    /// Adds a bucket's branch node by hash.
    pub fn add_branch(&mut self, index: usize, depth: usize, hash: B256) {
        let path = Nibbles::unpack(bucket_range(index, depth).0).slice(..depth);
        self.builder.add_branch(path, hash, false);
        self.any = true;
    }

    /// Adds one account; accounts come in ascending hashed order.
    pub fn add_account(&mut self, hashed: &B256, account: &AccountRecord) {
        self.value.clear();
        account.trie_account().encode(&mut self.value);
        self.builder.add_leaf(Nibbles::unpack(hashed), &self.value);
        self.any = true;
    }

    /// Adds a bucket as its summary says, with its accounts at hand.
    pub fn add_bucket(
        &mut self,
        index: usize,
        depth: usize,
        bucket: Bucket,
        accounts: &[(B256, AccountRecord)],
    ) {
        match bucket {
            Bucket::Empty => {}
            Bucket::Branch(hash) => self.add_branch(index, depth, hash),
            Bucket::Leaves => {
                for (hashed, account) in accounts {
                    self.add_account(hashed, account);
                }
            }
        }
    }

    /// The root.
    pub fn root(mut self) -> B256 {
        if self.any {
            self.builder.root()
        } else {
            EMPTY_ROOT_HASH
        }
    }
}

#[cfg(test)]
mod bucket_tests {
    use super::*;
    use alloy::primitives::keccak256;

    /// Keys with many shared prefixes, so that every bucket shape occurs.
    fn clustered_key(seed: u64) -> B256 {
        let mut key = keccak256(seed.to_be_bytes());
        let alphabet = [0x00u8, 0x01, 0x10, 0x11, 0xf0];
        for (position, byte) in key.0.iter_mut().take(3).enumerate() {
            *byte = alphabet[((seed >> (position * 3)) % 5) as usize];
        }
        key
    }

    fn root_by_buckets(accounts: &[(B256, AccountRecord)], depth: usize) -> B256 {
        let mut builder = RootBuilder::default();
        let buckets = 16usize.pow(depth as u32);
        let mut start = 0;
        for index in 0..buckets {
            let end = start
                + accounts[start..]
                    .iter()
                    .take_while(|(key, _)| bucket_index(key, depth) == index)
                    .count();
            let slice = &accounts[start..end];
            builder.add_bucket(index, depth, bucket_of(slice, depth), slice);
            start = end;
        }
        assert_eq!(start, accounts.len(), "every account is in a bucket");
        builder.root()
    }

    /// The bucketed root is the Merkle-Patricia root, for every depth and bucket shape.
    #[test]
    fn bucketed_root_equals_the_reference_root() {
        for (count, clustered) in [
            (0usize, false),
            (1, false),
            (2, true),
            (7, true),
            (40, true),
            (300, false),
            (300, true),
            (2_000, false),
        ] {
            let mut accounts: Vec<(B256, AccountRecord)> = (0..count as u64)
                .map(|seed| {
                    let key = if clustered {
                        clustered_key(seed)
                    } else {
                        keccak256(seed.to_be_bytes())
                    };
                    (
                        key,
                        AccountRecord {
                            nonce: seed,
                            balance: U256::from(seed * 3 + 1),
                            ..Default::default()
                        },
                    )
                })
                .collect();
            accounts.sort_by_key(|(key, _)| *key);
            accounts.dedup_by_key(|(key, _)| *key);
            let reference = state_root_sorted(accounts.iter().copied());
            for depth in 0..=BUCKET_DEPTH_MAX {
                assert_eq!(
                    root_by_buckets(&accounts, depth),
                    reference,
                    "count {count} clustered {clustered} depth {depth}"
                );
            }
        }
    }

    #[test]
    fn buckets_and_ranges_agree() {
        for depth in 0..=BUCKET_DEPTH_MAX {
            for key in [B256::ZERO, B256::repeat_byte(0xff), keccak256([1u8])] {
                let index = bucket_index(&key, depth);
                assert!(index < 16usize.pow(depth as u32));
                let (first, last) = bucket_range(index, depth);
                assert!(first <= key && key <= last, "depth {depth}");
            }
        }
        assert_eq!(bucket_depth_for(10), 0);
        assert_eq!(bucket_depth_for(10_000), 2);
        assert_eq!(bucket_depth_for(1_000_000), 4);
    }
}
