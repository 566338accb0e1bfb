//! Health and readiness, as `/health` and `/ready` report them, and the metrics endpoint.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use keel_primitives::{Clock, SystemClock};
use metrics_exporter_prometheus::PrometheusHandle;
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Why the node is not healthy (or not ready), in the words `/health` answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unhealthy {
    /// Production stopped for good (a failed validation or write).
    #[error("halted: {0}")]
    Halted(String),
    /// No block was applied for longer than the head may age.
    #[error("unsafe head is {age_ms} ms old")]
    HeadStale {
        /// How old the head is.
        age_ms: u64,
    },
    /// The last seal took longer than the block time allows.
    #[error("the last seal took {seal_ms} ms")]
    SealSlow {
        /// How long it took.
        seal_ms: u64,
    },
    /// Too many committed entries wait to be applied.
    #[error("{entries} committed entries are not applied yet")]
    ApplyLag {
        /// How many.
        entries: u64,
    },
    /// The node has not finished starting.
    #[error("starting")]
    Starting,
    /// The block derived from the L1 differs from the one Raft applied (I7): `safe` stops
    /// below it.
    #[error("derived chain diverges from the applied chain at {0}")]
    Diverged(String),
    /// Sealing is held back, by something that may pass (no L1 origin within the drift yet).
    #[error("sealing blocked: {0}")]
    SealingBlocked(String),
    /// The L1 has not answered for longer than `L1_UNREACHABLE_BLOCKS` L1 block times.
    #[error("L1 unreachable for {for_ms} ms: {reason}")]
    L1Unreachable {
        /// Since the last answer (or the start).
        for_ms: u64,
        /// The last failure.
        reason: String,
    },
    /// The L1 answers, but its head is older than `L1_HEAD_STALE_BLOCKS` L1 block times: the
    /// L1 node is stuck or syncing, and the rollup cannot see new L1 blocks.
    #[error("L1 head {number} is {age_s} s old")]
    L1HeadStale {
        /// The L1 head's number.
        number: u64,
        /// Its age.
        age_s: u64,
    },
}

impl Unhealthy {
    /// A halt is for good; every other reason may clear by itself.
    pub fn kind(&self) -> keel_primitives::ErrorKind {
        match self {
            Self::Halted(_) => keel_primitives::ErrorKind::Halt,
            _ => keel_primitives::ErrorKind::Retry,
        }
    }
}

impl From<Unhealthy> for keel_cluster::NotHealthy {
    fn from(unhealthy: Unhealthy) -> Self {
        Self {
            reason: unhealthy.to_string(),
        }
    }
}

/// L1 block times without an answer from the L1 after which the node is unhealthy (plus 2 s
/// of slack for a slow answer).
pub const L1_UNREACHABLE_BLOCKS: u64 = 3;
/// L1 block times the L1 head may age before the node is unhealthy: an L1 that skips a few
/// slots is normal, ten in a row is an L1 node that stopped following its chain.
pub const L1_HEAD_STALE_BLOCKS: u64 = 10;
const _: () = assert!(L1_UNREACHABLE_BLOCKS < L1_HEAD_STALE_BLOCKS);

/// What the node last heard from the L1.
#[derive(Debug)]
struct L1Contact {
    /// The L1's block time, in ms.
    block_time_ms: u64,
    /// When the L1 last answered (or the node started), in ms since the epoch.
    last_answer_ms: u64,
    /// The L1 head's number and timestamp (s), once known.
    head: Option<(u64, u64)>,
    /// The last failure since the last answer.
    failure: Option<String>,
}

