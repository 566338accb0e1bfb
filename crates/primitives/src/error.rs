//! Errors of the value types: bad encodings and bad chain specifications; and the one
//! classification every keel error answers to.

/// What the caller of a failed operation does, as kona's `PipelineErrorKind` classifies its
/// pipeline's errors. Every error type across keel's seams says which of these it is
/// (`fn kind(&self) -> ErrorKind`), so a caller decides by class and not by message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Temporary: the same call may succeed later (a peer unreachable, an L1 node busy, a
    /// timeout). The caller retries, with a backoff, and counts it.
    Retry,
    /// What the caller built on no longer holds (an L1 block gone in a reorg, a block built on
    /// a head that moved). The caller drops its derived state, restarts from a known-good
    /// point, and carries on; retrying the same call is wrong.
    Reset,
    /// The node cannot go on safely (a damaged store, a committed block that fails validation,
    /// a bad configuration). The caller stops the affected part loudly: health, metric, log.
    Halt,
}

impl ErrorKind {
    /// Its name in logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Retry => "retry",
            Self::Reset => "reset",
            Self::Halt => "halt",
        }
    }
}

/// An error building or decoding one of keel's values.
///
/// Callers treat every variant as bad input: they report it and do not retry with the same bytes.
#[derive(Debug, thiserror::Error)]
pub enum PrimitivesError {
    /// Stored or received bytes do not decode as the named value.
    #[error("invalid {what} encoding: {reason}")]
    Decode {
        /// The value that was being decoded.
        what: &'static str,
        /// Why the bytes were refused.
        reason: String,
    },
    /// The genesis or chain configuration is unusable.
    #[error("invalid chain spec: {0}")]
    ChainSpec(String),
}

impl PrimitivesError {
    /// Bad bytes or a bad spec are never fixed by retrying: stored bytes that do not decode
    /// halt the node; received ones are refused by the caller before they reach a seam.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Halt
    }

    pub(crate) fn decode(what: &'static str, reason: impl ToString) -> Self {
        Self::Decode {
            what,
            reason: reason.to_string(),
        }
    }
}
