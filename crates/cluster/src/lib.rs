//! The cluster: keel's blocks replicated through an openraft log.
//!
//! This crate holds part 2 so far: the Raft log and vote in redb ([`LogStore`]), the state
//! machine that applies committed blocks to the chain store ([`StateMachine`]), the
//! authenticated peer network ([`PeerNetwork`], [`peer_router`]), the leader loop, the only
//! path that starts block production ([`LeaderLoop`]), leadership transfer
//! ([`transfer_leadership`]) and failover on evidence of a dead leader ([`DeadLeaderDetector`]).
//!
//! ```text
//!  leader: build + validate ─► propose a Proposal ─► raft log (LogStore: redb, fsynced)
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

pub mod codec;
mod error;
mod failover;
mod leader;
mod log_store;
mod network;
pub mod snapshot_data;
mod state_machine;
mod transfer;
mod types;

pub use error::{ClusterError, NotHealthy, PeerError};
pub use failover::{
    CONFIRM_WAIT, DeadLeaderDetector, FailoverState, LEADER_GONE_TIMEOUT, PROBE_TIMEOUT, Survivor,
    WATCH_KEEPALIVE, WATCH_RETRY, successor,
};
pub use leader::{BuildBlock, LeaderControl, LeaderLoop, Turn};
pub use log_store::LogStore;
pub use network::{
    ClusterSecret, HandOver, HealthCheck, HttpTransport, LeaderGone, LeaderGoneAnswer,
    PEER_CONTROL_TIMEOUT, PEER_REQUEST_BYTES_MAX, PeerAnswer, PeerClient, PeerControl,
    PeerEndpoint, PeerHealth, PeerNetwork, PeerRequest, PeerTransport, TransportError, WatchEnd,
    peer_router,
};
pub use state_machine::{
    INTAKE_REFILL_BYTES_MAX, IntakeSink, OnReplaced, OwnBlock, StateMachine, StateMachineError,
};
pub use transfer::{
    CATCH_UP_WAIT_MAX, CAUGHT_UP_ENTRIES_MAX, Candidate, Choice, HealthMonitor,
    PEER_HEALTH_TIMEOUT, TRANSFER_RETRY_AFTER, TransferError, Transferred,
    UNHEALTHY_CHECKS_BEFORE_TRANSFER, choose_target, matched_index, next_ready,
    transfer_leadership,
};
pub use types::{
    ApplyOutcome, INTAKE_BYTES_MAX, INTAKE_TRANSACTIONS_MAX, IntakeRefusal, IntakeTransaction,
    NodeId, Proposal, REPLACE_BLOCKS_MAX, TypeConfig,
};
