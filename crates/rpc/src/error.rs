//! JSON-RPC errors in geth's codes and words.

use jsonrpsee::types::ErrorObjectOwned;
use keel_execution::CallError;
use keel_mempool::PoolError;

/// geth's code for a transaction or state error.
pub const SERVER_ERROR: i32 = -32000;
/// Invalid method parameters.
pub const INVALID_PARAMS: i32 = -32602;
/// Internal error.
pub const INTERNAL_ERROR: i32 = -32603;
/// geth's code for a reverted `eth_call` or `eth_estimateGas`.
pub const EXECUTION_REVERTED: i32 = 3;
/// EIP-7966: the transaction was accepted but not included before the timeout.
pub const SYNC_TIMEOUT: i32 = 4;
/// A query would return more than a limit allows (EIP-1474's "limit exceeded").
pub const LIMIT_EXCEEDED: i32 = -32005;

/// An error with geth's server-error code.
pub fn server(message: impl ToString) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(SERVER_ERROR, message.to_string(), None::<()>)
}

/// An invalid-parameters error.
pub fn invalid_params(message: impl ToString) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(INVALID_PARAMS, message.to_string(), None::<()>)
}

/// An internal error: the node failed, not the request.
pub fn internal(message: impl ToString) -> ErrorObjectOwned {
    tracing::error!(error = %message.to_string(), "internal JSON-RPC error");
    ErrorObjectOwned::owned(
        INTERNAL_ERROR,
        format!("internal error: {}", message.to_string()),
        None::<()>,
    )
}

/// A refused transaction.
pub fn pool(error: PoolError) -> ErrorObjectOwned {
    match error {
        PoolError::State(message) => internal(message),
        PoolError::Decode(_) => invalid_params(error),
        other => server(other),
    }
}

/// A failed call or estimate: reverts carry their data, as geth sends them.
pub fn call(error: CallError) -> ErrorObjectOwned {
    match error {
        CallError::Reverted { ref output, .. } => ErrorObjectOwned::owned(
            EXECUTION_REVERTED,
            error.to_string(),
            Some(alloy::hex::encode_prefixed(output)),
        ),
        CallError::Invalid(keel_execution::TxError::State(message)) => internal(message),
        other => server(other),
    }
}

/// geth's codes for `eth_simulateV1` (execution-apis, "eth_simulateV1" errors).
pub mod simulate_codes {
    /// The call's nonce is below the sender's.
    pub const NONCE_TOO_LOW: i32 = -38010;
    /// The call's nonce is above the sender's.
    pub const NONCE_TOO_HIGH: i32 = -38011;
    /// The fee cap is below the block's base fee.
    pub const BASE_FEE_TOO_LOW: i32 = -38012;
    /// The call's gas is below its intrinsic gas.
    pub const INTRINSIC_GAS: i32 = -38013;
    /// The sender cannot pay for the call.
    pub const INSUFFICIENT_FUNDS: i32 = -38014;
    /// The block's gas is used up.
    pub const BLOCK_GAS_LIMIT_REACHED: i32 = -38015;
    /// Block numbers out of order.
    pub const BLOCK_NUMBER_INVALID: i32 = -38020;
    /// Block timestamps out of order.
    pub const BLOCK_TIMESTAMP_INVALID: i32 = -38021;
    /// The sender has code.
    pub const SENDER_IS_NOT_EOA: i32 = -38024;
    /// The init code is too large.
    pub const MAX_INIT_CODE_SIZE_EXCEEDED: i32 = -38025;
    /// Too many blocks or calls.
    pub const CLIENT_LIMIT_EXCEEDED: i32 = -38026;
}

/// A refused simulation, with geth's code for each reason.
pub fn simulate(error: keel_execution::SimulateError) -> ErrorObjectOwned {
    use keel_execution::{OverrideError, SimulateError as E, TxError};
    use simulate_codes::*;
    let code = match &error {
        E::EmptyInput => INVALID_PARAMS,
        E::TooManyBlocks | E::TooManyCalls { .. } => CLIENT_LIMIT_EXCEEDED,
        E::BlockNumberOrder { .. } => BLOCK_NUMBER_INVALID,
        E::BlockTimestampOrder { .. } => BLOCK_TIMESTAMP_INVALID,
        E::BlockGasLimitReached { .. } => BLOCK_GAS_LIMIT_REACHED,
        E::Invalid { error, .. } => match error {
            TxError::NonceTooLow { .. } => NONCE_TOO_LOW,
            TxError::NonceTooHigh { .. } => NONCE_TOO_HIGH,
            TxError::FeeCapTooLow { .. } => BASE_FEE_TOO_LOW,
            TxError::IntrinsicGasTooLow { .. } => INTRINSIC_GAS,
            TxError::InsufficientFunds { .. } => INSUFFICIENT_FUNDS,
            TxError::SenderNotEoa { .. } => SENDER_IS_NOT_EOA,
            TxError::InitcodeTooLarge { .. } => MAX_INIT_CODE_SIZE_EXCEEDED,
            TxError::TipAboveFeeCap { .. } | TxError::GasLimitTooHigh { .. } => INVALID_PARAMS,
            TxError::State(message) => return internal(message),
            _ => INTERNAL_ERROR,
        },
        E::Override(OverrideError::Read(read)) => return internal(read),
        E::State(read) => return internal(read),
        E::Override(_) | E::Timeout(_) => SERVER_ERROR,
    };
    ErrorObjectOwned::owned(code, error.to_string(), None::<()>)
}

/// Converts a storage failure into an internal error.
pub fn storage(error: keel_storage::StorageError) -> ErrorObjectOwned {
    internal(error)
}
