//! Real-process chaos: a cluster of real `keel` processes on loopback, a closed-loop workload
//! through their JSON-RPC, and a nemesis that injects faults on a seeded schedule. At the end
//! the faults heal, the cluster must converge and seal again (the liveness phase), every
//! node's chain is read back, and the history checker gives the verdict.
//!
//! ```text
//!   clients ──eth_sendRawTransaction, eth_getTransactionReceipt──► node 1..n (RPC)
//!   head observers ──eth_getBlockByNumber("latest") every 20 ms──► node 1..n
//!   nemesis ──SIGKILL, SIGSTOP/SIGCONT, restart-all──► processes
//!           └─partitions (two-way, one-way)──► fault proxies in front of each peer endpoint
//! ```
//!
//! Peer traffic goes through the project's own TCP proxy ([`crate::proxy`]): the kernel here
//! has no netem and nftables needs privileges the tests do not have. Each node listens on and
//! sends from 127.0.0.N, so a proxy knows the caller.
//!
//! The seed decides the nemesis schedule, the faults' targets and holds, and which node each
//! client calls. Process and network timing are the machine's, so a chaos run does not replay
//! exactly; that is the simulation's job. Each client sends one transaction at a time and
//! waits for its receipt (closed loop); the transaction for a given nonce is always the same
//! bytes, so a retry after an unknown answer can never double-spend.
//!
//! Beside them, an open-loop workload (`ChaosOptions::open_rate`, transfers a second) sends on
//! a fixed schedule whatever the answers: fresh senders, funded at the start by the first dev
//! account no closed-loop client uses, each sending its nonces in turn at `open_rate /
//! open_senders` a second, to a node the seed picks. A send that is refused, or gets no
//! answer, is sent again (to another node) until it is accepted, "already known", or its nonce
//! is used ("nonce too low"): a real client does the same, and a sender whose nonce was refused
//! would otherwise be stuck on the gap. Every send is in the history, so the checker fails any
//! accepted transaction that no final chain holds.

use crate::check::{CheckOptions, Report, check};
use crate::history::{Answer, BlockRead, ChainRead, Fault, HeadSeen, History, ReceiptSeen, Send};
use crate::proxy::{Faults, node_ip};
use alloy::eips::eip2718::Encodable2718;
use alloy::primitives::{B256, keccak256};
use alloy::signers::local::PrivateKeySigner;
use keel_primitives::dev_accounts;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The most nodes a chaos cluster has (odd sizes: 3 or 5 make sense).
pub const CHAOS_NODES_MAX: u64 = 7;
/// The most workload clients: one funded dev account each.
pub const CHAOS_CLIENTS_MAX: usize = 10;
/// How long a client waits for one RPC answer before it records an unknown outcome.
pub const CHAOS_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a client waits for a receipt before it re-reads its nonce and moves on.
pub const CHAOS_RECEIPT_WAIT: Duration = Duration::from_secs(5);
/// Fresh senders of the open-loop workload, at most.
pub const CHAOS_OPEN_SENDERS_MAX: usize = 4_096;
/// The open-loop workload's rate, at most (transfers a second).
pub const CHAOS_OPEN_RATE_MAX: u64 = 10_000;
/// How long an open-loop sender waits before it sends a refused or unanswered transfer again.
pub const CHAOS_RESEND_AFTER: Duration = Duration::from_millis(200);
/// How often each head observer polls its node.
pub const CHAOS_HEAD_POLL: Duration = Duration::from_millis(20);
/// Blocks read back past the highest one seen, once the clients stopped: what they had
/// accepted and not seen included yet lands in these.
pub const CHAOS_DRAIN_BLOCKS: u64 = 3;

/// A fault the nemesis can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// SIGKILL the leader; restart it when the fault heals.
    KillLeader,
    /// SIGKILL a follower; restart it when the fault heals.
    KillFollower,
    /// SIGSTOP the leader; SIGCONT when the fault heals.
    PauseLeader,
    /// Cut the leader off from every peer, both ways (leader in the minority, the others in
    /// the majority).
    PartitionLeader,
    /// Cut the leader's outgoing peer links only: it can neither replicate nor heartbeat, yet
    /// hears the others.
    OneWayLeader,
    /// Cut one follower off from every peer, both ways (the leader stays in the majority).
    PartitionFollower,
    /// SIGKILL every node at once, restart them all when the fault heals (the R5 reset).
    RestartAll,
}

impl FaultKind {
    /// Every kind, in a fixed order.
    pub const ALL: [Self; 7] = [
        Self::KillLeader,
        Self::KillFollower,
        Self::PauseLeader,
        Self::PartitionLeader,
        Self::OneWayLeader,
        Self::PartitionFollower,
        Self::RestartAll,
    ];

