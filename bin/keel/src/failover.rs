//! `keel bench failover`: a real three-process cluster on loopback; the leader is SIGKILLed
//! over and over, and each time the gap between the last block seen before the kill and the
//! first block after it is measured on a survivor, with the blocks exposed before the kill
//! checked to be unchanged (lost or replaced blocks must be 0). With `--transfers` the leader
//! hands over through the admin API instead of dying: the gap of a graceful transfer. With
//! `--rotate` the cluster rotates leadership by itself (`rotation_interval_ms`), and the gap
//! around each leader change is the longest time between new blocks within a second of it.

use clap::Args;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `keel bench failover`.
#[derive(Debug, Args)]
pub(crate) struct FailoverArgs {
    /// Leader kills.
    #[arg(long, default_value_t = 10)]
    kills: usize,
    #[command(flatten)]
    timing: ClusterTiming,
    /// Hand leadership over (`/admin/transfer`) instead of killing the leader.
    #[arg(long, conflicts_with = "rotate")]
    transfers: bool,
    /// Let the cluster rotate leadership by itself and measure `--kills` rotations.
    #[arg(long)]
    rotate: bool,
    /// The rotation interval with `--rotate`.
    #[arg(long, default_value_t = 2_000)]
    rotation_interval_ms: u64,
}

/// The timing of a cluster a benchmark or chaos run starts (`keel bench failover`,
/// `keel chaos`).
#[derive(Debug, Args)]
pub(crate) struct ClusterTiming {
    /// Block time of the cluster.
    #[arg(long, default_value_t = 250)]
    pub(crate) block_time_ms: u64,
    /// Raft election timeout (lower bound) of the cluster; the upper bound is 1.2 times it.
    #[arg(long, default_value_t = 500)]
    pub(crate) election_timeout_ms: u64,
    /// Raft heartbeat interval of the cluster.
    #[arg(long, default_value_t = 100)]
    pub(crate) heartbeat_ms: u64,
}

const ADMIN_TOKEN: &str = "keel-failover-benchmark-admin-token";

struct Node {
    id: u64,
    rpc: String,
    ops: String,
    raft_port: u16,
    rpc_port: u16,
    ops_port: u16,
    admin_port: u16,
    child: Option<Child>,
}

fn port() -> u16 {
    keel_testkit::ports::free_port().unwrap_or(0)
}

async fn call(
    client: &reqwest::Client,
    url: &str,
    method: &str,
    params: Value,
) -> Result<Value, BoxError> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let answer: Value = client
        .post(url)
        .json(&body)
        .timeout(Duration::from_secs(2))
        .send()
        .await?
        .json()
        .await?;
    answer
        .get("result")
        .cloned()
        .ok_or_else(|| format!("{method}: {answer}").into())
}

async fn head(client: &reqwest::Client, url: &str) -> Option<(u64, String)> {
    let block = call(
        client,
        url,
        "eth_getBlockByNumber",
        json!(["latest", false]),
    )
    .await
    .ok()?;
    let number =
        u64::from_str_radix(block["number"].as_str()?.trim_start_matches("0x"), 16).ok()?;
    Some((number, block["hash"].as_str()?.to_string()))
}

