//! Deterministic simulation: 3 to 5 keel nodes in one process on turmoil's simulated network
//! and clock and on simulated disks, driven by a seed.
//!
//! Each simulated host runs the node assembly `keel node` runs (`keel_node::assemble`) over the
//! simulation's seams (`SimSeams`): the redb chain store and Raft log on simulated disks
//! ([`crate::disk`]), openraft, the state machine with compare-and-append, the leader loop with
//! its I3 gate, the node's own `Sealer` (build, then re-validate: I4) over a real mempool, the
//! announcer on the store's stream of applied blocks, the health monitor, and the peer protocol
//! (the same axum router, codec and HTTP framing) over turmoil's TCP through the
//! `PeerTransport` seam. Block timestamps and head ages come from a simulated clock (the
//! `Clock` seam) that faults can jump.
//!
//! ```text
//!  seed ─► SplitMix64 ─► nemesis schedule, workload, per-node election timeouts
//!      └─► turmoil rng ─► message latency, link flaps, host order in each tick, tokio's select!
//!
//!  driver loop: sim.step() (1 ms) ─► workload (transfers to the leader, through its intake)
//!                                 ─► nemesis (crashes as power losses, partitions, held links,
//!                                    duplicates, slow disks, clock jumps)
//!                                 ─► power cuts that struck mid-I/O take their host down
//!                                 ─► invariants after every step (I1 on every applied block)
//! ```
//!
//! Why turmoil and not madsim: turmoil runs on real tokio, so openraft, hyper, axum and redb
//! run unmodified; madsim replaces tokio through `--cfg madsim` across the whole build and does
//! not carry hyper or jsonrpsee. Determinism needs three things turmoil alone does not give:
//! `--cfg tokio_unstable` (set in `.cargo/config.toml`) so turmoil seeds each host's runtime and
//! `select!` polls branches in a seeded order; openraft's election timeout drawn from a range
//! of one millisecond (openraft draws it from the thread's OS-seeded rng), so the seed picks
//! each node's timeout instead; and the leader loop building on its own task
//! (`LeaderLoop::with_inline_build`) instead of the blocking pool.
//!
//! A run has a safety phase (faults and load; I1 checked on every applied block, heads must
//! not go backwards) and a liveness phase (every fault healed, every crashed node restarted;
//! every node must reach a new common height within the bound), then a drain (the load stops;
//! every accepted transaction must reach every node's safe chain, bounded by `DRAIN_MS`). At
//! the end each node's chain is read from its store and the history checker judges the whole
//! run (I1, I2, I5). The trace (every applied block and every fault, with simulated times) is
//! hashed; running a seed twice must give the same hash.
//!
//! A crash fault kills the node's process (SIGKILL, the OOM killer, an abort) and its kernel
//! lives on: redb's clean-shutdown writes never land, and every write the process made stays,
//! fsynced or not (the page cache). A full restart and the power-loss faults lose the power:
//! each write not yet fsynced lands whole, torn or not at all, as the seed decides; the
//! power-loss faults cut it in the middle of a commit's I/O.
//!
//! What it does not simulate: a real process pause (turmoil ticks every running host; the
//! pause fault holds the host's links instead, and real SIGSTOP is the chaos runner's), and the
//! listeners for JSON-RPC, operations and admin (the workload submits on the leader as its
//! `eth_sendRawTransaction` does, through `RpcContext::submit_here` and the intake, so
//! followers' forwarding is not exercised here).

use crate::chaos::SplitMix64;
use crate::check::{CheckOptions, Report, check};
use crate::disk::{DiskLatency, Loss, SimDisk, SlowLog, SlowMachine};
use crate::history::{Answer, BlockRead, ChainRead, Fault, HeadSeen, History, ReceiptSeen, Send};
use alloy::primitives::{Address, B256, Bytes};
use alloy::signers::local::PrivateKeySigner;
use keel_cluster::{
    ClusterSecret, LogStore, NodeId, PeerAnswer, PeerRequest, PeerTransport, StateMachine,
    TransportError, WatchEnd,
};
use keel_node::{ClusterConfig, Member, NodeConfig, NodeError, RpcServer, Seams};
use keel_primitives::{ChainSpec, Clock, dev_accounts};
use keel_storage::{ChainEvent, Store};
use openraft::BasicNode;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// The most nodes a simulation runs.
pub const SIM_NODES_MAX: u64 = 5;
/// The port every simulated node's peer endpoint listens on.
const PEER_PORT: u16 = 7000;
/// Workload accounts (dev accounts, one transfer in flight each).
const SIM_ACCOUNTS: usize = 4;
/// How long a simulated client waits for inclusion before it re-reads its nonce.
const SIM_INCLUSION_WAIT: Duration = Duration::from_secs(3);
/// Sends queued for one node's workload task (a client's connection backlog); more are not
/// sent. Each account has one in flight, so it never fills.
const SIM_SENDS_QUEUE_MAX: usize = 64;
/// turmoil's per-host TCP buffers (accept queue and per-stream segments). turmoil panics when
/// an accept queue overflows, where a kernel would drop the SYN; a held link releases seconds of
/// connection attempts at once (one per peer RPC), so the default of 64 is far too small.
const SIM_TCP_CAPACITY: usize = 65_536;
/// The simulated block gas limit.
const SIM_GAS_LIMIT: u64 = 30_000_000;

/// A fault the simulation injects. "Leader" and "follower" are decided when it is injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimFault {
    /// The leader's process is killed (every task and socket gone) and its kernel lives on:
    /// every write it made stays, fsynced or not; restarted at the heal.
    CrashLeader,
    /// A follower's process is killed; restarted at the heal.
    CrashFollower,
    /// The leader is cut off from every other node, both ways (leader in the minority).
    PartitionLeader,
    /// A follower is cut off from every other node (the leader keeps its majority).
    PartitionFollower,
    /// The leader's messages to every other node are dropped; theirs still reach it.
    OneWayLeader,
    /// Every link of the leader is held: its messages wait until the heal, then arrive late
    /// and at once (a stop-the-world pause as the network sees it).
    PauseLeader,
    /// The leader's links flap: each message has a 5% chance to cut its link until the heal.
    LossyLeader,
    /// The leader's wall clock jumps by up to ten minutes, forward or back.
    ClockJumpLeader,
    /// Every host crashes at once; all restart at the heal (the R5 reset).
    RestartAll,
    /// The leader's power fails in the middle of a disk write: a few more I/O calls succeed,
    /// then the disk is gone; the host crashes with writes not yet fsynced lost or torn, and
    /// restarts at the heal.
    PowerLossLeader,
    /// The same, on a follower.
    PowerLossFollower,
    /// The leader's disk turns slow: every log append, vote, commit mark and apply takes
    /// 20 to 400 ms.
    SlowDiskLeader,
    /// The leader's peer requests are duplicated: each one, with a 30% chance, is sent again
    /// up to 40 ms later, so a copy arrives after newer messages.
    DuplicateLeader,
    /// The network splits in two halves (2 | 3 of five nodes, 2 | 2 of four, 1 | 2 of three);
    /// the seed puts the leader on the larger or the smaller side.
    SplitNetwork,
    /// The L1 reorgs its last 1 to 6 blocks (past the sequencer's confirmation depth at
    /// times, never past finality); the removed transactions go back to its pool.
    L1Reorg,
    /// The L1 answers no node (its JSON-RPC is down).
    L1Outage,
    /// The batcher's ether is moved away on the L1, so that its batches fail; refunded at the
    /// heal.
    BatcherBroke,
}

impl SimFault {
    /// Every kind, in the order the seed picks from.
    pub const ALL: [Self; 14] = [
        Self::CrashLeader,
        Self::CrashFollower,
        Self::PartitionLeader,
        Self::PartitionFollower,
        Self::OneWayLeader,
        Self::PauseLeader,
        Self::LossyLeader,
        Self::ClockJumpLeader,
        Self::RestartAll,
        Self::PowerLossLeader,
        Self::PowerLossFollower,
        Self::SlowDiskLeader,
        Self::DuplicateLeader,
        Self::SplitNetwork,
    ];

    /// The L1's kinds, which only a run with an L1 injects.
    pub const L1_KINDS: [Self; 3] = [Self::L1Reorg, Self::L1Outage, Self::BatcherBroke];

    /// Every kind a run with an L1 picks from: [`Self::ALL`], then [`Self::L1_KINDS`].
    pub const ALL_WITH_L1: [Self; Self::ALL.len() + Self::L1_KINDS.len()] = {
        let mut all = [Self::CrashLeader; Self::ALL.len() + Self::L1_KINDS.len()];
        let mut index = 0;
        while index < all.len() {
            all[index] = if index < Self::ALL.len() {
                Self::ALL[index]
            } else {
                Self::L1_KINDS[index - Self::ALL.len()]
            };
            index += 1;
        }
        all
    };

