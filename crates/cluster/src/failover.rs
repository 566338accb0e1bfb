//! Failover on evidence: a follower that sees its leader's process die gets a successor elected
//! in a few round trips, instead of waiting out the leader's lease and an election timeout.
//!
//! ```text
//!  follower F (each one)                          leader L            other voters V
//!  GET /raft/watch ────────────────────────────► held open while L leads
//!  connection breaks (L's kernel closed it) ◄─── L's process dies
//!  probe: GET /raft/health ─────────────────────► refused, reset or closed unanswered: dead
//!   (an answer, or no answer in time: a pause or a lost host, left to the election timer)
//!  forget L's lease (openraft patch: Trigger::forget_leader)
//!  POST /raft/leader-gone ───────────────────────────────────────────► V's own detector probes
//!                                                   L at once; if dead, V forgets L's lease too
//!  ◄──────────────────────────── { forgot, last_log, healthy } ────────
//!  a quorum of voters forgot: the healthy one with the most advanced log (then the lowest
//!  id) campaigns; every voter works out the same one, so one candidate, one term
//! ```
//!
//! The election timer stays as it was: it is what finds a leader that is paused, cut off or on
//! a host that vanished, since none of these closes a connection. Evidence only shortens the
//! wait when the leader's process is gone while its host still answers for its port.
//!
//! ### Correctness
//! Safety does not rest on any of this: the candidate needs a quorum of votes, and a vote
//! needs a log at least as up to date as the voter's. A false verdict (a live leader's port
//! refused, say, behind a proxy cut from it) costs at most a leader change, and only when a
//! quorum of voters finds the same. A single follower that lost its link to a live leader
//! gets no agreement from the others, which still hear from the leader.

use crate::leader::LeaderControl;
use crate::network::{LeaderGone, LeaderGoneAnswer, PeerControl, WatchEnd};
use crate::{NodeId, PeerError, TransportError, TypeConfig};
use openraft::{LogId, Raft, ServerState};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How long a probe of the leader may take. Refusal comes at once from a host whose process
/// died; a leader slower than this to answer is alive as far as this detector knows.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(200);

/// How long a node asked by a peer waits for its own detector's verdict (it probes at once).
pub const CONFIRM_WAIT: Duration = Duration::from_millis(300);

/// How long a peer's answer to `/raft/leader-gone` may take.
pub const LEADER_GONE_TIMEOUT: Duration = Duration::from_millis(600);

/// How often a leader writes a line into each open `/raft/watch` (so proxies keep it open).
pub const WATCH_KEEPALIVE: Duration = Duration::from_secs(5);

/// How long a follower waits before watching its leader again after a watch that ended
/// without evidence (refused, cut off, or a probe the leader answered).
pub const WATCH_RETRY: Duration = Duration::from_millis(50);

const _: () = assert!(PROBE_TIMEOUT.as_millis() < CONFIRM_WAIT.as_millis());
const _: () = assert!(CONFIRM_WAIT.as_millis() < LEADER_GONE_TIMEOUT.as_millis());

/// What this node's detector found, shared with its peer endpoint (which answers
/// `/raft/leader-gone` from it).
#[derive(Debug)]
pub struct FailoverState {
    /// The last leader this node found dead, in its term.
    verdict: tokio::sync::watch::Sender<Option<LeaderGone>>,
    /// A peer's word that a leader is gone: the detector probes it at once.
    asked: parking_lot::Mutex<Option<LeaderGone>>,
    nudge: tokio::sync::Notify,
}

impl Default for FailoverState {
    fn default() -> Self {
        Self {
            verdict: tokio::sync::watch::channel(None).0,
            asked: parking_lot::Mutex::new(None),
            nudge: tokio::sync::Notify::new(),
        }
    }
}

impl FailoverState {
    /// Whether this node finds `gone` dead too, asking its detector to probe at once and
    /// waiting at most `wait` for its verdict.
    pub async fn confirm(&self, gone: LeaderGone, wait: Duration) -> bool {
        let mut verdict = self.verdict.subscribe();
        if *verdict.borrow_and_update() == Some(gone) {
            return true;
        }
        *self.asked.lock() = Some(gone);
        self.nudge.notify_one();
        tokio::time::timeout(wait, verdict.wait_for(|found| *found == Some(gone)))
            .await
            .is_ok_and(|found| found.is_ok())
    }

    fn found(&self, gone: LeaderGone) {
        self.verdict.send_replace(Some(gone));
    }

    fn asked_about(&self, gone: LeaderGone) -> bool {
        self.asked.lock().take() == Some(gone)
    }
}

/// A voter's standing after a leader died: who may campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Survivor {
    /// Its node id.
    pub id: NodeId,
    /// Whether it found the leader dead (and so forgot the lease).
    pub forgot: bool,
    /// The last entry of its log.
    pub last_log: Option<LogId<NodeId>>,
    /// Whether it is ready to lead.
    pub healthy: bool,
}

