//! The Raft type configuration: what a log entry carries and what applying it answers.

use alloy::primitives::{B256, Bytes};
use keel_primitives::SealedBlock;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::io::Cursor;

/// A node's id in the cluster.
pub type NodeId = u64;

/// What a log entry proposes. Blocks travel with their senders (followers never recover
/// signatures), serialised as their stored encoding: RLP header and body.
// Nearly every entry is a block: boxing it would allocate on the common path to shrink the
// rare replacement.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proposal {
    /// A sealed block, applied only as the head's child (compare-and-append, I3).
    Block(SealedBlock),
    /// Unsafe blocks replaced by blocks derived from the L1 (docs/protocol.md, "What gets
    /// replaced"): the chain is unwound to `base` and `blocks` applied on it, in one entry, so
    /// that no node ever serves the chain in between. Applied only if the chain holds `base`;
    /// at most [`REPLACE_BLOCKS_MAX`] blocks (none: the unwind alone, when the blocks above
    /// `base` lost their L1 origin and the sequencer builds them anew).
    Replace {
        /// The block the replacement builds on: `(number, hash)`.
        base: (u64, B256),
        /// The derived blocks, in order, the first a child of `base`.
        blocks: Vec<SealedBlock>,
    },
}

/// Derived blocks one replacement entry carries; more go in the entries after it.
pub const REPLACE_BLOCKS_MAX: usize = 64;

#[derive(Serialize, Deserialize)]
struct EncodedBlock {
    header: Bytes,
    body: Bytes,
}

#[derive(Serialize, Deserialize)]
enum EncodedProposal {
    Block(EncodedBlock),
    Replace {
        base_number: u64,
        base_hash: B256,
        blocks: Vec<EncodedBlock>,
    },
}

fn encoded(block: &SealedBlock) -> EncodedBlock {
    EncodedBlock {
        header: block.encode_header().into(),
        body: block.encode_body().into(),
    }
}

fn decoded<E: serde::de::Error>(block: &EncodedBlock) -> Result<SealedBlock, E> {
    SealedBlock::decode(&block.header, &block.body).map_err(E::custom)
}

impl Serialize for Proposal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Block(block) => EncodedProposal::Block(encoded(block)),
            Self::Replace { base, blocks } => EncodedProposal::Replace {
                base_number: base.0,
                base_hash: base.1,
                blocks: blocks.iter().map(encoded).collect(),
            },
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Proposal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match EncodedProposal::deserialize(deserializer)? {
            EncodedProposal::Block(block) => Self::Block(decoded(&block)?),
            EncodedProposal::Replace {
                base_number,
                base_hash,
                blocks,
            } => {
                if blocks.len() > REPLACE_BLOCKS_MAX {
                    return Err(serde::de::Error::custom(format!(
                        "a replacement of {} blocks, more than {REPLACE_BLOCKS_MAX}",
                        blocks.len()
                    )));
                }
                Self::Replace {
                    base: (base_number, base_hash),
                    blocks: blocks.iter().map(decoded).collect::<Result<_, _>>()?,
                }
            }
        })
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
    /// Unsafe blocks were replaced by derived ones: the chain was unwound to `base` and now
    /// ends at `head`.
    Replaced {
        /// The block the replacement built on.
        base: u64,
        /// How many blocks the unwind removed.
        removed: u64,
        /// The new head: `(number, hash)`.
        head: (u64, B256),
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
        D = Proposal,
        R = ApplyOutcome,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);
