//! Execution errors: why a transaction cannot enter a block, and why a block is invalid.
//!
//! The messages of [`TxError`] are geth's, word for word where geth has one, so that clients
//! (cast, viem, ethers, web3.py) recognise them.

use alloy::primitives::{Address, B256, U256};

/// Why a transaction was not included. The builder drops the transaction (and tells the
/// mempool); the validator marks the whole block invalid. Nothing of the transaction stays in
/// the state either way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// The nonce is below the account's.
    #[error("nonce too low: address {address}, tx: {tx} state: {state}")]
    NonceTooLow {
        /// Sender.
        address: Address,
        /// The transaction's nonce.
        tx: u64,
        /// The account's nonce.
        state: u64,
    },
    /// The nonce is above the account's (a gap).
    #[error("nonce too high: address {address}, tx: {tx} state: {state}")]
    NonceTooHigh {
        /// Sender.
        address: Address,
        /// The transaction's nonce.
        tx: u64,
        /// The account's nonce.
        state: u64,
    },
    /// The sender cannot pay `gas * price + value`.
    #[error(
        "insufficient funds for gas * price + value: address {address} have {have} want {want}"
    )]
    InsufficientFunds {
        /// Sender.
        address: Address,
        /// Its balance.
        have: U256,
        /// What the transaction may cost.
        want: U256,
    },
    /// The gas limit is below the intrinsic gas.
    #[error("intrinsic gas too low: have {have}, want {want}")]
    IntrinsicGasTooLow {
        /// The transaction's gas limit.
        have: u64,
        /// Its intrinsic gas (or EIP-7623 floor).
        want: u64,
    },
    /// The fee cap is below the block's base fee.
    #[error(
        "max fee per gas less than block base fee: address {address}, maxFeePerGas: {max_fee}, baseFee: {base_fee}"
    )]
    FeeCapTooLow {
        /// Sender.
        address: Address,
        /// The transaction's fee cap.
        max_fee: u128,
        /// The block's base fee.
        base_fee: u64,
    },
    /// The tip is above the fee cap.
    #[error(
        "max priority fee per gas higher than max fee per gas: address {address}, maxPriorityFeePerGas: {tip}, maxFeePerGas: {max_fee}"
    )]
    TipAboveFeeCap {
        /// Sender.
        address: Address,
        /// The transaction's tip cap.
        tip: u128,
        /// The transaction's fee cap.
        max_fee: u128,
    },
    /// The gas limit exceeds the block's gas limit.
    #[error("exceeds block gas limit")]
    ExceedsBlockGasLimit,
    /// The block has no gas left for this transaction.
    #[error("gas limit reached")]
    BlockGasExhausted,
    /// The block has no room left (bytes or transaction count) for this transaction.
    #[error("block size limit reached")]
    BlockFull,
    /// The gas limit exceeds the per-transaction cap (EIP-7825).
    #[error("transaction gas limit too high (cap: {cap}, tx: {gas_limit})")]
    GasLimitTooHigh {
        /// The cap.
        cap: u64,
        /// The transaction's gas limit.
        gas_limit: u64,
    },
    /// The chain id is not this chain's.
    #[error("invalid chain id for signer: have {have} want {want}")]
    InvalidChainId {
        /// The transaction's chain id.
        have: u64,
        /// This chain's id.
        want: u64,
    },
    /// The sender has code (EIP-3607) that is not an EIP-7702 delegation.
    #[error("sender not an eoa: address {address}, codehash: {code_hash}")]
    SenderNotEoa {
        /// Sender.
        address: Address,
        /// Its code hash.
        code_hash: B256,
    },
    /// The init code is too large (EIP-3860).
    #[error("max initcode size exceeded: code size {size}, limit {limit}")]
    InitcodeTooLarge {
        /// Init code size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The transaction type is not accepted by this chain (blob transactions).
    #[error("transaction type not supported")]
    TypeNotSupported,
    /// Any other reason revm gives.
    #[error("invalid transaction: {0}")]
    Invalid(String),
    /// The state could not be read. Not the transaction's fault: the caller halts.
    #[error("state unavailable: {0}")]
    State(String),
}

impl TxError {
    /// Whether the transaction may become valid later (a nonce gap, a full block, a base fee
    /// that may fall) rather than being invalid for good.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::NonceTooHigh { .. }
                | Self::BlockGasExhausted
                | Self::BlockFull
                | Self::FeeCapTooLow { .. }
                | Self::InsufficientFunds { .. }
        )
    }
}

/// Why a sealed block is not valid on its parent. The node that finds one stops applying and
/// reports unhealthy; it never persists the block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// A header field differs from what the rules or the re-execution give.
    #[error("block {number}: header field {field} is {got}, expected {expected}")]
    HeaderMismatch {
        /// Block number.
        number: u64,
        /// The field's name.
        field: &'static str,
        /// The value in the block.
        got: String,
        /// The value the validator computed.
        expected: String,
    },
    /// A transaction of the block fails.
    #[error("block {number}: transaction {index} ({hash}) invalid: {error}")]
    Transaction {
        /// Block number.
        number: u64,
        /// Index in the block.
        index: usize,
        /// Transaction hash.
        hash: B256,
        /// Why.
        error: Box<TxError>,
    },
    /// The state could not be read.
    #[error("state unavailable: {0}")]
    State(String),
}

impl From<keel_storage::StorageError> for TxError {
    fn from(error: keel_storage::StorageError) -> Self {
        Self::State(error.to_string())
    }
}

impl From<keel_storage::StorageError> for BlockError {
    fn from(error: keel_storage::StorageError) -> Self {
        Self::State(error.to_string())
    }
}

/// Why the sealer could not produce a block: building failed, or its own block failed the
/// validator (I4). Either way the node must not seal on this state again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The head could not be read to build on.
    #[error("reading the head: {0}")]
    Head(String),
    /// The parent state could not be read while building.
    #[error("building block {number}: {reason}")]
    Build {
        /// The block being built.
        number: u64,
        /// Why.
        reason: String,
    },
    /// The builder's own block failed re-validation: a builder bug (R2). Never proposed.
    #[error("own block failed validation: {0}")]
    OwnBlockInvalid(#[from] BlockError),
    /// The L1 offers no origin the next block may take (yet): the slot is skipped.
    #[error("no L1 origin for the next block: {0}")]
    Origin(#[from] keel_primitives::rollup::OriginError),
}

impl SealError {
    /// A state that cannot be read or a builder that disagrees with its validator halts
    /// production, never retried (docs/design.md R2); a missing L1 origin is the L1's to fix
    /// (retry) or a reorg's (reset).
    pub fn kind(&self) -> keel_primitives::ErrorKind {
        match self {
            Self::Origin(error) => error.kind(),
            _ => keel_primitives::ErrorKind::Halt,
        }
    }
}

impl BlockError {
    /// An invalid block halts the node that finds it (I4); it never forks.
    pub fn kind(&self) -> keel_primitives::ErrorKind {
        keel_primitives::ErrorKind::Halt
    }
}