    /// Its name in traces and reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::CrashLeader => "crash-leader",
            Self::CrashFollower => "crash-follower",
            Self::PartitionLeader => "partition-leader",
            Self::PartitionFollower => "partition-follower",
            Self::OneWayLeader => "one-way-leader",
            Self::PauseLeader => "pause-leader",
            Self::LossyLeader => "lossy-leader",
            Self::ClockJumpLeader => "clock-jump-leader",
            Self::RestartAll => "restart-all",
            Self::PowerLossLeader => "power-loss-leader",
            Self::PowerLossFollower => "power-loss-follower",
            Self::SlowDiskLeader => "slow-disk-leader",
            Self::DuplicateLeader => "duplicate-leader",
            Self::SplitNetwork => "split-network",
            Self::L1Reorg => "l1-reorg",
            Self::L1Outage => "l1-outage",
            Self::BatcherBroke => "batcher-broke",
        }
    }

    fn on_follower(self) -> bool {
        matches!(
            self,
            Self::CrashFollower | Self::PartitionFollower | Self::PowerLossFollower
        )
    }
}

/// One fault of a pinned scenario: what, when and for how long (simulated milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scripted {
    /// When it starts.
    pub at_ms: u64,
    /// What it is.
    pub fault: SimFault,
    /// How long it holds.
    pub hold_ms: u64,
}

/// A simulation run's settings.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Decides every choice of the run.
    pub seed: u64,
    /// Cluster size, 3 to 5.
    pub nodes: u64,
    /// Simulated time of faults and load.
    pub safety: Duration,
    /// After the last heal, every node must pass a new common height within this.
    pub liveness_bound: Duration,
    /// Block time.
    pub block_time: Duration,
    /// Raft heartbeat interval.
    pub heartbeat: Duration,
    /// What the history checker holds the run to.
    pub check: CheckOptions,
    /// None: the seed draws faults one after another. Some: exactly these faults (they may
    /// overlap), for a pinned scenario.
    pub script: Option<Vec<Scripted>>,
    /// Raft log entries between snapshots (a node further behind catches up by snapshot).
    pub snapshot_entries: u64,
    /// Print every trace line to stdout as it happens, so a failing seed shows its trace up to
    /// the failure.
    pub echo_trace: bool,
    /// Run the L1 too (`crate::sim_l1`): every node derives, the leader batches, the workload
    /// forces transactions through the L1, and the L1's faults join the nemesis. I6 (forced
    /// transactions in every derived chain by their deadline) and "no finalized block
    /// replaced" are checked on every L1 block.
    pub l1: bool,
}

impl SimOptions {
    /// The default run of `seed`: 3 to 5 nodes (the seed decides), 20 s of faults, 250 ms
    /// blocks, 10 s to converge.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            nodes: 3 + SplitMix64::new(seed).next_u64() % 3,
            safety: Duration::from_secs(20),
            liveness_bound: Duration::from_secs(10),
            block_time: Duration::from_millis(250),
            heartbeat: Duration::from_millis(50),
            check: CheckOptions {
                liveness_target_ms: 5_000,
                accepted_must_be_included: true,
            },
            script: None,
            snapshot_entries: 64,
            echo_trace: false,
            l1: false,
        }
    }

    /// The run of `seed` with the L1 in it.
    pub fn with_l1(seed: u64) -> Self {
        Self {
            l1: true,
            ..Self::new(seed)
        }
    }

    /// The options `keel sim --seed N` needs, beyond the seed, to replay this run.
    pub fn replay_flags(&self) -> &'static str {
        if self.l1 { " --l1" } else { "" }
    }

    /// A pinned scenario: `script` (each fault as `(at_ms, fault, hold_ms)`) on `nodes` nodes,
    /// with `seed` for everything else.
    pub fn scripted(
        seed: u64,
        nodes: u64,
        safety: Duration,
        script: &[(u64, SimFault, u64)],
    ) -> Self {
        let script = script
            .iter()
            .map(|&(at_ms, fault, hold_ms)| Scripted {
                at_ms,
                fault,
                hold_ms,
            })
            .collect();
        Self {
            nodes,
            safety,
            script: Some(script),
            ..Self::new(seed)
        }
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct SimOutcome {
    /// The seed.
    pub seed: u64,
    /// Every applied block and fault, with simulated times, one line each.
    pub trace: Vec<String>,
    /// A hash of the trace: equal for two runs of one seed.
    pub trace_hash: u64,
    /// The history checker's verdict on the run.
    pub report: Report,
    /// What the run saw, as the checker read it.
    pub history: History,
    /// Host crashes, each a power loss of the host's disks.
    pub power_losses: u64,
    /// Processes killed with their kernel alive.
    pub process_kills: u64,
    /// Writes not yet fsynced when a process was killed, kept by its kernel, over all kills.
    pub writes_kept: u64,
    /// Writes not yet fsynced when the power went, lost whole or torn, over all of them.
    pub writes_damaged: u64,
    /// With the L1: unsafe blocks replaced by derived ones, over every node's applies.
    pub blocks_replaced: u64,
    /// With the L1: forced transactions sent, and those checked in every derived chain by
    /// their deadline.
    pub forced: (u64, u64),
    /// With the L1: the L1's head at the end, and its reorgs.
    pub l1_blocks: (u64, u64),
}

/// Why a run failed; always names the seed, which replays it exactly.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// An invariant broke while the run was going (I1, a head going backwards).
    #[error(
        "seed {seed}: {what} (at {at_ms} ms simulated); replay with `keel sim --seed {seed}{flags}`"
    )]
    Invariant {
        /// The seed.
        seed: u64,
        /// The options a replay needs beyond the seed (` --l1`).
        flags: &'static str,
        /// What broke.
        what: String,
        /// When.
        at_ms: u64,
    },
    /// After every fault healed, the cluster did not converge within the bound (I5).
    #[error(
        "seed {seed}: I5 violated: not converged {bound_ms} ms after the heal (heads {heads:?}); replay with `keel sim --seed {seed}{flags}`"
    )]
    NotConverged {
        /// The seed.
        seed: u64,
        /// The options a replay needs beyond the seed (` --l1`).
        flags: &'static str,
        /// The bound.
        bound_ms: u64,
        /// Each node's head at the end.
        heads: BTreeMap<NodeId, u64>,
    },
    /// The history checker found anomalies.
    #[error("seed {seed}: {report}\nreplay with `keel sim --seed {seed}{flags}`")]
    Invalid {
        /// The seed.
        seed: u64,
        /// The options a replay needs beyond the seed (` --l1`).
        flags: &'static str,
        /// The verdict.
        report: Box<Report>,
    },
    /// The simulation itself failed (a host returned an error, a file could not be made).
    #[error("seed {seed}: simulation failed: {message}")]
    Harness {
        /// The seed.
        seed: u64,
        /// What failed.
        message: String,
    },
}

/// Duplication of one host's outgoing peer requests (the duplicate fault): the chance of a
/// copy, in percent, and the host's own seeded draw (a host's calls come in a seeded order, so
/// the draw replays).
#[derive(Debug)]
pub struct Duplication {
    percent: AtomicU64,
    random: Mutex<SplitMix64>,
}

impl Duplication {
    /// No duplication yet; `seed` drives the draws once it is switched on.
    pub fn new(seed: u64) -> Self {
        Self {
            percent: AtomicU64::new(0),
            random: Mutex::new(SplitMix64::new(seed)),
        }
    }

    /// Sends a copy of `percent`% of the requests.
    pub fn set(&self, percent: u64) {
        self.percent.store(percent.min(100), Ordering::Relaxed);
    }

    /// Whether to send this request twice, and after how long the copy goes.
    fn draw(&self) -> Option<Duration> {
        let percent = self.percent.load(Ordering::Relaxed);
        if percent == 0 {
            return None;
        }
        let mut random = self
            .random
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        (random.next_u64() % 100 < percent).then(|| Duration::from_millis(random.between(0, 40)))
    }
}

/// Peer requests over turmoil's simulated TCP: one connection per request, HTTP/1.1 framing by
/// hyper, so the far side's axum router and codec run unchanged. With a [`Duplication`], some
/// requests go twice, the copy late (TCP never duplicates, but a retrying sender does).
#[derive(Debug, Clone, Default)]
pub struct TurmoilTransport {
    duplication: Option<Arc<Duplication>>,
}

impl TurmoilTransport {
    /// A transport whose requests `duplication` copies while it is switched on.
    pub fn with_duplication(duplication: Arc<Duplication>) -> Self {
        Self {
            duplication: Some(duplication),
        }
    }
}

/// Sends `request` over turmoil's TCP on a fresh connection, HTTP/1.1 framed by hyper: the
/// answer's head, its body still to read. No connection is `Unreachable`; a failure after it,
/// `Failed`.
async fn turmoil_send(
    request: PeerRequest,
) -> Result<hyper::Response<hyper::body::Incoming>, TransportError> {
    let stream = turmoil::net::TcpStream::connect(request.address.as_str())
        .await
        .map_err(|error| TransportError::Unreachable(error.to_string()))?;
    let failed = |error: hyper::Error| TransportError::Failed(error.to_string());
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(failed)?;
    tokio::spawn(connection);
    let method = if request.post {
        hyper::Method::POST
    } else {
        hyper::Method::GET
    };
    let http_request = hyper::Request::builder()
        .method(method)
        .uri(request.path)
        .header(hyper::header::HOST, request.address.as_str())
        .header(hyper::header::AUTHORIZATION, request.authorization)
        .header(hyper::header::CONTENT_TYPE, request.content_type)
        .body(http_body_util::Full::new(hyper::body::Bytes::from(
            request.body,
        )))
        .map_err(|error| TransportError::Failed(error.to_string()))?;
    sender.send_request(http_request).await.map_err(failed)
}