    /// The name on the command line and in histories.
    pub fn name(self) -> &'static str {
        match self {
            Self::KillLeader => "kill-leader",
            Self::KillFollower => "kill-follower",
            Self::PauseLeader => "pause-leader",
            Self::PartitionLeader => "partition-leader",
            Self::OneWayLeader => "one-way-leader",
            Self::PartitionFollower => "partition-follower",
            Self::RestartAll => "restart-all",
        }
    }

    /// Whether it hits the leader alone: its gap is a failover gap. (A full restart hits
    /// everyone; its gap is the outage's.)
    fn hits_leader(self) -> bool {
        matches!(
            self,
            Self::KillLeader | Self::PauseLeader | Self::PartitionLeader | Self::OneWayLeader
        )
    }
}

impl FromStr for FaultKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.name() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|kind| kind.name()).collect();
                format!("unknown fault {text:?}; one of: {}", names.join(", "))
            })
    }
}

/// A chaos run's settings.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// The `keel` executable to run.
    pub exe: PathBuf,
    /// Where the nodes' data directories, their logs, `history.json` and `report.txt` go.
    pub dir: PathBuf,
    /// Cluster size.
    pub nodes: u64,
    /// The seed of the nemesis schedule and the clients' choices.
    pub seed: u64,
    /// How long faults run (the safety phase).
    pub duration: Duration,
    /// Stop the safety phase after this many faults, if sooner.
    pub faults_max: Option<usize>,
    /// Which faults the nemesis picks from; empty: none (a soak, with rotation or without).
    pub faults: Vec<FaultKind>,
    /// Workload clients, one dev account each.
    pub clients: usize,
    /// The cluster's block time.
    pub block_time_ms: u64,
    /// The cluster's election timeout (lower bound).
    pub election_timeout_ms: u64,
    /// The cluster's heartbeat interval.
    pub heartbeat_ms: u64,
    /// What the checker holds the run to.
    pub check: CheckOptions,
    /// The liveness phase's bound: after the last heal, every node must reach a new common
    /// height within it.
    pub converge_within: Duration,
    /// Rotating leadership's interval (the cluster file's `rotation_interval_ms`); `None`: no
    /// rotation.
    pub rotation_interval_ms: Option<u64>,
    /// The open-loop workload's rate, transfers a second (0: none).
    pub open_rate: u64,
    /// The open-loop workload's fresh senders.
    pub open_senders: usize,
    /// Before each fault, wait (at most [`CHAOS_READY_WAIT`]) until every node has applied
    /// within [`keel_cluster::CAUGHT_UP_ENTRIES_MAX`] entries of the leader's log.
    pub ready_before_fault: bool,
}

/// How long the nemesis waits for a ready cluster before a fault, with `ready_before_fault`.
pub const CHAOS_READY_WAIT: Duration = Duration::from_secs(30);

impl ChaosOptions {
    /// A short run's settings: 3 nodes, every fault, 4 clients, 250 ms blocks.
    pub fn new(exe: PathBuf, dir: PathBuf, seed: u64, duration: Duration) -> Self {
        Self {
            exe,
            dir,
            nodes: 3,
            seed,
            duration,
            faults_max: None,
            faults: FaultKind::ALL.to_vec(),
            clients: 4,
            block_time_ms: 250,
            election_timeout_ms: 500,
            heartbeat_ms: 100,
            check: CheckOptions::default(),
            converge_within: Duration::from_secs(30),
            rotation_interval_ms: None,
            open_rate: 0,
            open_senders: 100,
            ready_before_fault: false,
        }
    }
}

/// Why a chaos run could not finish (a verdict of "invalid" is not an error: see
/// [`ChaosOutcome::report`]).
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The failure.
        source: std::io::Error,
    },
    /// The options are out of range.
    #[error("invalid chaos options: {0}")]
    Options(String),
    /// The open-loop workload's senders could not be funded.
    #[error("funding the open-loop senders: {0}")]
    Funding(String),
    /// The cluster never elected a leader at the start.
    #[error("no leader within {0:?} of the start; see the node logs in {1}")]
    NoLeader(Duration, PathBuf),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ChaosError {
    let what = what.into();
    move |source| ChaosError::Io { what, source }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct ChaosOutcome {
    /// Everything the run saw (also in `history.json`).
    pub history: History,
    /// The checker's verdict on it (also in `report.txt`).
    pub report: Report,
}

/// A small, seeded generator (SplitMix64): the nemesis needs reproducible choices, not
/// cryptographic ones, and the testkit keeps its dependencies to what the node already uses.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.next_u64() as usize % items.len()]
    }
}

struct Node {
    id: u64,
    rpc: String,
    ops: String,
    rpc_port: u16,
    ops_port: u16,
    raft_port: u16,
    proxy_port: u16,
    child: Option<Child>,
}

