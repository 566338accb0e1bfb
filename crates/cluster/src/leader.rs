//! The leader loop: the only path that starts block production in a cluster.
//!
//! ### Correctness (invariant I3)
//! Every block time, a node proposes block N+1 only if all of this holds:
//! - it is the leader;
//! - a quorum has just confirmed that leadership;
//! - its state machine has applied every entry up to the first entry of its term, and up to
//!   the commit index;
//! - N is the head of its store once that is so.
//!
//! openraft's `ensure_linearizable` checks the second and third: it waits for the applied
//! index to reach `max(first log id of the term, committed)`. N is then the head of the store,
//! which is the last committed block. The block is sealed while the check runs (the check is a
//! round trip to the followers, the seal this node's own work): a block sealed on a head that
//! is still the head once the check returns is the block a seal after the check would have
//! built on the same head; one whose head moved meanwhile is dropped and sealed again on the
//! new head. There is no other way to start production: no timer outside this loop, no
//! restart path, no admin call.
//!
//! If leadership is lost between the check and the proposal, the proposal's parent is no longer
//! the head when it is applied. The state machine then records it as a no-op on every node
//! (compare-and-append), so even a bug in this loop cannot fork the chain.

use crate::{ApplyOutcome, NodeId, Proposal, TypeConfig};
use alloy::primitives::B256;
use keel_storage::{Snapshot, Store};
use openraft::{Raft, ServerState};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What to propose on the head a snapshot shows: the sealed child (the node's builder and
/// validator), or the replacement of unsafe blocks by derived ones; or why nothing.
pub type BuildBlock =
    Arc<dyn Fn(&Snapshot) -> Result<Proposal, keel_execution::SealError> + Send + Sync>;

/// How long a turn took to reach each step, from its start.
#[derive(Debug, Default, Clone, Copy)]
struct TurnTimes {
    /// The linearizable check passed: this node leads on its committed head (the seal runs
    /// beside the check, so it may end before or after this).
    linearizable: Duration,
    /// The block was sealed.
    sealed: Duration,
    /// The block was committed and applied.
    committed: Duration,
}

/// What one seal of a turn gave.
struct Sealed {
    /// The head it sealed on; `None` when none was read (the store failed, the builder
    /// panicked).
    parent: Option<B256>,
    /// The block (or the replacement) to propose, or why there is none.
    proposal: Result<Proposal, SealFailed>,
}

/// Why a seal gave nothing to propose.
#[derive(Debug, thiserror::Error)]
enum SealFailed {
    /// The builder refused, or could not read the head.
    #[error(transparent)]
    Seal(#[from] keel_execution::SealError),
    /// The builder's thread panicked.
    #[error("the builder panicked: {0}")]
    Panicked(#[from] tokio::task::JoinError),
}

/// What one turn of the loop did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Turn {
    /// Sequencing is paused on this node by an operator: nothing built.
    Paused,
    /// This leader is handing leadership over: nothing built.
    HandingOver,
    /// Not the leader: nothing built.
    Follower,
    /// The leadership or catch-up check failed: nothing built.
    NotReady(String),
    /// A block was proposed; the outcome its application gave.
    Proposed(ApplyOutcome),
    /// Building or proposing failed.
    Failed(String),
}

/// Runs on every node; builds only while the gate holds.
pub struct LeaderLoop {
    node_id: NodeId,
    raft: Raft<TypeConfig>,
    store: Arc<Store>,
    build: BuildBlock,
    block_time: Duration,
    control: Arc<LeaderControl>,
    build_inline: bool,
}

/// The switches that stop a node building, shared by the leader loop, the admin API, the
/// leadership transfer and the health monitor.
#[derive(Debug, Default)]
pub struct LeaderControl {
    paused: AtomicBool,
    handing_over: AtomicBool,
    /// Held for a whole turn (build and proposal), so a transfer can wait out the one in flight.
    turn: tokio::sync::Mutex<()>,
    /// Shared by every intake entry in flight (proposed, not yet applied here); a transfer
    /// takes it whole, so it waits them out and none starts until it ends.
    intake: Arc<tokio::sync::RwLock<()>>,
    /// The node that last handed leadership to this one: the last choice for handing it back.
    handed_by: parking_lot::Mutex<Option<NodeId>>,
}

impl LeaderControl {
    /// Pauses (true) or resumes (false) sequencing on this node: `keel admin pause`. While
    /// paused the node builds nothing, leader or not.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }

    /// Whether an operator paused sequencing here.
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// Whether a leadership transfer is under way from this node.
    pub fn handing_over(&self) -> bool {
        self.handing_over.load(Ordering::Relaxed)
    }

    /// Stops building and waits for the turn in flight to end; building resumes when the
    /// guard drops.
    pub(crate) async fn hold(&self) -> HandOverGuard<'_> {
        self.handing_over.store(true, Ordering::Relaxed);
        let turn = self.turn.lock().await;
        let intake = self.intake.write().await;
        HandOverGuard {
            control: self,
            _turn: turn,
            _intake: intake,
        }
    }

    /// Taken for each intake entry from before it is proposed until it is applied here. It
    /// waits while a transfer holds the leadership still: the target campaigns only with a
    /// log that matches this one, and an entry appended after that check made the target's
    /// log the shorter one, so no voter granted it (a 2.2 s rotation failure).
    pub async fn intake_turn(&self) -> tokio::sync::OwnedRwLockReadGuard<()> {
        self.intake.clone().read_owned().await
    }

    /// The node that last handed leadership to this one.
    pub fn handed_by(&self) -> Option<NodeId> {
        *self.handed_by.lock()
    }

    pub(crate) fn set_handed_by(&self, from: NodeId) {
        *self.handed_by.lock() = Some(from);
    }
}

/// Building stays stopped while this lives.
pub(crate) struct HandOverGuard<'a> {
    control: &'a LeaderControl,
    _turn: tokio::sync::MutexGuard<'a, ()>,
    _intake: tokio::sync::RwLockWriteGuard<'a, ()>,
}

