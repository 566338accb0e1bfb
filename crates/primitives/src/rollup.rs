//! The rollup config: what every node and `keel verify` must agree on to derive the same L2
//! chain from the L1 (docs/protocol.md, "The rollup config"), and the L1 origin each L2 block
//! commits to.
//!
//! The origin travels inside the L2 header, so the block hash commits to it: the origin's hash
//! in `parentBeaconBlockRoot` (keel has no beacon chain; the field is otherwise zero) and its
//! number in the 8-byte `nonce` (zero on Ethereum since the merge). A chain that settles on no
//! L1 keeps both zero.
//!
//! The header also commits to the **forced cursor**: how many forced transactions (from the
//! force inbox, in L1 order) the chain has consumed up to and including the block, taken or
//! skipped as invalid. It lives in `difficulty` (zero on Ethereum since the merge, and not
//! visible to contracts: `DIFFICULTY` reads `prevrandao` since then). The sequencer and
//! derivation both read the next due forced transaction from it.

use crate::limits;
use alloy::consensus::Header;
use alloy::eips::BlockNumHash;
use alloy::primitives::{Address, B64, B256, address};
use serde::{Deserialize, Serialize};

/// The L1 block an L2 block commits to.
pub type L1Origin = BlockNumHash;

/// The origin an L2 header commits to.
pub fn origin_of(header: &Header) -> L1Origin {
    L1Origin {
        number: u64::from_be_bytes(header.nonce.0),
        hash: header.parent_beacon_block_root.unwrap_or_default(),
    }
}

/// The forced cursor a header commits to; `None` if `difficulty` does not fit a `u64`.
pub fn forced_cursor_of(header: &Header) -> Option<u64> {
    u64::try_from(header.difficulty).ok()
}

/// Writes `origin` into `header` (the builder's side of [`origin_of`]).
pub fn set_origin(header: &mut Header, origin: L1Origin) {
    header.nonce = B64::from(origin.number.to_be_bytes());
    header.parent_beacon_block_root = Some(origin.hash);
}

/// The batch inbox of the dev rollup: OP's convention, `0xff00…` followed by the L2 chain id.
pub const DEV_BATCH_INBOX: Address = address!("ff00000000000000000000000000000000031337");
/// The force inbox of the dev rollup: `0xfe00…` followed by the L2 chain id.
pub const DEV_FORCE_INBOX: Address = address!("fe00000000000000000000000000000000031337");
/// Which dev account (index in [`crate::dev_accounts`]) posts the dev rollup's batches: the
/// last one, which the examples never spend from.
pub const DEV_BATCHER_INDEX: usize = 9;

/// What every node of one rollup shares, fixed for the chain's life (docs/protocol.md).
///
/// A node with another config derives another chain; it finds out when its derived block
/// differs from its applied one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollupConfig {
    /// The L1's chain id.
    pub l1_chain_id: u64,
    /// Where batches are sent; only the batcher's transactions count.
    pub batch_inbox: Address,
    /// Where forced transactions are sent, by anyone.
    pub force_inbox: Address,
    /// The one key whose batches count.
    pub batcher: Address,
    /// The L1 block derivation starts at: the L2 genesis's origin. Its hash is checked.
    pub l1_start: L1Origin,
    /// How late (in L1 blocks after its origin) a batch may land.
    #[serde(default = "defaults::sequencing_window_blocks")]
    pub sequencing_window_blocks: u64,
    /// How late (in L1 blocks after the L1 block that forced it) a forced transaction may be
    /// in the safe chain.
    #[serde(default = "defaults::force_inclusion_window_blocks")]
    pub force_inclusion_window_blocks: u64,
    /// How many L1 blocks a channel's frames may span.
    #[serde(default = "defaults::channel_timeout_blocks")]
    pub channel_timeout_blocks: u64,
    /// How far (s) an L2 timestamp may run ahead of its origin's.
    #[serde(default = "defaults::max_sequencer_drift_s")]
    pub max_sequencer_drift_s: u64,
}

mod defaults {
    use crate::limits;
    pub(super) fn sequencing_window_blocks() -> u64 {
        limits::SEQUENCING_WINDOW_BLOCKS
    }
    pub(super) fn force_inclusion_window_blocks() -> u64 {
        limits::FORCE_INCLUSION_WINDOW_BLOCKS
    }
    pub(super) fn channel_timeout_blocks() -> u64 {
        limits::CHANNEL_TIMEOUT_BLOCKS
    }
    pub(super) fn max_sequencer_drift_s() -> u64 {
        limits::MAX_SEQUENCER_DRIFT_S
    }
}

