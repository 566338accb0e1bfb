//! Errors of the L1 client, classified by what the caller does (kona's `PipelineErrorKind`).
//!
//! | variant | kind | the caller |
//! |---|---|---|
//! | [`L1Error::Transport`], [`L1Error::Timeout`], [`L1Error::Rpc`], [`L1Error::Malformed`] | retry | backs off, counts it, asks again; `/health` reports the L1 unreachable after a while |
//! | [`L1Error::BlockGone`] | reset | what it read from that block no longer holds (an L1 reorg): it drops its derived state back to a block still canonical and carries on; asking again is wrong (kona PR #19344) |
//! | [`L1Error::Rejected`] | retry | the L1 refused a transaction (nonce, fee, funds); the sender decides from [`L1Error::rejection`] |
//! | [`L1Error::WrongChain`], [`L1Error::Stopped`], [`L1Error::NoBeacon`] | halt | the configuration names another chain, the embedded L1 is gone, or blobs must be read and no beacon endpoint is configured: stop loudly |

use alloy::primitives::B256;
use keel_primitives::ErrorKind;

/// An error talking to the L1.
#[derive(Debug, thiserror::Error)]
pub enum L1Error {
    /// The L1 could not be reached, or the connection failed mid-call.
    #[error("L1 unreachable while {doing}: {reason}")]
    Transport {
        /// The call.
        doing: &'static str,
        /// The transport's words.
        reason: String,
    },
    /// The call took longer than `limits::L1_REQUEST_TIMEOUT_MS`.
    #[error("L1 call {doing} timed out after {ms} ms")]
    Timeout {
        /// The call.
        doing: &'static str,
        /// How long it was given.
        ms: u64,
    },
    /// The L1 answered a read with a JSON-RPC error.
    #[error("L1 error while {doing}: {message} (code {code})")]
    Rpc {
        /// The call.
        doing: &'static str,
        /// The JSON-RPC error code.
        code: i64,
        /// The JSON-RPC error message.
        message: String,
    },
    /// The L1 answered something that is not what the call asked for (a missing field, a
    /// block whose hash does not match, more transactions than keel reads).
    #[error("malformed L1 answer to {doing}: {reason}")]
    Malformed {
        /// The call.
        doing: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The block is no longer on the L1's chain (or never was): a reorg removed it.
    #[error("L1 block {hash} is not on the L1 chain (reorged out)")]
    BlockGone {
        /// The block asked for.
        hash: B256,
    },
    /// The L1 refused a transaction.
    #[error("L1 refused the transaction: {message} (code {code})")]
    Rejected {
        /// The JSON-RPC error code.
        code: i64,
        /// geth's words (`nonce too low`, `replacement transaction underpriced`, ...).
        message: String,
    },
    /// The L1 is another chain than the rollup config names.
    #[error("the L1 at hand has chain id {found}, the configuration names {expected}")]
    WrongChain {
        /// The configured L1 chain id.
        expected: u64,
        /// What the L1 says.
        found: u64,
    },
    /// A batch-inbox transaction carries blobs, and the client has no beacon endpoint to
    /// fetch them from: derivation cannot go on without them.
    #[error(
        "L1 block {block} carries blob batches and no beacon endpoint is configured (--l1-beacon URL)"
    )]
    NoBeacon {
        /// The L1 block.
        block: u64,
    },
    /// The embedded L1 was stopped, or its store failed.
    #[error("the embedded L1 stopped: {reason}")]
    Stopped {
        /// Why.
        reason: String,
    },
}

/// Why the L1 refused a transaction, in the classes a sender acts on (geth's txpool errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// `nonce too low`: a transaction with that nonce is already included.
    NonceTooLow,
    /// `replacement transaction underpriced`, or under the pool's minimum: bump the fee.
    Underpriced,
    /// `insufficient funds for gas * price + value`: the sender needs ether.
    InsufficientFunds,
    /// `already known`: the pool holds this very transaction.
    AlreadyKnown,
    /// Anything else.
    Other,
}

impl L1Error {
    /// What the caller does.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Transport { .. }
            | Self::Timeout { .. }
            | Self::Rpc { .. }
            | Self::Malformed { .. }
            | Self::Rejected { .. } => ErrorKind::Retry,
            Self::BlockGone { .. } => ErrorKind::Reset,
            Self::WrongChain { .. } | Self::Stopped { .. } | Self::NoBeacon { .. } => {
                ErrorKind::Halt
            }
        }
    }

    /// For a refused transaction, why, in the classes geth's txpool answers with.
    pub fn rejection(&self) -> Option<Rejection> {
        let Self::Rejected { message, .. } = self else {
            return None;
        };
        let message = message.to_ascii_lowercase();
        Some(if message.contains("nonce too low") {
            Rejection::NonceTooLow
        } else if message.contains("underpriced") || message.contains("fee too low") {
            Rejection::Underpriced
        } else if message.contains("insufficient funds") {
            Rejection::InsufficientFunds
        } else if message.contains("already known") || message.contains("already imported") {
            Rejection::AlreadyKnown
        } else {
            Rejection::Other
        })
    }

    /// A store failure of the embedded L1.
    pub(crate) fn stopped(error: impl std::fmt::Display) -> Self {
        Self::Stopped {
            reason: error.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_classed_in_geths_words() {
        let refused = |message: &str| L1Error::Rejected {
            code: -32000,
            message: message.into(),
        };
        let table = [
            (
                "nonce too low: address 0x.., tx: 1 state: 2",
                Rejection::NonceTooLow,
            ),
            (
                "replacement transaction underpriced",
                Rejection::Underpriced,
            ),
            (
                "transaction underpriced: tip needed 1, tip permitted 0",
                Rejection::Underpriced,
            ),
            (
                "insufficient funds for gas * price + value",
                Rejection::InsufficientFunds,
            ),
            ("already known", Rejection::AlreadyKnown),
            ("intrinsic gas too low", Rejection::Other),
        ];
        for (message, class) in table {
            assert_eq!(refused(message).rejection(), Some(class), "{message}");
            assert_eq!(refused(message).kind(), ErrorKind::Retry);
        }
        let gone = L1Error::BlockGone { hash: B256::ZERO };
        assert_eq!(gone.kind(), ErrorKind::Reset);
        assert_eq!(gone.rejection(), None);
        assert_eq!(
            L1Error::WrongChain {
                expected: 1,
                found: 2
            }
            .kind(),
            ErrorKind::Halt
        );
    }
}
