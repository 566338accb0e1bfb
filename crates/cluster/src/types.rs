//! The Raft type configuration: what a log entry carries and what applying it answers.

use alloy::primitives::{Address, B256, Bytes};
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
    /// Transactions the leader accepted, for every node's pool: a transaction whose hash a
    /// client was given is in a quorum's log before the answer, so it outlives the leader
    /// (docs/cluster.md, "Accepted means kept"). At most [`INTAKE_TRANSACTIONS_MAX`]
    /// transactions and [`INTAKE_BYTES_MAX`] bytes.
    Intake(Vec<IntakeTransaction>),
}

/// Derived blocks one replacement entry carries; more go in the entries after it.
pub const REPLACE_BLOCKS_MAX: usize = 64;

/// Transactions one intake entry carries (`Proposal::Intake`).
pub const INTAKE_TRANSACTIONS_MAX: usize = 1_024;
/// Bytes of encoded transactions one intake entry carries: one full transaction always fits.
pub const INTAKE_BYTES_MAX: usize = 1024 * 1024;
const _: () = assert!(keel_primitives::limits::TX_BYTES_MAX <= INTAKE_BYTES_MAX);
const _: () = assert!(INTAKE_BYTES_MAX <= crate::PEER_REQUEST_BYTES_MAX / 8);

/// A transaction a leader accepted, on its way into every node's pool: its EIP-2718 bytes and
/// the sender the leader recovered (followers never recover a signature, as for blocks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntakeTransaction {
    /// The signed transaction, EIP-2718 encoded.
    pub raw: Bytes,
    /// Its sender.
    pub sender: Address,
}

/// Why a node's pool refused an intake transaction when the entry applied: the JSON-RPC error
/// the client hears (geth's code and words).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntakeRefusal {
    /// Position of the transaction in its entry.
    pub index: u32,
    /// The JSON-RPC error code.
    pub code: i32,
    /// The JSON-RPC error message.
    pub message: String,
}

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
    // Added after `Replace`: the format of the entries before it is unchanged.
    Intake(Vec<IntakeTransaction>),
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
            Self::Intake(transactions) => EncodedProposal::Intake(transactions.clone()),
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
            EncodedProposal::Intake(transactions) => {
                let bytes: usize = transactions.iter().map(|tx| tx.raw.len()).sum();
                if transactions.len() > INTAKE_TRANSACTIONS_MAX || bytes > INTAKE_BYTES_MAX {
                    return Err(serde::de::Error::custom(format!(
                        "an intake of {} transactions and {bytes} bytes, more than \
                         {INTAKE_TRANSACTIONS_MAX} or {INTAKE_BYTES_MAX}",
                        transactions.len()
                    )));
                }
                Self::Intake(transactions)
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
    /// An intake entry's transactions went into this node's pool, but for `refused`.
    Intake {
        /// The transactions the pool refused, by position; empty when it took every one.
        refused: Vec<IntakeRefusal>,
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
