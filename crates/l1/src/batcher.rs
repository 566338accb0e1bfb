//! The batcher: posts the sequenced chain to the L1's batch inbox, so that derivation can
//! make it safe (docs/protocol.md, "The batcher").
//!
//! ```text
//!  applied chain (the sequencer's) ──blocks past the last posted──► batches ──► channel
//!        (zstd) ──► frames ──► self-check (decode it all back, parent, windows) ──► sign
//!        ──► L1 pool ──► inclusion tracked; a stuck one re-sent at the same nonce, fees bumped
//!  derived chain (safe head) ──► where posting starts; what is in flight is beyond it
//! ```
//!
//! ### Correctness
//! - **Fenced.** It runs only while its node may sequence (in a cluster: the leader in the
//!   term it started in); the moment that stops, it stops, before its next send.
//! - **Its start is the L1's.** It keeps no state across restarts or leader changes: it first
//!   waits until the batcher key has no transaction pending on the L1 (after a few L1 blocks it
//!   replaces a stuck one by an empty self-transfer at a higher fee), then until derivation
//!   has read past that point, and posts from the safe head on. So a block in flight from an
//!   earlier batcher is never posted again, and none is skipped.
//! - **Checked before signing** (optimism#13150): every channel is decoded back from its frames
//!   and compared; its first block must continue what is posted; no block may be past its
//!   sequencing window (derivation would drop it).
//! - **One transaction type per nonce lane** (optimism#10941): a batcher posts calldata or
//!   blobs for its whole life (blobs only where the L1 takes them), and a replacement keeps
//!   the type; fee bumps clear geth's threshold by a wei (base/base#4506), 100 % for blobs
//!   (geth's blob pool).

use crate::codec::{Compression, Frame, compress};
use crate::send::{FeeCaps, sign_blob, sign_calldata};
use crate::{Batch, L1Client, L1Error, L1Head, NonceAt, Rejection, encode_batches};
use alloy::eips::eip7594::BlobTransactionSidecarEip7594;
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::signers::local::PrivateKeySigner;
use keel_primitives::{RollupConfig, limits, origin_of};
use keel_storage::Store;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// Bytes of frame data in one batch transaction: under geth's 128 KiB `txMaxSize`, with room
/// for the transaction's own fields.
pub const BATCHER_TX_DATA_BYTES_MAX: usize = 120_000;
/// Batch transactions in flight (sent, not included) at once.
pub const BATCHER_IN_FLIGHT_MAX: usize = 8;
/// Uncompressed bytes of blocks one channel takes.
pub const BATCHER_CHANNEL_INPUT_BYTES_MAX: usize = 4 * 1024 * 1024;
/// L1 blocks a transaction may wait in the pool before it is re-sent with higher fees.
pub const BATCHER_RESEND_AFTER_BLOCKS: u64 = 3;
/// L1 blocks a pending transaction of an earlier batcher may wait before it is replaced.
pub const BATCHER_SETTLE_BLOCKS: u64 = 10;
/// L1 blocks of margin a block must have left in its sequencing window to be posted.
pub const BATCHER_WINDOW_MARGIN_BLOCKS: u64 = 10;
/// The fee bump of a replacement, in percent: geth's threshold (a wei more is added).
pub const BATCHER_FEE_BUMP_PERCENT: u128 = 10;
/// The fee bump of a blob transaction's replacement: geth's blob pool asks 100 % on every fee.
pub const BATCHER_BLOB_FEE_BUMP_PERCENT: u128 = 100;
/// The hashes of one batch transaction looked up when its nonce moved: its newest signings
/// (each fee bump signs it again; an older one may be the one that landed).
pub const BATCHER_HASHES_KEPT: usize = 4;
/// Looks (one a turn) that must find a transaction's nonce taken with no receipt under any of
/// its hashes before the batcher concludes another sender took it. One look is not enough: an
/// L1 node can show a block's nonces before its receipts (anvil did, in CI, twice), and starting
/// over on that posts blocks twice.
pub const BATCHER_NONCE_TAKEN_LOOKS: u32 = 3;
const _: () = assert!(BATCHER_NONCE_TAKEN_LOOKS >= 2);
const _: () = assert!(crate::blob::BLOB_DATA_BYTES_MAX <= limits::FRAME_BYTES_MAX);
const _: () = assert!(BATCHER_TX_DATA_BYTES_MAX + crate::FRAME_OVERHEAD_BYTES < 128 * 1024);
const _: () = assert!(BATCHER_TX_DATA_BYTES_MAX <= limits::FRAME_BYTES_MAX);
const _: () = assert!(BATCHER_HASHES_KEPT >= 2); // the newest and the one it replaced
const _: () = assert!(BATCHER_CHANNEL_INPUT_BYTES_MAX <= limits::CHANNEL_DECOMPRESSED_BYTES_MAX);

