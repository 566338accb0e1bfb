//! Leadership transfer: the leader hands over to a healthy, caught-up voter (docs/design.md R1).
//!
//! openraft 0.9 has no transfer (0.10 adds one, still in alpha), so keel does it with what 0.9
//! offers, in the spirit of the Raft thesis' TimeoutNow (§3.10):
//!
//! ```text
//!  leader L                                   target T                    other voters
//!  stop building, wait out the turn in flight
//!  wait until T's log matches L's last entry
//!  stop heartbeats ───── POST /raft/transfer ─► campaign: elect, again
//!                                               until leader or deadline ─► vote (granted once
//!  L grants T's vote (T's log is as long) ◄──── vote request                their lease ends)
//!  L is a follower; T commits its term's first entry, applies all, builds
//! ```
//!
//! Safety does not rest on any of this: T wins only with a quorum's votes, a vote needs a log
//! at least as long as the voter's, and T builds only through the leader loop's gate (I3).
//! The hand-over is what makes it fast: T's log is complete before the election, and L, whose
//! own lease ended long ago, votes for it at once. Followers refuse T while L's last heartbeat
//! is within their lease (openraft's guard against disruptive candidates), which is why L stops
//! heartbeats, and why in a 5-voter cluster the transfer waits for that lease to end.
//!
//! If T is not leader by the deadline, L (if still leader) resumes heartbeats and building:
//! a failed transfer costs some block slots, never safety.
//!
//! ### Choosing the target without ping-pong
//! Only voters that answer healthy and are at most `CAUGHT_UP_ENTRIES_MAX` entries behind are
//! candidates; none ready means no transfer (an unhealthy leader keeps sequencing rather than
//! hand over to a node that cannot: R1). Among the ready ones the node that last handed
//! leadership to this one comes last, so leadership never bounces between two nodes while a
//! third is healthy; then the least lag, then the lowest id.

use crate::PeerError;
use crate::leader::LeaderControl;
use crate::network::{PeerControl, PeerNetwork};
use crate::{NodeId, TypeConfig};
use openraft::{BasicNode, Raft, RaftMetrics, ServerState};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// A voter or learner this many entries or fewer behind the leader's log counts as caught up.
pub const CAUGHT_UP_ENTRIES_MAX: u64 = 16;

/// How long a target's health answer may take before it counts as not ready.
pub const PEER_HEALTH_TIMEOUT: Duration = Duration::from_millis(500);

/// How long the leader waits for the target's log to match its own.
pub const CATCH_UP_WAIT_MAX: Duration = Duration::from_secs(2);

/// A voter the leader could hand over to, as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its node id.
    pub id: NodeId,
    /// Entries behind the leader's last log entry; `None` when the leader has no match yet.
    pub lag: Option<u64>,
    /// `Ok` when it answered healthy, else why not.
    pub health: Result<(), PeerError>,
}

impl Candidate {
    fn ready(&self) -> bool {
        self.health.is_ok() && self.lag.is_some_and(|lag| lag <= CAUGHT_UP_ENTRIES_MAX)
    }
}

/// Why a transfer did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// Only the leader hands over.
    #[error("not the leader; {}", match .0 {
        Some(leader) => format!("node {leader} leads"),
        None => "no leader is known: an election is under way".to_string(),
    })]
    NotLeader(Option<NodeId>),
    /// The named node is not a voter other than this one.
    #[error(
        "node {0} is not another voter: name a voter other than this node (`keel admin status` \
         lists them), or leave --to out for the best ready one"
    )]
    NotAVoter(NodeId),
    /// No voter is healthy and caught up: this leader keeps sequencing (R1).
    #[error(
        "no voter is ready to lead: {0}; this node leads on. Wait for a voter to catch up or \
         recover (`keel admin status` shows the lags), then try again"
    )]
    NoReadyVoter(String),
    /// The target did not catch up, or did not win, in time; this node leads on if it can.
    #[error(
        "the transfer to node {target} did not complete: {reason}; this node leads on if it \
         can. Try again, or name another voter with --to"
    )]
    Incomplete {
        /// The node that was to lead.
        target: NodeId,
        /// What went wrong.
        reason: String,
    },
}