/// What the node knows about its own state.
#[derive(Debug)]
pub struct Health {
    /// The L1 as last heard, when the node has one.
    l1: Mutex<Option<L1Contact>>,
    /// Why block production stopped for good, if it did (a failed validation or write).
    halted: Mutex<Option<String>>,
    /// Where the derived chain differs from the applied one, while it does.
    diverged: Mutex<Option<String>>,
    /// Why the producer skipped its last slot, and when (ms since the epoch): it counts for
    /// three block times, so a leader that stops leading stops reporting it.
    blocked: Mutex<Option<(String, u64)>>,
    /// When the last block was committed, in ms since the epoch.
    last_block_ms: AtomicU64,
    /// Whether the node finished starting and accepts transactions.
    ready: AtomicBool,
    /// A head older than this makes the node unhealthy.
    head_age_max_ms: u64,
    /// How long a skipped slot keeps the node unhealthy: three block times.
    blocked_for_ms: u64,
    /// How long the last seal (build and validate) took, in ms.
    last_seal_ms: AtomicU64,
    /// A seal slower than this makes the node unhealthy: it cannot keep its block time.
    seal_ms_max: u64,
    /// Committed Raft entries this node has not applied yet.
    apply_lag: AtomicU64,
    /// The time of day.
    clock: Arc<dyn Clock>,
}

/// Committed entries a node may have left to apply and still count as healthy.
pub const APPLY_LAG_ENTRIES_MAX: u64 = 64;

impl Health {
    /// Health for a node sealing every `block_time_ms`.
    pub fn new(block_time_ms: u64) -> Self {
        Self::with_clock(block_time_ms, Arc::new(SystemClock))
    }

    /// Health reading the time from `clock`.
    pub fn with_clock(block_time_ms: u64, clock: Arc<dyn Clock>) -> Self {
        Self {
            l1: Mutex::new(None),
            halted: Mutex::new(None),
            diverged: Mutex::new(None),
            blocked: Mutex::new(None),
            last_block_ms: AtomicU64::new(clock.now_ms()),
            ready: AtomicBool::new(false),
            head_age_max_ms: block_time_ms * 10 + 2_000,
            blocked_for_ms: block_time_ms * 3,
            last_seal_ms: AtomicU64::new(0),
            seal_ms_max: block_time_ms * 4 + 1_000,
            apply_lag: AtomicU64::new(0),
            clock,
        }
    }

    /// Makes the L1 part of this node's health, for an L1 sealing every `block_time_ms`.
    pub fn watch_l1(&self, block_time_ms: u64) {
        *self.l1.lock() = Some(L1Contact {
            block_time_ms,
            last_answer_ms: self.clock.now_ms(),
            head: None,
            failure: None,
        });
    }

    /// Records an answer from the L1 with its head.
    pub fn l1_answered(&self, head_number: u64, head_timestamp_s: u64) {
        if let Some(contact) = self.l1.lock().as_mut() {
            contact.last_answer_ms = self.clock.now_ms();
            contact.head = Some((head_number, head_timestamp_s));
            contact.failure = None;
        }
    }

    /// Records a failed call to the L1.
    pub fn l1_failed(&self, reason: String) {
        if let Some(contact) = self.l1.lock().as_mut() {
            contact.failure = Some(reason);
        }
    }

    fn check_l1(&self) -> Result<(), Unhealthy> {
        let guard = self.l1.lock();
        let Some(contact) = guard.as_ref() else {
            return Ok(());
        };
        let now_ms = self.clock.now_ms();
        let for_ms = now_ms.saturating_sub(contact.last_answer_ms);
        if for_ms > contact.block_time_ms * L1_UNREACHABLE_BLOCKS + 2_000 {
            return Err(Unhealthy::L1Unreachable {
                for_ms,
                reason: contact
                    .failure
                    .clone()
                    .unwrap_or_else(|| "no answer yet".into()),
            });
        }
        if let Some((number, timestamp_s)) = contact.head {
            let age_s = (now_ms / 1_000).saturating_sub(timestamp_s);
            if age_s * 1_000 > contact.block_time_ms * L1_HEAD_STALE_BLOCKS + 2_000 {
                return Err(Unhealthy::L1HeadStale { number, age_s });
            }
        }
        Ok(())
    }