async fn turmoil_exchange(request: PeerRequest) -> Result<PeerAnswer, TransportError> {
    use http_body_util::BodyExt;
    let response = turmoil_send(request).await?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|error| TransportError::Failed(error.to_string()))?;
    Ok(PeerAnswer {
        status,
        body: body.to_bytes(),
    })
}

/// `PeerTransport::watch` over turmoil: [`turmoil_send`], then the body held open. (A crashed
/// host here is a power loss that sends no close, so a watch on it ends only by the leader
/// changing: the simulation's failovers go by the election timer.)
async fn turmoil_watch(request: PeerRequest, timeout: Duration) -> WatchEnd {
    use http_body_util::BodyExt;
    let response = match tokio::time::timeout(timeout, turmoil_send(request)).await {
        Err(_) => return WatchEnd::TimedOut,
        Ok(Err(error)) => return WatchEnd::Broken(error.to_string()),
        Ok(Ok(response)) => response,
    };
    if response.status() != hyper::StatusCode::OK {
        return WatchEnd::Refused {
            status: response.status().as_u16(),
        };
    }
    let mut body = response.into_body();
    loop {
        match body.frame().await {
            Some(Ok(_)) => {}
            None => return WatchEnd::Ended,
            Some(Err(error)) => return WatchEnd::Broken(error.to_string()),
        }
    }
}

impl PeerTransport for TurmoilTransport {
    async fn watch(&self, request: PeerRequest, timeout: Duration) -> WatchEnd {
        turmoil_watch(request, timeout).await
    }

    async fn exchange(
        &self,
        request: PeerRequest,
        timeout: Duration,
    ) -> Result<PeerAnswer, TransportError> {
        if let Some(delay) = self.duplication.as_ref().and_then(|d| d.draw()) {
            let copy = request.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = tokio::time::timeout(timeout, turmoil_exchange(copy)).await;
            });
        }
        tokio::time::timeout(timeout, turmoil_exchange(request))
            .await
            .unwrap_or_else(|_| Err(TransportError::Failed("timed out".into())))
    }
}

/// A node's wall clock in the simulation: the host's simulated time since the run began, on
/// top of a fixed epoch, plus an offset that clock-jump faults move.
#[derive(Debug)]
struct SimClock {
    offset_s: Arc<AtomicI64>,
}

/// The simulated wall clock's start (2026-01-01T00:00:00Z).
const SIM_EPOCH_S: u64 = 1_767_225_600;

impl Clock for SimClock {
    fn now_s(&self) -> u64 {
        let elapsed = turmoil::elapsed().as_secs() as i64;
        (SIM_EPOCH_S as i64 + elapsed + self.offset_s.load(Ordering::Relaxed)).max(0) as u64
    }

    fn now_ms(&self) -> u64 {
        let elapsed = turmoil::elapsed().as_millis() as i64;
        let offset_ms = self.offset_s.load(Ordering::Relaxed) * 1_000;
        (SIM_EPOCH_S as i64 * 1_000 + elapsed + offset_ms).max(0) as u64
    }
}

/// What outlives a host's crashes, and the knobs the driver turns on it: its two disks (the
/// chain store and the Raft log, one redb file each), their latency, its clock's offset and
/// the duplication of its requests.
#[derive(Debug, Clone)]
struct Machine {
    /// Whether the run has an L1 (then the derived store is written too).
    l1: bool,
    chain_disk: SimDisk,
    derived_disk: SimDisk,
    raft_disk: SimDisk,
    latency: DiskLatency,
    clock_offset_s: Arc<AtomicI64>,
    duplication: Arc<Duplication>,
    /// The disk cut armed on this machine kills its process (kernel alive) when it strikes,
    /// instead of cutting the power.
    kill_on_cut: Arc<std::sync::atomic::AtomicBool>,
    /// When the process was last killed (simulated ms): a kill fault starts there, not where
    /// it was armed.
    killed_at_ms: Arc<AtomicU64>,
}

impl Machine {
    fn new(duplication_seed: u64, l1: bool) -> Self {
        Self {
            l1,
            chain_disk: SimDisk::new(),
            derived_disk: SimDisk::new(),
            raft_disk: SimDisk::new(),
            latency: DiskLatency::default(),
            clock_offset_s: Arc::default(),
            duplication: Arc::new(Duplication::new(duplication_seed)),
            kill_on_cut: Arc::default(),
            killed_at_ms: Arc::default(),
        }
    }

    fn disks(&self) -> [&SimDisk; 3] {
        [&self.chain_disk, &self.derived_disk, &self.raft_disk]
    }

    /// The disks a power cut may strike mid-write: those the simulated node writes (without
    /// an L1, its derived store stays idle).
    fn written_disks(&self) -> Vec<&SimDisk> {
        if self.l1 {
            vec![&self.chain_disk, &self.derived_disk, &self.raft_disk]
        } else {
            vec![&self.chain_disk, &self.raft_disk]
        }
    }
}

/// What a running host shares with the driver. Weak: a crash must drop the host's store, so
/// its `Database` is gone before the driver decides what its disk kept.
#[derive(Default)]
struct Handles {
    store: Weak<Store>,
    metrics: Option<tokio::sync::watch::Receiver<openraft::RaftMetrics<NodeId, BasicNode>>>,
    /// The node's derivation, with an L1.
    derivation: Option<(
        Weak<Store>,
        tokio::sync::watch::Receiver<keel_l1::DerivationStatus>,
    )>,
    /// The `safe` head the node serves.
    safe_heads: Option<Arc<keel_primitives::SafeHeads>>,
    /// The node's workload task: each send is submitted as `eth_sendRawTransaction` is on
    /// the node that sequences (`RpcContext::submit_here`: the intake on a leader), and its
    /// answer fills in the history's send at that index.
    sends: Option<tokio::sync::mpsc::Sender<(Bytes, usize)>>,
}

/// What the driver and every host write to.
#[derive(Default)]
struct World {
    /// Every (height → hash) any node ever applied: I1 across nodes and time.
    applied: BTreeMap<u64, B256>,
    /// Each node's last applied height.
    heads: BTreeMap<NodeId, u64>,
    /// Restarted nodes applying again, from their Raft log, the blocks a power loss took from
    /// their store: up to the height each had applied before. Raft applies them before the
    /// node serves, so no client sees them as heads; the final chains are checked as usual.
    reapplying: BTreeMap<NodeId, u64>,
    /// Running hosts' handles.
    handles: BTreeMap<NodeId, Handles>,
    /// The first broken invariant.
    violation: Option<(String, u64)>,
    trace: Vec<String>,
    history: History,
    /// Every transaction some node applied (the workload's inclusion check, without a scan
    /// of `history.receipts`).
    included: HashSet<B256>,
    now_ms: u64,
    power_losses: u64,
    writes_damaged: u64,
    process_kills: u64,
    writes_kept: u64,
    /// Print each trace line as it happens (a failing run keeps no trace to print after).
    echo: bool,
    /// The highest block any node's derivation called finalized: never replaced.
    finalized_max: u64,
    /// The highest block any node served as safe while the L1 had not reorged yet.
    safe_max: u64,
    /// L1 reorgs so far.
    l1_reorgs: u64,
    /// Blocks replaced by derived ones, over every node's applies.
    replaced: u64,
}

impl World {
    fn note(&mut self, line: String) {
        if self.echo {
            println!("{line}");
        }
        self.trace.push(line);
    }
}

type Shared = Arc<Mutex<World>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, World> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct NodeSetup {
    id: NodeId,
    machine: Machine,
    chain: ChainSpec,
    node_ids: Vec<NodeId>,
    election_ms: u64,
    heartbeat_ms: u64,
    snapshot_entries: u64,
    block_time: Duration,
    shared: Shared,
    /// The L1 every node reads, and the rollup, when the run has one.
    l1: Option<(Arc<dyn keel_l1::L1Client>, keel_primitives::RollupConfig)>,
}

fn harness(error: impl std::fmt::Display) -> Box<dyn std::error::Error> {
    error.to_string().into()
}

/// The seams of a simulated node (keel_node::Seams): its two simulated disks, the slow-disk
/// wrappers, turmoil's TCP for peers, no JSON-RPC or operations listener, and building on the
/// leader's task so that every choice follows the seed.
struct SimSeams {
    machine: Machine,
}

impl Seams for SimSeams {
    type Transport = TurmoilTransport;
    type Log = SlowLog;
    type Machine = SlowMachine;

    fn open_store(&self, chain: &ChainSpec) -> Result<Store, NodeError> {
        Ok(Store::open_with_backend(
            self.machine.chain_disk.clone(),
            chain,
        )?)
    }

