//! keel's view of the L1: one [`L1Client`] trait, two real implementations.
//!
//! ```text
//!                        ┌──────────────── L1Client ─────────────────┐
//!  watcher (heads, lag) ─┤ head(latest/safe/finalized)                │
//!  origin selection     ─┤ block_by_number                            ├─► RpcL1: any Ethereum JSON-RPC
//!  derivation           ─┤ inbox_transactions(block, inboxes)         │   (anvil, geth, a real chain)
//!  batcher, keel force  ─┤ send_raw_transaction, receipt, nonce, fees │
//!                        └────────────────────────────────────────────┴─► EmbeddedL1: keel's own engine
//!                                                                           run as a second chain
//! ```
//!
//! [`RpcL1`] talks JSON-RPC through alloy's provider. [`EmbeddedL1`] reads the store and pool
//! of a keel single-node chain in the same process (the embedded dev L1 that `keel node --dev`
//! starts; keel-node assembles it); that chain also serves JSON-RPC on its own port, so cast,
//! the other members of a cluster and `keel verify` reach it as [`RpcL1`].
//!
//! Errors are [`L1Error`], classed by what the caller does ([`L1Error::kind`]).

mod batch;
pub mod batcher;
mod beacon;
pub mod blob;
mod codec;
pub mod derive;
mod embedded;
mod error;
mod forced;
mod rpc;
mod send;
mod tracker;

pub use batch::{BATCH_VERSION, Batch, BatchBlock, decode_batches, encode_batches};
pub use batcher::{Batcher, BatcherConfig, BatcherError, DataAvailability, Fence};
pub use beacon::Beacon;
pub use codec::{
    BROTLI_QUALITY, ChannelId, CodecError, Compression, DERIVATION_VERSION, DropReason,
    FRAME_OVERHEAD_BYTES, Frame, ZSTD_LEVEL, compress, decompress,
};
pub use derive::{DerivationStatus, DeriveError, Deriver, decode_batch_transaction};
pub use embedded::EmbeddedL1;
pub use error::{L1Error, Rejection};
pub use forced::{ForcedError, ForcedInbox, ForcedTransaction, decode_forced_payload};
pub use rpc::RpcL1;
pub use send::{BLOB_TRANSACTION_GAS, FeeCaps, calldata_gas, sign_blob, sign_calldata};
pub use tracker::{L1Heads, L1Tracker};

use alloy::primitives::{Address, B256, Bytes, U256};
use std::future::Future;
use std::pin::Pin;

/// A call to the L1.
pub type L1Future<'a, T> = Pin<Box<dyn Future<Output = Result<T, L1Error>> + Send + 'a>>;

/// An L1 block as the rollup sees it: where it is in the chain, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct L1BlockRef {
    /// The block number.
    pub number: u64,
    /// The block hash.
    pub hash: B256,
    /// The parent's hash.
    pub parent_hash: B256,
    /// The block timestamp, in seconds.
    pub timestamp: u64,
}

/// Which of the L1's heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L1Head {
    /// The newest block (`latest`).
    Latest,
    /// The newest block the L1 calls `safe`.
    Safe,
    /// The newest block the L1 calls `finalized`: it is never reorged.
    Finalized,
}

impl L1Head {
    /// The JSON-RPC block tag.
    pub fn tag(self) -> &'static str {
        match self {
            Self::Latest => "latest",
            Self::Safe => "safe",
            Self::Finalized => "finalized",
        }
    }
}

/// A transaction of an L1 block sent to one of the inboxes the caller named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxTransaction {
    /// Its hash.
    pub hash: B256,
    /// Its index in the block: derivation reads inbox transactions in this order.
    pub index: u64,
    /// Its sender, recovered from the signature.
    pub from: Address,
    /// The inbox it was sent to.
    pub to: Address,
    /// Its calldata.
    pub input: Bytes,
    /// Its EIP-4844 blob versioned hashes (empty for calldata).
    pub blob_hashes: Vec<B256>,
    /// Whether it executed successfully (status 1); only those count.
    pub succeeded: bool,
}

/// Where and how an L1 transaction was included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L1Receipt {
    /// The transaction.
    pub transaction_hash: B256,
    /// The block that includes it.
    pub block_number: u64,
    /// That block's hash (a reorg may replace it: compare with the chain).
    pub block_hash: B256,
    /// Whether it succeeded.
    pub succeeded: bool,
    /// Gas it used.
    pub gas_used: u64,
    /// Price paid per gas, base fee and tip.
    pub effective_gas_price: u128,
    /// Blob gas it used, for a blob transaction.
    pub blob_gas_used: Option<u64>,
    /// Price paid per blob gas, for a blob transaction.
    pub blob_gas_price: Option<u128>,
}

