//! The live dashboard: one page, fed by server-sent events, served by every node on its
//! operations port (`/dashboard`) and by the devnet (`/`).
//!
//! ```text
//!  this node (in process) ─┐
//!  each peer's ops port ───┴─(/cluster, /health, /metrics every 500 ms)──► Observer
//!     Observer ─► Snapshot (members, roles, heads, health, rates, send-to-receipt latency, L1
//!                 and batcher figures, the newest timeline events and sample) ─► watch
//!                 ─► GET {prefix}/events (one SSE stream per open page, a frame a second)
//!              ─► History (every kept event and sample) ─► GET {prefix}/history (as a page loads)
//!  page ── POST {prefix}/action (bearer: the admin token) ─► transfer, pause, resume: a member's
//!                                                           admin API
//!                                                        ─► kill, restart: the devnet only
//! ```
//!
//! A node reaches its peers through `ops_addr` in the cluster file (a peer without one is
//! listed, not observed) and acts through their `admin_addr`. A node's observer starts with
//! the first page and rests once no page has asked for a minute (`WATCH_IDLE`), so an
//! unwatched node reads nobody; the devnet's observes from its start.
//!
//! Bounds: the timeline keeps `TIMELINE_EVENTS_MAX` events; the history keeps
//! `HISTORY_SECONDS_MAX` one-second samples and `HISTORY_MINUTES_MAX` one-minute averages, so a
//! page open for hours costs the same as one open for a minute. Every page gets the same
//! frame: the observer's polling does not grow with the number of pages.

use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// How often the observer reads every node.
const OBSERVE_INTERVAL: Duration = Duration::from_millis(500);
/// How long one read of a node may take before it counts as down.
const OBSERVE_TIMEOUT: Duration = Duration::from_millis(400);
/// Events the timeline keeps (the oldest go first).
const TIMELINE_EVENTS_MAX: usize = 256;
/// One-second samples kept (10 minutes).
const HISTORY_SECONDS_MAX: usize = 600;
/// One-minute averages kept (24 hours).
const HISTORY_MINUTES_MAX: usize = 1_440;
/// Timeline events each frame carries (the newest); `GET /history` has them all.
const FRAME_EVENTS_MAX: usize = 32;
/// How long a node's observer goes on after the last page asked (`Observe::WhileWatched`).
const WATCH_IDLE: Duration = Duration::from_secs(60);
const _: () = assert!(OBSERVE_TIMEOUT.as_millis() < OBSERVE_INTERVAL.as_millis());
const _: () = assert!(FRAME_EVENTS_MAX <= TIMELINE_EVENTS_MAX);

/// The page itself, shipped inside the binary.
const PAGE: &str = include_str!("dashboard.html");

/// What one read of a node gives: its `/cluster` view, its health and its `/metrics` text.
#[derive(Debug, Clone)]
pub struct NodeRead {
    /// The `/cluster` answer (`role`, `term`, `leader`); `null` on a single node.
    pub cluster: serde_json::Value,
    /// `None` when healthy, else the reason `/health` gives (a status read, not an error).
    pub unhealthy: Option<String>,
    /// The Prometheus text `/metrics` serves.
    pub metrics: String,
}

/// Reads the serving node itself, without a round trip through its own port.
pub type LocalRead = Arc<dyn Fn() -> NodeRead + Send + Sync>;

/// How the dashboard reads a member.
#[derive(Clone)]
pub enum Source {
    /// The serving node itself.
    Local(LocalRead),
    /// A node's operations endpoint, as `http://host:port`.
    Http(String),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(_) => formatter.write_str("Local"),
            Self::Http(url) => formatter.debug_tuple("Http").field(url).finish(),
        }
    }
}

/// A member as the dashboard reaches it.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its node id.
    pub id: u64,
    /// How to read it; `None`: listed, not observed (no `ops_addr` in the cluster file).
    pub source: Option<Source>,
    /// Its admin API, as `http://host:port`, for the page's transfer, pause and resume.
    pub admin: Option<String>,
}

/// When the observer reads the members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observe {
    /// From the start (the devnet: its timeline covers every failover).
    Always,
    /// From the first page until `WATCH_IDLE` after the last (a node: unwatched, it reads
    /// nobody).
    WhileWatched,
}

