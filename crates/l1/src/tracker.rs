//! [`L1Tracker`]: the node's view of the L1's recent chain, and the sequencer's choice of an
//! L1 origin on it (docs/protocol.md, "L1 origin").
//!
//! ```text
//!  L1Client ──(watcher: every poll, head + the blocks it lacks, linked by parent hash)──► L1Tracker
//!                                                       recent chain (L1_RECENT_BLOCKS_MAX), heads
//!  Sealer ──choose_origin(parent's origin, timestamp)──┘
//! ```
//!
//! The tracker holds a contiguous chain: each block's parent hash is the hash of the block
//! below it. A reorg shows as a new head whose ancestors differ from the held ones; the
//! watcher refetches down to the fork and replaces the blocks above it.

use crate::{L1BlockRef, L1Client, L1Error, L1Head};
use keel_primitives::rollup::OriginError;
use keel_primitives::{L1Origin, limits};
use parking_lot::RwLock;
use std::collections::VecDeque;

/// The L1's heads as last read, and its recent chain.
#[derive(Debug, Default)]
pub struct L1Tracker {
    inner: RwLock<Tracked>,
}

#[derive(Debug, Default, Clone)]
struct Tracked {
    /// The recent chain, oldest first, contiguous and linked.
    recent: VecDeque<L1BlockRef>,
    safe: Option<L1BlockRef>,
    finalized: Option<L1BlockRef>,
}

/// The L1's heads, as the tracker last read them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct L1Heads {
    /// The newest block.
    pub latest: Option<L1BlockRef>,
    /// The L1's `safe` block.
    pub safe: Option<L1BlockRef>,
    /// The L1's `finalized` block.
    pub finalized: Option<L1BlockRef>,
}

impl L1Tracker {
    /// The heads as last read.
    pub fn heads(&self) -> L1Heads {
        let tracked = self.inner.read();
        L1Heads {
            latest: tracked.recent.back().copied(),
            safe: tracked.safe,
            finalized: tracked.finalized,
        }
    }

    /// The held block at `number`, if the recent chain reaches it.
    pub fn block(&self, number: u64) -> Option<L1BlockRef> {
        let tracked = self.inner.read();
        let oldest = tracked.recent.front()?.number;
        let found = *tracked
            .recent
            .get(usize::try_from(number.checked_sub(oldest)?).ok()?)?;
        debug_assert_eq!(found.number, number);
        Some(found)
    }

    /// Reads the L1's heads and the blocks the recent chain lacks, replacing any that a reorg
    /// removed. Returns the new latest head.
    pub async fn update(&self, client: &dyn L1Client) -> Result<L1BlockRef, L1Error> {
        let latest = client.head(L1Head::Latest).await?;
        let safe = client.head(L1Head::Safe).await?;
        let finalized = client.head(L1Head::Finalized).await?;
        // Walk down from the new head until a block links to one held (or the window is full).
        let held = self.inner.read().recent.clone();
        let holds = |block: &L1BlockRef| {
            held.iter()
                .rev()
                .find(|candidate| candidate.number + 1 == block.number)
                .is_some_and(|below| below.hash == block.parent_hash)
        };
        let mut fetched = vec![latest];
        let window = limits::L1_RECENT_BLOCKS_MAX as u64;
        loop {
            let lowest = *fetched.last().expect("starts with the head");
            if lowest.number == 0 || holds(&lowest) || fetched.len() as u64 >= window {
                break;
            }
            let below =
                client
                    .block_by_number(lowest.number - 1)
                    .await?
                    .ok_or(L1Error::BlockGone {
                        hash: lowest.parent_hash,
                    })?;
            if below.hash != lowest.parent_hash {
                // The L1 moved between the two reads: the head read is stale.
                return Err(L1Error::BlockGone {
                    hash: lowest.parent_hash,
                });
            }
            fetched.push(below);
        }
        let mut tracked = self.inner.write();
        let lowest = fetched.last().expect("starts with the head").number;
        let recent = &mut tracked.recent;
        let linked = held_links(recent, fetched.last().expect("non-empty"));
        if !linked {
            recent.clear();
        }
        while recent.back().is_some_and(|block| block.number >= lowest) {
            recent.pop_back();
        }
        for block in fetched.into_iter().rev() {
            recent.push_back(block);
        }
        while recent.len() > limits::L1_RECENT_BLOCKS_MAX {
            recent.pop_front();
        }
        assert_contiguous(recent);
        tracked.safe = Some(safe);
        tracked.finalized = Some(finalized);
        Ok(latest)
    }

