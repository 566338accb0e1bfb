//! Errors starting or running a node, classified by what the caller does
//! ([`keel_primitives::ErrorKind`]).

use keel_primitives::ErrorKind;

/// Why a node could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The store could not be opened (locked by another process, another chain, damaged).
    #[error("store: {0}")]
    Storage(#[from] keel_storage::StorageError),
    /// A listener could not bind or a file could not be read.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// Raft or its storage could not start.
    #[error("{doing}: {reason}")]
    Cluster {
        /// What was being done.
        doing: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// Sealing failed: building, or the builder's own block failed validation (R2).
    #[error(transparent)]
    Seal(#[from] keel_execution::SealError),
}

impl NodeError {
    /// An I/O failure while `context` (a listener that would not bind, a file not read).
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }

    /// What the caller does. A node that cannot start stops with the reason; an address in
    /// use may be free on the next try, so binding is the one retry.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Storage(error) => error.kind(),
            Self::Io { .. } => ErrorKind::Retry,
            Self::Seal(error) => error.kind(),
            Self::Config(_) | Self::Cluster { .. } => ErrorKind::Halt,
        }
    }
}