/// What a dashboard serves and whom it reads.
#[derive(Debug, Clone)]
pub struct DashboardConfig {
    /// The page's heading ("keel devnet", "keel node 2").
    pub title: String,
    /// Every member, in the order the page lists them.
    pub members: Vec<Member>,
    /// The admin token actions must carry (the page passes it on to the admin API); `None`:
    /// the page's actions are refused.
    pub token: Option<keel_cluster::ClusterSecret>,
    /// Where kill and restart go (the devnet's processes); `None`: not offered.
    pub processes: Option<mpsc::Sender<ProcessCommand>>,
    /// When the observer reads.
    pub observe: Observe,
    /// Where the page is served: `""` serves it at `/`, `"/dashboard"` at `/dashboard`; the
    /// streams sit below it.
    pub prefix: &'static str,
}

/// What the devnet's own loop does for the page: the processes are its.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessCommand {
    /// SIGKILL the node's process.
    Kill(u64),
    /// Start the node's process now if it is not running.
    Restart(u64),
}

/// One node as the last read saw it.
#[derive(Debug, Clone, Default, Serialize)]
struct NodeView {
    id: u64,
    /// Whether the dashboard can read it at all (a peer without `ops_addr` is not).
    observed: bool,
    up: bool,
    role: String,
    term: u64,
    leader: Option<u64>,
    head: u64,
    safe: u64,
    finalized: u64,
    healthy: bool,
    health: String,
    mempool: u64,
    /// Median and 99th percentile, over the last minute, of the time from this node's pool
    /// accepting a transaction to its receipt being served (`keel_send_to_receipt_seconds`).
    receipt_p50_ms: Option<f64>,
    receipt_p99_ms: Option<f64>,
}

/// One point of the history.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Sample {
    at_ms: u64,
    blocks_per_s: f64,
    transactions_per_s: f64,
    gas_per_s: f64,
}

/// One line of the timeline.
#[derive(Debug, Clone, Serialize)]
struct Event {
    at_ms: u64,
    kind: &'static str,
    text: String,
    gap_ms: Option<u64>,
}

/// What every page is sent, once a second.
#[derive(Debug, Clone, Default, Serialize)]
struct Snapshot {
    title: String,
    /// Whether the page offers kill and restart.
    processes: bool,
    at_ms: u64,
    leader: Option<u64>,
    term: u64,
    head: u64,
    safe: u64,
    finalized: u64,
    blocks_per_s: f64,
    transactions_per_s: f64,
    gas_per_s: f64,
    mempool: u64,
    /// The leader's send-to-receipt latency (its pool takes every write).
    receipt_p50_ms: Option<f64>,
    receipt_p99_ms: Option<f64>,
    batcher_backlog_blocks: u64,
    batcher_backlog_age_s: f64,
    forced_pending: u64,
    forced_oldest_age_l1_blocks: u64,
    nodes: Vec<NodeView>,
    /// The newest events, newest first.
    timeline: Vec<Event>,
    /// The newest one-second sample (the page keeps its own history from `GET /history`).
    sample: Option<Sample>,
}

/// What a page loads once: every kept event and sample.
#[derive(Debug, Clone, Default, Serialize)]
struct History {
    timeline: Vec<Event>,
    seconds: Vec<Sample>,
    minutes: Vec<Sample>,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// One node's `/metrics` as series and values: `keel_head_number`, and labelled series whole
/// (`keel_send_to_receipt_seconds{quantile="0.5"}`).
fn gauges(text: &str) -> BTreeMap<&str, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name, value.trim().parse().ok()?))
        })
        .collect()
}

/// The send-to-receipt quantile `q` in milliseconds, if the node has measured any.
fn receipt_ms(figures: &BTreeMap<String, f64>, quantile: &str) -> Option<f64> {
    let count = figures.get("keel_send_to_receipt_seconds_count").copied()?;
    let seconds = figures
        .get(&format!(
            "keel_send_to_receipt_seconds{{quantile=\"{quantile}\"}}"
        ))
        .copied()?;
    (count > 0.0 && seconds.is_finite()).then_some(seconds * 1_000.0)
}

/// A leader change whose gap is not known yet (no block after it so far).
struct PendingChange {
    kind: &'static str,
    text: String,
    at_ms: u64,
    last_block_before: Instant,
}

