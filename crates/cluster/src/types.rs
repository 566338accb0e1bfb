//! The Raft type configuration: what a log entry carries and what applying it answers.

use alloy::primitives::{B256, Bytes};
use keel_primitives::SealedBlock;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::io::Cursor;

/// A node's id in the cluster.
pub type NodeId = u64;

/// A sealed block proposed through the log, senders included (followers never recover
/// signatures). Serialised as its stored encoding: RLP header and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockProposal(pub SealedBlock);

#[derive(Serialize, Deserialize)]
struct EncodedBlock {
    header: Bytes,
    body: Bytes,
}

impl Serialize for BlockProposal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        EncodedBlock {
            header: self.0.encode_header().into(),
            body: self.0.encode_body().into(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for BlockProposal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let encoded = EncodedBlock::deserialize(deserializer)?;
        SealedBlock::decode(&encoded.header, &encoded.body)
            .map(BlockProposal)
            .map_err(serde::de::Error::custom)
    }
}

/// What applying one entry did, the same on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApplyOutcome {
    /// The entry carried no block (blank or membership).
    Noop,
    /// The block became the head.
    Applied {
        /// Its number.
        number: u64,
        /// Its hash.
        hash: B256,
    },
    /// The block was not the head's child (compare-and-append, I3): nothing changed.
    Rejected {
        /// Its number.
        number: u64,
        /// Its parent hash.
        parent: B256,
        /// The head when it was applied.
        head: B256,
    },
}

openraft::declare_raft_types!(
    /// keel's Raft types.
    pub TypeConfig:
        D = BlockProposal,
        R = ApplyOutcome,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);