    fn open_derived_store(&self, chain: &ChainSpec) -> Result<Store, NodeError> {
        Ok(Store::open_with_backend(
            self.machine.derived_disk.clone(),
            chain,
        )?)
    }

    fn open_log(&self) -> Result<SlowLog, NodeError> {
        let inner =
            LogStore::open_with_backend(self.machine.raft_disk.clone()).map_err(|error| {
                NodeError::Cluster {
                    doing: "opening the Raft log",
                    reason: error.to_string(),
                }
            })?;
        Ok(SlowLog {
            inner,
            latency: self.machine.latency.clone(),
        })
    }

    fn machine(&self, machine: StateMachine) -> SlowMachine {
        SlowMachine {
            inner: machine,
            latency: self.machine.latency.clone(),
        }
    }

    fn transport(&self, _me: &Member) -> TurmoilTransport {
        TurmoilTransport::with_duplication(self.machine.duplication.clone())
    }

    fn peer_address(&self, id: NodeId, _member: &Member) -> String {
        format!("{}:{PEER_PORT}", host(id))
    }

    async fn serve_peers(
        &self,
        _me: &Member,
        router: axum::Router,
        _runtime: Option<&keel_node::OwnRuntime>,
    ) -> Result<tokio::task::JoinHandle<()>, NodeError> {
        let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PEER_PORT))
            .await
            .map_err(NodeError::io("binding the simulated peer endpoint"))?;
        Ok(tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let service = hyper_util::service::TowerToHyperService::new(router.clone());
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        }))
    }

    async fn serve_rpc(
        &self,
        _context: Arc<keel_rpc::RpcContext>,
    ) -> Result<Option<RpcServer>, NodeError> {
        Ok(None)
    }

    async fn serve_operations(
        &self,
        _router: axum::Router,
    ) -> Result<Option<(std::net::SocketAddr, tokio::task::JoinHandle<()>)>, NodeError> {
        Ok(None)
    }

    async fn serve_admin(
        &self,
        _address: std::net::SocketAddr,
        _router: axum::Router,
    ) -> Result<tokio::task::JoinHandle<()>, NodeError> {
        Err(NodeError::Config(
            "the simulation serves no admin API".into(),
        ))
    }

    fn build_inline(&self) -> bool {
        true
    }

    /// Inline: a thread of the store's own would race the seeded scheduler.
    fn sync_in_background(&self) -> bool {
        false
    }
}

/// One simulated node, from its disks: the node assembly `keel node --cluster` starts
/// (keel_node::assemble), over the simulation's seams.
async fn run_node(setup: Arc<NodeSetup>) -> turmoil::Result {
    // Addresses the simulation's seams never bind or dial: peers are reached by host name.
    let unused: std::net::SocketAddr = ([127, 0, 0, 1], PEER_PORT).into();
    let members = setup
        .node_ids
        .iter()
        .map(|id| {
            let member = Member {
                raft_addr: unused,
                raft_listen: unused,
                rpc_addr: unused,
                admin_addr: None,
                ops_addr: None,
                learner: false,
            };
            (*id, member)
        })
        .collect();
    let config = NodeConfig {
        chain: setup.chain.clone(),
        datadir: std::path::PathBuf::new(),
        rpc_addr: unused,
        metrics_addr: None,
        block_time_ms: setup.block_time.as_millis() as u64,
        gas_limit: SIM_GAS_LIMIT,
        beneficiary: Address::repeat_byte(0xfe),
        extra_data: Bytes::new(),
        cluster: Some(ClusterConfig {
            node_id: setup.id,
            members,
            secret: ClusterSecret::new("keel-simulation-secret").map_err(harness)?,
            heartbeat_ms: setup.heartbeat_ms,
            // Seeded and distinct per node: openraft's own draw is not seeded.
            election_timeout_ms: setup.election_ms,
            election_timeout_max_ms: setup.election_ms + 1,
            snapshot_entries: setup.snapshot_entries,
            admin: None,
            rotation_interval: None,
        }),
        clock: Arc::new(SimClock {
            offset_s: setup.machine.clock_offset_s.clone(),
        }),
        safe_heads: Arc::new(match &setup.l1 {
            Some(_) => keel_primitives::SafeHeads::derived(),
            None => keel_primitives::SafeHeads::Latest,
        }),
        l1: setup
            .l1
            .as_ref()
            .map(|(client, rollup)| keel_node::L1Settings {
                client: client.clone(),
                rollup: rollup.clone(),
                block_time_ms: crate::sim_l1::SIM_L1_BLOCK_TIME_MS,
                confirmation_depth: keel_primitives::limits::SEQUENCER_CONFIRMATION_DEPTH,
                batcher: Some(dev_accounts()[keel_primitives::rollup::DEV_BATCHER_INDEX].clone()),
                data_availability: keel_l1::DataAvailability::Calldata,
            }),
        record_metrics: true,
        mode: Default::default(),
        seal_on_start: false,
        state_history: keel_node::StateHistory::Archive,
    };
    let safe_heads = config.safe_heads.clone();
    let seams = SimSeams {
        machine: setup.machine.clone(),
    };
    let node = keel_node::assemble(config, seams).await.map_err(harness)?;
    {
        // A member's chain store defers its blocks' fsync: a power loss may take the last
        // ones, which Raft applied again from the log before the node served (the same
        // blocks: the final chains are checked for I1). At most the deferred ones, never more.
        let mut world = lock(&setup.shared);
        let now_ms = world.now_ms;
        if let Some(previous) = world.heads.get(&setup.id).copied()
            && previous > node.opened_head
        {
            let lost = previous - node.opened_head;
            if lost > keel_primitives::limits::DEFERRED_BLOCKS_MAX && world.violation.is_none() {
                world.violation = Some((
                    format!(
                        "node {} restarted at {} after applying {previous}: {lost} blocks lost, more than the store defers",
                        setup.id, node.opened_head
                    ),
                    now_ms,
                ));
            }
            world.note(format!(
                "{now_ms} n{} reopened at {} ({lost} deferred blocks to apply again)",
                setup.id, node.opened_head
            ));
            world.heads.insert(setup.id, node.opened_head);
            world.reapplying.insert(setup.id, previous);
            // Nothing applied again while it started (it reopened below `previous`): it would
            // serve below what it applied. A lower head than `previous` with some applied
            // again may be a committed replacement's unwind.
            let served = node.store.snapshot().map_err(harness)?.head().0;
            if served == node.opened_head && world.violation.is_none() {
                world.violation = Some((
                    format!(
                        "node {} serves at {served} after applying {previous} before a crash: Raft did not apply its log again first",
                        setup.id
                    ),
                    now_ms,
                ));
            }
        }
    }
    let mut applied = node.store.subscribe_from(node.opened_head + 1);
    let (sends, mut to_send) = tokio::sync::mpsc::channel::<(Bytes, usize)>(SIM_SENDS_QUEUE_MAX);
    {
        let (context, shared) = (node.rpc_context.clone(), setup.shared.clone());
        // Each send on its own task, as clients on their own connections: the intake packs
        // what arrives together into one entry. A crash drops them unanswered ("unknown").
        tokio::spawn(async move {
            while let Some((raw, index)) = to_send.recv().await {
                let (context, shared) = (context.clone(), shared.clone());
                tokio::spawn(async move {
                    let answer = match context.submit_here(&raw).await {
                        Ok(_) => Answer::Accepted,
                        // geth's words for a copy the pool holds (not the intake's "send
                        // it again" answer, which quotes them).
                        Err(error) if error.message() == "already known" => Answer::Accepted,
                        Err(error) => Answer::Rejected {
                            code: error.code().into(),
                            message: error.message().to_string(),
                        },
                    };
                    lock(&shared).history.sends[index].answer = answer;
                });
            }
        });
    }
    {
        let mut world = lock(&setup.shared);
        world.handles.insert(
            setup.id,
            Handles {
                store: Arc::downgrade(&node.store),
                metrics: node.raft().map(|raft| raft.metrics()),
                derivation: node.derivation.as_ref().map(|derivation| {
                    (Arc::downgrade(&derivation.store), derivation.status.clone())
                }),
                safe_heads: Some(safe_heads),
                sends: Some(sends),
            },
        );
    }
    while let Some(event) = applied.next().await {
        let event = event.map_err(harness)?;
        on_applied(&setup.shared, setup.id, &event);
    }
    Ok(())
}

