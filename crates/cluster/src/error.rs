//! The cluster's errors at its seams, classified by what the caller does
//! ([`keel_primitives::ErrorKind`]). openraft's own errors (`RaftError`, `StorageError`) stay
//! openraft's: they cross openraft's traits, not keel's.

use keel_primitives::ErrorKind;

/// A cluster setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// The shared secret (or admin token) is too short to resist guessing.
    #[error("the cluster secret needs at least {bytes_min} bytes")]
    SecretTooShort {
        /// The least accepted.
        bytes_min: usize,
    },
}

impl ClusterError {
    /// A bad setting halts start-up: the operator fixes the configuration.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Halt
    }
}

/// Why a node is not ready to lead: its own health check's reason, as `/raft/health` carries
/// it to a leader choosing a transfer target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct NotHealthy {
    /// In the words of the node's health check ("unsafe head is 9000 ms old").
    pub reason: String,
}

impl NotHealthy {
    /// A node that is not healthy now may be later: ask again.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Retry
    }
}

/// Why a control call to a peer (health, hand-over) did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// No connection, or the exchange failed or timed out.
    #[error("unreachable: {0}")]
    Transport(#[from] crate::TransportError),
    /// The peer answered with a status other than success (401, 409, 500).
    #[error("answered {status}")]
    Refused {
        /// The HTTP status.
        status: u16,
    },
    /// The peer's answer does not decode.
    #[error("unreadable answer: {0}")]
    Unreadable(String),
    /// The peer answered that it is not healthy.
    #[error(transparent)]
    NotHealthy(#[from] NotHealthy),
    /// This node knows no address for the peer.
    #[error("no address known")]
    NoAddress,
}

impl PeerError {
    /// Every one may pass: the caller counts the peer as not ready this time and asks again
    /// on its next check; a missing address is a membership the operator must fix.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NoAddress => ErrorKind::Halt,
            _ => ErrorKind::Retry,
        }
    }
}