    /// The origin of the next L2 block: the newest L1 block at least `confirmation_depth`
    /// behind the L1 head, and at most `cap` (how far the force inbox is read), whose
    /// timestamp is at most `timestamp`, never below `parent` (the parent block's origin),
    /// within `drift_s` of `timestamp`.
    ///
    /// ### Correctness
    /// The returned origin is on the tracked chain, at or above `parent`, with
    /// `origin.timestamp <= timestamp <= origin.timestamp + drift_s`; when `parent` is within
    /// the tracked window it is on the tracked chain too (else [`OriginError::ParentOriginGone`]).
    pub fn choose_origin(
        &self,
        parent: L1Origin,
        timestamp: u64,
        confirmation_depth: u64,
        drift_s: u64,
        cap: Option<u64>,
    ) -> Result<L1BlockRef, OriginError> {
        let Some(cap) = cap else {
            return Err(OriginError::InboxBehind {
                read_through: None,
                needed: parent.number,
            });
        };
        if parent.number > cap {
            return Err(OriginError::InboxBehind {
                read_through: Some(cap),
                needed: parent.number,
            });
        }
        let tracked = self.inner.read();
        let recent = &tracked.recent;
        let (Some(oldest), Some(latest)) = (recent.front(), recent.back()) else {
            return Err(OriginError::NoL1);
        };
        let at = |number: u64| -> Option<L1BlockRef> {
            let index = usize::try_from(number.checked_sub(oldest.number)?).ok()?;
            recent.get(index).copied()
        };
        let parent_block = at(parent.number);
        if let Some(held) = parent_block
            && held.hash != parent.hash
        {
            return Err(OriginError::ParentOriginGone {
                number: parent.number,
                hash: parent.hash,
            });
        }
        let newest = latest.number.saturating_sub(confirmation_depth).min(cap);
        let mut candidate = newest;
        let chosen = loop {
            if candidate < parent.number {
                break None;
            }
            match at(candidate) {
                Some(block) if block.timestamp <= timestamp => break Some(block),
                Some(_) => {}
                // Below the window: the parent itself is the one usable choice.
                None => break None,
            }
            if candidate == 0 {
                break None;
            }
            candidate -= 1;
        };
        let chosen = match chosen {
            Some(block) => block,
            // Nothing newer fits: keep the parent's origin (it is at or below any candidate).
            None => match parent_block {
                Some(block) => block,
                None => {
                    // The parent's origin fell out of the window (or is the rollup's start,
                    // not read yet): the oldest held block at or above it that fits, if any.
                    let fitting = recent.iter().rev().find(|block| {
                        block.number >= parent.number
                            && block.number <= newest
                            && block.timestamp <= timestamp
                    });
                    match fitting {
                        Some(block) => *block,
                        None => return Err(OriginError::NoL1),
                    }
                }
            },
        };
        if chosen.timestamp.saturating_add(drift_s) < timestamp {
            return Err(OriginError::DriftExceeded {
                number: chosen.number,
                origin_timestamp: chosen.timestamp,
                timestamp,
                drift_s,
            });
        }
        Ok(chosen)
    }
}

fn held_links(recent: &VecDeque<L1BlockRef>, lowest_fetched: &L1BlockRef) -> bool {
    match recent.front() {
        None => false,
        Some(front) if lowest_fetched.number <= front.number => false,
        Some(_) => recent.iter().any(|block| {
            block.number + 1 == lowest_fetched.number && block.hash == lowest_fetched.parent_hash
        }),
    }
}

/// The tracker's chain is contiguous and linked: an assertion that stays on in release.
fn assert_contiguous(recent: &VecDeque<L1BlockRef>) {
    for (below, above) in recent.iter().zip(recent.iter().skip(1)) {
        assert_eq!(
            below.number + 1,
            above.number,
            "the L1 window is contiguous"
        );
        assert_eq!(below.hash, above.parent_hash, "the L1 window is linked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::B256;

    fn chain(from: u64, to: u64) -> L1Tracker {
        let hash = |number: u64| B256::with_last_byte(number as u8);
        let recent = (from..=to)
            .map(|number| L1BlockRef {
                number,
                hash: hash(number),
                parent_hash: hash(number.wrapping_sub(1)),
                timestamp: 1_000 + 12 * number,
            })
            .collect();
        L1Tracker {
            inner: RwLock::new(Tracked {
                recent,
                ..Default::default()
            }),
        }
    }

    fn origin(number: u64) -> L1Origin {
        L1Origin {
            number,
            hash: B256::with_last_byte(number as u8),
        }
    }

    #[test]
    fn the_origin_is_the_newest_confirmed_block_the_rules_allow() {
        let tracker = chain(5, 20);
        let choose = |parent: L1Origin, timestamp: u64| {
            tracker
                .choose_origin(parent, timestamp, 4, 300, Some(100))
                .map(|block| block.number)
        };
        // Newest confirmed: 20 - 4.
        assert_eq!(choose(origin(10), 1_200), Ok(16));
        // Not past the block's own timestamp.
        assert_eq!(choose(origin(10), 1_150), Ok(12));
        // Never below the parent's, even when the parent's is above the confirmed depth.
        assert_eq!(choose(origin(18), 1_300), Ok(18));
        // A parent origin below the window (or the rollup start): the newest that fits.
        assert_eq!(choose(origin(2), 1_200), Ok(16));
        // A parent whose origin the window holds with another hash was reorged out.
        let gone = L1Origin {
            number: 12,
            hash: B256::repeat_byte(0xee),
        };
        assert!(matches!(
            choose(gone, 1_200),
            Err(OriginError::ParentOriginGone { number: 12, .. })
        ));
        // Past the drift: the L1 is too old to seal on.
        let stale = choose(origin(10), 1_000 + 12 * 16 + 301).unwrap_err();
        assert!(matches!(
            stale,
            OriginError::DriftExceeded { number: 16, .. }
        ));
        assert_eq!(stale.kind(), keel_primitives::ErrorKind::Retry);
        assert_eq!(
            L1Tracker::default().choose_origin(origin(0), 1, 4, 300, Some(0)),
            Err(OriginError::NoL1)
        );
        // Capped by how far the force inbox is read.
        assert_eq!(
            tracker
                .choose_origin(origin(10), 1_200, 4, 300, Some(13))
                .map(|block| block.number),
            Ok(13)
        );
        assert!(matches!(
            tracker.choose_origin(origin(10), 1_200, 4, 300, Some(9)),
            Err(OriginError::InboxBehind { .. })
        ));
        assert_eq!(tracker.block(7).map(|block| block.number), Some(7));
        assert_eq!(tracker.block(21), None);
        assert_eq!(tracker.block(4), None);
    }
}
