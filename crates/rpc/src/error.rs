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

/// Converts a storage failure into an internal error.
pub fn storage(error: keel_storage::StorageError) -> ErrorObjectOwned {
    internal(error)
}