/// Reads every node and keeps the dashboard's state.
struct Observer {
    title: String,
    processes: bool,
    members: Vec<Member>,
    http: reqwest::Client,
    nodes: Vec<NodeView>,
    leader: Option<u64>,
    head: u64,
    last_block_at: Instant,
    pending: Option<PendingChange>,
    timeline: VecDeque<Event>,
    seconds: VecDeque<Sample>,
    minutes: VecDeque<Sample>,
    /// Per node: the last counters (transactions, gas) and when they were read.
    counters: BTreeMap<u64, (Instant, f64, f64)>,
    rotations: BTreeMap<u64, f64>,
    /// Nodes that answered at least once.
    seen: std::collections::BTreeSet<u64>,
    last_sample: Instant,
    head_at_last_sample: u64,
    samples_this_minute: usize,
    rates: Sample,
}

impl Observer {
    fn new(title: String, processes: bool, members: Vec<Member>) -> Self {
        Self {
            title,
            processes,
            nodes: members
                .iter()
                .map(|member| NodeView {
                    id: member.id,
                    observed: member.source.is_some(),
                    role: if member.source.is_some() {
                        "?".into()
                    } else {
                        "not observed".into()
                    },
                    health: if member.source.is_some() {
                        "not read yet".into()
                    } else {
                        "no ops_addr for it in the cluster file".into()
                    },
                    ..Default::default()
                })
                .collect(),
            members,
            http: reqwest::Client::new(),
            leader: None,
            head: 0,
            last_block_at: Instant::now(),
            pending: None,
            timeline: VecDeque::new(),
            seconds: VecDeque::new(),
            minutes: VecDeque::new(),
            counters: BTreeMap::new(),
            rotations: BTreeMap::new(),
            seen: Default::default(),
            last_sample: Instant::now(),
            head_at_last_sample: 0,
            samples_this_minute: 0,
            rates: Sample::default(),
        }
    }

    /// Adds an event that happened now.
    fn record(&mut self, kind: &'static str, text: String, gap_ms: Option<u64>) {
        self.record_at(unix_ms(), kind, text, gap_ms);
    }

    /// Adds an event, dropping the oldest past `TIMELINE_EVENTS_MAX`.
    fn record_at(&mut self, at_ms: u64, kind: &'static str, text: String, gap_ms: Option<u64>) {
        if self.timeline.len() == TIMELINE_EVENTS_MAX {
            self.timeline.pop_front();
        }
        self.timeline.push_back(Event {
            at_ms,
            kind,
            text,
            gap_ms,
        });
    }

    /// One node's read: in process for the serving node, else its operations endpoint.
    async fn fetch(&self, source: &Source) -> Option<NodeRead> {
        let url = match source {
            Source::Local(read) => return Some(read()),
            Source::Http(url) => url,
        };
        let get = |path: &str| {
            self.http
                .get(format!("{url}{path}"))
                .timeout(OBSERVE_TIMEOUT)
                .send()
        };
        let (cluster, health, metrics) =
            tokio::join!(get("/cluster"), get("/health"), get("/metrics"));
        let cluster: serde_json::Value = cluster.ok()?.json().await.unwrap_or_default();
        let health = health.ok()?;
        let healthy = health.status().is_success();
        let reason = health.text().await.unwrap_or_default().trim().to_string();
        let metrics = metrics.ok()?.text().await.ok()?;
        Some(NodeRead {
            cluster,
            unhealthy: (!healthy).then_some(reason),
            metrics,
        })
    }

