//! The stream of applied blocks: every block that becomes the store's head, in order, to every
//! consumer (the RPC's waiters and subscriptions, the pool, health and metrics, and the L1
//! batcher and derivation), with none missed however far a consumer falls behind.
//!
//! ```text
//!  Store::commit_block ─(fsynced)─► recent ring (RECENT_BLOCKS_MAX, shared Arcs) ─► head watch
//!                                          │ hit                                       │ wakes
//!  BlockStream::next ◄─────────────────────┴── miss: read block + receipts from the store
//! ```
//!
//! The stream is a cursor over the store, like reth's canonical-state stream but without a
//! lossy buffer: a consumer that keeps up reads the shared blocks from the ring; one that fell
//! behind reads the older blocks from disk, where they are durable anyway. The only memory is
//! the ring; a slow consumer costs reads, never a queue, and never a skipped block.
//!
//! ### The one gap: a snapshot install
//! A node that catches up by a Raft snapshot ([`Store::import`](crate::Store::import)) gets
//! the image's head without the blocks between its old head and that one: they are in no
//! store of this node. The stream then yields [`ChainEvent::Installed`] with the new head, and
//! continues from there. Consumers that keep per-block state (the pool's nonces) re-read it
//! from the head on that event.

use crate::{Result, Store};
use keel_primitives::BlockWithReceipts;
use keel_primitives::limits::RECENT_BLOCKS_MAX;
use std::collections::VecDeque;
use std::sync::Arc;

/// One step of the chain, as a [`BlockStream`] delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainEvent {
    /// The next block: the child of the previous event's block.
    Applied(Arc<BlockWithReceipts>),
    /// A snapshot was installed: this block is the new head, and the blocks between the
    /// previous event's block and this one are not in this node's store.
    Installed(Arc<BlockWithReceipts>),
    /// The chain was unwound to this block ([`crate::Store::unwind_to`]): the blocks above it
    /// that earlier events carried are gone; the next event is its child.
    Unwound(Arc<BlockWithReceipts>),
}

impl ChainEvent {
    /// The block the event carries: the new head.
    pub fn block(&self) -> &Arc<BlockWithReceipts> {
        match self {
            Self::Applied(block) | Self::Installed(block) | Self::Unwound(block) => block,
        }
    }
}

/// Unwinds the feed remembers for streams that have not looked since; a stream further behind
/// takes the lowest one remembered (and re-reads from there).
const UNWINDS_KEPT: usize = 1_024;

/// The store's side of the stream: the recent ring and the head watch.
#[derive(Debug)]
pub(crate) struct Feed {
    recent: parking_lot::Mutex<VecDeque<Arc<BlockWithReceipts>>>,
    /// `(sequence, target)` of the latest unwinds, at most `UNWINDS_KEPT`.
    unwinds: parking_lot::Mutex<VecDeque<(u64, u64)>>,
    /// The head number and the count of snapshot installs so far.
    head: tokio::sync::watch::Sender<FeedHead>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FeedHead {
    number: u64,
    /// The head number at the latest snapshot install, if any happened since the store
    /// opened.
    installed_at: Option<u64>,
    /// Unwinds since the store opened.
    unwinds: u64,
}

impl Feed {
    pub(crate) fn new(head_number: u64) -> Self {
        let (head, _) = tokio::sync::watch::channel(FeedHead {
            number: head_number,
            installed_at: None,
            unwinds: 0,
        });
        Self {
            recent: Default::default(),
            unwinds: Default::default(),
            head,
        }
    }

    /// Records a block that just became the durable head.
    pub(crate) fn applied(&self, block: Arc<BlockWithReceipts>) {
        let number = block.number();
        {
            let mut recent = self.recent.lock();
            if let Some(newest) = recent.back() {
                assert_eq!(
                    newest.number() + 1,
                    number,
                    "the ring holds a contiguous chain"
                );
            }
            if recent.len() >= RECENT_BLOCKS_MAX {
                recent.pop_front();
            }
            recent.push_back(block);
        }
        self.head.send_modify(|head| head.number = number);
    }

    /// Records a snapshot install that made `block` the durable head.
    pub(crate) fn installed(&self, block: Arc<BlockWithReceipts>) {
        let number = block.number();
        {
            let mut recent = self.recent.lock();
            recent.clear();
            recent.push_back(block);
        }
        self.head.send_modify(|head| {
            head.number = number;
            head.installed_at = Some(number);
        });
    }

    /// Records an unwind that made `block` the durable head.
    pub(crate) fn unwound(&self, block: Arc<BlockWithReceipts>) {
        let number = block.number();
        {
            let mut recent = self.recent.lock();
            while recent
                .back()
                .is_some_and(|newest| newest.number() >= number)
            {
                recent.pop_back();
            }
            recent.push_back(block);
        }
        // The log and the watch move together: a stream reads the count, then the log.
        let mut unwinds = self.unwinds.lock();
        let sequence = self.head.borrow().unwinds + 1;
        if unwinds.len() == UNWINDS_KEPT {
            unwinds.pop_front();
        }
        unwinds.push_back((sequence, number));
        self.head.send_modify(|head| {
            head.number = number;
            head.unwinds = sequence;
            if head
                .installed_at
                .is_some_and(|installed| installed > number)
            {
                head.installed_at = None;
            }
        });
    }