/// Records an applied block (or the head a snapshot installed) and checks I1 and head
/// monotonicity at once.
fn on_applied(shared: &Shared, node: NodeId, event: &ChainEvent) {
    let block = event.block();
    let installed = matches!(event, ChainEvent::Installed(_));
    let mut world = lock(shared);
    let number = block.number();
    let hash = block.hash();
    let at_ms = world.now_ms;
    if let Some(&until) = world.reapplying.get(&node) {
        if matches!(event, ChainEvent::Unwound(_)) || number <= until {
            world.heads.insert(node, number);
            world.note(format!("{at_ms} n{node} applied {number} {hash} again"));
            return;
        }
        world.reapplying.remove(&node);
    }
    if matches!(event, ChainEvent::Unwound(_)) {
        // A replacement unwound this node to `number`: the blocks above it go, the next
        // applied ones are the derived blocks (checked as they come).
        // The heads this node showed above it were unsafe blocks now replaced: the one reorg
        // the protocol allows, counted, not a head going backwards.
        world.heads.insert(node, number);
        let (replaced, kept) = std::mem::take(&mut world.history.heads)
            .into_iter()
            .partition(|head| head.node == node && head.number > number);
        world.history.heads = kept;
        world
            .history
            .replacements
            .push(crate::history::Replacement {
                node,
                at_ms,
                to: number,
                heads: replaced,
            });
        world.note(format!("{at_ms} n{node} unwound to {number} {hash}"));
        return;
    }
    let first = *world.applied.entry(number).or_insert(hash);
    if first != hash {
        // Only an unsafe block that was not batched in time (or lost its L1 origin) may be
        // replaced: never a finalized one, and never a safe one while the L1 has not reorged.
        let allowed =
            number > world.finalized_max && (world.l1_reorgs > 0 || number > world.safe_max);
        if allowed {
            world.replaced += 1;
            world.applied.insert(number, hash);
            // The replaced block's receipts were never final: they are not losses.
            world
                .history
                .receipts
                .retain(|receipt| !(receipt.block_number == number && receipt.block_hash == first));
            world.note(format!(
                "{at_ms} n{node} replaced {number} {first} by {hash}"
            ));
        } else if world.violation.is_none() {
            let finalized_max = world.finalized_max;
            let safe_max = world.safe_max;
            world.violation = Some((
                format!(
                    "I1 violated: node {node} applied {hash} at height {number}, another node applied {first} (finalized up to {finalized_max}, safe up to {safe_max})"
                ),
                at_ms,
            ));
        }
    }
    if let Some(previous) = world.heads.insert(node, number)
        && number <= previous
        && world.violation.is_none()
    {
        world.violation = Some((
            format!("node {node} applied height {number} after {previous}"),
            at_ms,
        ));
    }
    let verb = if installed { "installed" } else { "applied" };
    world.note(format!("{at_ms} n{node} {verb} {number} {hash}"));
    world.history.heads.push(HeadSeen {
        node,
        at_ms,
        number,
        hash,
    });
    for transaction in &block.block.transactions {
        let hash_of_transaction = *transaction.tx_hash();
        world.included.insert(hash_of_transaction);
        world.history.receipts.push(ReceiptSeen {
            transaction: hash_of_transaction,
            node,
            at_ms,
            block_number: number,
            block_hash: hash,
        });
    }
}

/// A fault being held.
struct Active {
    kind: SimFault,
    nodes: Vec<NodeId>,
    /// The nodes it cut the target off from (partitions, held and lossy links; the far side of
    /// a split, whose near side is `nodes`).
    others: Vec<NodeId>,
    leader: bool,
    started_ms: u64,
    until_ms: u64,
}

fn host(id: NodeId) -> String {
    format!("n{id}")
}

/// The workload's view of one account.
struct Account {
    signer: PrivateKeySigner,
    nonce: Option<u64>,
    in_flight: Option<(B256, u64)>,
}

fn leader_of(world: &World) -> Option<NodeId> {
    world.handles.iter().find_map(|(id, handles)| {
        let metrics = handles.metrics.as_ref()?.borrow().clone();
        (metrics.current_leader == Some(*id) && metrics.state == openraft::ServerState::Leader)
            .then_some(*id)
    })
}

/// How long the settle phase waits, at most, for every node to hold the same block at the
/// common height (a replacement in flight when the liveness phase ended).
const SETTLE_AGREE_MS: u64 = 5_000;

/// How long the drain phase waits, at most, for every accepted transaction to be in every
/// node's chain, at or below its safe head (a batch must land on the L1 for that).
const DRAIN_MS: u64 = 20_000;

/// Whether every node's chain holds every transaction a node accepted, at or below the
/// node's safe head: with an L1, an unsafe block may still be replaced (a batcher broken past
/// the window), its transactions going back to the pools.
fn accepted_all_included(shared: &Shared) -> bool {
    let world = lock(shared);
    let accepted: HashSet<B256> = world
        .history
        .sends
        .iter()
        .filter(|send| matches!(send.answer, Answer::Accepted))
        .map(|send| send.transaction)
        .collect();
    world.handles.values().all(|handles| {
        let Some(snapshot) = handles
            .store
            .upgrade()
            .and_then(|store| store.snapshot().ok())
        else {
            return false;
        };
        let safe = handles
            .safe_heads
            .as_ref()
            .map_or(u64::MAX, |heads| heads.safe(u64::MAX));
        accepted.iter().all(|hash| {
            matches!(snapshot.tx_location(hash), Ok(Some(location)) if location.block_number <= safe)
        })
    })
}

/// Whether every node's store holds the same block at the lowest head any node reached.
fn agree_at_common_height(shared: &Shared) -> bool {
    let world = lock(shared);
    let common = world.heads.values().min().copied().unwrap_or(0);
    let mut seen = None;
    for handles in world.handles.values() {
        let Some(store) = handles.store.upgrade() else {
            return false;
        };
        let Ok(Ok(hash)) = store.snapshot().map(|view| view.block_hash(common)) else {
            return false;
        };
        if seen.is_some_and(|seen| seen != hash) {
            return false;
        }
        seen = Some(hash);
    }
    true
}

/// Runs the simulation of `options.seed`.
pub fn run(options: &SimOptions) -> Result<SimOutcome, SimError> {
    let seed = options.seed;
    let harness_error = |message: String| SimError::Harness { seed, message };
    if !(3..=SIM_NODES_MAX).contains(&options.nodes) {
        return Err(harness_error(format!("nodes must be 3 to {SIM_NODES_MAX}")));
    }
    // A panic anywhere in the run (a node's assertion, the simulator's own) must still name
    // the seed that replays it.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| simulate(options))).unwrap_or_else(
        |panic| {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
                .unwrap_or_else(|| "a panic without a message".into());
            Err(harness_error(format!("panicked: {message}")))
        },
    )
}