    /// Records how long a seal took.
    pub fn seal_took(&self, took: std::time::Duration) {
        self.last_seal_ms
            .store(took.as_millis() as u64, Ordering::Relaxed);
    }

    /// Records how many committed entries are not applied yet.
    pub fn set_apply_lag(&self, entries: u64) {
        self.apply_lag.store(entries, Ordering::Relaxed);
    }

    /// Records a committed block.
    pub fn block_committed(&self) {
        self.last_block_ms
            .store(self.clock.now_ms(), Ordering::Relaxed);
    }

    /// Stops the node reporting healthy, for good, with a reason.
    pub fn halt(&self, reason: String) {
        metrics::gauge!("keel_halted").set(1.0);
        *self.halted.lock() = Some(reason);
    }

    /// Records where the derived chain differs from the applied one (`None`: it does not).
    pub fn diverged(&self, at: Option<String>) {
        let mut diverged = self.diverged.lock();
        if *diverged != at
            && let Some(at) = &at
        {
            tracing::error!(%at, "the derived chain diverges from the applied chain (I7)");
        }
        *diverged = at;
    }

    /// Records why the producer skipped a slot (`None` once it seals again).
    pub fn sealing_blocked(&self, reason: Option<String>) {
        let mut blocked = self.blocked.lock();
        let before = blocked.as_ref().map(|(reason, _)| reason.clone());
        if before != reason {
            match &reason {
                Some(reason) => tracing::warn!(%reason, "sealing blocked"),
                None => tracing::info!("sealing resumed"),
            }
        }
        *blocked = reason.map(|reason| (reason, self.clock.now_ms()));
    }

    /// Marks the node ready.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// `Ok` when healthy, else why not.
    pub fn check(&self) -> Result<(), Unhealthy> {
        if let Some(reason) = self.halted.lock().clone() {
            return Err(Unhealthy::Halted(reason));
        }
        let age_ms = self
            .clock
            .now_ms()
            .saturating_sub(self.last_block_ms.load(Ordering::Relaxed));
        if age_ms > self.head_age_max_ms {
            return Err(Unhealthy::HeadStale { age_ms });
        }
        let seal_ms = self.last_seal_ms.load(Ordering::Relaxed);
        if seal_ms > self.seal_ms_max {
            return Err(Unhealthy::SealSlow { seal_ms });
        }
        let entries = self.apply_lag.load(Ordering::Relaxed);
        if entries > APPLY_LAG_ENTRIES_MAX {
            return Err(Unhealthy::ApplyLag { entries });
        }
        if let Some(at) = self.diverged.lock().clone() {
            return Err(Unhealthy::Diverged(at));
        }
        if let Some((reason, at_ms)) = self.blocked.lock().clone()
            && self.clock.now_ms().saturating_sub(at_ms) <= self.blocked_for_ms
        {
            return Err(Unhealthy::SealingBlocked(reason));
        }
        self.check_l1()
    }

    /// `Ok` when the node accepts transactions and serves reads.
    pub fn check_ready(&self) -> Result<(), Unhealthy> {
        if !self.ready.load(Ordering::Relaxed) {
            return Err(Unhealthy::Starting);
        }
        self.check()
    }
}

/// Renders the cluster view served at `/cluster`.
pub(crate) type Status = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

#[derive(Clone)]
struct Endpoints {
    health: Arc<Health>,
    metrics: PrometheusHandle,
    status: Option<Status>,
}