/// The one survivor that campaigns: among those that forgot the lease, if they are a quorum of
/// `voters`, the healthy one with the most advanced log, then the lowest id. `None`: too few
/// agree, or none of them is healthy; the election timer decides.
pub fn successor(survivors: &[Survivor], voters: usize) -> Option<NodeId> {
    let agreeing: Vec<&Survivor> = survivors.iter().filter(|s| s.forgot).collect();
    if agreeing.len() < voters / 2 + 1 {
        return None;
    }
    agreeing
        .into_iter()
        .filter(|survivor| survivor.healthy)
        .max_by(|a, b| a.last_log.cmp(&b.last_log).then(b.id.cmp(&a.id)))
        .map(|survivor| survivor.id)
}

/// Watches this node's leader and, on evidence it died, gets a successor elected (module docs).
pub struct DeadLeaderDetector<N> {
    /// This node's id.
    pub node_id: NodeId,
    /// This node's Raft.
    pub raft: Raft<TypeConfig>,
    /// Its peer network.
    pub network: N,
    /// Every member's peer address.
    pub addresses: BTreeMap<NodeId, String>,
    /// Its health.
    pub health: crate::HealthCheck,
    /// Its building switches (an operator's pause keeps it from campaigning).
    pub control: Arc<LeaderControl>,
    /// Shared with its peer endpoint.
    pub state: Arc<FailoverState>,
}

impl<N> std::fmt::Debug for DeadLeaderDetector<N> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("DeadLeaderDetector")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// Why a watched leader's watch stopped.
enum Wake {
    Stop,
    LeaderChanged,
    Ended(WatchEnd),
    Asked,
}

impl<N: PeerControl> DeadLeaderDetector<N> {
    /// The leader this node watches (its leader as a voting follower with a committed vote),
    /// in its term, with the vote and the leader's peer address.
    fn watched(&self) -> Option<(LeaderGone, openraft::Vote<NodeId>, String)> {
        let metrics = self.raft.metrics().borrow().clone();
        let leader = metrics.current_leader?;
        let voter = metrics
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == self.node_id);
        if metrics.state != ServerState::Follower
            || leader == self.node_id
            || !voter
            || !metrics.vote.is_committed()
        {
            return None;
        }
        let gone = LeaderGone {
            leader,
            term: metrics.vote.leader_id().term,
        };
        Some((gone, metrics.vote, self.addresses.get(&leader)?.clone()))
    }

    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut metrics = self.raft.metrics();
        // The leader already handled: it is not watched again until the leader changes.
        let mut handled: Option<LeaderGone> = None;
        loop {
            if *stop.borrow() {
                return;
            }
            let watched = self.watched().filter(|(gone, _, _)| handled != Some(*gone));
            let Some((gone, vote, address)) = watched else {
                tokio::select! {
                    _ = stop.changed() => return,
                    changed = metrics.changed() => if changed.is_err() { return },
                }
                continue;
            };
            let wake = tokio::select! {
                _ = stop.changed() => Wake::Stop,
                _ = leader_moved(&mut metrics, vote) => Wake::LeaderChanged,
                end = self.network.watch_leader(&address) => Wake::Ended(end),
                _ = self.state.nudge.notified() => Wake::Asked,
            };
            match wake {
                Wake::Stop => return,
                Wake::LeaderChanged => continue,
                Wake::Asked if !self.state.asked_about(gone) => continue,
                Wake::Ended(WatchEnd::Broken(_)) | Wake::Asked => {}
                Wake::Ended(_) => {
                    tokio::time::sleep(WATCH_RETRY).await;
                    continue;
                }
            }
            match self.network.peer_health(&address, PROBE_TIMEOUT).await {
                Err(PeerError::Transport(TransportError::Unreachable(reason))) => {
                    handled = Some(gone);
                    self.leader_died(gone, vote, &reason).await;
                }
                _ => tokio::time::sleep(WATCH_RETRY).await,
            }
        }
    }

    /// `gone.leader` is dead (`reason`): forget its lease, ask the other voters, and campaign
    /// if this node is the successor.
    async fn leader_died(&self, gone: LeaderGone, vote: openraft::Vote<NodeId>, reason: &str) {
        metrics::counter!("keel_raft_dead_leader_found_total").increment(1);
        if self.raft.trigger().forget_leader(vote).await.is_err() {
            return;
        }
        self.state.found(gone);
        let voters: Vec<NodeId> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        let asked = voters
            .iter()
            .filter(|id| **id != self.node_id && **id != gone.leader)
            .filter_map(|id| Some((*id, self.addresses.get(id)?.clone())))
            .map(|(id, address)| async move {
                let answer = self.network.leader_gone(&address, &gone).await;
                (id, answer)
            });
        let answers = futures::future::join_all(asked).await;
        let last_log = last_log_id(&self.raft).await;
        let mut survivors = vec![Survivor {
            id: self.node_id,
            forgot: true,
            last_log,
            healthy: ready_to_lead(&self.health, &self.control),
        }];
        for (id, answer) in answers {
            match answer {
                Ok(LeaderGoneAnswer {
                    forgot,
                    last_log,
                    healthy,
                }) => survivors.push(Survivor {
                    id,
                    forgot,
                    last_log,
                    healthy,
                }),
                Err(error) => tracing::info!(peer = id, %error, "no answer about the dead leader"),
            }
        }
        let agreeing = survivors.iter().filter(|s| s.forgot).count();
        match successor(&survivors, voters.len()) {
            Some(id) if id == self.node_id => {
                tracing::warn!(
                    leader = gone.leader,
                    term = gone.term,
                    %reason,
                    agreeing,
                    "the leader's process is gone; campaigning as the most up-to-date survivor"
                );
                metrics::counter!("keel_raft_dead_leader_campaigns_total").increment(1);
                let _ = self.raft.trigger().elect().await;
            }
            Some(id) => tracing::warn!(
                leader = gone.leader,
                term = gone.term,
                %reason,
                successor = id,
                "the leader's process is gone; its successor campaigns"
            ),
            None => tracing::warn!(
                leader = gone.leader,
                term = gone.term,
                %reason,
                agreeing,
                voters = voters.len(),
                "the leader looks gone, but too few healthy voters agree; the election timer decides"
            ),
        }
    }
}