fn start(exe: &Path, dir: &Path, node: &mut Node, block_time_ms: u64) -> Result<(), BoxError> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("node{}.log", node.id)))?;
    let child = Command::new(exe)
        .args(["node", "--dev", "--cluster"])
        .arg(dir.join("cluster.toml"))
        .args(["--node-id", &node.id.to_string(), "--datadir"])
        .arg(dir.join(format!("node{}", node.id)))
        .args(["--metrics-addr", &format!("127.0.0.1:{}", node.ops_port)])
        .args(["--block-time-ms", &block_time_ms.to_string()])
        .args(["--admin-addr", &format!("127.0.0.1:{}", node.admin_port)])
        .arg("--admin-token-file")
        .arg(dir.join("admin-token"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    node.child = Some(child);
    Ok(())
}

async fn leader(client: &reqwest::Client, nodes: &[Node]) -> Option<usize> {
    for (index, node) in nodes.iter().enumerate() {
        if node.child.is_none() {
            continue;
        }
        let Ok(response) = client.get(format!("{}/cluster", node.ops)).send().await else {
            continue;
        };
        if let Ok(status) = response.json::<Value>().await
            && status["role"] == "leader"
        {
            return Some(index);
        }
    }
    None
}

/// Runs the failover benchmark and prints its table.
pub(crate) async fn run(args: FailoverArgs) -> Result<(), BoxError> {
    let exe = std::env::current_exe()?;
    let dir = std::env::temp_dir().join(format!("keel-failover-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("secret"), "keel-failover-benchmark-secret\n")?;
    std::fs::write(dir.join("admin-token"), ADMIN_TOKEN)?;
    let mut nodes: Vec<Node> = (1..=3)
        .map(|id| {
            let (raft_port, rpc_port, ops_port) = (port(), port(), port());
            Node {
                id,
                rpc: format!("http://127.0.0.1:{rpc_port}"),
                ops: format!("http://127.0.0.1:{ops_port}"),
                raft_port,
                rpc_port,
                ops_port,
                admin_port: port(),
                child: None,
            }
        })
        .collect();
    let mut file = format!(
        "secret_file = \"secret\"\nheartbeat_ms = {}\nelection_timeout_ms = {}\n",
        args.timing.heartbeat_ms, args.timing.election_timeout_ms
    );
    if args.rotate {
        file.push_str(&format!(
            "rotation_interval_ms = {}\n",
            args.rotation_interval_ms
        ));
    }
    for node in &nodes {
        file.push_str(&format!(
            "[[members]]\nid = {}\nraft_addr = \"127.0.0.1:{}\"\nrpc_addr = \"127.0.0.1:{}\"\n",
            node.id, node.raft_port, node.rpc_port
        ));
    }
    std::fs::write(dir.join("cluster.toml"), file)?;
    for node in &mut nodes {
        start(&exe, &dir, node, args.timing.block_time_ms)?;
    }
    let client = reqwest::Client::new();
    let result = if args.rotate {
        measure_rotations(&args, &nodes, &client).await
    } else {
        measure(&args, &exe, &dir, &mut nodes, &client).await
    };
    for node in &mut nodes {
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Notes `url`'s head when it is a block not seen before, with when it was first seen.
async fn note_new_head(
    client: &reqwest::Client,
    url: &str,
    arrivals: &mut Vec<(Instant, u64, String)>,
) {
    if let Some((number, hash)) = head(client, url).await
        && arrivals.last().is_none_or(|(_, last, _)| number > *last)
    {
        arrivals.push((Instant::now(), number, hash));
    }
}

/// Watches a rotating cluster until `args.kills` leader changes: every new block's arrival on
/// one node (polled every 5 ms) and the leader (every 50 ms). Each change's gap is the longest
/// time between new blocks within a second before it and half a second after.
async fn measure_rotations(
    args: &FailoverArgs,
    nodes: &[Node],
    client: &reqwest::Client,
) -> Result<(), BoxError> {
    let watch_url = nodes[0].rpc.clone();
    let started = Instant::now();
    let mut arrivals: Vec<(Instant, u64, String)> = Vec::new();
    let mut changes: Vec<Instant> = Vec::new();
    let mut current = None;
    let mut last_leader_poll = Instant::now() - Duration::from_secs(1);
    let deadline = started
        + Duration::from_millis(args.rotation_interval_ms * 3 * (args.kills as u64 + 2))
        + Duration::from_secs(30);
    let mut progress = crate::progress::Progress::new(
        "bench failover --rotate",
        Some(args.kills as u64),
        "rotations",
    );
    while changes.len() < args.kills {
        progress.update(changes.len() as u64);
        if Instant::now() > deadline {
            return Err(format!("only {} rotations seen", changes.len()).into());
        }
        note_new_head(client, &watch_url, &mut arrivals).await;
        if last_leader_poll.elapsed() >= Duration::from_millis(50) {
            last_leader_poll = Instant::now();
            let now = leader(client, nodes).await;
            if now.is_some() && now != current {
                if current.is_some() {
                    changes.push(Instant::now());
                }
                current = now;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Blocks for half a second after the last change.
    let settle = Instant::now() + Duration::from_millis(500);
    while Instant::now() < settle {
        note_new_head(client, &watch_url, &mut arrivals).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut gaps_ms: Vec<f64> = changes
        .iter()
        .map(|change| {
            let from = *change - Duration::from_secs(1);
            let to = *change + Duration::from_millis(500);
            arrivals
                .windows(2)
                .filter(|pair| pair[1].0 >= from && pair[0].0 <= to)
                .map(|pair| pair[1].0.duration_since(pair[0].0).as_secs_f64() * 1000.0)
                .fold(0.0, f64::max)
        })
        .collect();
    // Every block seen is still the chain's.
    let mut lost = 0;
    for (_, number, hash) in &arrivals {
        let kept = call(
            client,
            &watch_url,
            "eth_getBlockByNumber",
            json!([format!("0x{number:x}"), false]),
        )
        .await?;
        if kept["hash"].as_str() != Some(hash.as_str()) {
            lost += 1;
        }
    }
    report(args, &mut gaps_ms, lost, "rotations")
}

async fn measure(
    args: &FailoverArgs,
    exe: &Path,
    dir: &Path,
    nodes: &mut [Node],
    client: &reqwest::Client,
) -> Result<(), BoxError> {
    let mut gaps_ms = Vec::new();
    let mut lost = 0usize;
    let mut progress =
        crate::progress::Progress::new("bench failover", Some(args.kills as u64), "kills");
    for kill in 0..args.kills {
        progress.update(kill as u64);
        let deadline = Instant::now() + Duration::from_secs(30);
        let index = loop {
            if let Some(index) = leader(client, nodes).await {
                break index;
            }
            if Instant::now() > deadline {
                return Err("no leader within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let watcher = (index + 1) % nodes.len();
        let watch_url = nodes[watcher].rpc.clone();
        // Let blocks flow, then note the last block seen before the kill and when it was seen.
        let mut seen: BTreeMap<u64, String> = BTreeMap::new();
        let mut last_change = Instant::now();
        let settle = Instant::now() + Duration::from_millis(args.timing.block_time_ms * 4);
        while Instant::now() < settle {
            if let Some((number, hash)) = head(client, &watch_url).await
                && seen.insert(number, hash).is_none()
            {
                last_change = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let before = *seen.keys().next_back().ok_or("no blocks before the kill")?;
        let before_hash = seen[&before].clone();
        if args.transfers {
            let answer = client
                .post(format!(
                    "http://127.0.0.1:{}/admin/transfer",
                    nodes[index].admin_port
                ))
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({}))
                .send()
                .await?;
            if !answer.status().is_success() {
                let status = answer.status();
                return Err(format!("transfer {kill}: {status}: {}", answer.text().await?).into());
            }
        } else if let Some(mut child) = nodes[index].child.take() {
            child.kill()?;
            child.wait()?;
        }
        // The first block after the kill with a higher number than any seen before it.
        let deadline = Instant::now() + Duration::from_secs(30);
        let resumed = loop {
            if let Some((number, _)) = head(client, &watch_url).await
                && number > before
            {
                break Instant::now();
            }
            if Instant::now() > deadline {
                return Err(format!("kill {kill}: no block within 30 s").into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        gaps_ms.push(resumed.duration_since(last_change).as_secs_f64() * 1000.0);
        let kept = call(
            client,
            &watch_url,
            "eth_getBlockByNumber",
            json!([format!("0x{before:x}"), false]),
        )
        .await?;
        if kept["hash"].as_str() != Some(before_hash.as_str()) {
            lost += 1;
        }
        if !args.transfers {
            start(exe, dir, &mut nodes[index], args.timing.block_time_ms)?;
        }
        tokio::time::sleep(Duration::from_millis(args.timing.election_timeout_ms * 2)).await;
    }
    report(
        args,
        &mut gaps_ms,
        lost,
        if args.transfers { "transfers" } else { "kills" },
    )
}

/// Prints the table row of a run; fails when an exposed block was lost or replaced.
fn report(
    args: &FailoverArgs,
    gaps_ms: &mut [f64],
    lost: usize,
    what: &str,
) -> Result<(), BoxError> {
    gaps_ms.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let pick =
        |percent: f64| gaps_ms[((gaps_ms.len() as f64 - 1.0) * percent / 100.0).round() as usize];
    let slots_missed = gaps_ms
        .iter()
        .map(|gap| ((gap / args.timing.block_time_ms as f64).round() as u64).saturating_sub(1))
        .sum::<u64>();
    println!(
        "| {what} | block time ms | election timeout ms | gap p50 ms | gap p99 ms | gap max ms | slots missed | blocks lost or replaced |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {} | {}-{} | {:.0} | {:.0} | {:.0} | {} | {} |",
        gaps_ms.len(),
        args.timing.block_time_ms,
        args.timing.election_timeout_ms,
        args.timing.election_timeout_ms + args.timing.election_timeout_ms / 5,
        pick(50.0),
        pick(99.0),
        gaps_ms[gaps_ms.len() - 1],
        slots_missed,
        lost
    );
    if lost > 0 {
        return Err(format!("{lost} exposed blocks were lost or replaced").into());
    }
    Ok(())
}
