//! The cluster: keel's blocks replicated through an openraft log.
//!
//! This crate holds the storage half of part 2 so far: the Raft log and vote in redb
//! ([`LogStore`]), and the state machine that applies committed blocks to the chain store
//! ([`StateMachine`]). The network, the leader loop and health-driven leadership transfer come
//! next (issue 3).
//!
//! ```text
//!  leader: build + validate ─► propose BlockProposal ─► raft log (LogStore: redb, fsynced)
//!                                                         │ committed on a quorum
//!  every node: StateMachine::apply ◄──────────────────────┘
//!     compare-and-append (I3): parent == head and number == head + 1, else a recorded no-op
//!     validate_block (I4) ─► Store::commit_block_with(.., last applied log id) (one fsync)
//! ```
//!
//! ### Why the applied position lives with the block
//! The log id an entry was applied from is written in the same redb transaction as the block
//! it carries. After a crash the state machine reports exactly the entries whose effects are
//! durable, and openraft re-applies the rest: no block is applied twice or lost.

// openraft's storage traits return its `StorageError` (over 200 bytes); the helpers that
// build it return it too, unboxed, to hand it through unchanged.
#![allow(clippy::result_large_err)]

mod log_store;
mod network;
mod state_machine;
mod types;

pub use log_store::LogStore;
pub use network::{ClusterSecret, PEER_REQUEST_BYTES_MAX, PeerClient, PeerNetwork, peer_router};
pub use state_machine::{StateMachine, StateMachineError};
pub use types::{ApplyOutcome, BlockProposal, NodeId, TypeConfig};
