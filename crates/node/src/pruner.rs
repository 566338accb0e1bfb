//! The state-history pruner (`--state-history-blocks N`): after each applied block, removes the
//! change sets and history entries of at most [`limits::HISTORY_PRUNE_BLOCKS_PER_BLOCK`] blocks
//! that fell out of the window, in a write transaction of its own beside the block writer's.
//!
//! ```text
//!   BlockStream ─► applied block ─► target = min(head − N, finalized) ─► Store::prune_history
//! ```
//!
//! ### Correctness
//! The target never passes the finalized block: below it no unwind can happen (finality is
//! never replaced), so a change set removed there is never needed again. The work per applied
//! block is bounded; a pruner behind catches up over the next blocks.

use keel_primitives::{SafeHeads, limits};
use keel_storage::{ChainEvent, StateHistory, Store};
use std::sync::Arc;

/// Prunes one store's state history as blocks are applied.
pub(crate) struct Pruner {
    store: Arc<Store>,
    safe_heads: Arc<SafeHeads>,
}

impl Pruner {
    /// A pruner for `store`, or `None` when it keeps everything (an archive).
    pub(crate) fn new(store: Arc<Store>, safe_heads: Arc<SafeHeads>) -> Option<Self> {
        (store.state_history() != StateHistory::Archive).then_some(Self { store, safe_heads })
    }

    pub(crate) async fn run(self) {
        let mut applied = self.store.subscribe();
        while let Some(event) = applied.next().await {
            let head = match event {
                Ok(ChainEvent::Applied(block)) => block.block.number(),
                // An unwind or an installed snapshot moves no history into the window's past.
                Ok(_) => continue,
                Err(error) => {
                    tracing::warn!(%error, "state-history pruner: reading applied blocks");
                    continue;
                }
            };
            let finalized = self.safe_heads.finalized(head);
            let Some(target) = self.store.state_history().prune_target(head, finalized) else {
                continue;
            };
            match self
                .store
                .prune_history(target, limits::HISTORY_PRUNE_BLOCKS_PER_BLOCK)
            {
                Ok(floor) => metrics::gauge!("keel_state_history_floor").set(floor as f64),
                Err(error) => tracing::warn!(%error, "state-history pruner"),
            }
        }
    }
}