/// Why the sequencer has no origin for the next block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    /// The tracker has not read the L1 yet.
    #[error("no L1 block read yet")]
    NoL1,
    /// Every allowed origin is older than the drift allows: the L1 (or the node's view of it)
    /// is stale. Sealing waits; the L1 watcher reports it on `/health`.
    #[error(
        "the newest usable L1 origin {number} (timestamp {origin_timestamp}) is more than {drift_s} s behind the block's timestamp {timestamp}"
    )]
    DriftExceeded {
        /// The origin considered.
        number: u64,
        /// Its timestamp.
        origin_timestamp: u64,
        /// The L2 block's timestamp.
        timestamp: u64,
        /// The rollup's max drift.
        drift_s: u64,
    },
    /// Derivation has not read the force inbox up to the origin the block needs: its due
    /// forced transactions are not known yet.
    #[error("the force inbox is read up to L1 block {read_through:?}, the block needs {needed}")]
    InboxBehind {
        /// The last L1 block read.
        read_through: Option<u64>,
        /// The origin the block needs at least.
        needed: u64,
    },
    /// The safe chain consumed forced transactions past the parent's cursor: derivation
    /// replaced blocks the sequencer built on, and the chain must adopt the derived blocks
    /// before sealing goes on.
    #[error(
        "the safe chain consumed forced transactions up to {safe_cursor}, past the head's cursor {cursor}: adopt the derived chain"
    )]
    SafeAhead {
        /// The parent's forced cursor.
        cursor: u64,
        /// The safe chain's.
        safe_cursor: u64,
    },
    /// The safe chain holds another block at a height this chain holds, with other
    /// transactions: the L1 decided otherwise (a forced-only block past a deadline no batch
    /// met), so the blocks from there were never batched in time and the chain must adopt
    /// the derived blocks before sealing goes on.
    #[error(
        "the safe chain holds block {number} {derived} where this chain holds {applied} (not batched in time): adopt the derived chain"
    )]
    SafeReplaced {
        /// The first height whose blocks differ.
        number: u64,
        /// The derived block there.
        derived: B256,
        /// The applied block there.
        applied: B256,
    },
    /// The oldest block not yet safe has an origin so far behind the L1 head that its batch
    /// could soon miss the sequencing window: sealing stops until the batcher catches up
    /// (the OP Stack's max-safe-lag), so that the window never expires on sealed blocks.
    #[error(
        "batcher backlog: the oldest unsafe block's origin {oldest_origin} is {lag} L1 blocks behind the L1 head (limit {limit})"
    )]
    Backlog {
        /// The origin of the oldest block not yet safe.
        oldest_origin: u64,
        /// How far behind the L1 head it is.
        lag: u64,
        /// The limit: half the sequencing window.
        limit: u64,
    },
    /// The parent's origin is no longer on the L1 chain: the L2 blocks on it must be replaced
    /// before sealing goes on (an L1 reorg deeper than the confirmation depth).
    #[error("the parent's L1 origin {number} {hash} was reorged out of the L1")]
    ParentOriginGone {
        /// Its number.
        number: u64,
        /// Its hash.
        hash: B256,
    },
}

impl OriginError {
    /// Waiting fixes the first two; the third is a reset.
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            Self::NoL1
            | Self::DriftExceeded { .. }
            | Self::InboxBehind { .. }
            | Self::Backlog { .. } => crate::ErrorKind::Retry,
            Self::ParentOriginGone { .. } | Self::SafeAhead { .. } | Self::SafeReplaced { .. } => {
                crate::ErrorKind::Reset
            }
        }
    }
}

/// Why a rollup config is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rollup config: {0}")]
pub struct RollupConfigError(pub String);

impl RollupConfig {
    /// The dev rollup on an L1 with chain id `l1_chain_id` whose block `l1_start` it starts
    /// at: the dev inboxes, dev account 9 as the batcher, the default windows.
    pub fn dev(l1_chain_id: u64, l1_start: L1Origin) -> Self {
        let batcher = crate::dev_accounts()[DEV_BATCHER_INDEX].address();
        Self {
            l1_chain_id,
            batch_inbox: DEV_BATCH_INBOX,
            force_inbox: DEV_FORCE_INBOX,
            batcher,
            l1_start,
            sequencing_window_blocks: limits::SEQUENCING_WINDOW_BLOCKS,
            force_inclusion_window_blocks: limits::FORCE_INCLUSION_WINDOW_BLOCKS,
            channel_timeout_blocks: limits::CHANNEL_TIMEOUT_BLOCKS,
            max_sequencer_drift_s: limits::MAX_SEQUENCER_DRIFT_S,
        }
    }

