//! Execution: revm over keel's state, with one transaction path for building and validating.
//!
//! ```text
//!  mempool ─► build_block ─┐                      ┌─► ExecutedBlock (block, receipts, changes)
//!                          ├─► BlockExecutor ─────┤
//!  sealed block ─► validate_block ─┘  (one path)  └─► compared field by field with the header
//! ```
//!
//! The builder and the validator differ only in where transactions come from: the builder asks
//! a [`TransactionSource`] and drops what fails; the validator takes the block's list and fails
//! the block on the first invalid transaction. Both run [`BlockExecutor::execute_transaction`],
//! which commits a transaction's state only after it succeeded (docs/design.md R2, invariant I4).
//!
//! Execution uses the Osaka rules (the latest hardfork mainnet runs that revm supports), with
//! two rollup choices: blob transactions are refused, and consecutive blocks may share a
//! timestamp (block times below one second). The EIP-4788 and EIP-2935 system contracts are not
//! deployed in keel's genesis, so their system calls are no-ops, as on any chain without them.

mod builder;
mod call;
mod error;
mod executor;
mod proof;
mod simulate;
mod state;
mod trace;
mod validator;

pub use builder::{
    BuildOutcome, ListSource, TransactionSource, build_block, build_block_with_forced,
};
pub use call::{
    CallError, CallState, apply_block_overrides, call, create_access_list, estimate_gas,
    halt_message, outcome, revert_reason,
};
pub use error::{BlockError, SealError, TxError};
pub use executor::{
    BlockEnvironment, BlockExecutor, ExecutedBlock, SPEC, created_address, intrinsic_gas, tx_env,
};
pub use proof::{AccountProof, account_proof, code_hash};
pub use simulate::{SimulateError, SimulatedBlock, simulate};
pub use state::{BlockState, OverrideError, StateReadError};
pub use trace::{TraceError, trace_block, trace_call, traced_hash};
pub use validator::validate_block;

/// revm's result type, re-exported for callers of [`call`].
pub use revm::context::result::ExecutionResult;