/// Whether this node may post now, and in which term (a cluster's leadership; a single node
/// is always term 0). The batcher stops when the answer changes.
pub type Fence = Arc<dyn Fn() -> Option<u64> + Send + Sync>;

/// Why the batcher stopped or skipped a turn.
#[derive(Debug, thiserror::Error)]
pub enum BatcherError {
    /// The L1 failed.
    #[error(transparent)]
    L1(#[from] L1Error),
    /// A store failed.
    #[error("store: {0}")]
    Storage(#[from] keel_storage::StorageError),
    /// Its own channel does not decode back, or does not continue the chain: a batcher bug,
    /// caught before signing.
    #[error("self-check refused a channel: {0}")]
    SelfCheck(String),
    /// The L1's nonce of the batcher key is not where this batcher left it: another sender
    /// used the key, or an L1 reorg or the pool dropped transactions it sent. It starts over
    /// from what the L1 holds.
    #[error(
        "the batcher key's nonce is {found} on the L1, this batcher expected {expected}: starting over"
    )]
    NonceMoved {
        /// The nonce this batcher meant to use next (or waited on).
        expected: u64,
        /// The L1's.
        found: u64,
    },
}

/// Where the batcher puts its frames on the L1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataAvailability {
    /// In the calldata of type-2 transactions (any L1, the embedded dev L1 included).
    #[default]
    Calldata,
    /// In EIP-4844 blobs, one frame a blob, one blob a type-3 transaction; calldata where the
    /// L1 takes no blobs (the embedded dev L1), decided when a batcher starts.
    Blobs,
}

impl std::str::FromStr for DataAvailability {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "calldata" => Ok(Self::Calldata),
            "blobs" => Ok(Self::Blobs),
            other => Err(format!("`{other}`: expected calldata or blobs")),
        }
    }
}

impl std::fmt::Display for DataAvailability {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Self::Calldata => "calldata",
            Self::Blobs => "blobs",
        })
    }
}

/// One batch transaction sent and not yet included.
#[derive(Debug, Clone)]
struct InFlight {
    nonce: u64,
    /// The blocks its channel carries; the frame's place in it.
    first: u64,
    last: u64,
    frame: u16,
    data: Bytes,
    /// Its blob, for a blob transaction (kept: a fee bump re-signs without new proofs).
    sidecar: Option<Arc<BlobTransactionSidecarEip7594>>,
    caps: FeeCaps,
    /// The hashes it was signed under, the newest last: a fee bump replaces it in the pool,
    /// but the one before may land first (at most `BATCHER_HASHES_KEPT` are kept).
    hashes: Vec<B256>,
    /// The L1 head when it was last sent.
    sent_at: u64,
    /// Whether its frame is its channel's last (the one that completes it).
    closes: bool,
    /// Looks in a row that found its nonce taken and no receipt under any of its hashes.
    taken_unseen: u32,
}