impl Node {
    fn raft_listen(&self) -> SocketAddr {
        (node_ip(self.id), self.raft_port).into()
    }
}

fn free_port() -> Result<u16, ChaosError> {
    crate::ports::free_port().map_err(io("finding a free port"))
}

/// The cluster under test: its processes, their proxies' faults and the run's clock.
struct Cluster {
    exe: PathBuf,
    dir: PathBuf,
    block_time_ms: u64,
    nodes: Vec<Node>,
    faults: Faults,
}

impl Cluster {
    fn spawn(&mut self, index: usize) -> Result<(), ChaosError> {
        let node = &mut self.nodes[index];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("node{}.log", node.id)))
            .map_err(io("opening a node log"))?;
        let child = Command::new(&self.exe)
            .args(["node", "--dev", "--cluster"])
            .arg(self.dir.join("cluster.toml"))
            .args(["--node-id", &node.id.to_string(), "--datadir"])
            .arg(self.dir.join(format!("node{}", node.id)))
            .args(["--rpc-addr", &format!("127.0.0.1:{}", node.rpc_port)])
            .args(["--metrics-addr", &format!("127.0.0.1:{}", node.ops_port)])
            .args(["--block-time-ms", &self.block_time_ms.to_string()])
            // The caller's RUST_LOG reaches the nodes (`RUST_LOG=info,openraft=debug keel
            // chaos …` to see Raft's steps); info otherwise.
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(io(format!("starting {}", self.exe.display())))?;
        node.child = Some(child);
        Ok(())
    }

    fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }

    fn signal(&self, index: usize, signal: &str) -> Result<(), ChaosError> {
        let Some(child) = &self.nodes[index].child else {
            return Ok(());
        };
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .map_err(io("running kill"))?;
        if !status.success() {
            tracing::warn!(node = self.nodes[index].id, signal, "kill failed");
        }
        Ok(())
    }

    fn peers_of(&self, index: usize) -> Vec<(u64, IpAddr)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(other, _)| *other != index)
            .map(|(_, node)| (node.id, node_ip(node.id)))
            .collect()
    }

    async fn leader(&self, client: &reqwest::Client) -> Option<usize> {
        self.views(client)
            .await
            .into_iter()
            .find(|(_, view)| view["role"] == "leader")
            .map(|(index, _)| index)
    }

    /// Every running node's `/cluster` view, by index.
    async fn views(&self, client: &reqwest::Client) -> Vec<(usize, Value)> {
        let mut views = Vec::new();
        for (index, node) in self.nodes.iter().enumerate() {
            if node.child.is_none() {
                continue;
            }
            let request = client
                .get(format!("{}/cluster", node.ops))
                .timeout(Duration::from_millis(500));
            let Ok(response) = request.send().await else {
                continue;
            };
            if let Ok(view) = response.json::<Value>().await {
                views.push((index, view));
            }
        }
        views
    }

    /// The highest Raft term any running node reports.
    async fn term(&self, client: &reqwest::Client) -> Option<u64> {
        self.views(client)
            .await
            .iter()
            .filter_map(|(_, view)| view["term"].as_u64())
            .max()
    }

    /// Waits at most `within` until, twice in a row 50 ms apart, every node runs, exactly one
    /// says it leads, and every node has applied within `CAUGHT_UP_ENTRIES_MAX` entries of the
    /// longest log any node reports; whether it came to that. (A node that just restarted as
    /// the last leader is briefly an "unconfirmed-leader", from its stored vote, with its old
    /// log: the longest log, not the leader's, is the reference.)
    async fn wait_ready(&self, client: &reqwest::Client, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut in_a_row = 0;
        while Instant::now() < deadline {
            let views = self.views(client).await;
            let longest = views
                .iter()
                .filter_map(|(_, view)| view["last_log_index"].as_u64())
                .max();
            let leaders = views
                .iter()
                .filter(|(_, view)| view["role"] == "leader")
                .count();
            let caught_up = |log: u64| {
                views.iter().all(|(_, view)| {
                    view["last_applied_index"]
                        .as_u64()
                        .is_some_and(|applied| applied + keel_cluster::CAUGHT_UP_ENTRIES_MAX >= log)
                })
            };
            let ready =
                leaders == 1 && views.len() == self.nodes.len() && longest.is_some_and(caught_up);
            in_a_row = if ready { in_a_row + 1 } else { 0 };
            if in_a_row == 2 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    async fn wait_leader(&self, client: &reqwest::Client, within: Duration) -> Option<usize> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(index) = self.leader(client).await {
                return Some(index);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for index in 0..self.nodes.len() {
            let _ = self.signal(index, "-CONT");
            self.kill(index);
        }
    }
}

/// The history as it is being written, shared by clients, observers and the nemesis.
#[derive(Clone)]
struct Recorder {
    started: Instant,
    history: Arc<Mutex<History>>,
}

impl Recorder {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn record<T>(&self, write: impl FnOnce(&mut History) -> T) -> T {
        write(&mut self.history.lock().expect("history lock"))
    }
}

async fn call(
    client: &reqwest::Client,
    url: &str,
    method: &str,
    params: Value,
) -> Result<Value, Answer> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let unknown = |error: reqwest::Error| Answer::Unknown {
        message: error.to_string(),
    };
    let response = client
        .post(url)
        .json(&body)
        .timeout(CHAOS_CALL_TIMEOUT)
        .send()
        .await
        .map_err(unknown)?;
    let answer: Value = response.json().await.map_err(unknown)?;
    match answer.get("error") {
        Some(error) => Err(Answer::Rejected {
            code: error["code"].as_i64().unwrap_or(0),
            message: error["message"].as_str().unwrap_or_default().to_string(),
        }),
        None => Ok(answer["result"].clone()),
    }
}