impl Drop for HandOverGuard<'_> {
    fn drop(&mut self) {
        self.control.handing_over.store(false, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for LeaderLoop {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("LeaderLoop")
            .field("node_id", &self.node_id)
            .finish()
    }
}

impl LeaderLoop {
    /// A loop for node `node_id` proposing one block per `block_time` while leader.
    pub fn new(
        node_id: NodeId,
        raft: Raft<TypeConfig>,
        store: Arc<Store>,
        build: BuildBlock,
        block_time: Duration,
    ) -> Self {
        Self {
            node_id,
            raft,
            store,
            build,
            block_time,
            control: Arc::default(),
            build_inline: false,
        }
    }

    /// Builds on the loop's own task instead of the blocking pool. The deterministic
    /// simulation needs this: a block built on another thread would finish after a number of
    /// simulated ticks that depends on the machine, not the seed.
    pub fn with_inline_build(mut self) -> Self {
        self.build_inline = true;
        self
    }

    /// The loop obeys `control`, shared with the peer endpoint, admin API and health monitor.
    pub fn with_control(mut self, control: Arc<LeaderControl>) -> Self {
        self.control = control;
        self
    }

    /// The switches that stop this node building (pause, hand-over).
    pub fn control(&self) -> Arc<LeaderControl> {
        self.control.clone()
    }

    /// One turn: check the gate, build on the head, propose, wait for the outcome.
    pub async fn turn(&self) -> Turn {
        self.turn_timed(&mut TurnTimes::default()).await
    }

    /// [`LeaderLoop::turn`], noting in `times` how long it took to reach each step.
    async fn turn_timed(&self, times: &mut TurnTimes) -> Turn {
        let started = tokio::time::Instant::now();
        if self.control.paused() {
            return Turn::Paused;
        }
        let Ok(_turn) = self.control.turn.try_lock() else {
            return Turn::HandingOver;
        };
        if self.control.handing_over() {
            return Turn::HandingOver;
        }
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.state != ServerState::Leader || metrics.current_leader != Some(self.node_id) {
            return Turn::Follower;
        }
        // The seal runs beside the check (on the blocking pool; in the simulation, before it
        // on this task): the block stands only on the head the check leaves.
        let sealing = self.seal();
        let confirmed = self.raft.ensure_linearizable().await;
        times.linearizable = started.elapsed();
        let mut sealed = sealing.await;
        if let Err(error) = confirmed {
            return Turn::NotReady(error.to_string());
        }
        let head = match self.store.snapshot() {
            Ok(view) => view.head().1,
            Err(error) => return Turn::Failed(error.to_string()),
        };
        if sealed.parent != Some(head) {
            // An entry committed before the check applied while the block was sealed (a new
            // leader catching up, a replacement): seal again on the head it left.
            metrics::counter!("keel_leader_seals_dropped_total").increment(1);
            sealed = self.seal().await;
            if sealed.parent != Some(head) {
                return Turn::Failed("the head moved while this leader sealed".into());
            }
        }
        let proposal = match sealed.proposal {
            Ok(proposal) => proposal,
            Err(error) => return Turn::Failed(error.to_string()),
        };
        times.sealed = started.elapsed();
        match self.raft.client_write(proposal).await {
            Ok(response) => {
                times.committed = started.elapsed();
                if let ApplyOutcome::Rejected { number, .. } = &response.data {
                    tracing::warn!(number, "proposed block was not on the head when applied");
                }
                Turn::Proposed(response.data)
            }
            Err(error) => Turn::Failed(error.to_string()),
        }
    }

    /// Seals on the store's head. On the blocking pool, or at once on this task when building
    /// inline (the returned future is then ready).
    fn seal(&self) -> futures::future::BoxFuture<'static, Sealed> {
        let store = self.store.clone();
        let build = self.build.clone();
        let seal = move || match store.snapshot() {
            Ok(head) => Sealed {
                parent: Some(head.head().1),
                proposal: build(&head).map_err(SealFailed::from),
            },
            Err(error) => Sealed {
                parent: None,
                proposal: Err(keel_execution::SealError::Head(error.to_string()).into()),
            },
        };
        if self.build_inline {
            return Box::pin(std::future::ready(seal()));
        }
        let task = tokio::task::spawn_blocking(seal);
        Box::pin(async move {
            task.await.unwrap_or_else(|panicked| Sealed {
                parent: None,
                proposal: Err(panicked.into()),
            })
        })
    }

    /// Turns once per block time until `stop` turns true.
    /// A node that has just won an election turns at once rather than at its next tick, so a
    /// failover costs the election and not a block time more.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(self.block_time);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watched = self.raft.metrics();
        let mut was_leader = false;
        // When this node last won an election, until its first block as leader.
        let mut elected_at: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = ticker.tick() => {}
                changed = watched.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let leader = watched.borrow().state == ServerState::Leader;
                    let elected = leader && !was_leader;
                    was_leader = leader;
                    if !elected {
                        continue;
                    }
                    elected_at = Some(tokio::time::Instant::now());
                    ticker.reset();
                }
            }
            if *stop.borrow() {
                return;
            }
            let mut times = TurnTimes::default();
            let turn = self.turn_timed(&mut times).await;
            if let Some(elected) = elected_at.take()
                && let Turn::Proposed(ApplyOutcome::Applied { number, .. }) = &turn
            {
                // Where a failover's time goes after the election (docs/cluster.md, "Failover").
                let total = elected.elapsed();
                metrics::histogram!("keel_leader_first_block_seconds").record(total.as_secs_f64());
                tracing::info!(
                    number,
                    elected_to_committed_ms = total.as_millis() as u64,
                    linearizable_ms = times.linearizable.as_millis() as u64,
                    sealed_ms = times.sealed.as_millis() as u64,
                    committed_ms = times.committed.as_millis() as u64,
                    "first block as leader"
                );
            }
            match turn {
                Turn::Proposed(ApplyOutcome::Applied { .. }) => {
                    metrics::counter!("keel_blocks_proposed_total").increment(1);
                    // Where a block's time goes (docs/metrics.md): each step from the turn's start.
                    for (step, took) in [
                        ("linearizable", times.linearizable),
                        ("sealed", times.sealed),
                        ("committed", times.committed),
                    ] {
                        metrics::histogram!("keel_leader_turn_seconds", "step" => step)
                            .record(took.as_secs_f64());
                    }
                }
                Turn::Failed(reason) => {
                    metrics::counter!("keel_block_proposals_failed_total").increment(1);
                    tracing::warn!(%reason, "block proposal failed");
                }
                _ => {}
            }
        }
    }
}