/// A channel whose last frame landed on the L1, not safe yet.
#[derive(Debug, Clone, Copy)]
struct Landed {
    /// The blocks it carries.
    first: u64,
    last: u64,
    /// The L1 block that holds its last frame.
    included_at: u64,
}

/// What the batcher needs.
#[derive(Clone)]
pub struct BatcherConfig {
    /// The rollup's rules and addresses.
    pub rollup: RollupConfig,
    /// The batcher key (its address must be the rollup's batcher).
    pub signer: PrivateKeySigner,
    /// How often it looks, at most (the L1 block time / 4).
    pub poll: Duration,
    /// How the channel is compressed.
    pub compression: Compression,
    /// Where frames go.
    pub data: DataAvailability,
}

impl std::fmt::Debug for BatcherConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("BatcherConfig")
            .field("batcher", &self.signer.address())
            .finish_non_exhaustive()
    }
}

/// The batcher of one node.
pub struct Batcher {
    config: BatcherConfig,
    client: Arc<dyn L1Client>,
    /// The sequenced chain.
    applied: Arc<Store>,
    /// The derived chain (its head is the safe head).
    derived: Arc<Store>,
    derivation: tokio::sync::watch::Receiver<crate::DerivationStatus>,
    fence: Fence,
    in_flight: VecDeque<InFlight>,
    next_nonce: u64,
    /// The last block posted (sent), while this batcher lives.
    posted: u64,
    /// The L1 head when the last channel was opened.
    last_channel_at: Option<u64>,
    /// Channels that landed and are not safe yet, oldest first (at most
    /// `BATCHER_IN_FLIGHT_MAX` of them stay, as at most that many are sent at once).
    landed: VecDeque<Landed>,
    /// The L1 block of the last batch transaction included.
    last_included_at: Option<u64>,
    /// Whether this batcher posts blobs (decided when it starts, kept for its life).
    blobs: bool,
    decided: bool,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Batcher")
            .field("posted", &self.posted)
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

impl Batcher {
    /// A batcher posting `applied`'s blocks past `derived`'s head, while `fence` allows.
    pub fn new(
        config: BatcherConfig,
        client: Arc<dyn L1Client>,
        applied: Arc<Store>,
        derived: Arc<Store>,
        derivation: tokio::sync::watch::Receiver<crate::DerivationStatus>,
        fence: Fence,
    ) -> Self {
        Self {
            config,
            client,
            applied,
            derived,
            derivation,
            fence,
            in_flight: VecDeque::new(),
            next_nonce: 0,
            posted: 0,
            last_channel_at: None,
            landed: VecDeque::new(),
            last_included_at: None,
            blobs: false,
            decided: false,
        }
    }

    /// Bytes of frame data one transaction carries.
    fn tx_data_max(&self) -> usize {
        if self.blobs {
            crate::blob::BLOB_DATA_BYTES_MAX
        } else {
            BATCHER_TX_DATA_BYTES_MAX
        }
    }

    /// A signed batch transaction: `data` to `to` in calldata, or in `sidecar`'s blob.
    fn sign(
        &self,
        nonce: u64,
        to: Address,
        data: &Bytes,
        sidecar: Option<&BlobTransactionSidecarEip7594>,
        caps: FeeCaps,
    ) -> (alloy::consensus::TxEnvelope, Bytes) {
        let chain_id = self.config.rollup.l1_chain_id;
        match sidecar {
            Some(sidecar) => sign_blob(&self.config.signer, chain_id, nonce, to, sidecar, caps),
            None => sign_calldata(&self.config.signer, chain_id, nonce, to, data.clone(), caps),
        }
    }

    fn bump_percent(&self) -> u128 {
        if self.blobs {
            BATCHER_BLOB_FEE_BUMP_PERCENT
        } else {
            BATCHER_FEE_BUMP_PERCENT
        }
    }

    /// Whether this node still sequences in `term`: checked before every send.
    fn fenced(&self, term: u64) -> bool {
        (self.fence)() == Some(term)
    }