/// Whether this node may be chosen to lead after a failover: healthy (R1) and not paused by an
/// operator.
pub(crate) fn ready_to_lead(health: &crate::HealthCheck, control: &LeaderControl) -> bool {
    health().is_ok() && !control.paused()
}

/// The last entry of `raft`'s log (none when it is empty or Raft has stopped).
pub(crate) async fn last_log_id(raft: &Raft<TypeConfig>) -> Option<LogId<NodeId>> {
    raft.with_raft_state(|state| state.log_ids.last().copied())
        .await
        .ok()
        .flatten()
}

/// Resolves when this node's vote is no longer `vote` (a new term or leader).
async fn leader_moved(
    metrics: &mut tokio::sync::watch::Receiver<openraft::RaftMetrics<NodeId, openraft::BasicNode>>,
    vote: openraft::Vote<NodeId>,
) {
    let _ = metrics.wait_for(|now| now.vote != vote).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn survivor(id: NodeId, forgot: bool, index: u64, term: u64, healthy: bool) -> Survivor {
        Survivor {
            id,
            forgot,
            last_log: Some(LogId::new(openraft::CommittedLeaderId::new(term, 1), index)),
            healthy,
        }
    }

    /// R1 and one candidate per failover: the survivors agree on one successor, the healthy
    /// one with the most advanced log (term first, then index), then the lowest id; too few
    /// agreeing voters, or none healthy, leaves it to the timer.
    #[test]
    fn the_successor_is_the_most_advanced_healthy_survivor_of_an_agreeing_quorum() {
        let table: [(&str, Vec<Survivor>, usize, Option<NodeId>); 6] = [
            (
                "the longer log wins",
                vec![
                    survivor(2, true, 10, 3, true),
                    survivor(3, true, 11, 3, true),
                ],
                3,
                Some(3),
            ),
            (
                "a tie goes to the lowest id",
                vec![
                    survivor(3, true, 11, 3, true),
                    survivor(2, true, 11, 3, true),
                ],
                3,
                Some(2),
            ),
            (
                "a later term beats a longer log",
                vec![
                    survivor(2, true, 20, 2, true),
                    survivor(3, true, 11, 3, true),
                ],
                3,
                Some(3),
            ),
            (
                "an unhealthy node is passed over",
                vec![
                    survivor(2, true, 10, 3, true),
                    survivor(3, true, 11, 3, false),
                ],
                3,
                Some(2),
            ),
            (
                "one voter alone is no quorum of three",
                vec![
                    survivor(2, true, 10, 3, true),
                    survivor(3, false, 11, 3, true),
                ],
                3,
                None,
            ),
            (
                "two of five are no quorum",
                vec![
                    survivor(2, true, 10, 3, true),
                    survivor(3, true, 11, 3, true),
                    survivor(4, false, 11, 3, true),
                ],
                5,
                None,
            ),
        ];
        for (case, survivors, voters, expected) in table {
            assert_eq!(successor(&survivors, voters), expected, "{case}");
        }
    }

    /// A peer's question is answered from this node's own verdict, never from the peer's word.
    #[tokio::test]
    async fn a_peer_is_told_a_leader_is_gone_only_when_this_node_found_it() {
        let state = Arc::new(FailoverState::default());
        let gone = LeaderGone { leader: 1, term: 4 };
        assert!(!state.confirm(gone, Duration::from_millis(20)).await);
        assert!(state.asked_about(gone), "the detector is asked to probe");
        let waiting = {
            let state = state.clone();
            tokio::spawn(async move { state.confirm(gone, Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        state.found(gone);
        assert!(waiting.await.unwrap());
        let other = LeaderGone { leader: 1, term: 5 };
        assert!(!state.confirm(other, Duration::from_millis(20)).await);
    }
}