    /// One node's view and metrics; `None` when it does not answer or is not observed.
    async fn read(&self, member: &Member) -> Option<(NodeView, BTreeMap<String, f64>)> {
        let read = self.fetch(member.source.as_ref()?).await?;
        let figures: BTreeMap<String, f64> = gauges(&read.metrics)
            .into_iter()
            .map(|(name, value)| (name.to_string(), value))
            .collect();
        let figure = |name: &str| figures.get(name).copied().unwrap_or(0.0) as u64;
        let cluster = &read.cluster;
        let view = NodeView {
            id: member.id,
            observed: true,
            up: true,
            // A single node has no cluster view: it leads itself.
            role: cluster["role"].as_str().unwrap_or("leader").to_string(),
            term: cluster["term"].as_u64().unwrap_or(0),
            leader: cluster["leader"]
                .as_u64()
                .or(cluster.is_null().then_some(member.id)),
            head: figure("keel_head_number"),
            safe: figure("keel_safe_head"),
            finalized: figure("keel_finalized_head"),
            healthy: read.unhealthy.is_none(),
            health: match read.unhealthy {
                None => "ok".into(),
                Some(reason) if reason.is_empty() => "unhealthy".into(),
                Some(reason) => reason,
            },
            mempool: figure("keel_mempool_transactions"),
            receipt_p50_ms: receipt_ms(&figures, "0.5"),
            receipt_p99_ms: receipt_ms(&figures, "0.99"),
        };
        Some((view, figures))
    }

    /// Reads every node once and updates the state.
    async fn observe(&mut self) -> Snapshot {
        let reads =
            futures::future::join_all(self.members.iter().map(|member| self.read(member))).await;
        let now = Instant::now();
        let mut figures_by_node = BTreeMap::new();
        for (index, read) in reads.into_iter().enumerate() {
            let id = self.members[index].id;
            let was_up = self.nodes[index].up;
            if self.members[index].source.is_none() {
                continue;
            }
            match read {
                Some((view, figures)) => {
                    if !was_up {
                        let again = if self.seen.insert(id) { "" } else { " again" };
                        self.record("up", format!("node {id} is up{again}"), None);
                    }
                    self.nodes[index] = view;
                    figures_by_node.insert(id, figures);
                }
                None => {
                    if was_up {
                        self.record("down", format!("node {id} stopped answering"), None);
                    }
                    self.nodes[index].up = false;
                    self.nodes[index].healthy = false;
                    self.nodes[index].health = "not answering".into();
                    self.nodes[index].role = "down".into();
                }
            }
        }
        // The leader: the one a node that leads says it is, else what most followers name.
        let leader = self
            .nodes
            .iter()
            .find(|node| node.up && node.role == "leader")
            .map(|node| node.id);
        let head = self
            .nodes
            .iter()
            .filter(|node| node.up)
            .map(|node| node.head)
            .max()
            .unwrap_or(0);
        if head > self.head {
            if let Some(change) = self.pending.take() {
                let gap = now.duration_since(change.last_block_before).as_millis() as u64;
                self.record_at(change.at_ms, change.kind, change.text, Some(gap));
            }
            self.head = head;
            self.last_block_at = now;
        }
        if let Some(to) = leader
            && leader != self.leader
        {
            if let Some(from) = self.leader {
                let from_up = self.nodes.iter().any(|node| node.id == from && node.up);
                let rotated = figures_by_node
                    .get(&from)
                    .and_then(|figures| figures.get("keel_leadership_rotations_total"))
                    .is_some_and(|count| {
                        *count > self.rotations.get(&from).copied().unwrap_or(0.0)
                    });
                let kind = match (from_up, rotated) {
                    (false, _) => "failover",
                    (true, true) => "rotation",
                    (true, false) => "transfer",
                };
                self.pending = Some(PendingChange {
                    kind,
                    text: format!("{kind}: node {from} to node {to}"),
                    at_ms: unix_ms(),
                    last_block_before: self.last_block_at,
                });
            } else {
                self.record("leader", format!("node {to} leads"), None);
            }
            self.leader = leader;
        }
        for (id, figures) in &figures_by_node {
            if let Some(count) = figures.get("keel_leadership_rotations_total") {
                self.rotations.insert(*id, *count);
            }
        }
        self.sample(now, &figures_by_node);
        self.snapshot(&figures_by_node)
    }