    fn address(&self) -> Address {
        self.config.signer.address()
    }

    /// Runs while the fence holds (in the term it first saw); returns when it no longer does.
    pub async fn run(mut self) {
        let Some(term) = (self.fence)() else {
            return;
        };
        if self.address() != self.config.rollup.batcher {
            tracing::error!(
                key = %self.address(),
                batcher = %self.config.rollup.batcher,
                "the batcher key is not the rollup's batcher: nothing is posted"
            );
            return;
        }
        loop {
            // Start from what the L1 holds: no transaction of ours pending, derivation past it.
            loop {
                if !self.fenced(term) {
                    return;
                }
                match self.settle().await {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(error) => {
                        metrics::counter!("keel_batcher_errors_total", "kind" => error_kind(&error))
                            .increment(1);
                        tracing::debug!(%error, "batcher waits to start");
                    }
                }
                tokio::time::sleep(self.config.poll).await;
            }
            tracing::info!(
                from = self.posted + 1,
                nonce = self.next_nonce,
                "batcher started"
            );
            loop {
                if !self.fenced(term) {
                    tracing::info!("batcher stops: this node no longer sequences in its term");
                    return;
                }
                match self.turn(term).await {
                    Ok(()) => {}
                    Err(error @ BatcherError::NonceMoved { .. }) => {
                        metrics::counter!("keel_batcher_errors_total", "kind" => error_kind(&error))
                            .increment(1);
                        tracing::warn!(%error, "batcher");
                        self.in_flight.clear();
                        break;
                    }
                    Err(error) => {
                        metrics::counter!("keel_batcher_errors_total", "kind" => error_kind(&error))
                            .increment(1);
                        match error {
                            BatcherError::SelfCheck(_) => {
                                tracing::error!(%error, "batcher: channel refused before signing");
                            }
                            _ => tracing::warn!(%error, "batcher turn failed"),
                        }
                    }
                }
                tokio::time::sleep(self.config.poll).await;
            }
        }
    }

    /// Waits out (or replaces) transactions an earlier batcher left pending, then starts
    /// after the safe head once derivation has read past them. `Ok(true)` once started.
    async fn settle(&mut self) -> Result<bool, BatcherError> {
        let address = self.address();
        if self.config.data == DataAvailability::Blobs && !self.decided {
            let takes_blobs = self.client.fees().await?.blob_base_fee.is_some();
            if !takes_blobs {
                tracing::warn!("the L1 takes no blobs: this batcher posts calldata");
            }
            self.blobs = takes_blobs;
            self.decided = true;
        }
        let latest = self.client.nonce(address, NonceAt::Latest).await?;
        let pending = self.client.nonce(address, NonceAt::Pending).await?;
        let head = self.client.head(L1Head::Latest).await?.number;
        if pending > latest {
            let since = *self.last_channel_at.get_or_insert(head);
            if head >= since + BATCHER_SETTLE_BLOCKS {
                // Replace the oldest pending one by an empty self-transfer: what it carried,
                // if it lands first, counts; if the replacement lands, nothing was posted.
                // A blob transaction is replaced by a blob transaction (geth keeps the types
                // of one sender's lane apart): an empty blob, to the batcher itself.
                let fees = self.client.fees().await?;
                let caps = FeeCaps::for_fees(&fees).bumped(&fees, 100);
                let sidecar = if self.blobs {
                    Some(
                        crate::blob::sidecar(&[])
                            .map_err(|error| BatcherError::SelfCheck(error.to_string()))?,
                    )
                } else {
                    None
                };
                let (_, raw) = self.sign(latest, address, &Bytes::new(), sidecar.as_ref(), caps);
                match self.client.send_raw_transaction(raw).await {
                    Ok(_) => tracing::warn!(nonce = latest, "replaced a stuck batch transaction"),
                    Err(error) => tracing::debug!(%error, "replacing a stuck transaction"),
                }
                self.last_channel_at = Some(head);
            }
            return Ok(false);
        }
        let derived_l1 = self.canonical_derivation().await?;
        if derived_l1.is_none_or(|derived| derived < head) {
            return Ok(false);
        }
        self.next_nonce = latest;
        self.posted = self.derived.snapshot()?.head().0;
        self.last_channel_at = None;
        Ok(true)
    }