/// Which voter a transfer goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// The best ready voter ([`choose_target`] without a name).
    Best,
    /// This voter, if it is ready.
    Named(NodeId),
    /// The first ready voter after this id, in id order and wrapping around: rotation's
    /// round-robin, which skips unready voters.
    After(NodeId),
}

impl From<Option<NodeId>> for Choice {
    fn from(named: Option<NodeId>) -> Self {
        named.map_or(Self::Best, Self::Named)
    }
}

/// The first ready candidate after `me` in id order, wrapping around.
pub fn next_ready(candidates: &[Candidate], me: NodeId) -> Result<NodeId, TransferError> {
    let mut ready: Vec<NodeId> = candidates
        .iter()
        .filter(|candidate| candidate.ready())
        .map(|candidate| candidate.id)
        .collect();
    ready.sort_unstable();
    ready
        .iter()
        .find(|id| **id > me)
        .or_else(|| ready.first())
        .copied()
        .ok_or_else(|| {
            let reasons: Vec<String> = candidates.iter().map(not_ready).collect();
            TransferError::NoReadyVoter(if reasons.is_empty() {
                "there is no other voter".into()
            } else {
                reasons.join("; ")
            })
        })
}

/// Why `candidate` may not lead, in an operator's words.
fn not_ready(candidate: &Candidate) -> String {
    match (&candidate.health, candidate.lag) {
        (Err(reason), _) => format!("node {}: {reason}", candidate.id),
        (Ok(()), Some(lag)) => format!(
            "node {} is {lag} entries behind (at most {CAUGHT_UP_ENTRIES_MAX} to lead)",
            candidate.id
        ),
        (Ok(()), None) => format!(
            "node {}'s progress is unknown to this leader (it has not answered replication yet)",
            candidate.id
        ),
    }
}

/// Picks the voter to hand over to: `named` if given and ready; otherwise the ready candidate
/// that is not `handed_by` (when another is ready), with the least lag, then the lowest id.
pub fn choose_target(
    candidates: &[Candidate],
    named: Option<NodeId>,
    handed_by: Option<NodeId>,
) -> Result<NodeId, TransferError> {
    let describe = not_ready;
    if let Some(named) = named {
        let candidate = candidates
            .iter()
            .find(|candidate| candidate.id == named)
            .ok_or(TransferError::NotAVoter(named))?;
        return if candidate.ready() {
            Ok(named)
        } else {
            Err(TransferError::NoReadyVoter(describe(candidate)))
        };
    }
    candidates
        .iter()
        .filter(|candidate| candidate.ready())
        .min_by_key(|candidate| (Some(candidate.id) == handed_by, candidate.lag, candidate.id))
        .map(|candidate| candidate.id)
        .ok_or_else(|| {
            let reasons: Vec<String> = candidates.iter().map(describe).collect();
            TransferError::NoReadyVoter(if reasons.is_empty() {
                "there is no other voter".into()
            } else {
                reasons.join("; ")
            })
        })
}

/// The last log index `id` holds, as this node (the leader) knows it: its own last index for
/// itself, the replication match for a peer; `None` when unknown (not leading, or no match
/// yet).
pub fn matched_index(metrics: &RaftMetrics<NodeId, BasicNode>, id: NodeId) -> Option<u64> {
    if id == metrics.id {
        return metrics.last_log_index;
    }
    let matched = metrics.replication.as_ref()?.get(&id).copied().flatten()?;
    Some(matched.index)
}

/// What a completed transfer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transferred {
    /// The new leader.
    pub to: NodeId,
    /// From the start of the hand-over until the target led.
    pub took: Duration,
}