/// What an L1 transaction sent now should pay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L1Fees {
    /// The base fee of the latest block.
    pub base_fee: u128,
    /// The tip the L1 suggests (`eth_maxPriorityFeePerGas`).
    pub tip: u128,
    /// The blob base fee, if the L1 takes blobs.
    pub blob_base_fee: Option<u128>,
}

/// Which pool state a nonce is read at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceAt {
    /// The latest block: transactions included.
    Latest,
    /// The latest block plus the L1 node's pool: transactions sent.
    Pending,
}

/// An L1 chain, as keel reads and writes it.
///
/// ### Correctness
///
/// Implementations must hold to these; the watcher, origin selection, derivation and the
/// batcher rely on them:
///
/// - **One chain.** [`L1Client::chain_id`] never changes for the life of a client.
/// - **Heads are ordered.** For one answer of each, `finalized.number <= safe.number <=
///   latest.number` holds up to the L1 moving between the calls; `finalized` never moves
///   backwards.
/// - **Canonical reads.** [`L1Client::block_by_number`] returns the block the L1 holds at that
///   height at the time of the call (it may differ from an earlier answer after a reorg), and
///   `None` above the L1's head, never an error for that.
/// - **Reads by hash are checked.** [`L1Client::inbox_transactions`] answers for exactly the
///   block whose hash it was given, or fails with [`L1Error::BlockGone`] (a reset) when the L1
///   no longer has that block on its chain. It returns the block's transactions to the named
///   inboxes in block order, each with its recovered sender and its success; it never mixes
///   two blocks' data, and it never drops one silently.
/// - **Sends are idempotent.** Sending the same signed transaction twice is not an error: the
///   second answer is its hash again (`already known`).
/// - **No hidden retries.** Every failure is returned, classed ([`L1Error::kind`]); a call
///   never blocks longer than `limits::L1_REQUEST_TIMEOUT_MS`.
pub trait L1Client: Send + Sync + std::fmt::Debug {
    /// The L1's chain id.
    fn chain_id(&self) -> L1Future<'_, u64>;

    /// One of the L1's heads.
    fn head(&self, which: L1Head) -> L1Future<'_, L1BlockRef>;

    /// The canonical block at `number`, or `None` above the head.
    fn block_by_number(&self, number: u64) -> L1Future<'_, Option<L1BlockRef>>;

    /// The successful and failed transactions of `block` sent to any of `inboxes`, in block
    /// order, at most `limits::L1_INBOX_TRANSACTIONS_PER_BLOCK_MAX`.
    fn inbox_transactions<'a>(
        &'a self,
        block: &'a L1BlockRef,
        inboxes: &'a [Address],
    ) -> L1Future<'a, Vec<InboxTransaction>>;

    /// Hands a signed transaction to the L1's pool; its hash.
    fn send_raw_transaction(&self, raw: Bytes) -> L1Future<'_, B256>;

    /// The receipt of an included transaction, `None` while it is not included.
    fn receipt(&self, hash: B256) -> L1Future<'_, Option<L1Receipt>>;

    /// The next nonce of `address`.
    fn nonce(&self, address: Address, at: NonceAt) -> L1Future<'_, u64>;

    /// The balance of `address` at the latest block.
    fn balance(&self, address: Address) -> L1Future<'_, U256>;

    /// What a transaction sent now should pay.
    fn fees(&self) -> L1Future<'_, L1Fees>;

    /// The blobs of `block` with the versioned hashes `hashes`, in that order (the beacon
    /// API's `/eth/v1/beacon/blobs`). Each blob returned is checked against its versioned
    /// hash (its KZG commitment); a blob the endpoint does not have, or one that does not
    /// match, fails the call ([`L1Error::Malformed`], retried), never a partial answer.
    /// [`L1Error::NoBeacon`] when the client has no beacon endpoint.
    fn blobs<'a>(
        &'a self,
        block: &'a L1BlockRef,
        hashes: &'a [B256],
    ) -> L1Future<'a, Vec<Box<alloy::eips::eip4844::Blob>>>;
}

/// Checks that `client` is the L1 the configuration names.
pub async fn check_chain_id(client: &dyn L1Client, expected: u64) -> Result<(), L1Error> {
    let found = client.chain_id().await?;
    if found != expected {
        return Err(L1Error::WrongChain { expected, found });
    }
    Ok(())
}

/// Runs `call`, failing it with [`L1Error::Timeout`] after `limits::L1_REQUEST_TIMEOUT_MS`.
pub(crate) async fn bounded<T>(
    doing: &'static str,
    call: impl Future<Output = Result<T, L1Error>>,
) -> Result<T, L1Error> {
    let ms = keel_primitives::limits::L1_REQUEST_TIMEOUT_MS;
    match tokio::time::timeout(std::time::Duration::from_millis(ms), call).await {
        Ok(result) => result,
        Err(_) => Err(L1Error::Timeout { doing, ms }),
    }
}
