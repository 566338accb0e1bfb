//! Types shared by every keel crate: the chain specification and genesis, the sealed block and
//! its storage encoding, the account record of the state, Merkle-Patricia roots, and the named
//! limits of the whole system.
//!
//! This crate does no I/O. Everything here is a value: it can be built, encoded, hashed and
//! compared, and the other crates agree on it.
//!
//! ```text
//! genesis.json ─► ChainSpec ─► genesis SealedBlock (state root from the alloc)
//!                                   │
//!  builder seals ─► SealedBlock ─► validator re-executes ─► storage persists (encode/decode)
//! ```

pub mod account;
pub mod block;
pub mod chain;
pub mod clock;
pub mod coalesce;
pub mod error;
pub mod heads;
pub mod limits;
pub mod rollup;
pub mod trie;

pub use account::AccountRecord;
pub use block::{BlockWithReceipts, SealedBlock};
pub use chain::{
    ChainSpec, DEV_CHAIN_ID, DEV_L1_CHAIN_ID, DEV_MNEMONIC, dev_accounts, sign_transaction,
};
pub use clock::{Clock, ManualClock, SystemClock, human_duration};
pub use coalesce::coalesce;
pub use error::{ErrorKind, PrimitivesError};
pub use heads::SafeHeads;
pub use rollup::{L1Origin, RollupConfig, forced_cursor_of, origin_of, set_origin};

/// Re-exported so that every crate names alloy's types through one version.
pub use alloy;
