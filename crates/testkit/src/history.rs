//! What a workload saw, as data: every transaction sent and every answer, every head any node
//! exposed while faults ran, every fault, and every node's chain read back at the end. The
//! chaos runner writes it as JSON (`history.json`), `keel check` reads it back.
//!
//! Times are milliseconds since the run started, on the observer's clock.

use alloy::primitives::B256;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Everything one run saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Every send of a transaction, in the order the sends started. One transaction may be sent
    /// more than once (a client retrying after a timeout sends the same bytes again).
    pub sends: Vec<Send>,
    /// The first receipt a client was served for a transaction.
    pub receipts: Vec<ReceiptSeen>,
    /// Every head observation: a node's latest block when it was polled.
    pub heads: Vec<HeadSeen>,
    /// Every fault the nemesis injected, and when it healed.
    pub faults: Vec<Fault>,
    /// Unsafe blocks a node showed and then replaced by blocks derived from the L1 (the one
    /// replacement the protocol allows, docs/protocol.md): their heads are moved here out of
    /// `heads`, so that they are not conflicts, and still count as blocks made in time.
    #[serde(default)]
    pub replacements: Vec<Replacement>,
    /// Every node's chain, read back after the faults healed and the cluster converged.
    pub chains: Vec<ChainRead>,
    /// Leadership rotations each node made (by id), read from its metrics at the end.
    #[serde(default)]
    pub rotations: BTreeMap<u64, u64>,
    /// The highest Raft term any node reported when the safety phase began and when it ended
    /// (with no faults, a change is a spurious election); none where not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terms: Option<[u64; 2]>,
    /// When the run stopped observing.
    pub ended_ms: u64,
}

/// One send of a transaction and its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Send {
    /// The transaction's hash (computed by the client from the bytes it sent).
    pub transaction: B256,
    /// Which node's RPC it went to.
    pub node: u64,
    /// When the send started.
    pub at_ms: u64,
    /// What the node answered.
    pub answer: Answer,
}

/// The answer to `eth_sendRawTransaction`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Answer {
    /// The node returned the transaction's hash: accepted into a pool.
    Accepted,
    /// The node answered with a JSON-RPC error.
    Rejected {
        /// The error code.
        code: i64,
        /// The error message.
        message: String,
    },
    /// No answer: the connection failed or the time ran out. The transaction may or may not
    /// have been accepted (Jepsen's "info" outcome).
    Unknown {
        /// What went wrong.
        message: String,
    },
}

/// A receipt a client was served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptSeen {
    /// The transaction.
    pub transaction: B256,
    /// The node that served it.
    pub node: u64,
    /// When it was served.
    pub at_ms: u64,
    /// The block the receipt names.
    pub block_number: u64,
    /// The block's hash, as the receipt names it.
    pub block_hash: B256,
}

/// A node's latest block, as one poll saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadSeen {
    /// The node.
    pub node: u64,
    /// When the answer came back.
    pub at_ms: u64,
    /// The head's number.
    pub number: u64,
    /// The head's hash.
    pub hash: B256,
}

/// A node unwinding unsafe blocks to adopt the chain derived from the L1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replacement {
    /// The node.
    pub node: u64,
    /// When it unwound.
    pub at_ms: u64,
    /// The height it unwound to; the derived blocks follow it.
    pub to: u64,
    /// The heads it had shown above `to`.
    pub heads: Vec<HeadSeen>,
}

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// What it was (`kill`, `pause`, `partition`, `one-way-partition`, `restart-all`, ...).
    pub kind: String,
    /// The nodes it hit.
    pub nodes: Vec<u64>,
    /// Whether it hit the leader of the moment: its gap is a failover gap.
    pub leader: bool,
    /// When it started.
    pub started_ms: u64,
    /// When it healed (the node restarted or resumed, the partition lifted); none if it never
    /// healed within the run.
    pub healed_ms: Option<u64>,
    /// How many terms Raft went through from just before the fault until the cluster had a
    /// leader again after its heal; none where not measured (the simulation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term_increments: Option<u64>,
}

/// A node's chain, read back block by block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainRead {
    /// The node.
    pub node: u64,
    /// Its blocks from genesis to its head, in order.
    pub blocks: Vec<BlockRead>,
}

/// One block of a chain read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRead {
    /// Its number.
    pub number: u64,
    /// Its hash.
    pub hash: B256,
    /// Its parent's hash.
    pub parent_hash: B256,
    /// The hashes of its transactions.
    pub transactions: Vec<B256>,
}