fn simulate(options: &SimOptions) -> Result<SimOutcome, SimError> {
    let seed = options.seed;
    let flags = options.replay_flags();
    let mut random = SplitMix64::new(seed);
    let chain = ChainSpec::dev();
    let shared: Shared = Arc::default();
    lock(&shared).echo = options.echo_trace;
    let ids: Vec<NodeId> = (1..=options.nodes).collect();
    let total = options.safety + options.liveness_bound + Duration::from_secs(60);
    // The L1, sealed by this driver on simulated time (its clock reads the driver's time).
    let driver_ms = Arc::new(AtomicU64::new(0));
    let mut l1 = if options.l1 {
        let clock = Arc::new(DriverClock {
            now_ms: driver_ms.clone(),
        });
        Some(
            crate::sim_l1::SimL1::new(clock).map_err(|error| SimError::Harness {
                seed,
                message: error.to_string(),
            })?,
        )
    } else {
        None
    };
    let l1_for_nodes = l1.as_ref().map(|l1| (l1.client(), l1.rollup.clone()));
    let mut forced = ForcedLoad::default();
    let mut sim = turmoil::Builder::new()
        .rng_seed(random.next_u64())
        .simulation_duration(total)
        .tick_duration(Duration::from_millis(1))
        .tcp_capacity(SIM_TCP_CAPACITY)
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(random.between(2, 30)))
        .enable_random_order()
        .build();
    let mut machines = BTreeMap::new();
    for id in &ids {
        let machine = Machine::new(random.next_u64(), options.l1);
        machines.insert(*id, machine.clone());
        let setup = Arc::new(NodeSetup {
            id: *id,
            machine,
            chain: chain.clone(),
            node_ids: ids.clone(),
            // Seeded and distinct per node: openraft's own draw is not seeded.
            election_ms: random.between(300, 600),
            heartbeat_ms: options.heartbeat.as_millis() as u64,
            snapshot_entries: options.snapshot_entries,
            block_time: options.block_time,
            shared: shared.clone(),
            l1: l1_for_nodes.clone(),
        });
        sim.host(host(*id), move || run_node(setup.clone()));
    }
    let mut accounts: Vec<Account> = dev_accounts()
        .into_iter()
        .take(SIM_ACCOUNTS)
        .map(|signer| Account {
            signer,
            nonce: None,
            in_flight: None,
        })
        .collect();
    let mut active: Vec<Active> = Vec::new();
    let mut script: Vec<Scripted> = options.script.clone().unwrap_or_default();
    script.sort_by_key(|scripted| std::cmp::Reverse(scripted.at_ms)); // next one last
    let mut next_fault_ms = random.between(1_000, 3_000);
    let mut next_load_ms = 0;
    let safety_ms = options.safety.as_millis() as u64;
    // One driver step: the simulation's tick, then the L1's (`l1_load`: forced transactions
    // sent, in the safety phase only).
    let step = |sim: &mut turmoil::Sim<'_>,
                shared: &Shared,
                random: &mut SplitMix64,
                l1: &mut Option<crate::sim_l1::SimL1>,
                forced: &mut ForcedLoad,
                l1_load: bool|
     -> Result<u64, SimError> {
        sim.step().map_err(|error| SimError::Harness {
            seed,
            message: error.to_string(),
        })?;
        let now_ms = sim.elapsed().as_millis() as u64;
        driver_ms.store(now_ms, Ordering::Relaxed);
        // A cut that struck inside this step's I/O takes its host down now: a process kill
        // or a power loss, as armed.
        for (id, machine) in &machines {
            if machine.disks().iter().any(|disk| disk.is_off()) {
                if machine.kill_on_cut.swap(false, Ordering::Relaxed) {
                    kill(sim, shared, machine, &ids, *id, now_ms);
                } else {
                    power_off(sim, shared, machine, &ids, *id, random, now_ms);
                }
            }
        }
        let mut world = lock(shared);
        world.now_ms = now_ms;
        if let Some((what, at_ms)) = world.violation.clone() {
            return Err(SimError::Invariant {
                seed,
                flags,
                what,
                at_ms,
            });
        }
        drop(world);
        if let Some(l1) = l1.as_mut() {
            l1_step(l1, shared, forced, now_ms, l1_load);
        }
        Ok(now_ms)
    };

    // The safety phase: load and faults.
    loop {
        let now_ms = step(&mut sim, &shared, &mut random, &mut l1, &mut forced, true)?;
        if now_ms >= next_load_ms {
            next_load_ms = now_ms + 50;
            load(&shared, &mut accounts, &mut random, now_ms);
        }
        let (done, held): (Vec<Active>, Vec<Active>) = active
            .drain(..)
            .partition(|fault| now_ms >= fault.until_ms || now_ms >= safety_ms);
        active = held;
        for fault in done {
            if let Some(l1) = l1.as_mut()
                && heal_l1(l1, &shared, &fault, now_ms)
            {
                next_fault_ms = now_ms + random.between(500, 2_500);
                continue;
            }
            heal(&mut sim, &shared, fault, &machines, now_ms);
            next_fault_ms = now_ms + random.between(500, 2_500);
        }
        if now_ms >= safety_ms {
            break;
        }
        let next = if options.script.is_some() {
            match script.last() {
                Some(scripted) if now_ms >= scripted.at_ms => script.pop(),
                _ => None,
            }
        } else if active.is_empty() && now_ms >= next_fault_ms {
            let fault = if l1.is_some() {
                *random.pick(&SimFault::ALL_WITH_L1)
            } else {
                *random.pick(&SimFault::ALL)
            };
            // A batcher out of funds for longer than the forced-inclusion window: forced
            // transactions pass their deadline unbatched, derivation puts them in the chain
            // itself, and the cluster adopts that.
            let hold_ms = if fault == SimFault::BatcherBroke {
                let window_ms = crate::sim_l1::SIM_FORCE_INCLUSION_WINDOW_BLOCKS
                    * crate::sim_l1::SIM_L1_BLOCK_TIME_MS;
                random.between(window_ms + 2_000, window_ms * 2)
            } else {
                random.between(300, 3_000)
            };
            Some(Scripted {
                at_ms: now_ms,
                fault,
                hold_ms,
            })
        } else {
            None
        };
        if let Some(scripted) = next
            && let Some(l1) = l1.as_mut()
            && let Some(fault) = inject_l1(l1, &shared, &mut random, scripted, now_ms)
        {
            active.push(fault);
        } else if let Some(scripted) = next {
            let fault = inject(
                &mut sim,
                &shared,
                &ids,
                &mut random,
                &machines,
                scripted,
                now_ms,
            );
            active.push(fault);
        }
    }

    // The liveness phase: everything healed; every node must pass a new common height.
    let (healed_at, replacements_before) = {
        let world = lock(&shared);
        let healed_at = world.heads.values().max().copied().unwrap_or(0);
        (healed_at, world.history.replacements.len())
    };
    let bound_ms = options.liveness_bound.as_millis() as u64;
    let ends_ms = safety_ms + bound_ms;
    loop {
        let now_ms = step(&mut sim, &shared, &mut random, &mut l1, &mut forced, false)?;
        if now_ms >= next_load_ms {
            next_load_ms = now_ms + 50;
            load(&shared, &mut accounts, &mut random, now_ms);
        }
        // A replacement after the heal (the L1 deciding on unbatched blocks) restarts the
        // count from the lowest height it unwound a node to: the blocks after it are new.
        let (heads, lowest_unwind) = {
            let world = lock(&shared);
            let lowest = world.history.replacements[replacements_before..]
                .iter()
                .map(|replacement| replacement.to)
                .min();
            (world.heads.clone(), lowest)
        };
        let target = healed_at.min(lowest_unwind.unwrap_or(u64::MAX)) + 2;
        if heads.len() == ids.len() && heads.values().all(|head| *head >= target) {
            break;
        }
        if now_ms >= ends_ms {
            return Err(SimError::NotConverged {
                flags,
                seed,
                bound_ms,
                heads,
            });
        }
    }
    // The drain: the load stops and every transaction a node accepted must reach every node's
    // safe chain. With an L1, the unsafe blocks built while the batcher was broken past the
    // window are replaced when derivation reaches their L1 blocks, which can be after the
    // liveness target was met; their transactions go back to the pools and into new blocks.
    if options.check.accepted_must_be_included {
        let drain_ends_ms = sim.elapsed().as_millis() as u64 + DRAIN_MS;
        let mut next_check_ms = 0;
        loop {
            let now_ms = step(&mut sim, &shared, &mut random, &mut l1, &mut forced, false)?;
            if now_ms >= next_check_ms {
                next_check_ms = now_ms + 50;
                if accepted_all_included(&shared) {
                    break;
                }
            }
            if now_ms >= drain_ends_ms {
                break; // the checker names what is missing
            }
        }
    }
    // Let the last proposals settle, then read every chain back up to a common height. With
    // the L1, a replacement may be in flight at that moment (applied by some nodes, not yet
    // by the rest): settle until every node holds the same block at the common height, or
    // give up after `SETTLE_AGREE_MS` and let the checker judge.
    let settle_ms = sim.elapsed().as_millis() as u64 + 1_000;
    loop {
        let now_ms = step(&mut sim, &shared, &mut random, &mut l1, &mut forced, false)?;
        if now_ms >= settle_ms
            && (agree_at_common_height(&shared) || now_ms >= settle_ms + SETTLE_AGREE_MS)
        {
            break;
        }
    }
    let mut world = lock(&shared);
    let common = world.heads.values().min().copied().unwrap_or(0);
    let mut chains = Vec::new();
    for (id, handles) in &world.handles {
        let Some(store) = handles.store.upgrade() else {
            continue;
        };
        chains.push(
            read_chain(*id, &store, common).map_err(|error| SimError::Harness {
                seed,
                message: error.to_string(),
            })?,
        );
    }
    let mut history = std::mem::take(&mut world.history);
    history.chains = chains;
    history.ended_ms = world.now_ms;
    let trace = std::mem::take(&mut world.trace);
    let (power_losses, writes_damaged) = (world.power_losses, world.writes_damaged);
    let (process_kills, writes_kept) = (world.process_kills, world.writes_kept);
    let (blocks_replaced, l1_reorgs) = (world.replaced, world.l1_reorgs);
    drop(world);
    let l1_head = l1.as_ref().map_or(0, |l1| l1.head());
    // Receipts of blocks past the common height are not read back: not a loss.
    history
        .receipts
        .retain(|receipt| receipt.block_number <= common);
    let report = check(&history, &options.check);
    let trace_hash = trace_hash(&trace);
    if !report.valid() {
        return Err(SimError::Invalid {
            flags,
            seed,
            report: Box::new(report),
        });
    }
    Ok(SimOutcome {
        seed,
        trace,
        trace_hash,
        report,
        history,
        power_losses,
        writes_damaged,
        process_kills,
        writes_kept,
        blocks_replaced,
        forced: (forced.sent, forced.checked),
        l1_blocks: (l1_head, l1_reorgs),
    })
}