    /// Rates from the counters, once a second; minute averages once a minute.
    fn sample(&mut self, now: Instant, figures_by_node: &BTreeMap<u64, BTreeMap<String, f64>>) {
        let seconds = now.duration_since(self.last_sample).as_secs_f64();
        if seconds < 1.0 {
            return;
        }
        if self.head_at_last_sample == 0 {
            self.head_at_last_sample = self.head;
        }
        // Every node applies every block, so any node's counters give the chain's rates; the
        // largest rate survives a node that restarted (its counters began again at 0).
        let mut sample = Sample {
            at_ms: unix_ms(),
            blocks_per_s: self.head.saturating_sub(self.head_at_last_sample) as f64 / seconds,
            ..Default::default()
        };
        for (id, figures) in figures_by_node {
            let transactions = figures
                .get("keel_transactions_included_total")
                .copied()
                .unwrap_or(0.0);
            let gas = figures.get("keel_gas_used_total").copied().unwrap_or(0.0);
            if let Some((then, old_transactions, old_gas)) = self.counters.get(id)
                && transactions >= *old_transactions
            {
                let elapsed = now.duration_since(*then).as_secs_f64().max(0.001);
                sample.transactions_per_s = sample
                    .transactions_per_s
                    .max((transactions - old_transactions) / elapsed);
                sample.gas_per_s = sample.gas_per_s.max((gas - old_gas) / elapsed);
            }
            self.counters.insert(*id, (now, transactions, gas));
        }
        self.head_at_last_sample = self.head;
        self.last_sample = now;
        self.rates = sample;
        if self.seconds.len() == HISTORY_SECONDS_MAX {
            self.seconds.pop_front();
        }
        self.seconds.push_back(sample);
        self.samples_this_minute += 1;
        // Every 60 one-second samples become one minute's average.
        if self.samples_this_minute == 60 {
            self.samples_this_minute = 0;
            let minute: Vec<&Sample> = self.seconds.iter().rev().take(60).collect();
            let count = minute.len() as f64;
            let average = Sample {
                at_ms: sample.at_ms,
                blocks_per_s: minute.iter().map(|s| s.blocks_per_s).sum::<f64>() / count,
                transactions_per_s: minute.iter().map(|s| s.transactions_per_s).sum::<f64>()
                    / count,
                gas_per_s: minute.iter().map(|s| s.gas_per_s).sum::<f64>() / count,
            };
            if self.minutes.len() == HISTORY_MINUTES_MAX {
                self.minutes.pop_front();
            }
            self.minutes.push_back(average);
        }
    }

    fn snapshot(&self, figures_by_node: &BTreeMap<u64, BTreeMap<String, f64>>) -> Snapshot {
        // L1 and batcher figures: the leader's (it runs the batcher), else any node's.
        let source = self
            .leader
            .and_then(|leader| figures_by_node.get(&leader))
            .or_else(|| figures_by_node.values().next());
        let figure = |name: &str| {
            source
                .and_then(|figures| figures.get(name))
                .copied()
                .unwrap_or(0.0)
        };
        let up: Vec<&NodeView> = self.nodes.iter().filter(|node| node.up).collect();
        let leader_view = self
            .leader
            .and_then(|leader| self.nodes.iter().find(|node| node.id == leader && node.up));
        Snapshot {
            title: self.title.clone(),
            processes: self.processes,
            at_ms: unix_ms(),
            leader: self.leader,
            term: up.iter().map(|node| node.term).max().unwrap_or(0),
            head: self.head,
            safe: up.iter().map(|node| node.safe).max().unwrap_or(0),
            finalized: up.iter().map(|node| node.finalized).max().unwrap_or(0),
            blocks_per_s: self.rates.blocks_per_s,
            transactions_per_s: self.rates.transactions_per_s,
            gas_per_s: self.rates.gas_per_s,
            mempool: figure("keel_mempool_transactions") as u64,
            receipt_p50_ms: leader_view.and_then(|node| node.receipt_p50_ms),
            receipt_p99_ms: leader_view.and_then(|node| node.receipt_p99_ms),
            batcher_backlog_blocks: figure("keel_batcher_backlog_blocks") as u64,
            batcher_backlog_age_s: figure("keel_batcher_backlog_age_seconds"),
            forced_pending: figure("keel_forced_pending") as u64,
            forced_oldest_age_l1_blocks: figure("keel_forced_oldest_age_l1_blocks") as u64,
            nodes: self.nodes.clone(),
            timeline: self
                .timeline
                .iter()
                .rev()
                .take(FRAME_EVENTS_MAX)
                .cloned()
                .collect(),
            sample: self.seconds.back().copied(),
        }
    }

    fn history(&self) -> History {
        History {
            timeline: self.timeline.iter().rev().cloned().collect(),
            seconds: self.seconds.iter().copied().collect(),
            minutes: self.minutes.iter().copied().collect(),
        }
    }
}

