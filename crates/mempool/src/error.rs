//! Why the pool refused a transaction, in geth's words (all JSON-RPC code -32000).

use alloy::primitives::{Address, U256};

/// A transaction the pool will not take. The client gets the message; nothing was stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The bytes are not a signed transaction.
    #[error("rlp: {0}")]
    Decode(String),
    /// The encoded transaction is larger than the limit.
    #[error("oversized data: transaction size {size}, limit {limit}")]
    OversizedData {
        /// Encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The signature does not recover to a sender.
    #[error("invalid sender")]
    InvalidSender,
    /// The chain id is another chain's.
    #[error("invalid chain id for signer: have {have} want {want}")]
    InvalidChainId {
        /// The transaction's.
        have: u64,
        /// This chain's.
        want: u64,
    },
    /// A legacy transaction without EIP-155 replay protection.
    #[error("only replay-protected (EIP-155) transactions allowed over RPC")]
    Unprotected,
    /// Blob transactions are not taken by this rollup.
    #[error("transaction type not supported")]
    TypeNotSupported,
    /// The same transaction is already in the pool.
    #[error("already known")]
    AlreadyKnown,
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
    /// The nonce is too far above the account's.
    #[error("nonce too high: address {address}, tx: {tx} state: {state}")]
    NonceTooHigh {
        /// Sender.
        address: Address,
        /// The transaction's nonce.
        tx: u64,
        /// The account's nonce.
        state: u64,
    },
    /// The sender cannot pay for the transaction.
    #[error(
        "insufficient funds for gas * price + value: balance {balance}, tx cost {cost}, overshot {overshot}"
    )]
    InsufficientFunds {
        /// The sender's balance.
        balance: U256,
        /// gas * max fee + value.
        cost: U256,
        /// cost - balance.
        overshot: U256,
    },
    /// The gas limit is above the block gas limit.
    #[error("exceeds block gas limit")]
    ExceedsBlockGasLimit,
    /// The gas limit is above the per-transaction cap (EIP-7825).
    #[error("transaction gas limit too high (cap: {cap}, tx: {gas_limit})")]
    GasLimitTooHigh {
        /// The cap.
        cap: u64,
        /// The transaction's.
        gas_limit: u64,
    },
    /// The gas limit is below the intrinsic gas.
    #[error("intrinsic gas too low: gas {gas}, minimum needed {needed}")]
    IntrinsicGasTooLow {
        /// The transaction's gas limit.
        gas: u64,
        /// The intrinsic gas.
        needed: u64,
    },
    /// The tip cap is above the fee cap.
    #[error(
        "max priority fee per gas higher than max fee per gas: address {address}, maxPriorityFeePerGas: {tip}, maxFeePerGas: {max_fee}"
    )]
    TipAboveFeeCap {
        /// Sender.
        address: Address,
        /// Tip cap.
        tip: u128,
        /// Fee cap.
        max_fee: u128,
    },
    /// The fee cap is below the current base fee.
    #[error(
        "max fee per gas less than block base fee: address {address}, maxFeePerGas: {max_fee}, baseFee: {base_fee}"
    )]
    FeeCapBelowBaseFee {
        /// Sender.
        address: Address,
        /// Fee cap.
        max_fee: u128,
        /// Base fee of the next block.
        base_fee: u64,
    },
    /// The pool is full and the transaction pays less than anything it could evict, or its
    /// tip is below the pool's minimum.
    #[error("transaction underpriced")]
    Underpriced,
    /// A transaction with the same sender and nonce is in the pool and this one does not pay
    /// at least 10% more.
    #[error("replacement transaction underpriced")]
    ReplacementUnderpriced,
    /// The sender holds as many transactions as one sender may.
    #[error("account limit exceeded: {0} transactions")]
    AccountLimit(usize),
    /// The pool is full of transactions that pay at least as much.
    #[error("txpool is full")]
    PoolFull,
    /// The head state could not be read.
    #[error("internal error: {0}")]
    State(String),
}

impl From<keel_storage::StorageError> for PoolError {
    fn from(error: keel_storage::StorageError) -> Self {
        Self::State(error.to_string())
    }
}