fn quantity(value: &Value) -> Option<u64> {
    u64::from_str_radix(value.as_str()?.trim_start_matches("0x"), 16).ok()
}

fn hash_of(value: &Value) -> Option<B256> {
    value.as_str()?.parse().ok()
}

/// The transfer a client sends at `nonce`, as its hash and the hex a raw-transaction call takes.
fn transfer(signer: &PrivateKeySigner, nonce: u64) -> (B256, String) {
    let bytes = crate::workload_transfer(signer, nonce).encoded_2718();
    (keccak256(&bytes), alloy::hex::encode_prefixed(bytes))
}

/// One closed-loop client: send, wait for the receipt, next nonce; re-read the nonce when no
/// receipt comes.
async fn client_loop(
    signer: PrivateKeySigner,
    urls: Vec<(u64, String)>,
    mut random: SplitMix64,
    recorder: Recorder,
    stop: watch::Receiver<bool>,
) {
    let client = reqwest::Client::new();
    let mut nonce = None;
    while !*stop.borrow() {
        let (id, url) = random.pick(&urls).clone();
        let Some(current) = nonce else {
            let count = call(
                &client,
                &url,
                "eth_getTransactionCount",
                json!([signer.address(), "latest"]),
            )
            .await;
            nonce = count.ok().as_ref().and_then(quantity);
            if nonce.is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            continue;
        };
        let (hash, raw) = transfer(&signer, current);
        let answer = send_recorded(&client, (id, &url), hash, &raw, &recorder).await;
        let hopeless = matches!(&answer, Answer::Rejected { message, .. }
            if !message.contains("already known"));
        if !hopeless && wait_receipt(&client, &urls, hash, &mut random, &recorder).await {
            nonce = Some(current + 1);
        } else {
            nonce = None; // re-read: the pool may have lost it, or it went in under another
        }
    }
}