/// The dashboard server's state.
#[derive(Clone)]
struct Dashboard {
    frames: watch::Receiver<Arc<String>>,
    history: watch::Receiver<Arc<String>>,
    members: Arc<Vec<Member>>,
    token: Option<keel_cluster::ClusterSecret>,
    processes: Option<mpsc::Sender<ProcessCommand>>,
    http: reqwest::Client,
    watch: Arc<Watch>,
}

/// When a page last asked, and the observer that starts with the first ask.
struct Watch {
    observe: Observe,
    /// Milliseconds since `epoch` of the last ask.
    last_ask_ms: AtomicU64,
    epoch: Instant,
    started: AtomicBool,
    /// The observer, until it starts.
    start: parking_lot::Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Watch {
    /// A page asked: note it, and start the observer if this is the first ask.
    fn ask(&self) {
        self.last_ask_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        if !self.started.swap(true, Ordering::AcqRel)
            && let Some(start) = self.start.lock().take()
        {
            start();
        }
    }

    /// Whether the observer should read now.
    fn watched(&self) -> bool {
        self.observe == Observe::Always
            || self
                .epoch
                .elapsed()
                .as_millis()
                .saturating_sub(u128::from(self.last_ask_ms.load(Ordering::Relaxed)))
                <= WATCH_IDLE.as_millis()
    }
}

/// The dashboard's routes under `config.prefix`. The observer starts at once with
/// `Observe::Always` (call this inside a Tokio runtime), else with the first page.
pub fn router(config: DashboardConfig) -> axum::Router {
    let (publish, frames) = watch::channel(Arc::new(String::from("{}")));
    let (publish_history, history) = watch::channel(Arc::new(String::from("{}")));
    let mut observer = Observer::new(
        config.title.clone(),
        config.processes.is_some(),
        config.members.clone(),
    );
    let watch = Arc::new(Watch {
        observe: config.observe,
        last_ask_ms: AtomicU64::new(0),
        epoch: Instant::now(),
        started: AtomicBool::new(false),
        start: parking_lot::Mutex::new(None),
    });
    let watching = watch.clone();
    let run = move || {
        tokio::spawn(async move {
            let mut last_frame = Instant::now() - Duration::from_secs(1);
            loop {
                if !watching.watched() {
                    tokio::time::sleep(OBSERVE_INTERVAL).await;
                    continue;
                }
                let snapshot = observer.observe().await;
                if last_frame.elapsed() >= Duration::from_millis(900) {
                    let frame = serde_json::to_string(&snapshot).expect("a snapshot serializes");
                    let kept =
                        serde_json::to_string(&observer.history()).expect("history serializes");
                    if publish.send(Arc::new(frame)).is_err() {
                        return;
                    }
                    let _ = publish_history.send(Arc::new(kept));
                    last_frame = Instant::now();
                }
                tokio::time::sleep(OBSERVE_INTERVAL).await;
            }
        });
    };
    *watch.start.lock() = Some(Box::new(run));
    if config.observe == Observe::Always {
        watch.ask();
    }
    let dashboard = Dashboard {
        frames,
        history,
        members: Arc::new(config.members),
        token: config.token,
        processes: config.processes,
        http: reqwest::Client::new(),
        watch,
    };
    let prefix = config.prefix;
    let page = if prefix.is_empty() { "/" } else { prefix };
    axum::Router::new()
        .route(
            page,
            axum::routing::get(
                |axum::extract::State(dashboard): axum::extract::State<Dashboard>| async move {
                    dashboard.watch.ask();
                    axum::response::Html(PAGE)
                },
            ),
        )
        .route(&format!("{prefix}/events"), axum::routing::get(events))
        .route(
            &format!("{prefix}/history"),
            axum::routing::get(
                |axum::extract::State(dashboard): axum::extract::State<Dashboard>| async move {
                    dashboard.watch.ask();
                    let body = dashboard.history.borrow().as_str().to_string();
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        body,
                    )
                },
            ),
        )
        .route(&format!("{prefix}/action"), axum::routing::post(action))
        .with_state(dashboard)
}

