//! The `safe` and `finalized` heads a node serves, beside `latest`.
//!
//! Who sets them depends on the chain: the L2's come from derivation (the last block derived
//! from L1 data, and from finalized L1 data); the embedded dev L1's trail its own head by fixed
//! depths, as anvil's do. Until derivation runs, an L2 node serves `latest` for both, as it
//! always has. The JSON-RPC reads them through this one type, so the tags answer the same
//! wherever they are asked.

use std::sync::atomic::{AtomicU64, Ordering};

/// How a chain's `safe` and `finalized` heads follow its `latest`.
#[derive(Debug)]
pub enum SafeHeads {
    /// Both are `latest` (an L2 node with no derivation yet).
    Latest,
    /// Fixed depths behind `latest` (the embedded dev L1).
    Behind {
        /// Blocks `safe` trails `latest`.
        safe: u64,
        /// Blocks `finalized` trails `latest`; at least `safe`.
        finalized: u64,
    },
    /// Set by whoever derives them; never above `latest`.
    Derived {
        /// The safe head's number.
        safe: AtomicU64,
        /// The finalized head's number; at most `safe`.
        finalized: AtomicU64,
    },
}

impl SafeHeads {
    /// Heads trailing `latest` by `safe` and `finalized` blocks.
    ///
    /// # Panics
    /// If `finalized < safe`: finality never runs ahead of safety.
    pub fn behind(safe: u64, finalized: u64) -> Self {
        assert!(
            safe <= finalized,
            "finalized depth {finalized} < safe depth {safe}"
        );
        Self::Behind { safe, finalized }
    }

    /// Heads that derivation moves, starting at the genesis.
    pub fn derived() -> Self {
        Self::Derived {
            safe: AtomicU64::new(0),
            finalized: AtomicU64::new(0),
        }
    }

    /// Moves derived heads (no effect on the other kinds).
    ///
    /// # Panics
    /// If `finalized > safe`: a caller that derived that is broken.
    pub fn set(&self, safe: u64, finalized: u64) {
        assert!(finalized <= safe, "finalized {finalized} > safe {safe}");
        if let Self::Derived {
            safe: safe_head,
            finalized: finalized_head,
        } = self
        {
            safe_head.store(safe, Ordering::Release);
            finalized_head.store(finalized, Ordering::Release);
        }
    }

    /// The safe head when the chain's head is `latest`.
    pub fn safe(&self, latest: u64) -> u64 {
        match self {
            Self::Latest => latest,
            Self::Behind { safe, .. } => latest.saturating_sub(*safe),
            Self::Derived { safe, .. } => safe.load(Ordering::Acquire).min(latest),
        }
    }

    /// The finalized head when the chain's head is `latest`.
    pub fn finalized(&self, latest: u64) -> u64 {
        match self {
            Self::Latest => latest,
            Self::Behind { finalized, .. } => latest.saturating_sub(*finalized),
            Self::Derived { finalized, .. } => finalized.load(Ordering::Acquire).min(latest),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finalized_never_passes_safe_and_neither_passes_latest() {
        let latest = SafeHeads::Latest;
        assert_eq!((latest.safe(9), latest.finalized(9)), (9, 9));
        let behind = SafeHeads::behind(32, 64);
        assert_eq!((behind.safe(100), behind.finalized(100)), (68, 36));
        assert_eq!((behind.safe(10), behind.finalized(10)), (0, 0));
        let derived = SafeHeads::derived();
        derived.set(7, 5);
        assert_eq!((derived.safe(100), derived.finalized(100)), (7, 5));
        assert_eq!((derived.safe(6), derived.finalized(6)), (6, 5));
        for head in 0..200 {
            assert!(behind.finalized(head) <= behind.safe(head));
            assert!(behind.safe(head) <= head);
        }
    }
}
