//! The mempool: a bounded pool of validated transactions, per-sender nonce queues, and the
//! builder's view of the best of them.
//!
//! ```text
//!  raw bytes ─► decode_and_recover (no lock; the one signature recovery) ─► Mempool::add
//!               (checks against the head state, replacement, limits, eviction)
//!  builder ◄── Mempool::best(base fee): senders' next nonces, by effective tip then arrival
//!  head moves ─► Mempool::on_block: drops included, stale and invalid transactions, and the
//!               future queues of senders idle for the lifetime (in blocks)
//! ```
//!
//! A sender's transactions are *pending* while their nonces follow the account nonce without a
//! gap, and *future* after a gap. Only pending transactions are offered to the builder. A
//! sender's future transactions are dropped once it has been idle (nothing added, nothing
//! included) for `MEMPOOL_FUTURE_LIFETIME_BLOCKS`: geth's `txpool.lifetime`, counted in blocks
//! so that every node of a cluster drops them at the same height.
//! Every bound is named in `keel_primitives::limits` (`MEMPOOL_*`).

mod error;
mod pool;

pub use error::PoolError;
pub use pool::{
    BestTransactions, Mempool, MempoolLimits, PoolTransaction, decode, decode_and_recover,
};

#[cfg(test)]
mod tests;