/// One SSE stream per open page: the latest frame, each time there is a new one.
async fn events(
    axum::extract::State(dashboard): axum::extract::State<Dashboard>,
) -> axum::response::sse::Sse<
    impl futures::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
> {
    dashboard.watch.ask();
    let state = (dashboard.frames.clone(), dashboard.watch.clone());
    let stream = futures::stream::unfold(state, |(mut frames, watch)| async move {
        frames.changed().await.ok()?;
        // An open page keeps the observer reading.
        watch.ask();
        let frame = frames.borrow_and_update().clone();
        Some((
            Ok(axum::response::sse::Event::default().data(frame.as_str())),
            (frames, watch),
        ))
    });
    axum::response::sse::Sse::new(stream).keep_alive(axum::response::sse::KeepAlive::default())
}

#[derive(serde::Deserialize)]
struct ActionRequest {
    action: String,
    node: u64,
}

/// An operator's action from the page, behind the admin token.
async fn action(
    axum::extract::State(dashboard): axum::extract::State<Dashboard>,
    headers: axum::http::HeaderMap,
    axum::Json(request): axum::Json<ActionRequest>,
) -> (axum::http::StatusCode, String) {
    use axum::http::StatusCode;
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let Some(token) = &dashboard.token else {
        return (
            StatusCode::FORBIDDEN,
            "this node serves no admin API: start it with --admin-addr and --admin-token-file \
             to act from its dashboard"
                .into(),
        );
    };
    if !token.admits(presented) {
        return (
            StatusCode::UNAUTHORIZED,
            "the admin token is missing or wrong: paste the contents of the admin token file \
             (the devnet's admin-token)"
                .into(),
        );
    }
    let Some(member) = dashboard
        .members
        .iter()
        .find(|member| member.id == request.node)
    else {
        return (StatusCode::NOT_FOUND, format!("no node {}", request.node));
    };
    match request.action.as_str() {
        "kill" | "restart" => {
            let command = if request.action == "kill" {
                ProcessCommand::Kill(member.id)
            } else {
                ProcessCommand::Restart(member.id)
            };
            let Some(processes) = &dashboard.processes else {
                return (
                    StatusCode::FORBIDDEN,
                    "kill and restart are the devnet's: a node does not stop its peers".into(),
                );
            };
            match processes.send(command).await {
                Ok(()) => (
                    StatusCode::OK,
                    format!("{} node {}", request.action, member.id),
                ),
                Err(_) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the devnet is stopping".into(),
                ),
            }
        }
        "transfer" | "pause" | "resume" => {
            let Some(admin) = &member.admin else {
                return (
                    StatusCode::NOT_FOUND,
                    format!(
                        "node {} has no admin_addr in the cluster file: add it to act on it",
                        member.id
                    ),
                );
            };
            let answer = dashboard
                .http
                .post(format!("{admin}/admin/{}", request.action))
                .header(
                    axum::http::header::AUTHORIZATION,
                    presented.unwrap_or_default(),
                )
                .json(&serde_json::json!({}))
                .timeout(Duration::from_secs(30))
                .send()
                .await;
            match answer {
                Ok(response) => {
                    let status = StatusCode::from_u16(response.status().as_u16())
                        .unwrap_or(StatusCode::BAD_GATEWAY);
                    (status, response.text().await.unwrap_or_default())
                }
                Err(error) => (
                    StatusCode::BAD_GATEWAY,
                    format!("node {}'s admin API did not answer: {error}", member.id),
                ),
            }
        }
        other => (StatusCode::BAD_REQUEST, format!("unknown action {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = "# HELP keel_head_number The unsafe head.\n\
        # TYPE keel_head_number gauge\n\
        keel_head_number 7\n\
        keel_send_to_receipt_seconds{quantile=\"0.5\"} 0.25\n\
        keel_send_to_receipt_seconds{quantile=\"0.99\"} 0.5\n\
        keel_send_to_receipt_seconds_sum 1\n\
        keel_send_to_receipt_seconds_count 3\n\
        keel_rpc_errors_total{method=\"eth call\",code=\"-32000\"} 2\n";

    #[test]
    fn metrics_text_gives_plain_and_labelled_series() {
        let figures: BTreeMap<String, f64> = gauges(METRICS)
            .into_iter()
            .map(|(name, value)| (name.to_string(), value))
            .collect();
        assert_eq!(figures["keel_head_number"], 7.0);
        assert_eq!(
            figures["keel_rpc_errors_total{method=\"eth call\",code=\"-32000\"}"],
            2.0
        );
        assert_eq!(receipt_ms(&figures, "0.5"), Some(250.0));
        assert_eq!(receipt_ms(&figures, "0.99"), Some(500.0));
        let none = BTreeMap::from([("keel_send_to_receipt_seconds_count".to_string(), 0.0)]);
        assert_eq!(receipt_ms(&none, "0.5"), None);
    }

    async fn serve(config: DashboardConfig) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router(config)).await });
        format!("http://{address}/dashboard")
    }

    fn local(id: u64) -> Member {
        Member {
            id,
            source: Some(Source::Local(Arc::new(|| NodeRead {
                cluster: serde_json::Value::Null,
                unhealthy: None,
                metrics: METRICS.into(),
            }))),
            admin: None,
        }
    }

    /// A node's own dashboard: the page, then live frames once a page asked (not before), with
    /// its head and its send-to-receipt latency; a member without `ops_addr` listed, not read.
    #[tokio::test]
    async fn a_node_serves_its_dashboard_and_reads_only_while_watched() {
        let url = serve(DashboardConfig {
            title: "keel node 1".into(),
            members: vec![
                local(1),
                Member {
                    id: 2,
                    source: None,
                    admin: None,
                },
            ],
            token: None,
            processes: None,
            observe: Observe::WhileWatched,
            prefix: "/dashboard",
        })
        .await;
        let http = reqwest::Client::new();
        // Nobody asked yet: the history is the empty one the server started with.
        let history = http.get(format!("{url}/history")).send().await.unwrap();
        assert_eq!(history.text().await.unwrap(), "{}");
        let page = http.get(&url).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("EventSource"), "{page}");
        let mut events = http.get(format!("{url}/events")).send().await.unwrap();
        let chunk = tokio::time::timeout(Duration::from_secs(10), events.chunk())
            .await
            .expect("a frame within 10 s")
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&chunk);
        let frame: serde_json::Value =
            serde_json::from_str(text.trim().strip_prefix("data:").unwrap().trim()).unwrap();
        assert_eq!(frame["title"], "keel node 1");
        assert_eq!(frame["head"], 7);
        assert_eq!(frame["leader"], 1);
        assert_eq!(frame["processes"], false);
        assert_eq!(frame["receipt_p50_ms"], 250.0);
        assert_eq!(frame["nodes"][1]["observed"], false);
        assert_eq!(frame["nodes"][1]["role"], "not observed");
    }

    /// Actions: refused without an admin API, refused with a wrong token, and kill is the
    /// devnet's alone.
    #[tokio::test]
    async fn a_nodes_dashboard_refuses_what_it_cannot_do() {
        let action = |url: String, token: &'static str, what: &'static str| async move {
            let answer = reqwest::Client::new()
                .post(format!("{url}/action"))
                .bearer_auth(token)
                .json(&serde_json::json!({"action": what, "node": 1}))
                .send()
                .await
                .unwrap();
            (answer.status().as_u16(), answer.text().await.unwrap())
        };
        let config = |token| DashboardConfig {
            title: "keel node 1".into(),
            members: vec![local(1)],
            token,
            processes: None,
            observe: Observe::WhileWatched,
            prefix: "/dashboard",
        };
        let without = serve(config(None)).await;
        let (status, text) = action(without, "0123456789abcdef0123", "pause").await;
        assert_eq!(status, 403);
        assert!(text.contains("--admin-addr"), "{text}");

        let secret = keel_cluster::ClusterSecret::new("0123456789abcdef0123").unwrap();
        let with = serve(config(Some(secret))).await;
        let (status, text) = action(with.clone(), "wrong-token-wrong-token", "pause").await;
        assert_eq!(status, 401, "{text}");
        let (status, text) = action(with.clone(), "0123456789abcdef0123", "kill").await;
        assert_eq!(status, 403);
        assert!(text.contains("devnet"), "{text}");
        let (status, text) = action(with, "0123456789abcdef0123", "pause").await;
        assert_eq!(status, 404);
        assert!(text.contains("admin_addr"), "{text}");
    }
}
