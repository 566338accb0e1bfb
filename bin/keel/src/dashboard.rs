//! The devnet's live dashboard: one page, fed by server-sent events.
//!
//! ```text
//!  every node's ops port ──(/cluster, /health, /metrics every 500 ms)──► Observer
//!     Observer ─► Snapshot (members, roles, heads, health, rates, L1 and batcher figures, the
//!                 newest timeline events and sample) ─► watch ─► GET /events (one SSE stream
//!                 per open page, a frame a second, a few kB)
//!              ─► History (every kept event and sample) ─► GET /history (once, as a page loads)
//!  page ── POST /action (bearer: the admin token) ─► transfer, pause, resume: the node's admin API
//!                                                 ─► kill, restart: the devnet's own processes
//! ```
//!
//! Bounds: the timeline keeps `TIMELINE_EVENTS_MAX` events; the history keeps
//! `HISTORY_SECONDS_MAX` one-second samples and `HISTORY_MINUTES_MAX` one-minute averages, so a
//! page open for hours costs the same as one open for a minute. Every page gets the same
//! frame: the observer's polling does not grow with the number of pages.

use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
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

/// The page itself, shipped inside the binary.
const PAGE: &str = include_str!("dashboard.html");

/// A member as the dashboard reaches it.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) id: u64,
    pub(crate) ops: String,
    pub(crate) admin: String,
}

/// What the devnet's own loop does for the page: the processes are its.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProcessCommand {
    /// SIGKILL the node's process.
    Kill(u64),
    /// Start the node's process now if it is not running.
    Restart(u64),
}

/// One node as the last read saw it.
#[derive(Debug, Clone, Default, Serialize)]
struct NodeView {
    id: u64,
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

/// The figures of one node's `/metrics` the dashboard shows.
fn gauges(text: &str) -> BTreeMap<&str, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.contains('{'))
        .filter_map(|line| {
            let (name, value) = line.split_once(' ')?;
            Some((name, value.trim().parse().ok()?))
        })
        .collect()
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
    fn new(members: Vec<Member>) -> Self {
        Self {
            nodes: members
                .iter()
                .map(|member| NodeView {
                    id: member.id,
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

    /// One node's view and metrics; `None` when it does not answer.
    async fn read(&self, member: &Member) -> Option<(NodeView, BTreeMap<String, f64>)> {
        let get = |path: &str| {
            self.http
                .get(format!("{}{path}", member.ops))
                .timeout(OBSERVE_TIMEOUT)
                .send()
        };
        let (cluster, health, metrics) =
            tokio::join!(get("/cluster"), get("/health"), get("/metrics"));
        let cluster: serde_json::Value = cluster.ok()?.json().await.ok()?;
        let health = health.ok()?;
        let healthy = health.status().is_success();
        let health_text = health.text().await.unwrap_or_default().trim().to_string();
        let metrics = metrics.ok()?.text().await.ok()?;
        let figures: BTreeMap<String, f64> = gauges(&metrics)
            .into_iter()
            .map(|(name, value)| (name.to_string(), value))
            .collect();
        let figure = |name: &str| figures.get(name).copied().unwrap_or(0.0) as u64;
        let view = NodeView {
            id: member.id,
            up: true,
            role: cluster["role"].as_str().unwrap_or("?").to_string(),
            term: cluster["term"].as_u64().unwrap_or(0),
            leader: cluster["leader"].as_u64(),
            head: figure("keel_head_number"),
            safe: figure("keel_safe_head"),
            finalized: figure("keel_finalized_head"),
            healthy,
            health: if health_text.is_empty() {
                if healthy {
                    "ok".into()
                } else {
                    "unhealthy".into()
                }
            } else {
                health_text
            },
            mempool: figure("keel_mempool_transactions"),
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
        Snapshot {
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
    token: Arc<String>,
    commands: mpsc::Sender<ProcessCommand>,
    http: reqwest::Client,
}

/// Starts the observer and serves the page on `listener`; kill and restart come back to the
/// devnet through `commands`.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    members: Vec<Member>,
    token: String,
    commands: mpsc::Sender<ProcessCommand>,
) {
    let (publish, frames) = watch::channel(Arc::new(String::from("{}")));
    let (publish_history, history) = watch::channel(Arc::new(String::from("{}")));
    let mut observer = Observer::new(members.clone());
    tokio::spawn(async move {
        let mut last_frame = Instant::now() - Duration::from_secs(1);
        loop {
            let snapshot = observer.observe().await;
            if last_frame.elapsed() >= Duration::from_millis(900) {
                let frame = serde_json::to_string(&snapshot).expect("a snapshot serializes");
                let kept = serde_json::to_string(&observer.history()).expect("history serializes");
                if publish.send(Arc::new(frame)).is_err() {
                    return;
                }
                let _ = publish_history.send(Arc::new(kept));
                last_frame = Instant::now();
            }
            tokio::time::sleep(OBSERVE_INTERVAL).await;
        }
    });
    let dashboard = Dashboard {
        frames,
        history,
        members: Arc::new(members),
        token: Arc::new(token),
        commands,
        http: reqwest::Client::new(),
    };
    let router = axum::Router::new()
        .route(
            "/",
            axum::routing::get(|| async { axum::response::Html(PAGE) }),
        )
        .route("/events", axum::routing::get(events))
        .route(
            "/history",
            axum::routing::get(
                |axum::extract::State(dashboard): axum::extract::State<Dashboard>| async move {
                    let body = dashboard.history.borrow().as_str().to_string();
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        body,
                    )
                },
            ),
        )
        .route("/action", axum::routing::post(action))
        .with_state(dashboard);
    let _ = axum::serve(listener, router).await;
}

/// One SSE stream per open page: the latest frame, each time there is a new one.
async fn events(
    axum::extract::State(dashboard): axum::extract::State<Dashboard>,
) -> axum::response::sse::Sse<
    impl futures::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
> {
    let frames = dashboard.frames.clone();
    let stream = futures::stream::unfold(frames, |mut frames| async move {
        frames.changed().await.ok()?;
        let frame = frames.borrow_and_update().clone();
        Some((
            Ok(axum::response::sse::Event::default().data(frame.as_str())),
            frames,
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
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default();
    if presented.trim() != dashboard.token.trim() {
        return (
            StatusCode::UNAUTHORIZED,
            "the admin token is missing or wrong: paste the devnet's admin-token file".into(),
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
            match dashboard.commands.send(command).await {
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
            let answer = dashboard
                .http
                .post(format!("{}/admin/{}", member.admin, request.action))
                .bearer_auth(dashboard.token.trim())
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