fn answer(result: Result<(), Unhealthy>) -> impl IntoResponse {
    match result {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}

/// The router of the operations port: `/metrics`, `/health`, `/ready`, and `/cluster` on a
/// cluster node.
pub(crate) fn router(
    health: Arc<Health>,
    metrics: PrometheusHandle,
    status: Option<Status>,
) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(e): State<Endpoints>| async move { e.metrics.render() }),
        )
        .route(
            "/health",
            get(|State(e): State<Endpoints>| async move { answer(e.health.check()) }),
        )
        .route(
            "/ready",
            get(|State(e): State<Endpoints>| async move { answer(e.health.check_ready()) }),
        )
        .route(
            "/cluster",
            get(|State(e): State<Endpoints>| async move {
                match &e.status {
                    Some(status) => axum::Json(status()).into_response(),
                    None => (StatusCode::NOT_FOUND, "not a cluster node\n").into_response(),
                }
            }),
        )
        .with_state(Endpoints {
            health,
            metrics,
            status,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_primitives::ManualClock;
    use std::time::Duration;

    #[test]
    fn each_reason_makes_the_node_unhealthy_and_a_block_clears_the_head_age() {
        let clock = Arc::new(ManualClock::at(1_000_000));
        let health = Health::with_clock(250, clock.clone());
        assert_eq!(health.check(), Ok(()));
        assert_eq!(health.check_ready(), Err(Unhealthy::Starting));
        health.set_ready(true);
        assert_eq!(health.check_ready(), Ok(()));

        // The head ages with the clock: 10 block times plus 2 s is the most it may be.
        clock.advance(4_500);
        assert_eq!(health.check(), Ok(()));
        clock.advance(1);
        let stale = health.check().unwrap_err();
        assert_eq!(stale, Unhealthy::HeadStale { age_ms: 4_501 });
        assert_eq!(stale.to_string(), "unsafe head is 4501 ms old");
        health.block_committed();
        assert_eq!(health.check(), Ok(()));

        // A seal slower than 4 block times plus 1 s.
        health.seal_took(Duration::from_millis(2_001));
        assert_eq!(
            health.check().map_err(|reason| reason.to_string()),
            Err("the last seal took 2001 ms".into())
        );
        health.seal_took(Duration::from_millis(300));
        assert_eq!(health.check(), Ok(()));

        // Committed entries left to apply.
        health.set_apply_lag(APPLY_LAG_ENTRIES_MAX + 1);
        assert_eq!(
            health.check().map_err(|reason| reason.to_string()),
            Err("65 committed entries are not applied yet".into())
        );
        health.set_apply_lag(0);

        // A halt is for good.
        health.halt("block 7 failed validation".into());
        health.block_committed();
        let halted = health.check().unwrap_err();
        assert_eq!(halted.to_string(), "halted: block 7 failed validation");
        assert_eq!(halted.kind(), keel_primitives::ErrorKind::Halt);
    }

    #[test]
    fn an_unreachable_or_stuck_l1_makes_the_node_unhealthy() {
        let clock = Arc::new(ManualClock::at(1_000_000_000));
        let health = Health::with_clock(250, clock.clone());
        health.watch_l1(1_000);
        let tick = |ms: u64| {
            clock.advance(ms);
            health.block_committed();
        };
        // No answer yet: 3 L1 block times plus 2 s of grace from the start.
        tick(5_000);
        assert_eq!(health.check(), Ok(()));
        health.l1_failed("connection refused".into());
        tick(1);
        assert_eq!(
            health.check().map_err(|reason| reason.to_string()),
            Err("L1 unreachable for 5001 ms: connection refused".into())
        );
        // An answer clears it; a head older than 10 L1 block times plus 2 s does not pass.
        let head_timestamp = clock.now_s();
        health.l1_answered(40, head_timestamp);
        assert_eq!(health.check(), Ok(()));
        for _ in 0..12 {
            tick(1_000);
            health.l1_answered(40, head_timestamp);
        }
        assert_eq!(health.check(), Ok(()));
        tick(1_000);
        health.l1_answered(40, head_timestamp);
        assert_eq!(
            health.check().map_err(|reason| reason.to_string()),
            Err("L1 head 40 is 13 s old".into())
        );
        health.l1_answered(41, clock.now_s());
        assert_eq!(health.check(), Ok(()));
        // A node without an L1 ignores all of it.
        let alone = Health::with_clock(250, clock.clone());
        alone.l1_failed("unused".into());
        assert_eq!(alone.check(), Ok(()));
    }
}