/// Hands leadership from this node (the leader) to the voter `choice` names.
/// `addresses` maps every member to its peer address.
pub async fn transfer_leadership(
    raft: &Raft<TypeConfig>,
    control: &LeaderControl,
    network: &impl PeerControl,
    addresses: &BTreeMap<NodeId, String>,
    choice: impl Into<Choice>,
) -> Result<Transferred, TransferError> {
    let choice = choice.into();
    let metrics = raft.metrics().borrow().clone();
    let me = metrics.id;
    if metrics.state != ServerState::Leader {
        return Err(TransferError::NotLeader(metrics.current_leader));
    }
    let last = metrics.last_log_index.unwrap_or(0);
    let voters: Vec<NodeId> = metrics
        .membership_config
        .membership()
        .voter_ids()
        .filter(|id| *id != me)
        .collect();
    if let Choice::Named(named) = choice
        && !voters.contains(&named)
    {
        return Err(TransferError::NotAVoter(named));
    }
    let metrics = &metrics;
    let asks = voters.iter().map(|id| async move {
        let health = match addresses.get(id) {
            Some(address) => network.peer_health(address, PEER_HEALTH_TIMEOUT).await,
            None => Err(PeerError::NoAddress),
        };
        let lag = matched_index(metrics, *id).map(|matched| last.saturating_sub(matched));
        Candidate {
            id: *id,
            lag,
            health,
        }
    });
    let candidates = futures::future::join_all(asks).await;
    let target = match choice {
        Choice::Best => choose_target(&candidates, None, control.handed_by())?,
        Choice::Named(named) => choose_target(&candidates, Some(named), None)?,
        Choice::After(id) => next_ready(&candidates, id)?,
    };
    let address = addresses
        .get(&target)
        .ok_or(TransferError::NotAVoter(target))?;

    let started = tokio::time::Instant::now();
    let incomplete = |reason: String| TransferError::Incomplete { target, reason };
    let _hold = control.hold().await;
    tracing::warn!(target, "handing leadership over");
    // The target's log must hold every entry this leader wrote before it campaigns.
    let mut watched = raft.metrics();
    let caught_up = tokio::time::timeout(CATCH_UP_WAIT_MAX, async {
        loop {
            let now = watched.borrow_and_update().clone();
            if now.state != ServerState::Leader {
                return Err(TransferError::NotLeader(now.current_leader));
            }
            if now.last_log_index.is_some() && matched_index(&now, target) == now.last_log_index {
                return Ok(now.current_term);
            }
            if watched.changed().await.is_err() {
                return Err(TransferError::NotLeader(None));
            }
        }
    })
    .await
    .map_err(|_| incomplete(format!("its log did not catch up in {CATCH_UP_WAIT_MAX:?}")))??;

    let deadline = Duration::from_millis(raft.config().election_timeout_max * 2 + 1_000);
    raft.runtime_config().heartbeat(false);
    let outcome = async {
        network
            .hand_over(address, me, caught_up, deadline)
            .await
            .map_err(|error| incomplete(format!("the target {error}")))?;
        tokio::time::timeout(deadline, async {
            loop {
                if watched.borrow_and_update().current_leader == Some(target) {
                    return Ok(());
                }
                if watched.changed().await.is_err() {
                    return Err(incomplete("raft stopped".into()));
                }
            }
        })
        .await
        .map_err(|_| incomplete(format!("it did not win an election in {deadline:?}")))?
    }
    .await;
    raft.runtime_config().heartbeat(true);
    match outcome {
        Ok(()) => {
            let took = started.elapsed();
            metrics::counter!("keel_leadership_transfers_total").increment(1);
            metrics::histogram!("keel_leadership_transfer_seconds").record(took.as_secs_f64());
            tracing::warn!(target, ?took, "leadership handed over");
            Ok(Transferred { to: target, took })
        }
        Err(error) => {
            metrics::counter!("keel_leadership_transfers_failed_total").increment(1);
            tracing::error!(%error, "leadership transfer failed; leading on if still leader");
            Err(error)
        }
    }
}

/// Checks in a row a leader must fail before it hands over: one slow check is not a trend.
pub const UNHEALTHY_CHECKS_BEFORE_TRANSFER: u32 = 3;

/// After a hand-over attempt (done or not), the monitor waits this long before another.
pub const TRANSFER_RETRY_AFTER: Duration = Duration::from_secs(10);

/// Where a leader's health monitor finds what it needs; `N` is the transport.
#[derive(Clone)]
pub struct HealthMonitor<N = PeerNetwork> {
    /// This node's Raft.
    pub raft: Raft<TypeConfig>,
    /// Its building switches.
    pub control: Arc<LeaderControl>,
    /// Its peer network.
    pub network: N,
    /// Every member's peer address.
    pub addresses: BTreeMap<NodeId, String>,
    /// Its health.
    pub health: crate::HealthCheck,
    /// How often it checks.
    pub interval: Duration,
    /// How long a healthy leader leads before it hands over to the next ready voter; `None`:
    /// it leads until it fails or an operator moves it.
    pub rotation: Option<Duration>,
}

