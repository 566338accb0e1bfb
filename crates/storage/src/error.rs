//! Storage errors, classified by what the caller does with them.

use alloy::primitives::B256;

/// An error reading or writing the chain store.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database failed (I/O, disk full, lock). The caller halts block production and
    /// reports the node unhealthy: nothing is half written, so a restart resumes cleanly.
    #[error("database: {0}")]
    Database(#[from] redb::Error),
    /// Stored bytes do not decode. The store is damaged; the node must halt.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// A block was offered whose parent is not the head (compare-and-append refused it).
    /// The caller drops the block: it was built on a state that is no longer current.
    #[error("block {number} has parent {parent}, but the head is {head_number} {head}")]
    NotOnHead {
        /// Number of the refused block.
        number: u64,
        /// Its parent hash.
        parent: B256,
        /// The current head number.
        head_number: u64,
        /// The current head hash.
        head: B256,
    },
    /// An unwind was asked below the blocks the store can restore (the genesis, a snapshot's
    /// head) or above the head. The caller has no way back: it halts, or starts over.
    #[error("cannot unwind to block {number}: {reason}")]
    UnwindTooDeep {
        /// The block asked for.
        number: u64,
        /// Why not.
        reason: String,
    },
    /// A state read at a block below the store's history floor: pruned (`--state-history-blocks`),
    /// before history began, or before the state image the node caught up from. The caller
    /// answers the read with geth's "missing trie node"; nothing is wrong with the store.
    #[error(
        "the state of block {number} is not kept: this node's state history starts at block {floor}"
    )]
    StatePruned {
        /// The block asked for.
        number: u64,
        /// The lowest block whose state is kept.
        floor: u64,
    },
    /// A walk over the whole state asked of a view of an older block that it cannot serve: an
    /// image or a bucketed walk (head only), or a walk further back than
    /// `limits::STATE_WALK_HISTORY_BLOCKS_MAX`. Reads of single keys are answered there.
    #[error(
        "a walk over the whole state of block {number} is not served: it is too far below the head"
    )]
    NotHead {
        /// The block of the view.
        number: u64,
    },
    /// A backup cannot be written where it was asked to (it exists, or the directory refuses).
    /// Nothing was written there; the store is untouched. The operator names another place.
    #[error("backup to {path}: {reason}")]
    BackupTarget {
        /// Where.
        path: std::path::PathBuf,
        /// Why not.
        reason: String,
    },
    /// The fsync a deferred store runs on its own thread ([`crate::Store::sync_in_background`])
    /// failed, or its thread did not start: the blocks since the last fsynced write may not be
    /// on the disk. The caller halts, as for a database error.
    #[error("background fsync of deferred blocks: {0}")]
    BackgroundSync(String),
    /// The data directory holds another chain than the configured genesis.
    #[error("data directory holds genesis {stored}, the chain spec's genesis is {configured}")]
    GenesisMismatch {
        /// Genesis hash in the store.
        stored: B256,
        /// Genesis hash of the configuration.
        configured: B256,
    },
}

impl StorageError {
    /// What the caller does: a head that moved is a reset (rebuild on the new head); anything
    /// else halts the part that hit it.
    pub fn kind(&self) -> keel_primitives::ErrorKind {
        match self {
            Self::NotOnHead { .. } => keel_primitives::ErrorKind::Reset,
            Self::Database(_)
            | Self::Corrupt(_)
            | Self::GenesisMismatch { .. }
            | Self::BackgroundSync(_)
            | Self::UnwindTooDeep { .. } => keel_primitives::ErrorKind::Halt,
            // Only the read paths of clients meet these, and answer the client with them (the
            // store is fine); production asking for a pruned state would be a bug.
            Self::StatePruned { .. } | Self::NotHead { .. } => keel_primitives::ErrorKind::Halt,
            // The operator's request is refused; the store is fine. Asked again elsewhere, the
            // backup succeeds.
            Self::BackupTarget { .. } => keel_primitives::ErrorKind::Retry,
        }
    }
}

macro_rules! from_redb {
    ($($kind:ty),*) => {$(
        impl From<$kind> for StorageError {
            fn from(error: $kind) -> Self {
                Self::Database(error.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<keel_primitives::PrimitivesError> for StorageError {
    fn from(error: keel_primitives::PrimitivesError) -> Self {
        Self::Corrupt(error.to_string())
    }
}