    /// Parses a rollup config file (JSON, like the OP Stack's `rollup.json`) and checks it.
    pub fn from_json(text: &str) -> Result<Self, RollupConfigError> {
        let config: Self =
            serde_json::from_str(text).map_err(|error| RollupConfigError(error.to_string()))?;
        config.check()?;
        Ok(config)
    }

    /// Checks the windows against keel's bounds and each other (docs/protocol.md,
    /// "Constants"), and that the inboxes are distinct.
    pub fn check(&self) -> Result<(), RollupConfigError> {
        let fail = |message: String| Err(RollupConfigError(message));
        if self.batch_inbox == self.force_inbox {
            return fail("batch_inbox and force_inbox must differ".into());
        }
        if !(limits::FORCE_INCLUSION_WINDOW_BLOCKS_MIN..=limits::FORCE_INCLUSION_WINDOW_BLOCKS)
            .contains(&self.force_inclusion_window_blocks)
        {
            return fail(format!(
                "force_inclusion_window_blocks {} outside {}..={} (above {} breaks the \
                 10-minute promise)",
                self.force_inclusion_window_blocks,
                limits::FORCE_INCLUSION_WINDOW_BLOCKS_MIN,
                limits::FORCE_INCLUSION_WINDOW_BLOCKS,
                limits::FORCE_INCLUSION_WINDOW_BLOCKS,
            ));
        }
        if self.sequencing_window_blocks <= self.force_inclusion_window_blocks {
            return fail(format!(
                "sequencing_window_blocks {} must exceed force_inclusion_window_blocks {}",
                self.sequencing_window_blocks, self.force_inclusion_window_blocks
            ));
        }
        if self.sequencing_window_blocks > limits::SEQUENCING_WINDOW_BLOCKS_MAX {
            return fail(format!(
                "sequencing_window_blocks {} above {}",
                self.sequencing_window_blocks,
                limits::SEQUENCING_WINDOW_BLOCKS_MAX
            ));
        }
        if self.channel_timeout_blocks == 0
            || self.channel_timeout_blocks > self.sequencing_window_blocks
        {
            return fail(format!(
                "channel_timeout_blocks {} outside 1..={}",
                self.channel_timeout_blocks, self.sequencing_window_blocks
            ));
        }
        if self.max_sequencer_drift_s == 0
            || self.max_sequencer_drift_s > limits::MAX_SEQUENCER_DRIFT_S_MAX
        {
            return fail(format!(
                "max_sequencer_drift_s {} outside 1..={}",
                self.max_sequencer_drift_s,
                limits::MAX_SEQUENCER_DRIFT_S_MAX
            ));
        }
        Ok(())
    }

    /// A short digest of the config, for logs and for a store to remember which rollup it
    /// belongs to.
    pub fn digest(&self) -> B256 {
        alloy::primitives::keccak256(serde_json::to_vec(self).expect("serialises"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origin_round_trips_through_the_header() {
        let mut header = crate::ChainSpec::dev().genesis_block().header;
        assert_eq!(origin_of(&header), L1Origin::default());
        let origin = L1Origin {
            number: 0x0102_0304_0506,
            hash: B256::repeat_byte(7),
        };
        set_origin(&mut header, origin);
        assert_eq!(origin_of(&header), origin);
    }

    #[test]
    fn configs_out_of_bounds_are_refused() {
        let good = RollupConfig::dev(1337, L1Origin::default());
        assert_eq!(good.check(), Ok(()));
        type Change = fn(&mut RollupConfig);
        let table: [(Change, &str); 5] = [
            (|c| c.force_inbox = c.batch_inbox, "must differ"),
            (
                |c| c.force_inclusion_window_blocks = 51,
                "breaks the 10-minute",
            ),
            (|c| c.force_inclusion_window_blocks = 1, "outside"),
            (|c| c.sequencing_window_blocks = 20, "must exceed"),
            (|c| c.channel_timeout_blocks = 0, "channel_timeout_blocks"),
        ];
        for (change, expected) in table {
            let mut config = good.clone();
            change(&mut config);
            let error = config.check().unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
    }
}
