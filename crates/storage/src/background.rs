//! The fsync of a deferred store's `DEFERRED_BLOCKS_MAX`-th block, off the committing thread.
//!
//! ```text
//!  commit_block_with(16th deferred block) ─► published ─► request ──► keel-store-sync thread
//!        returns at once (the state machine applies the entries behind it)      │ fsynced write
//!  commit_block_with(next block) ─► waits while the sync is in flight ◄─────────┘ of the batch's
//! ```                                                                              history index
//!
//! A cluster member applies log entries one after another: an intake entry behind the 16th
//! block waited for the pages of all 16 blocks to reach the disk (tens of ms), and so did the
//! client whose send it carried. The sync is the same fsynced write [`Store::sync`] makes (it
//! indexes the state history of the blocks since the last one, `history.rs`); only the thread
//! that waits for it changes.
//!
//! ### Correctness
//! - **Bound.** The next block's commit waits until the sync in flight is done, so a crash
//!   never forgets more than `DEFERRED_BLOCKS_MAX` blocks, as with the sync inline.
//! - **Failure.** A failed sync is kept and returned by the next commit or [`Store::sync`]
//!   ([`StorageError::BackgroundSync`]): the caller halts as for any database error; the
//!   blocks it covered are in the Raft log (the deferred store's contract).
//! - **No cycle.** The thread holds the store weakly: dropping the last handle closes the
//!   channel and the thread ends.
//! - The simulation syncs inline (a thread would race its deterministic scheduler): what it
//!   checks of the bound holds for both.

use crate::{Result, StorageError, Store};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Weak};

/// Whether a sync is in flight, and how the last failed one failed.
#[derive(Debug, Default)]
struct SyncState {
    in_flight: bool,
    failed: Option<String>,
}

/// The handle a store keeps of its syncer thread.
#[derive(Debug)]
pub(crate) struct BackgroundSync {
    /// One request at a time: a commit waits out the previous sync before it can ask again.
    requests: SyncSender<()>,
    state: Arc<(parking_lot::Mutex<SyncState>, parking_lot::Condvar)>,
}

impl BackgroundSync {
    /// Starts the syncer thread of `store`.
    pub(crate) fn start(store: &Arc<Store>) -> Result<Self> {
        let (requests, received) = std::sync::mpsc::sync_channel(1);
        let state = Arc::new((
            parking_lot::Mutex::new(SyncState::default()),
            parking_lot::Condvar::new(),
        ));
        let weak = Arc::downgrade(store);
        let shared = state.clone();
        std::thread::Builder::new()
            .name("keel-store-sync".into())
            .spawn(move || run(&weak, &received, &shared))
            .map_err(|error| {
                StorageError::BackgroundSync(format!("the syncer thread did not start: {error}"))
            })?;
        Ok(Self { requests, state })
    }

    /// Waits until no sync is in flight; the last one's failure, if it failed.
    pub(crate) fn wait(&self) -> Result<()> {
        let (lock, done) = &*self.state;
        let mut state = lock.lock();
        while state.in_flight {
            done.wait(&mut state);
        }
        match &state.failed {
            Some(message) => Err(StorageError::BackgroundSync(message.clone())),
            None => Ok(()),
        }
    }

    /// Asks for a sync; `false` when the thread is gone (the caller syncs itself).
    ///
    /// The caller waited ([`BackgroundSync::wait`]) before its commit, and commits are one at a
    /// time, so the channel's one slot is free.
    pub(crate) fn request(&self) -> bool {
        let (lock, _) = &*self.state;
        lock.lock().in_flight = true;
        match self.requests.try_send(()) {
            Ok(()) => true,
            Err(TrySendError::Full(())) => {
                // Not reachable by the contract above; a sync is then already queued.
                true
            }
            Err(TrySendError::Disconnected(())) => {
                lock.lock().in_flight = false;
                false
            }
        }
    }
}

fn run(
    store: &Weak<Store>,
    requests: &Receiver<()>,
    state: &(parking_lot::Mutex<SyncState>, parking_lot::Condvar),
) {
    while requests.recv().is_ok() {
        let outcome = match store.upgrade() {
            Some(store) => store.fsync_now(),
            None => return,
        };
        let (lock, done) = state;
        let mut state = lock.lock();
        state.in_flight = false;
        if let Err(error) = outcome {
            tracing::error!(%error, "the background fsync of deferred blocks failed");
            state.failed = Some(error.to_string());
        }
        done.notify_all();
    }
}
