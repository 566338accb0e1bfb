//! Errors of the value types: bad encodings and bad chain specifications.

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
    pub(crate) fn decode(what: &'static str, reason: impl ToString) -> Self {
        Self::Decode {
            what,
            reason: reason.to_string(),
        }
    }
}