/// The open-loop workload's senders: fresh keys from the seed, each given 1 ether by the first
/// dev account no closed-loop client uses, once the funding is included (through `url`).
async fn fund_open_senders(
    options: &ChaosOptions,
    client: &reqwest::Client,
    url: &str,
) -> Result<Vec<PrivateKeySigner>, ChaosError> {
    let funder = dev_accounts().remove(options.clients);
    let senders: Vec<PrivateKeySigner> = (0..options.open_senders)
        .map(|index| {
            let key = keccak256(format!("keel-chaos-{}-{index}", options.seed));
            PrivateKeySigner::from_bytes(&key).expect("a keccak is a valid key")
        })
        .collect();
    let failed = |answer: Answer| ChaosError::Funding(format!("{answer:?}"));
    let first = call(
        client,
        url,
        "eth_getTransactionCount",
        json!([funder.address(), "latest"]),
    )
    .await
    .map_err(failed)?;
    let first = quantity(&first).ok_or_else(|| ChaosError::Funding(format!("{first}")))?;
    for (index, sender) in senders.iter().enumerate() {
        let envelope = crate::transfer(
            &funder,
            first + index as u64,
            sender.address(),
            alloy::primitives::U256::from(10u128.pow(18)),
        );
        let raw = alloy::hex::encode_prefixed(envelope.encoded_2718());
        call(client, url, "eth_sendRawTransaction", json!([raw]))
            .await
            .map_err(failed)?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let funded = first + senders.len() as u64;
    loop {
        let count = call(
            client,
            url,
            "eth_getTransactionCount",
            json!([funder.address(), "latest"]),
        )
        .await;
        if count.ok().as_ref().and_then(quantity) >= Some(funded) {
            return Ok(senders);
        }
        if Instant::now() > deadline {
            return Err(ChaosError::Funding(format!(
                "the funder's nonce did not reach {funded} in 60 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One open-loop sender: its nonces in turn, each due `interval` after the one before
/// (`schedule`: the first due time and the interval), whatever the answers; each sent again
/// after `CHAOS_RESEND_AFTER` until it is accepted, already known, or its nonce is used.
async fn open_loop_sender(
    signer: PrivateKeySigner,
    schedule: (Instant, Duration),
    client: reqwest::Client,
    urls: Vec<(u64, String)>,
    mut random: SplitMix64,
    recorder: Recorder,
    mut stop: watch::Receiver<bool>,
) {
    let (mut due, interval) = schedule;
    let mut nonce = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        due += interval;
        let (hash, raw) = transfer(&signer, nonce);
        loop {
            let (id, url) = random.pick(&urls);
            let settled = match send_recorded(&client, (*id, url), hash, &raw, &recorder).await {
                Answer::Accepted => true,
                Answer::Rejected { message, .. } => {
                    message == "already known" || message.starts_with("nonce too low")
                }
                Answer::Unknown { .. } => false,
            };
            if settled {
                break;
            }
            if *stop.borrow() {
                return;
            }
            tokio::time::sleep(CHAOS_RESEND_AFTER).await;
        }
        nonce += 1;
    }
}

/// Sends `raw` (whose hash is `hash`) to `node` (its id and JSON-RPC address) and records the
/// send with its answer, which it returns.
async fn send_recorded(
    client: &reqwest::Client,
    (id, url): (u64, &str),
    hash: B256,
    raw: &str,
    recorder: &Recorder,
) -> Answer {
    let at_ms = recorder.now_ms();
    let answer = match call(client, url, "eth_sendRawTransaction", json!([raw])).await {
        Ok(_) => Answer::Accepted,
        Err(answer) => answer,
    };
    recorder.record(|history| {
        history.sends.push(Send {
            transaction: hash,
            node: id,
            at_ms,
            answer: answer.clone(),
        })
    });
    answer
}

/// Polls nodes for `hash`'s receipt until one serves it (recorded) or the wait runs out.
async fn wait_receipt(
    client: &reqwest::Client,
    urls: &[(u64, String)],
    hash: B256,
    random: &mut SplitMix64,
    recorder: &Recorder,
) -> bool {
    let deadline = Instant::now() + CHAOS_RECEIPT_WAIT;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (id, url) = random.pick(urls);
        let Ok(receipt) = call(client, url, "eth_getTransactionReceipt", json!([hash])).await
        else {
            continue;
        };
        let (Some(block_number), Some(block_hash)) = (
            quantity(&receipt["blockNumber"]),
            hash_of(&receipt["blockHash"]),
        ) else {
            continue; // null: not in a block yet
        };
        let seen = ReceiptSeen {
            transaction: hash,
            node: *id,
            at_ms: recorder.now_ms(),
            block_number,
            block_hash,
        };
        recorder.record(|history| history.receipts.push(seen));
        return true;
    }
    false
}

/// Polls one node's latest block until stopped, recording every answer.
async fn observe_heads(
    id: u64,
    url: String,
    recorder: Recorder,
    latest: Arc<Mutex<BTreeMap<u64, u64>>>,
    mut stop: watch::Receiver<bool>,
) {
    let client = reqwest::Client::new();
    while !*stop.borrow() {
        let answer = call(
            &client,
            &url,
            "eth_getBlockByNumber",
            json!(["latest", false]),
        )
        .await;
        if let Ok(block) = answer
            && let (Some(number), Some(hash)) =
                (quantity(&block["number"]), hash_of(&block["hash"]))
        {
            let head = HeadSeen {
                node: id,
                at_ms: recorder.now_ms(),
                number,
                hash,
            };
            recorder.record(|history| history.heads.push(head));
            latest.lock().expect("heads lock").insert(id, number);
        }
        tokio::select! {
            _ = tokio::time::sleep(CHAOS_HEAD_POLL) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Waits until each of `nodes` nodes has a head at or past `target`, or `deadline` passes
/// (the checker then reports who stopped short).
async fn wait_all_reach(
    latest: &Mutex<BTreeMap<u64, u64>>,
    nodes: usize,
    target: u64,
    deadline: Instant,
) {
    while Instant::now() < deadline {
        let heads = latest.lock().expect("heads lock").clone();
        if heads.len() == nodes && heads.values().all(|head| *head >= target) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads `node`'s chain from genesis to `up_to` (or its head, if lower).
async fn read_chain(client: &reqwest::Client, id: u64, url: &str, up_to: u64) -> ChainRead {
    let mut blocks = Vec::new();
    for number in 0..=up_to {
        let Ok(block) = call(
            client,
            url,
            "eth_getBlockByNumber",
            json!([format!("0x{number:x}"), false]),
        )
        .await
        else {
            break;
        };
        let (Some(hash), Some(parent_hash)) =
            (hash_of(&block["hash"]), hash_of(&block["parentHash"]))
        else {
            break; // null: past this node's head
        };
        let transactions = block["transactions"]
            .as_array()
            .map(|hashes| hashes.iter().filter_map(hash_of).collect())
            .unwrap_or_default();
        blocks.push(BlockRead {
            number,
            hash,
            parent_hash,
            transactions,
        });
    }
    ChainRead { node: id, blocks }
}

fn write_cluster_file(options: &ChaosOptions, nodes: &[Node]) -> Result<(), ChaosError> {
    std::fs::write(options.dir.join("secret"), "keel-chaos-cluster-secret\n")
        .map_err(io("writing the cluster secret"))?;
    let mut file = format!(
        "secret_file = \"secret\"\nheartbeat_ms = {}\nelection_timeout_ms = {}\n",
        options.heartbeat_ms, options.election_timeout_ms
    );
    if let Some(interval) = options.rotation_interval_ms {
        file.push_str(&format!("rotation_interval_ms = {interval}\n"));
    }
    for node in nodes {
        file.push_str(&format!(
            "[[members]]\nid = {}\nraft_addr = \"127.0.0.1:{}\"\nraft_listen = \"{}\"\nrpc_addr = \"127.0.0.1:{}\"\n",
            node.id,
            node.proxy_port,
            node.raft_listen(),
            node.rpc_port
        ));
    }
    std::fs::write(options.dir.join("cluster.toml"), file).map_err(io("writing cluster.toml"))
}

/// Runs one chaos run: cluster up, workload and nemesis for the safety phase, heal, liveness
/// phase, chains read back, verdict. Writes `history.json` and `report.txt` into the run's
/// directory.
pub async fn run(options: &ChaosOptions) -> Result<ChaosOutcome, ChaosError> {
    if !(1..=CHAOS_NODES_MAX).contains(&options.nodes) {
        return Err(ChaosError::Options(format!(
            "nodes must be 1 to {CHAOS_NODES_MAX}"
        )));
    }
    if !(1..=CHAOS_CLIENTS_MAX).contains(&options.clients) {
        return Err(ChaosError::Options(format!(
            "clients must be 1 to {CHAOS_CLIENTS_MAX}"
        )));
    }
    if options.open_rate > 0 {
        if options.clients >= CHAOS_CLIENTS_MAX {
            return Err(ChaosError::Options(format!(
                "the open-loop workload is funded by a dev account no client uses: at most {} clients with it",
                CHAOS_CLIENTS_MAX - 1
            )));
        }
        if options.open_rate > CHAOS_OPEN_RATE_MAX
            || !(1..=CHAOS_OPEN_SENDERS_MAX).contains(&options.open_senders)
        {
            return Err(ChaosError::Options(format!(
                "the open-loop rate must be at most {CHAOS_OPEN_RATE_MAX} a second, with 1 to {CHAOS_OPEN_SENDERS_MAX} senders"
            )));
        }
    }
    std::fs::create_dir_all(&options.dir).map_err(io("creating the run directory"))?;
    let mut nodes = Vec::new();
    for id in 1..=options.nodes {
        let (rpc_port, ops_port) = (free_port()?, free_port()?);
        nodes.push(Node {
            id,
            rpc: format!("http://127.0.0.1:{rpc_port}"),
            ops: format!("http://127.0.0.1:{ops_port}"),
            rpc_port,
            ops_port,
            raft_port: free_port()?,
            proxy_port: free_port()?,
            child: None,
        });
    }
    write_cluster_file(options, &nodes)?;
    let faults = Faults::default();
    for node in &nodes {
        let listen = ([127, 0, 0, 1], node.proxy_port).into();
        crate::proxy::spawn(listen, node.raft_listen(), node.id, faults.clone())
            .await
            .map_err(io("starting a fault proxy"))?;
    }
    let mut cluster = Cluster {
        exe: options.exe.clone(),
        dir: options.dir.clone(),
        block_time_ms: options.block_time_ms,
        nodes,
        faults,
    };
    for index in 0..cluster.nodes.len() {
        cluster.spawn(index)?;
    }
    let client = reqwest::Client::new();
    let startup = Duration::from_secs(30);
    if cluster.wait_leader(&client, startup).await.is_none() {
        return Err(ChaosError::NoLeader(startup, options.dir.clone()));
    }

    let recorder = Recorder {
        started: Instant::now(),
        history: Arc::default(),
    };
    let latest: Arc<Mutex<BTreeMap<u64, u64>>> = Arc::default();
    let (stop_clients, clients_stopped) = watch::channel(false);
    let (stop_observers, observers_stopped) = watch::channel(false);
    let urls: Vec<(u64, String)> = cluster
        .nodes
        .iter()
        .map(|node| (node.id, node.rpc.clone()))
        .collect();
    let observers: Vec<_> = urls
        .iter()
        .map(|(id, url)| {
            tokio::spawn(observe_heads(
                *id,
                url.clone(),
                recorder.clone(),
                latest.clone(),
                observers_stopped.clone(),
            ))
        })
        .collect();
    let mut random = SplitMix64::new(options.seed);
    let clients: Vec<_> = dev_accounts()
        .into_iter()
        .take(options.clients)
        .map(|signer| {
            tokio::spawn(client_loop(
                signer,
                urls.clone(),
                SplitMix64::new(random.next_u64()),
                recorder.clone(),
                clients_stopped.clone(),
            ))
        })
        .collect();
    let open_loop = if options.open_rate > 0 {
        let senders = fund_open_senders(options, &client, &urls[0].1).await?;
        let rate = options.open_rate as f64;
        let interval = Duration::from_secs_f64(senders.len() as f64 / rate);
        let start = Instant::now();
        senders
            .into_iter()
            .enumerate()
            .map(|(index, signer)| {
                tokio::spawn(open_loop_sender(
                    signer,
                    (
                        start + Duration::from_secs_f64(index as f64 / rate),
                        interval,
                    ),
                    client.clone(),
                    urls.clone(),
                    SplitMix64::new(random.next_u64()),
                    recorder.clone(),
                    clients_stopped.clone(),
                ))
            })
            .collect()
    } else {
        Vec::new()
    };

    nemesis(options, &mut cluster, &client, &recorder, &mut random).await?;

    // Liveness phase: every fault has healed; every node must pass a new common height.
    let highest = |latest: &Mutex<BTreeMap<u64, u64>>| {
        latest
            .lock()
            .expect("heads lock")
            .values()
            .max()
            .copied()
            .unwrap_or(0)
    };
    let converge = Instant::now() + options.converge_within;
    wait_all_reach(&latest, cluster.nodes.len(), highest(&latest) + 3, converge).await;
    let _ = stop_clients.send(true);
    for client in clients.into_iter().chain(open_loop) {
        let _ = client.await;
    }
    // Read back up to the highest block any client or observer saw, and a few blocks more (a
    // transaction accepted just before its client stopped is in one of them: "accepted means
    // kept" is checked), once all nodes have it.
    let receipts_highest = recorder.record(|history| {
        history
            .receipts
            .iter()
            .map(|r| r.block_number)
            .max()
            .unwrap_or(0)
    });
    let target = highest(&latest).max(receipts_highest) + CHAOS_DRAIN_BLOCKS;
    wait_all_reach(&latest, cluster.nodes.len(), target, converge).await;
    let mut chains = Vec::new();
    for (id, url) in &urls {
        chains.push(read_chain(&client, *id, url, target).await);
    }
    let _ = stop_observers.send(true);
    for observer in observers {
        let _ = observer.await;
    }
    let mut rotations = BTreeMap::new();
    for node in &cluster.nodes {
        rotations.insert(node.id, rotations_of(&client, &node.ops).await);
    }
    drop(cluster);
    let mut history = std::mem::take(&mut *recorder.history.lock().expect("history lock"));
    history.chains = chains;
    history.rotations = rotations;
    history.ended_ms = recorder.now_ms();
    let report = check(&history, &options.check);
    let json = serde_json::to_string(&history).expect("a history serializes");
    std::fs::write(options.dir.join("history.json"), json).map_err(io("writing history.json"))?;
    let text = format!("seed: {}\n{report}\n", options.seed);
    std::fs::write(options.dir.join("report.txt"), text).map_err(io("writing report.txt"))?;
    Ok(ChaosOutcome { history, report })
}

/// The leadership rotations a node made (`keel_leadership_rotations_total`); 0 if it does not
/// answer.
async fn rotations_of(client: &reqwest::Client, ops: &str) -> u64 {
    let Ok(response) = client.get(format!("{ops}/metrics")).send().await else {
        return 0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix("keel_leadership_rotations_total "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}

/// The safety phase: faults on the seeded schedule, each healed before the next.
async fn nemesis(
    options: &ChaosOptions,
    cluster: &mut Cluster,
    client: &reqwest::Client,
    recorder: &Recorder,
    random: &mut SplitMix64,
) -> Result<(), ChaosError> {
    let ends = Instant::now() + options.duration;
    let first_term = cluster.term(client).await;
    if options.faults.is_empty() {
        tokio::time::sleep_until(ends.into()).await;
    } else {
        faults(options, cluster, client, recorder, random, ends).await?;
    }
    if let (Some(first), Some(last)) = (first_term, cluster.term(client).await) {
        recorder.record(|history| history.terms = Some([first, last]));
    }
    Ok(())
}

/// The faults of the safety phase, until `ends` or `faults_max`.
async fn faults(
    options: &ChaosOptions,
    cluster: &mut Cluster,
    client: &reqwest::Client,
    recorder: &Recorder,
    random: &mut SplitMix64,
    ends: Instant,
) -> Result<(), ChaosError> {
    let mut injected = 0;
    // The last fault, and the term just before it: its term increments are read once the
    // cluster has a leader again after its heal (before the next fault, or at the end).
    let mut last_fault: Option<(usize, Option<u64>)> = None;
    while Instant::now() < ends && options.faults_max.is_none_or(|max| injected < max) {
        tokio::time::sleep(Duration::from_millis(random.between(500, 1_500))).await;
        let kind = *random.pick(&options.faults);
        let hold = Duration::from_millis(random.between(500, 2_500));
        if options.ready_before_fault && !cluster.wait_ready(client, CHAOS_READY_WAIT).await {
            tracing::warn!("chaos: the cluster was not ready within {CHAOS_READY_WAIT:?}");
        }
        let Some(leader) = cluster.wait_leader(client, Duration::from_secs(10)).await else {
            tracing::warn!("chaos: no leader for 10 s; the checker will judge the gap");
            continue;
        };
        // One read: the last fault's term after it, and this fault's term before it.
        let term_before = cluster.term(client).await;
        note_terms(recorder, &mut last_fault, term_before);
        let followers: Vec<usize> = (0..cluster.nodes.len()).filter(|i| *i != leader).collect();
        let on_follower = matches!(kind, FaultKind::KillFollower | FaultKind::PartitionFollower);
        let target = if !on_follower || followers.is_empty() {
            leader
        } else {
            *random.pick(&followers)
        };
        let ids: Vec<u64> = match kind {
            FaultKind::RestartAll => cluster.nodes.iter().map(|node| node.id).collect(),
            _ => vec![cluster.nodes[target].id],
        };
        let started_ms = recorder.now_ms();
        match kind {
            FaultKind::KillLeader | FaultKind::KillFollower => cluster.kill(target),
            FaultKind::PauseLeader => cluster.signal(target, "-STOP")?,
            FaultKind::PartitionLeader | FaultKind::PartitionFollower => {
                let id = cluster.nodes[target].id;
                cluster
                    .faults
                    .isolate(id, node_ip(id), &cluster.peers_of(target));
            }
            FaultKind::OneWayLeader => {
                let others: Vec<u64> = cluster.peers_of(target).iter().map(|p| p.0).collect();
                let ip = node_ip(cluster.nodes[target].id);
                cluster.faults.cut_outgoing(ip, &others);
            }
            FaultKind::RestartAll => {
                for index in 0..cluster.nodes.len() {
                    cluster.kill(index);
                }
            }
        }
        tracing::info!(fault = kind.name(), nodes = ?ids, hold_ms = hold.as_millis() as u64, "chaos: injected");
        tokio::time::sleep(hold).await;
        match kind {
            FaultKind::KillLeader | FaultKind::KillFollower => cluster.spawn(target)?,
            FaultKind::PauseLeader => cluster.signal(target, "-CONT")?,
            FaultKind::PartitionLeader | FaultKind::PartitionFollower | FaultKind::OneWayLeader => {
                cluster.faults.heal()
            }
            FaultKind::RestartAll => {
                for index in 0..cluster.nodes.len() {
                    cluster.spawn(index)?;
                }
            }
        }
        let healed_ms = recorder.now_ms();
        let fault = recorder.record(|history| {
            history.faults.push(Fault {
                kind: kind.name().to_string(),
                nodes: ids,
                leader: kind.hits_leader(),
                started_ms,
                healed_ms: Some(healed_ms),
                term_increments: None,
            });
            history.faults.len() - 1
        });
        last_fault = Some((fault, term_before));
        injected += 1;
    }
    if cluster
        .wait_leader(client, Duration::from_secs(10))
        .await
        .is_some()
    {
        note_terms(recorder, &mut last_fault, cluster.term(client).await);
    }
    Ok(())
}

/// Records the last fault's term increments: `after`, the highest term read once the cluster
/// had a leader again, against the one just before the fault.
fn note_terms(
    recorder: &Recorder,
    last_fault: &mut Option<(usize, Option<u64>)>,
    after: Option<u64>,
) {
    if let (Some((fault, Some(before))), Some(after)) = (last_fault.take(), after) {
        recorder.record(|history| {
            history.faults[fault].term_increments = Some(after.saturating_sub(before));
        });
    }
}

/// Where a run keeps its files when the caller names no directory.
pub fn default_dir(seed: u64) -> PathBuf {
    std::env::temp_dir().join(format!("keel-chaos-{}-{seed}", std::process::id()))
}
