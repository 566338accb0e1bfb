//! The account trie's buckets: a per-head cache that makes the state root incremental.
//!
//! The accounts are split by the first `depth` nibbles of their hashed address into buckets.
//! For each bucket the cache keeps whether it is empty, the hash of the branch node at its
//! prefix, or that its accounts must be fed one by one (see `keel_primitives::trie::Bucket`). A
//! block recomputes only the buckets it touched; every other bucket enters the root as one hash.
//! The cache is derived data: it is rebuilt from the store at start-up and whenever the depth
//! should change, and a snapshot carries it only if it describes that snapshot's head.

use crate::{Result, Snapshot};
use alloy::primitives::B256;
use keel_primitives::trie::{self, Bucket};

/// The buckets of the account trie at one head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountBuckets {
    /// The block whose state this describes.
    pub head: B256,
    /// Nibbles of a bucket prefix.
    pub depth: usize,
    /// One entry per bucket, in prefix order.
    pub buckets: Vec<Bucket>,
    /// Accounts in the state.
    pub accounts: usize,
}

/// What one block changed in the buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketChanges {
    /// The depth the block was computed with.
    pub depth: usize,
    /// New entries of the touched buckets.
    pub entries: Vec<(usize, Bucket)>,
    /// Accounts created less accounts deleted.
    pub accounts_delta: i64,
}

impl AccountBuckets {
    /// Walks every account of `snapshot` once.
    pub fn build(snapshot: &Snapshot) -> Result<Self> {
        let accounts = snapshot.account_count()?;
        let depth = trie::bucket_depth_for(accounts);
        let mut buckets = vec![Bucket::Empty; 16usize.pow(depth as u32)];
        let mut current: Option<usize> = None;
        let mut members = Vec::new();
        for entry in snapshot.accounts()? {
            let (hashed, record) = entry?;
            let index = trie::bucket_index(&hashed, depth);
            if current != Some(index) {
                if let Some(done) = current {
                    buckets[done] = trie::bucket_of(&members, depth);
                }
                members.clear();
                current = Some(index);
            }
            members.push((hashed, record));
        }
        if let Some(done) = current {
            buckets[done] = trie::bucket_of(&members, depth);
        }
        Ok(Self {
            head: snapshot.head().1,
            depth,
            buckets,
            accounts,
        })
    }

    /// The cache at `head` after a block on `parent` with `changes`, if it can be advanced (it
    /// is at `parent`, the block was computed with its depth, and the depth still fits).
    pub(crate) fn advance(
        &self,
        parent: B256,
        head: B256,
        changes: Option<&BucketChanges>,
    ) -> Option<Self> {
        let changes = changes?;
        if self.head != parent || changes.depth != self.depth {
            return None;
        }
        let accounts = usize::try_from(self.accounts as i64 + changes.accounts_delta).ok()?;
        if trie::bucket_depth_for(accounts) != self.depth {
            return None;
        }
        let mut next = Self {
            head,
            depth: self.depth,
            buckets: self.buckets.clone(),
            accounts,
        };
        for (index, bucket) in &changes.entries {
            next.buckets[*index] = *bucket;
        }
        Some(next)
    }
}