/// FNV-1a over the trace's lines: stable across runs and builds, unlike std's hasher.
fn trace_hash(trace: &[String]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for byte in trace.iter().flat_map(|line| line.bytes().chain([b'\n'])) {
        hash ^= byte as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

fn read_chain(
    node: NodeId,
    store: &Store,
    up_to: u64,
) -> Result<ChainRead, keel_storage::StorageError> {
    let snapshot = store.snapshot()?;
    let mut blocks = Vec::new();
    // Newest first: a node that caught up by snapshot holds no blocks below the snapshot's
    // head, so its chain starts there.
    for number in (0..=up_to.min(snapshot.head().0)).rev() {
        let Some(block) = snapshot.block(number)? else {
            break;
        };
        blocks.push(BlockRead {
            number,
            hash: block.hash,
            parent_hash: block.header.parent_hash,
            transactions: block.transactions.iter().map(|tx| *tx.tx_hash()).collect(),
        });
    }
    blocks.reverse();
    Ok(ChainRead { node, blocks })
}

/// One workload step: each account with nothing in flight sends its next transfer to the
/// current leader, which admits it through its intake (answered once a quorum holds it); an
/// account whose transfer is not in after the wait re-reads its nonce (the same nonce always
/// signs the same bytes, so a resend is idempotent).
fn load(shared: &Shared, accounts: &mut [Account], random: &mut SplitMix64, now_ms: u64) {
    let mut world = lock(shared);
    let Some(leader) = leader_of(&world) else {
        return;
    };
    let Some(handles) = world.handles.get(&leader) else {
        return;
    };
    let (Some(store), Some(sends)) = (handles.store.upgrade(), handles.sends.clone()) else {
        return;
    };
    let Ok(head) = store.snapshot() else {
        return;
    };
    for account in accounts.iter_mut() {
        if random.next_u64().is_multiple_of(4) {
            continue; // not every account every step: the load varies
        }
        if let Some((hash, sent_ms)) = account.in_flight {
            if world.included.contains(&hash) {
                account.in_flight = None;
                account.nonce = account.nonce.map(|nonce| nonce + 1);
            } else if now_ms.saturating_sub(sent_ms) > SIM_INCLUSION_WAIT.as_millis() as u64 {
                account.in_flight = None;
                account.nonce = None;
            } else {
                continue;
            }
        }
        let address = account.signer.address();
        let nonce = match account.nonce {
            Some(nonce) => nonce,
            None => {
                let Ok(record) = head.account(&address) else {
                    continue;
                };
                let nonce = record.map_or(0, |record| record.nonce);
                account.nonce = Some(nonce);
                nonce
            }
        };
        let envelope = crate::workload_transfer(&account.signer, nonce);
        let hash = *envelope.tx_hash();
        let index = world.history.sends.len();
        if sends
            .try_send((
                alloy::eips::Encodable2718::encoded_2718(&envelope).into(),
                index,
            ))
            .is_err()
        {
            continue;
        }
        account.in_flight = Some((hash, now_ms));
        world.history.sends.push(Send {
            transaction: hash,
            node: leader,
            at_ms: now_ms,
            answer: Answer::Unknown {
                message: "no answer: the node went down first".into(),
            },
        });
    }
}

/// Injects a fault.
fn inject(
    sim: &mut turmoil::Sim<'_>,
    shared: &Shared,
    ids: &[NodeId],
    random: &mut SplitMix64,
    machines: &BTreeMap<NodeId, Machine>,
    scripted: Scripted,
    now_ms: u64,
) -> Active {
    let leader = leader_of(&lock(shared));
    let leader_or_any = leader.unwrap_or(*random.pick(ids));
    let followers: Vec<NodeId> = ids
        .iter()
        .copied()
        .filter(|id| *id != leader_or_any)
        .collect();
    let target = if scripted.fault.on_follower() {
        *random.pick(&followers)
    } else {
        leader_or_any
    };
    let mut others: Vec<NodeId> = ids.iter().copied().filter(|id| *id != target).collect();
    let mut nodes = vec![target];
    match scripted.fault {
        SimFault::CrashLeader | SimFault::CrashFollower => {
            // Killed at a random point of its I/O, as a SIGKILL lands: maybe between a
            // commit's writes and its fsync, whose writes the kernel then keeps unsynced.
            let machine = &machines[&target];
            machine.kill_on_cut.store(true, Ordering::Relaxed);
            let disks = machine.written_disks();
            random.pick(&disks).cut_after(random.between(0, 30));
        }
        SimFault::PartitionLeader | SimFault::PartitionFollower => {
            for id in &others {
                sim.partition(host(target), host(*id));
            }
        }
        SimFault::OneWayLeader => {
            for id in &others {
                sim.partition_oneway(host(target), host(*id));
            }
        }
        SimFault::PauseLeader => {
            for id in &others {
                sim.hold(host(target), host(*id));
            }
        }
        SimFault::LossyLeader => {
            for id in &others {
                sim.set_link_fail_rate(host(target), host(*id), 0.05);
            }
        }
        SimFault::ClockJumpLeader => {
            let magnitude = random.between(1, 600) as i64;
            let jump = if random.next_u64().is_multiple_of(2) {
                magnitude
            } else {
                -magnitude
            };
            machines[&target]
                .clock_offset_s
                .fetch_add(jump, Ordering::Relaxed);
        }
        SimFault::RestartAll => {
            for id in ids {
                power_off(sim, shared, &machines[id], ids, *id, random, now_ms);
            }
            nodes = ids.to_vec();
        }
        SimFault::PowerLossLeader | SimFault::PowerLossFollower => {
            let disks = machines[&target].written_disks();
            let disk = random.pick(&disks);
            disk.cut_after(random.between(0, 30));
        }
        SimFault::SlowDiskLeader => machines[&target].latency.set(random.between(20, 400)),
        SimFault::DuplicateLeader => machines[&target].duplication.set(30),
        SimFault::SplitNetwork => {
            // Fisher-Yates over the followers, then the leader's side takes the first few.
            let mut shuffled = followers.clone();
            for index in (1..shuffled.len()).rev() {
                shuffled.swap(index, random.between(0, index as u64) as usize);
            }
            let half = ids.len() / 2;
            let side = if random.next_u64().is_multiple_of(2) {
                half
            } else {
                ids.len() - half
            };
            nodes.extend_from_slice(&shuffled[..side - 1]);
            others = shuffled[side - 1..].to_vec();
            for near in &nodes {
                for far in &others {
                    sim.partition(host(*near), host(*far));
                }
            }
        }
        // The L1's faults are the driver's (`inject_l1`); without an L1 they do nothing.
        SimFault::L1Reorg | SimFault::L1Outage | SimFault::BatcherBroke => {}
    }
    let kind = scripted.fault;
    let hold_ms = scripted.hold_ms;
    lock(shared).note(format!(
        "{now_ms} fault {} {nodes:?} for {hold_ms} ms",
        kind.name()
    ));
    Active {
        kind,
        nodes,
        others,
        leader: !kind.on_follower() && kind != SimFault::RestartAll && leader.is_some(),
        started_ms: now_ms,
        until_ms: now_ms + hold_ms,
    }
}

/// A host crash: its disks lose power first (so none of the clean-shutdown writes redb makes
/// when a `Database` is dropped lands), its software and sockets go, then each disk keeps what
/// the seed decides of the writes it had not fsynced.
fn power_off(
    sim: &mut turmoil::Sim<'_>,
    shared: &Shared,
    machine: &Machine,
    ids: &[NodeId],
    id: NodeId,
    random: &mut SplitMix64,
    now_ms: u64,
) {
    stop_host(sim, shared, machine, ids, id);
    let mut loss = Loss::default();
    for disk in machine.disks() {
        let one = disk.restore(random.next_u64());
        loss.unsynced += one.unsynced;
        loss.lost += one.lost;
        loss.torn += one.torn;
    }
    let mut world = lock(shared);
    world.power_losses += 1;
    world.writes_damaged += (loss.lost + loss.torn) as u64;
    world.note(format!(
        "{now_ms} n{id} down: {} unsynced writes, {} lost, {} torn",
        loss.unsynced, loss.lost, loss.torn
    ));
}

/// A process kill: the host's software and sockets go, its disks keep every write it made
/// (the kernel's page cache), and none of its clean-shutdown writes happen.
fn kill(
    sim: &mut turmoil::Sim<'_>,
    shared: &Shared,
    machine: &Machine,
    ids: &[NodeId],
    id: NodeId,
    now_ms: u64,
) {
    stop_host(sim, shared, machine, ids, id);
    machine.killed_at_ms.store(now_ms, Ordering::Relaxed);
    let kept: usize = machine.disks().iter().map(|disk| disk.revive()).sum();
    let mut world = lock(shared);
    world.process_kills += 1;
    world.writes_kept += kept as u64;
    world.note(format!(
        "{now_ms} n{id} killed: {kept} unsynced writes kept"
    ));
}

/// Takes a host down with its disks cut first, so no write lands while its tasks drop.
fn stop_host(
    sim: &mut turmoil::Sim<'_>,
    shared: &Shared,
    machine: &Machine,
    ids: &[NodeId],
    id: NodeId,
) {
    for disk in machine.disks() {
        disk.cut();
    }
    lock(shared).handles.remove(&id);
    // Tokio drops a crashed host's tasks in an order set by process-wide task ids (its task
    // list is sharded by id), and each connection dropped sends its close, drawing a latency
    // from turmoil's one random stream: the same seed gave other draws to other links in a
    // second run in the same process. A host losing power sends nothing, so its outgoing links
    // are cut while it dies and restored after; what peers send it later is refused by
    // turmoil as before. (Faults run one at a time, so these links were healthy.)
    let peers: Vec<String> = ids
        .iter()
        .filter(|other| **other != id)
        .map(|other| host(*other))
        .collect();
    for peer in &peers {
        sim.partition_oneway(host(id), peer.as_str());
    }
    sim.crash(host(id));
    for peer in &peers {
        sim.repair_oneway(host(id), peer.as_str());
    }
}

/// Heals a fault and records it.
fn heal(
    sim: &mut turmoil::Sim<'_>,
    shared: &Shared,
    mut fault: Active,
    machines: &BTreeMap<NodeId, Machine>,
    now_ms: u64,
) {
    let target = fault.nodes[0];
    match fault.kind {
        SimFault::CrashLeader | SimFault::CrashFollower => {
            let machine = &machines[&target];
            // A kill whose cut no I/O reached lands now; the host restarts either way.
            for disk in machine.disks() {
                disk.disarm();
            }
            if machine.kill_on_cut.swap(false, Ordering::Relaxed) {
                let ids: Vec<NodeId> = machines.keys().copied().collect();
                kill(sim, shared, machine, &ids, target, now_ms);
            }
            // The fault, as the checker times failovers and gaps, starts at the kill.
            fault.started_ms = machine.killed_at_ms.load(Ordering::Relaxed);
            sim.bounce(host(target));
        }
        SimFault::RestartAll => {
            for id in &fault.nodes {
                sim.bounce(host(*id));
            }
        }
        SimFault::PartitionLeader | SimFault::PartitionFollower | SimFault::OneWayLeader => {
            for id in &fault.others {
                sim.repair(host(target), host(*id));
            }
        }
        SimFault::PauseLeader => {
            for id in &fault.others {
                sim.release(host(target), host(*id));
            }
        }
        SimFault::LossyLeader => {
            for id in &fault.others {
                sim.set_link_fail_rate(host(target), host(*id), 0.0);
                sim.repair(host(target), host(*id));
            }
        }
        SimFault::ClockJumpLeader => machines[&target].clock_offset_s.store(0, Ordering::Relaxed),
        SimFault::PowerLossLeader | SimFault::PowerLossFollower => {
            // A cut that never struck (no I/O came) is called off; a host it took down
            // restarts.
            for disk in machines[&target].disks() {
                disk.disarm();
            }
            if !sim.is_host_running(host(target)) {
                sim.bounce(host(target));
            }
        }
        SimFault::SlowDiskLeader => machines[&target].latency.set(0),
        SimFault::DuplicateLeader => machines[&target].duplication.set(0),
        SimFault::SplitNetwork => {
            for near in &fault.nodes {
                for far in &fault.others {
                    sim.repair(host(*near), host(*far));
                }
            }
        }
        SimFault::L1Reorg | SimFault::L1Outage | SimFault::BatcherBroke => {}
    }
    let mut world = lock(shared);
    world.note(format!("{now_ms} healed {}", fault.kind.name()));
    world.history.faults.push(Fault {
        kind: fault.kind.name().to_string(),
        nodes: fault.nodes,
        leader: fault.leader,
        started_ms: fault.started_ms,
        healed_ms: Some(now_ms),
        term_increments: None,
    });
}

/// The L1's wall clock: the driver's simulated time on the simulation's epoch.
#[derive(Debug)]
struct DriverClock {
    now_ms: Arc<AtomicU64>,
}

impl Clock for DriverClock {
    fn now_s(&self) -> u64 {
        self.now_ms() / 1_000
    }

    fn now_ms(&self) -> u64 {
        SIM_EPOCH_S * 1_000 + self.now_ms.load(Ordering::Relaxed)
    }
}

/// The forced-transaction workload: one forced transfer at a time from dev account 5 on the
/// L2, sent through the L1's force inbox (so its nonces land in order), the next once a
/// derived chain holds it.
#[derive(Debug, Default)]
struct ForcedLoad {
    nonce: u64,
    /// The one in flight: its L2 hash, its L1 transaction's hash, when it was sent.
    in_flight: Option<(B256, B256, u64)>,
    next_ms: u64,
    sent: u64,
    checked: u64,
}

/// Gap between forced transactions.
const SIM_FORCED_EVERY_MS: u64 = 2_500;

/// One driver step of the L1: seal its block when due, move the finalized and safe marks,
/// check I6 on every node's derived chain, and force the next transaction.
fn l1_step(
    l1: &mut crate::sim_l1::SimL1,
    shared: &Shared,
    forced: &mut ForcedLoad,
    now_ms: u64,
    load: bool,
) {
    let Some((number, transactions)) = l1.tick(now_ms) else {
        return;
    };
    let l1_hash = l1.direct().block_hash_at(number).unwrap_or_default();
    let mut world = lock(shared);
    world.note(format!(
        "{now_ms} l1 block {number} {l1_hash}: {transactions} transactions, batcher balance {}",
        l1.batcher_balance()
    ));
    // The marks a replacement may never cross.
    let mut finalized_max = world.finalized_max;
    let mut safe_max = world.safe_max;
    for handles in world.handles.values() {
        if let Some(heads) = &handles.safe_heads {
            finalized_max = finalized_max.max(heads.finalized(u64::MAX));
            safe_max = safe_max.max(heads.safe(u64::MAX));
        }
    }
    world.finalized_max = finalized_max;
    if world.l1_reorgs == 0 {
        world.safe_max = safe_max;
    }
    // I6: the forced transaction in flight is in every derived chain whose derivation read,
    // on the L1's chain, past its deadline.
    if let Some((l2_hash, l1_transaction, sent_ms)) = forced.in_flight
        && let Some(forced_at) = l1.included_at(&l1_transaction)
    {
        let deadline = forced_at + l1.rollup.force_inclusion_window_blocks;
        let mut held_somewhere = false;
        let mut missing = None;
        for (id, handles) in &world.handles {
            let Some((store, status)) = &handles.derivation else {
                continue;
            };
            let Some(store) = store.upgrade() else {
                continue;
            };
            let holds = matches!(
                store.snapshot().map(|view| view.tx_location(&l2_hash)),
                Ok(Ok(Some(_)))
            );
            held_somewhere |= holds;
            let status = *status.borrow();
            let past_deadline = status.l1.is_some_and(|read| {
                read.number >= deadline && l1.direct().block_hash_at(read.number) == Some(read.hash)
            });
            if past_deadline && !holds {
                missing = Some((*id, status.l1.map_or(0, |read| read.number)));
            }
        }
        if let Some((node, read)) = missing
            && world.violation.is_none()
        {
            world.violation = Some((
                format!(
                    "I6 violated: forced transaction {l2_hash} from L1 block {forced_at} (sent at {sent_ms} ms) is not in node {node}'s derived chain at L1 block {read}, past its deadline {deadline}"
                ),
                now_ms,
            ));
        }
        if held_somewhere {
            world.note(format!(
                "{now_ms} forced {l2_hash} in a derived chain (L1 block {forced_at})"
            ));
            forced.in_flight = None;
            forced.nonce += 1;
            forced.checked += 1;
        }
    }
    drop(world);
    if load && forced.in_flight.is_none() && now_ms >= forced.next_ms {
        use alloy::eips::eip2718::Encodable2718;
        let signer = &dev_accounts()[5];
        let transfer = crate::transfer(
            signer,
            forced.nonce,
            Address::repeat_byte(0xf0),
            alloy::primitives::U256::from(1),
        );
        if let Some(l1_transaction) = l1.force(transfer.encoded_2718().into()) {
            forced.in_flight = Some((*transfer.tx_hash(), l1_transaction, now_ms));
            forced.sent += 1;
            forced.next_ms = now_ms + SIM_FORCED_EVERY_MS;
            lock(shared).note(format!("{now_ms} forcing {}", transfer.tx_hash()));
        }
    }
}

/// Injects an L1 fault (`None` for any other kind, which `inject` handles).
fn inject_l1(
    l1: &mut crate::sim_l1::SimL1,
    shared: &Shared,
    random: &mut SplitMix64,
    scripted: Scripted,
    now_ms: u64,
) -> Option<Active> {
    let detail = match scripted.fault {
        SimFault::L1Reorg => {
            let depth = random.between(1, crate::sim_l1::SIM_L1_REORG_DEPTH_MAX);
            let removed = l1.reorg(depth);
            lock(shared).l1_reorgs += 1;
            format!("{removed} L1 blocks")
        }
        SimFault::L1Outage => {
            l1.set_down(true);
            String::new()
        }
        SimFault::BatcherBroke => {
            l1.set_batcher_broke(true);
            String::new()
        }
        _ => return None,
    };
    let kind = scripted.fault;
    lock(shared).note(format!(
        "{now_ms} fault {} {detail} for {} ms",
        kind.name(),
        scripted.hold_ms
    ));
    Some(Active {
        kind,
        nodes: Vec::new(),
        others: Vec::new(),
        leader: false,
        started_ms: now_ms,
        until_ms: now_ms + scripted.hold_ms,
    })
}

/// Heals an L1 fault; `false` for any other kind, which `heal` handles.
fn heal_l1(l1: &mut crate::sim_l1::SimL1, shared: &Shared, fault: &Active, now_ms: u64) -> bool {
    match fault.kind {
        SimFault::L1Reorg => {}
        SimFault::L1Outage => l1.set_down(false),
        SimFault::BatcherBroke => l1.set_batcher_broke(false),
        _ => return false,
    }
    let mut world = lock(shared);
    world.note(format!("{now_ms} healed {}", fault.kind.name()));
    world.history.faults.push(Fault {
        kind: fault.kind.name().to_string(),
        nodes: Vec::new(),
        leader: false,
        started_ms: fault.started_ms,
        healed_ms: Some(now_ms),
        term_increments: None,
    });
    true
}