    /// The L1 block derivation has read through, if it is on the L1's chain now: a derivation
    /// that has not noticed a reorg yet does not count (its safe head is about to drop).
    async fn canonical_derivation(&self) -> Result<Option<u64>, BatcherError> {
        let Some(read) = self.derivation.borrow().l1 else {
            return Ok(None);
        };
        let canonical = self.client.block_by_number(read.number).await?;
        Ok((canonical.map(|block| block.hash) == Some(read.hash)).then_some(read.number))
    }

    /// One look: inclusion of what is in flight, re-sends, then a new channel if due.
    async fn turn(&mut self, term: u64) -> Result<(), BatcherError> {
        let head = self.client.head(L1Head::Latest).await?;
        // Transactions this batcher sent that are neither included nor pending any more (an
        // L1 reorg dropped them, or the pool evicted them) leave a gap no later one can fill.
        let pending = self.client.nonce(self.address(), NonceAt::Pending).await?;
        if pending < self.next_nonce {
            return Err(BatcherError::NonceMoved {
                expected: self.next_nonce,
                found: pending,
            });
        }
        self.track(head.number, term).await?;
        // Where derivation stands first, the safe head after: derivation commits a block
        // before it reports the L1 block it came from, so this safe head covers that report.
        let derived_l1 = self.canonical_derivation().await?;
        let safe = self.derived.snapshot()?.head();
        let applied = self.applied.snapshot()?;
        let unsafe_head = applied.head().0;
        // Another batcher (or an earlier life of this one) posted further: follow the L1.
        if safe.0 > self.posted {
            self.posted = safe.0;
        }
        // A channel that landed and that derivation read past without its blocks becoming
        // safe was removed by an L1 reorg, or dropped: post again from the safe head (what
        // is still in flight lands and is skipped).
        self.landed.retain(|landed| landed.last > safe.0);
        let lost_channel = matches!(
            (self.landed.front(), derived_l1),
            (Some(oldest), Some(derived)) if derived > oldest.included_at
        );
        let lost_posts = self.in_flight.is_empty()
            && self.posted > safe.0
            && matches!(
                (self.last_included_at, derived_l1),
                (Some(included), Some(derived)) if derived > included
            );
        if lost_channel || lost_posts {
            let oldest = self.landed.front().copied();
            tracing::warn!(
                first = ?oldest.map(|landed| landed.first),
                posted = self.posted,
                safe = safe.0,
                "posted blocks did not become safe (an L1 reorg?): posting them again"
            );
            metrics::counter!("keel_batcher_reposts_total").increment(1);
            self.posted = safe.0;
            self.landed.clear();
            self.last_included_at = None;
        }
        self.report(&applied, safe.0, unsafe_head)?;
        if applied.block_hash(safe.0)? != Some(safe.1) {
            // The applied chain is not the derived one at the safe head: a divergence or a
            // replacement the cluster has not adopted yet. Posting would be dropped.
            return Ok(());
        }
        if self.posted >= unsafe_head || self.in_flight.len() >= BATCHER_IN_FLIGHT_MAX {
            return Ok(());
        }
        // One channel per L1 block unless the backlog fills a transaction.
        let backlog_bytes = self.backlog_bytes(&applied, unsafe_head)?;
        if self.last_channel_at == Some(head.number) && backlog_bytes < self.tx_data_max() {
            return Ok(());
        }
        let (channel, first, last) = self.channel(&applied, head.number)?;
        drop(applied);
        let frames = frames_of(&channel, self.tx_data_max());
        if self.in_flight.len() + frames.len() > BATCHER_IN_FLIGHT_MAX && !self.in_flight.is_empty()
        {
            return Ok(());
        }
        let fees = self.client.fees().await?;
        let caps = FeeCaps::for_fees(&fees);
        for frame in frames {
            if !self.fenced(term) {
                return Ok(());
            }
            let data = Frame::encode_all(std::slice::from_ref(&frame));
            let nonce = self.next_nonce;
            let sidecar = if self.blobs {
                Some(Arc::new(crate::blob::sidecar(&data).map_err(|error| {
                    BatcherError::SelfCheck(format!("a frame's blob: {error}"))
                })?))
            } else {
                None
            };
            let (envelope, raw) = self.sign(
                nonce,
                self.config.rollup.batch_inbox,
                &data,
                sidecar.as_deref(),
                caps,
            );
            match self.client.send_raw_transaction(raw).await {
                Ok(_) => {}
                Err(error) if error.rejection() == Some(Rejection::NonceTooLow) => {
                    let found = self.client.nonce(self.address(), NonceAt::Latest).await?;
                    return Err(BatcherError::NonceMoved {
                        expected: nonce,
                        found,
                    });
                }
                Err(error) => return Err(error.into()),
            }
            metrics::counter!("keel_batcher_transactions_total", "result" => "sent").increment(1);
            tracing::debug!(
                nonce,
                first,
                last,
                frame = frame.number,
                "batch transaction sent"
            );
            self.in_flight.push_back(InFlight {
                nonce,
                first,
                last,
                frame: frame.number,
                data,
                sidecar,
                caps,
                hashes: vec![*envelope.tx_hash()],
                sent_at: head.number,
                closes: frame.is_last,
                taken_unseen: 0,
            });
            self.next_nonce += 1;
        }
        self.posted = last;
        self.last_channel_at = Some(head.number);
        metrics::gauge!("keel_batcher_in_flight").set(self.in_flight.len() as f64);
        Ok(())
    }