impl<N> std::fmt::Debug for HealthMonitor<N> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("HealthMonitor")
            .field("interval", &self.interval)
            .field("rotation", &self.rotation)
            .finish_non_exhaustive()
    }
}

impl<N: PeerControl> HealthMonitor<N> {
    /// While this node leads (and is not paused by an operator), checks its health every
    /// interval; after `UNHEALTHY_CHECKS_BEFORE_TRANSFER` failures in a row it hands
    /// leadership to the best ready voter, or, if none is ready, keeps sequencing (R1).
    ///
    /// With `rotation` set, a healthy leader that has led that long hands over to the next
    /// ready voter in id order ([`Choice::After`]), skipping unready ones, so that every
    /// standby keeps showing it can lead. None ready: it leads on and tries again an interval
    /// later.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut strikes = 0;
        let mut leading_since: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
            let metrics = self.raft.metrics().borrow().clone();
            let leading = metrics.state == ServerState::Leader;
            if !leading || self.control.paused() {
                strikes = 0;
                leading_since = None;
                continue;
            }
            let since = *leading_since.get_or_insert_with(tokio::time::Instant::now);
            let Err(reason) = (self.health)() else {
                strikes = 0;
                if let Some(rotation) = self.rotation
                    && since.elapsed() >= rotation
                {
                    self.rotate(metrics.id).await;
                    leading_since = None;
                }
                continue;
            };
            strikes += 1;
            if strikes < UNHEALTHY_CHECKS_BEFORE_TRANSFER {
                continue;
            }
            strikes = 0;
            tracing::warn!(%reason, "this leader is unhealthy; handing over");
            match transfer_leadership(
                &self.raft,
                &self.control,
                &self.network,
                &self.addresses,
                Choice::Best,
            )
            .await
            {
                Ok(done) => tracing::warn!(to = done.to, "unhealthy leader handed over"),
                Err(TransferError::NoReadyVoter(why)) => {
                    metrics::counter!("keel_leadership_transfers_skipped_total").increment(1);
                    tracing::error!(%why, "unhealthy leader keeps sequencing: no voter is ready");
                }
                Err(error) => tracing::error!(%error, "hand-over failed"),
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(TRANSFER_RETRY_AFTER) => {}
            }
        }
    }

    /// One rotation: leadership to the next ready voter after `me`.
    async fn rotate(&self, me: NodeId) {
        match transfer_leadership(
            &self.raft,
            &self.control,
            &self.network,
            &self.addresses,
            Choice::After(me),
        )
        .await
        {
            Ok(done) => {
                metrics::counter!("keel_leadership_rotations_total").increment(1);
                tracing::info!(to = done.to, took = ?done.took, "leadership rotated");
            }
            Err(TransferError::NoReadyVoter(why)) => {
                metrics::counter!("keel_leadership_rotations_skipped_total").increment(1);
                tracing::warn!(%why, "rotation skipped: no other voter is ready; leading on");
            }
            Err(error) => {
                metrics::counter!("keel_leadership_rotations_failed_total").increment(1);
                tracing::warn!(%error, "rotation did not complete");
            }
        }
    }
}