    /// The lowest unwind target after unwind `seen` (the lowest remembered, if the stream is
    /// further behind than the log).
    fn lowest_unwind_after(&self, seen: u64) -> Option<u64> {
        self.unwinds
            .lock()
            .iter()
            .filter(|(sequence, _)| *sequence > seen)
            .map(|(_, target)| *target)
            .min()
    }

    /// The durable head's number.
    pub(crate) fn head_number(&self) -> u64 {
        self.head.borrow().number
    }

    /// The block at `number` if the ring holds it.
    pub(crate) fn recent(&self, number: u64) -> Option<Arc<BlockWithReceipts>> {
        let recent = self.recent.lock();
        let oldest = recent.front()?.number();
        let found = recent.get(usize::try_from(number.checked_sub(oldest)?).ok()?)?;
        (found.number() == number).then(|| found.clone())
    }
}

/// Every block applied after a starting point, in order; see the module docs.
///
/// ### Correctness
/// `next` yields each block of this node's chain exactly once and in height order, starting
/// where the stream was opened, except the blocks a snapshot install skipped, which it reports
/// with [`ChainEvent::Installed`] (a consumer lagging across two installs jumps to the later
/// one). When blocks it yielded are unwound, it yields [`ChainEvent::Unwound`] with the new
/// head before any block applied after the unwind. It never yields a block before it is
/// durable.
#[derive(Debug)]
pub struct BlockStream {
    store: Arc<Store>,
    /// The next height to deliver.
    next: u64,
    head: tokio::sync::watch::Receiver<FeedHead>,
    /// Unwinds this stream has accounted for.
    unwinds_seen: u64,
}

impl BlockStream {
    pub(crate) fn new(store: Arc<Store>, next: u64) -> Self {
        let head = store.feed.head.subscribe();
        let unwinds_seen = head.borrow().unwinds;
        Self {
            store,
            next,
            head,
            unwinds_seen,
        }
    }

    /// The height the next event carries (or starts after, for an install).
    pub fn next_number(&self) -> u64 {
        self.next
    }

    /// Waits for the next block; `None` once the store is gone.
    pub async fn next(&mut self) -> Option<Result<ChainEvent>> {
        loop {
            if let Some(event) = self.try_next() {
                return Some(event);
            }
            // The store holds the sender: a closed watch means it was dropped.
            self.head.changed().await.ok()?;
        }
    }

    /// The next event without waiting, if a block is already there.
    pub fn try_next(&mut self) -> Option<Result<ChainEvent>> {
        loop {
            let head = *self.head.borrow_and_update();
            if head.unwinds > self.unwinds_seen {
                let lowest = self.store.feed.lowest_unwind_after(self.unwinds_seen);
                self.unwinds_seen = head.unwinds;
                if let Some(target) = lowest
                    && target < self.next.saturating_sub(1)
                {
                    // Blocks this stream delivered are gone: say so, then go on from there.
                    let block = match self.store.block_with_receipts(target) {
                        Ok(Some(block)) => block,
                        // Unwound again meanwhile: the next look reports the lower target.
                        Ok(None) => continue,
                        Err(error) => return Some(Err(error)),
                    };
                    if self.head.borrow().unwinds != self.unwinds_seen {
                        continue;
                    }
                    self.next = target + 1;
                    return Some(Ok(ChainEvent::Unwound(block)));
                }
            }
            if self.next > head.number {
                return None;
            }
            match self.read(head) {
                Ok(Some(event)) => return Some(Ok(event)),
                // Unwound between the look at the head and the read: look again.
                Ok(None) => continue,
                Err(error) => return Some(Err(error)),
            }
        }
    }

    fn read(&mut self, head: FeedHead) -> Result<Option<ChainEvent>> {
        let number = self.next;
        let read = self.store.block_with_receipts(number)?;
        // An unwind since the look at the head may have replaced what was read: look again.
        if self.head.borrow().unwinds != self.unwinds_seen {
            return Ok(None);
        }
        match read {
            Some(block) => {
                self.next = number + 1;
                Ok(Some(ChainEvent::Applied(block)))
            }
            None => {
                // Missing below the head: a snapshot install skipped it (this run's, or one
                // before the store was opened, when the stream started below the head).
                let installed = head
                    .installed_at
                    .filter(|installed| *installed >= number)
                    .unwrap_or(head.number);
                let block = match self.store.feed.recent(installed) {
                    Some(block) => block,
                    None => self
                        .store
                        .block_with_receipts(installed)?
                        .expect("an installed head is stored in the transaction that installs it"),
                };
                self.next = installed + 1;
                Ok(Some(ChainEvent::Installed(block)))
            }
        }
    }
}