    /// Drops what landed, re-sends what waited too long with bumped fees.
    async fn track(&mut self, head: u64, term: u64) -> Result<(), BatcherError> {
        let mut latest_nonce = None;
        while let Some(oldest) = self.in_flight.front() {
            let newest = *oldest.hashes.last().expect("signed at least once");
            let receipt = match self.client.receipt(newest).await? {
                Some(receipt) => receipt,
                None => {
                    // Not included under its last hash when asked. Its nonce tells whether
                    // anything took that nonce since; it is read *before* the receipts are
                    // asked again, so that a block landing between the two reads (a
                    // freshly-sealed one: CI saw it) is found, not taken for another sender.
                    let latest = match latest_nonce {
                        Some(latest) => latest,
                        None => *latest_nonce
                            .insert(self.client.nonce(self.address(), NonceAt::Latest).await?),
                    };
                    if latest <= oldest.nonce {
                        break;
                    }
                    let mut found = None;
                    for hash in oldest.hashes.iter().rev() {
                        if let Some(receipt) = self.client.receipt(*hash).await? {
                            found = Some(receipt);
                            break;
                        }
                    }
                    match found {
                        Some(receipt) => receipt,
                        // Nonce taken and under none of its hashes, look after look: another
                        // sender took it.
                        None if oldest.taken_unseen + 1 >= BATCHER_NONCE_TAKEN_LOOKS => {
                            return Err(BatcherError::NonceMoved {
                                expected: oldest.nonce,
                                found: latest,
                            });
                        }
                        None => {
                            let nonce = oldest.nonce;
                            let oldest = &mut self.in_flight[0];
                            oldest.taken_unseen += 1;
                            tracing::info!(
                                nonce,
                                looks = oldest.taken_unseen,
                                "the batch transaction's nonce is taken but its receipt not \
                                 found yet; looking again next turn"
                            );
                            break;
                        }
                    }
                }
            };
            let fee = U256::from(receipt.gas_used) * U256::from(receipt.effective_gas_price)
                + U256::from(receipt.blob_gas_used.unwrap_or(0))
                    * U256::from(receipt.blob_gas_price.unwrap_or(0));
            metrics::counter!("keel_batcher_l1_fees_wei_total")
                .increment(fee.saturating_to::<u64>());
            if !receipt.succeeded {
                // Its frame did not count: what follows it would be out of order. Start over
                // from the safe head once the rest settles.
                tracing::warn!(nonce = oldest.nonce, "a batch transaction failed on the L1");
                metrics::counter!("keel_batcher_transactions_total", "result" => "failed")
                    .increment(1);
                self.in_flight.clear();
                self.posted = self.derived.snapshot()?.head().0;
                return Ok(());
            }
            metrics::counter!("keel_batcher_transactions_total", "result" => "included")
                .increment(1);
            self.last_included_at = Some(receipt.block_number);
            if oldest.closes {
                if self.landed.len() == BATCHER_IN_FLIGHT_MAX {
                    self.landed.pop_front();
                }
                self.landed.push_back(Landed {
                    first: oldest.first,
                    last: oldest.last,
                    included_at: receipt.block_number,
                });
            }
            self.in_flight.pop_front();
        }
        let fees = self.client.fees().await?;
        for index in 0..self.in_flight.len() {
            let waiting = &self.in_flight[index];
            if head < waiting.sent_at + BATCHER_RESEND_AFTER_BLOCKS || !self.fenced(term) {
                continue;
            }
            let caps = waiting.caps.bumped(&fees, self.bump_percent());
            let (envelope, raw) = self.sign(
                waiting.nonce,
                self.config.rollup.batch_inbox,
                &waiting.data,
                waiting.sidecar.as_deref(),
                caps,
            );
            match self.client.send_raw_transaction(raw).await {
                Ok(hash) => {
                    tracing::info!(
                        nonce = waiting.nonce,
                        first = waiting.first,
                        last = waiting.last,
                        frame = waiting.frame,
                        "batch transaction re-sent with bumped fees"
                    );
                    metrics::counter!("keel_batcher_transactions_total", "result" => "resent")
                        .increment(1);
                    let waiting = &mut self.in_flight[index];
                    waiting.caps = caps;
                    if waiting.hashes.len() == BATCHER_HASHES_KEPT {
                        waiting.hashes.remove(0);
                    }
                    waiting.hashes.push(hash);
                    debug_assert_eq!(hash, *envelope.tx_hash());
                    waiting.sent_at = head;
                }
                // Included meanwhile: the next look finds its receipt under the old hash, or
                // under this one if the replacement won.
                Err(error) if error.rejection() == Some(Rejection::NonceTooLow) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }

    fn backlog_bytes(
        &self,
        applied: &keel_storage::Snapshot,
        head: u64,
    ) -> Result<usize, BatcherError> {
        let mut bytes = 0;
        for number in self.posted + 1..=head {
            let Some(block) = applied.block(number)? else {
                break;
            };
            bytes += block.rlp_length();
            if bytes >= self.tx_data_max() {
                break;
            }
        }
        Ok(bytes)
    }

    fn report(
        &self,
        applied: &keel_storage::Snapshot,
        safe: u64,
        unsafe_head: u64,
    ) -> Result<(), BatcherError> {
        let backlog = unsafe_head.saturating_sub(safe);
        metrics::gauge!("keel_batcher_backlog_blocks").set(backlog as f64);
        let age_s = match applied.header(safe + 1)? {
            Some(oldest) if backlog > 0 => {
                let now_s = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|elapsed| elapsed.as_secs())
                    .unwrap_or(0);
                now_s.saturating_sub(oldest.timestamp)
            }
            _ => 0,
        };
        metrics::gauge!("keel_batcher_backlog_age_seconds").set(age_s as f64);
        Ok(())
    }

    /// The next channel: blocks from the last posted on, at most
    /// `BATCHER_CHANNEL_INPUT_BYTES_MAX` of them, compressed and self-checked.
    fn channel(
        &self,
        applied: &keel_storage::Snapshot,
        l1_head: u64,
    ) -> Result<(Vec<u8>, u64, u64), BatcherError> {
        let first = self.posted + 1;
        let head = applied.head().0;
        let mut batches: Vec<Batch> = Vec::new();
        let mut input_bytes = 0;
        let mut last = self.posted;
        for number in first..=head {
            let block = applied
                .block(number)?
                .ok_or_else(|| BatcherError::SelfCheck(format!("block {number} is not stored")))?;
            let origin = origin_of(&block.header).number;
            if origin + self.config.rollup.sequencing_window_blocks
                < l1_head + BATCHER_WINDOW_MARGIN_BLOCKS
            {
                metrics::counter!("keel_batcher_refused_total", "reason" => "window").increment(1);
                return Err(BatcherError::SelfCheck(format!(
                    "block {number} (origin {origin}) is past its sequencing window at L1 block {l1_head}: derivation would drop it"
                )));
            }
            input_bytes += block.rlp_length();
            match batches.last_mut() {
                Some(batch) if batch.takes(&block) => {
                    batch.blocks.push(crate::BatchBlock::of(&block))
                }
                _ => batches.push(Batch::of(&block)),
            }
            last = number;
            if input_bytes >= BATCHER_CHANNEL_INPUT_BYTES_MAX {
                break;
            }
        }
        let payload = encode_batches(&batches);
        let channel = compress(self.config.compression, &payload);
        // Self-check: the channel decodes back to these very batches, which continue the
        // posted chain.
        let decoded = crate::decompress(&channel)
            .and_then(|payload| crate::decode_batches(&payload))
            .map_err(|error| BatcherError::SelfCheck(error.to_string()))?;
        if decoded != batches {
            return Err(BatcherError::SelfCheck(
                "the channel decodes to other batches".into(),
            ));
        }
        let parent = applied.block_hash(first - 1)?;
        if parent != Some(batches[0].parent_hash) {
            return Err(BatcherError::SelfCheck(format!(
                "block {first} does not continue block {}",
                first - 1
            )));
        }
        metrics::histogram!("keel_batcher_channel_ratio")
            .record(payload.len() as f64 / channel.len().max(1) as f64);
        Ok((channel, first, last))
    }
}

/// A channel cut into frames of at most `tx_data_max` bytes of transaction data (the version
/// byte and the frame's own fields included), one per transaction. Its id is the first 16
/// bytes of the channel's keccak: channels of different blocks differ, and the same seed of
/// the simulation gives the same bytes.
fn frames_of(channel: &[u8], tx_data_max: usize) -> Vec<Frame> {
    let id: [u8; 16] = alloy::primitives::keccak256(channel).0[..16]
        .try_into()
        .expect("16 bytes");
    let size = tx_data_max - crate::FRAME_OVERHEAD_BYTES - 1;
    let pieces: Vec<&[u8]> = channel.chunks(size).collect();
    let count = pieces.len();
    pieces
        .into_iter()
        .enumerate()
        .map(|(number, piece)| Frame {
            channel_id: id,
            number: u16::try_from(number).expect("a channel of at most 4 MiB has few frames"),
            data: Bytes::copy_from_slice(piece),
            is_last: number + 1 == count,
        })
        .collect()
}

fn error_kind(error: &BatcherError) -> &'static str {
    match error {
        BatcherError::L1(error) => error.kind().name(),
        BatcherError::Storage(error) => error.kind().name(),
        BatcherError::SelfCheck(_) => "self_check",
        BatcherError::NonceMoved { .. } => "nonce_moved",
    }
}