/// The target's side: campaign until this node leads, another leader with a newer term
/// appears, or `deadline` passes. `from` handed over in `term`.
pub(crate) async fn campaign(
    raft: Raft<TypeConfig>,
    control: Arc<LeaderControl>,
    from: NodeId,
    term: u64,
    deadline: Duration,
) {
    let me = raft.metrics().borrow().id;
    control.set_handed_by(from);
    let retry = Duration::from_millis(raft.config().heartbeat_interval.max(10));
    let until = tokio::time::Instant::now() + deadline;
    let mut watched = raft.metrics();
    let over = |now: &openraft::RaftMetrics<NodeId, openraft::BasicNode>| {
        now.current_leader == Some(me)
            || (now.current_term > term && now.current_leader.is_some_and(|l| l != from))
    };
    while tokio::time::Instant::now() < until {
        if over(&watched.borrow_and_update()) {
            break;
        }
        // Each try starts a new term; a try refused (a voter's lease from the old leader's
        // last heartbeat) is retried after a heartbeat interval, time enough for the answers.
        if let Err(error) = raft.trigger().elect().await {
            tracing::error!(%error, "campaign stopped");
            return;
        }
        let next_try = tokio::time::Instant::now() + retry;
        // Until the next try: watch for the outcome (a closed watch ends the wait, not a spin).
        while let Ok(Ok(())) = tokio::time::timeout_at(next_try, watched.changed()).await {
            if over(&watched.borrow_and_update()) {
                break;
            }
        }
    }
    let now = watched.borrow().clone();
    if now.current_leader == Some(me) {
        tracing::warn!(from, "leadership taken over");
        return;
    }
    if over(&now) {
        tracing::warn!(leader = ?now.current_leader, "another node leads; campaign over");
        return;
    }
    tracing::warn!(from, "campaign ended without winning");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(id: NodeId, lag: u64) -> Candidate {
        Candidate {
            id,
            lag: Some(lag),
            health: Ok(()),
        }
    }

    fn sick(id: NodeId) -> Candidate {
        Candidate {
            id,
            lag: Some(0),
            health: Err(PeerError::NotHealthy(crate::NotHealthy {
                reason: "unsafe head is 9000 ms old".into(),
            })),
        }
    }

    #[test]
    fn rotation_goes_to_the_next_ready_voter_in_id_order_and_wraps() {
        let five = [ready(1, 0), ready(2, 0), sick(3), ready(4, 9), ready(5, 0)];
        assert_eq!(next_ready(&five, 2), Ok(4), "node 3 is skipped");
        assert_eq!(next_ready(&five, 5), Ok(1), "wraps around");
        assert_eq!(next_ready(&five[..3], 3), Ok(1));
        let behind = Candidate {
            id: 2,
            lag: Some(CAUGHT_UP_ENTRIES_MAX + 1),
            health: Ok(()),
        };
        assert!(matches!(
            next_ready(&[behind, sick(3)], 1),
            Err(TransferError::NoReadyVoter(_))
        ));
    }

    #[test]
    fn r1_only_a_healthy_caught_up_voter_is_chosen() {
        let behind = Candidate {
            id: 2,
            lag: Some(CAUGHT_UP_ENTRIES_MAX + 1),
            health: Ok(()),
        };
        let unknown = Candidate {
            id: 4,
            lag: None,
            health: Ok(()),
        };
        assert_eq!(
            choose_target(&[behind.clone(), sick(3), unknown.clone()], None, None)
                .unwrap_err()
                .to_string(),
            "no voter is ready to lead: node 2 is 17 entries behind (at most 16 to lead); node \
             3: unsafe head is 9000 ms old; node 4's progress is unknown to this leader (it has \
             not answered replication yet); this node leads on. Wait for a voter to catch up or \
             recover (`keel admin status` shows the lags), then try again"
        );
        assert_eq!(
            choose_target(&[behind, sick(3), ready(5, 3)], None, None),
            Ok(5)
        );
        assert!(matches!(
            choose_target(&[], None, None),
            Err(TransferError::NoReadyVoter(_))
        ));
    }

    #[test]
    fn the_least_lag_then_the_lowest_id_wins() {
        assert_eq!(
            choose_target(&[ready(3, 2), ready(2, 5)], None, None),
            Ok(3)
        );
        assert_eq!(
            choose_target(&[ready(3, 0), ready(2, 0)], None, None),
            Ok(2)
        );
    }

    #[test]
    fn leadership_does_not_ping_pong_while_a_third_is_healthy() {
        // Node 1 handed over to this node: it goes last while node 3 is ready.
        assert_eq!(
            choose_target(&[ready(1, 0), ready(3, 4)], None, Some(1)),
            Ok(3)
        );
        // Only when no other is ready does it go back.
        assert_eq!(choose_target(&[ready(1, 0), sick(3)], None, Some(1)), Ok(1));
    }

    #[test]
    fn a_named_target_must_be_a_ready_voter() {
        assert_eq!(choose_target(&[ready(2, 0)], Some(2), None), Ok(2));
        assert_eq!(
            choose_target(&[ready(2, 0)], Some(7), None),
            Err(TransferError::NotAVoter(7))
        );
        assert!(matches!(
            choose_target(&[sick(2), ready(3, 0)], Some(2), None),
            Err(TransferError::NoReadyVoter(_))
        ));
    }
}
