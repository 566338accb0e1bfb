//! `keel devnet`: a whole local rollup in one command.
//!
//! ```text
//!   keel devnet ─┬─ keel l1              the dev L1 (chain 1337), on --l1-addr
//!                ├─ keel node --cluster  ×N: the L2 (chain 31337), each its own data directory,
//!                │                       peer, JSON-RPC, operations and admin ports
//!                ├─ front JSON-RPC       on --rpc-addr: each request to a node that answers
//!                │                       /ready (writes reach the leader: a follower forwards)
//!                └─ dashboard            on --dashboard-addr: the live page (crate::dashboard),
//!                                        whose kill and restart buttons act on these processes
//! ```
//!
//! The processes are this executable, run as children; their logs go to the devnet's
//! directory. The ports are chosen on the first start and kept in `devnet.json`, so a second
//! start resumes the same chain on the same addresses (`--fresh` starts over). A node that
//! exits is started again after `--restart-after-ms`. Ctrl-C (or SIGTERM) stops every child
//! with SIGTERM, then SIGKILL after `DEVNET_STOP_WAIT`, and the devnet exits once none runs.

use clap::Args;
use keel_node::dashboard;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::process::{Child, Command};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long children get to stop after SIGTERM before they are killed.
const DEVNET_STOP_WAIT: Duration = Duration::from_secs(10);
/// How often the front checks each node's `/ready`.
const DEVNET_READY_POLL: Duration = Duration::from_millis(500);
/// The most nodes a devnet runs (Raft clusters of 3 or 5 make sense).
const DEVNET_NODES_MAX: u64 = 7;
/// How long the dev L1 may take to answer before the nodes start (they check it on start).
const DEVNET_L1_START_WAIT: Duration = Duration::from_secs(30);
/// Kill and restart requests from the dashboard waiting for the devnet's loop.
const DEVNET_COMMANDS_MAX: usize = 16;
/// The largest request the front passes on (the nodes' own limit).
const DEVNET_REQUEST_BYTES_MAX: usize = keel_primitives::limits::RPC_REQUEST_BYTES_MAX as usize;

/// `keel devnet`.
#[derive(Debug, Args)]
pub(crate) struct DevnetArgs {
    /// Where the devnet keeps its nodes' data, its L1, its logs and its ports.
    #[arg(long, default_value = ".keel/devnet")]
    dir: PathBuf,
    /// Start over: delete the devnet's directory first.
    #[arg(long)]
    fresh: bool,
    /// Nodes in the cluster (3 or 5 make sense; fixed on the first start).
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// The front JSON-RPC address (HTTP), in front of every node.
    #[arg(long, default_value = "127.0.0.1:8545")]
    rpc_addr: SocketAddr,
    /// The dev L1's JSON-RPC address.
    #[arg(long, default_value = "127.0.0.1:8546")]
    l1_addr: SocketAddr,
    /// The live dashboard's address (a web page).
    #[arg(long, default_value = "127.0.0.1:8550")]
    dashboard_addr: SocketAddr,
    /// The L2's block time, in ms.
    #[arg(long, default_value_t = 1_000)]
    block_time_ms: u64,
    /// The dev L1's block time, in ms.
    #[arg(long, default_value_t = 2_000)]
    l1_block_time_ms: u64,
    /// Rotating leadership: a healthy leader hands over to the next ready node after this many
    /// ms, so every node keeps leading in turn; 0 turns it off.
    #[arg(long, default_value_t = 30_000)]
    rotation_interval_ms: u64,
    /// Start a node that exits (killed, crashed) again after this many ms; 0: never.
    #[arg(long, default_value_t = 5_000)]
    restart_after_ms: u64,
}

/// One node's ports, kept in `devnet.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NodePorts {
    id: u64,
    raft: u16,
    rpc: u16,
    ops: u16,
    admin: u16,
}

/// What a devnet keeps between starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Layout {
    nodes: Vec<NodePorts>,
}

/// A port nobody listens on now, outside the ephemeral range (an outgoing connection cannot
/// take it before the node binds it; see `keel_testkit::ports`).
fn free_port() -> std::io::Result<u16> {
    keel_testkit::ports::free_port()
}

/// 24 random bytes as hex, for the peer secret and the admin token.
fn random_secret() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(alloy::hex::encode(bytes))
}

/// The devnet's layout: read back, or made on the first start (ports, cluster file, secrets).
fn prepare(args: &DevnetArgs) -> Result<Layout, BoxError> {
    if !(1..=DEVNET_NODES_MAX).contains(&args.nodes) {
        return Err(format!("--nodes must be 1 to {DEVNET_NODES_MAX}").into());
    }
    if args.fresh && args.dir.exists() {
        std::fs::remove_dir_all(&args.dir)
            .map_err(|error| format!("removing {}: {error}", args.dir.display()))?;
    }
    let layout_path = args.dir.join("devnet.json");
    if layout_path.exists() {
        let layout: Layout = serde_json::from_str(&std::fs::read_to_string(&layout_path)?)
            .map_err(|error| {
                format!("{} is not a devnet layout: {error}", layout_path.display())
            })?;
        if layout.nodes.len() as u64 != args.nodes {
            return Err(format!(
                "the devnet in {} has {} nodes, not {}: run with --fresh to start over",
                args.dir.display(),
                layout.nodes.len(),
                args.nodes
            )
            .into());
        }
        return Ok(layout);
    }
    std::fs::create_dir_all(&args.dir)
        .map_err(|error| format!("creating {}: {error}", args.dir.display()))?;
    // The devnet's own addresses are bound later: no node may be given one of them.
    for address in [args.rpc_addr, args.l1_addr, args.dashboard_addr] {
        keel_testkit::ports::reserve(address.port());
    }
    let mut nodes = Vec::new();
    for id in 1..=args.nodes {
        nodes.push(NodePorts {
            id,
            raft: free_port()?,
            rpc: free_port()?,
            ops: free_port()?,
            admin: free_port()?,
        });
    }
    std::fs::write(args.dir.join("secret"), random_secret()? + "\n")?;
    std::fs::write(args.dir.join("admin-token"), random_secret()? + "\n")?;
    let layout = Layout { nodes };
    std::fs::write(&layout_path, serde_json::to_string_pretty(&layout)?)?;
    Ok(layout)
}

/// The cluster file, written on every start (the rotation setting may change).
fn write_cluster_file(args: &DevnetArgs, layout: &Layout) -> std::io::Result<PathBuf> {
    let mut text =
        String::from("# Written by keel devnet on every start.\nsecret_file = \"secret\"\n");
    if args.rotation_interval_ms > 0 {
        text.push_str(&format!(
            "rotation_interval_ms = {}\n",
            args.rotation_interval_ms
        ));
    }
    for node in &layout.nodes {
        text.push_str(&format!(
            "[[members]]\nid = {}\nraft_addr = \"127.0.0.1:{}\"\nrpc_addr = \"127.0.0.1:{}\"\nadmin_addr = \"127.0.0.1:{}\"\nops_addr = \"127.0.0.1:{}\"\n",
            node.id, node.raft, node.rpc, node.admin, node.ops
        ));
    }
    let path = args.dir.join("cluster.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Starts one child with its stderr appended to `log`.
fn spawn(command: &mut Command, log: &Path) -> Result<Child, BoxError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|error| format!("opening {}: {error}", log.display()))?;
    Ok(command
        .stdout(std::process::Stdio::null())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("starting {command:?}: {error}"))?)
}

/// Starts one node, its log appended to `nodeN.log` in the devnet's directory.
fn start_node(
    args: &DevnetArgs,
    exe: &Path,
    cluster: &Path,
    node: &NodePorts,
) -> Result<Child, BoxError> {
    let log = args.dir.join(format!("node{}.log", node.id));
    spawn(&mut node_command(args, exe, cluster, node), &log)
}

/// Starts an exited node again in its `slot`, and says so with the new pid.
fn restart_node(
    args: &DevnetArgs,
    exe: &Path,
    cluster: &Path,
    node: &NodePorts,
    slot: &mut Child,
    exited: &mut Option<std::time::Instant>,
) -> Result<(), BoxError> {
    *slot = start_node(args, exe, cluster, node)?;
    *exited = None;
    println!(
        "  node {} pid {} (restarted)",
        node.id,
        slot.id().unwrap_or(0)
    );
    Ok(())
}

fn l1_command(args: &DevnetArgs, exe: &Path) -> Command {
    let mut command = Command::new(exe);
    command
        .arg("l1")
        .arg("--datadir")
        .arg(args.dir.join("l1"))
        .args(["--rpc-addr", &args.l1_addr.to_string()])
        .args(["--block-time-ms", &args.l1_block_time_ms.to_string()])
        .args(["--safe-depth", "2", "--finalized-depth", "4"]);
    command
}

fn node_command(args: &DevnetArgs, exe: &Path, cluster: &Path, node: &NodePorts) -> Command {
    let mut command = Command::new(exe);
    command
        .args(["node", "--dev", "--cluster"])
        .arg(cluster)
        .args(["--node-id", &node.id.to_string()])
        .arg("--datadir")
        .arg(args.dir.join(format!("node{}", node.id)))
        .args(["--rpc-addr", &format!("127.0.0.1:{}", node.rpc)])
        .args(["--metrics-addr", &format!("127.0.0.1:{}", node.ops)])
        .args(["--admin-addr", &format!("127.0.0.1:{}", node.admin)])
        .arg("--admin-token-file")
        .arg(args.dir.join("admin-token"))
        .args(["--block-time-ms", &args.block_time_ms.to_string()])
        .args(["--l1-rpc", &format!("http://{}", args.l1_addr)])
        .args(["--l1-block-time-ms", &args.l1_block_time_ms.to_string()]);
    command
}

/// What the newcomer needs: addresses, chain ids, keys.
fn print_banner(args: &DevnetArgs, layout: &Layout, pids: &[(String, Option<u32>)]) {
    println!(
        "keel devnet: {} nodes and the dev L1, data in {}",
        layout.nodes.len(),
        args.dir.display()
    );
    println!(
        "  JSON-RPC     http://{}   L2, chain id {} (any healthy node; writes reach the leader)",
        args.rpc_addr,
        keel_primitives::DEV_CHAIN_ID
    );
    println!(
        "  L1 JSON-RPC  http://{}   dev L1, chain id {}",
        args.l1_addr,
        keel_primitives::DEV_L1_CHAIN_ID
    );
    println!(
        "  dashboard    http://{}   live: nodes, heads, leader changes; actions need the admin token",
        args.dashboard_addr
    );
    for node in &layout.nodes {
        println!(
            "  node {}       rpc http://127.0.0.1:{}  ops http://127.0.0.1:{}  admin http://127.0.0.1:{}",
            node.id, node.rpc, node.ops, node.admin
        );
    }
    println!("  each node also serves its own dashboard at its ops address + /dashboard");
    println!(
        "  admin token  {} (keel admin --url ADMIN --token-file it status)",
        args.dir.join("admin-token").display()
    );
    println!("  dev accounts, 10,000 ether each on both chains (account 9 posts the batches):");
    for (index, signer) in keel_primitives::dev_accounts().iter().enumerate() {
        println!(
            "    {index}  {}  0x{}",
            signer.address(),
            alloy::hex::encode(signer.to_bytes())
        );
    }
    for (name, pid) in pids {
        if let Some(pid) = pid {
            println!("  {name} pid {pid}");
        }
    }
    println!(
        "Ctrl-C stops everything; run again to resume, with --fresh to start over. Logs: {}",
        args.dir.display()
    );
}

/// Runs the devnet until Ctrl-C or SIGTERM.
pub(crate) async fn run(args: DevnetArgs) -> Result<(), BoxError> {
    crate::config::init_logging(crate::config::LogFormat::Text);
    let layout = prepare(&args)?;
    let cluster = write_cluster_file(&args, &layout)?;
    let exe = std::env::current_exe()?;
    let mut l1 = spawn(&mut l1_command(&args, &exe), &args.dir.join("l1.log"))?;
    wait_for_l1(&args, &mut l1).await?;
    let mut nodes = Vec::new();
    for node in &layout.nodes {
        nodes.push(start_node(&args, &exe, &cluster, node)?);
    }
    let mut pids = vec![("l1".to_string(), l1.id())];
    for (node, child) in layout.nodes.iter().zip(&nodes) {
        pids.push((format!("node {}", node.id), child.id()));
    }
    let front = Front::new(&layout);
    let listener = tokio::net::TcpListener::bind(args.rpc_addr)
        .await
        .map_err(|error| format!("front JSON-RPC on {}: {error}", args.rpc_addr))?;
    tokio::spawn(front.clone().watch_ready());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, front.router()).await;
    });
    let (commands, mut requests) = tokio::sync::mpsc::channel(DEVNET_COMMANDS_MAX);
    let dashboard_listener = tokio::net::TcpListener::bind(args.dashboard_addr)
        .await
        .map_err(|error| format!("dashboard on {}: {error}", args.dashboard_addr))?;
    let members = layout
        .nodes
        .iter()
        .map(|node| dashboard::Member {
            id: node.id,
            source: Some(dashboard::Source::Http(format!(
                "http://127.0.0.1:{}",
                node.ops
            ))),
            admin: Some(format!("http://127.0.0.1:{}", node.admin)),
        })
        .collect();
    let token = std::fs::read_to_string(args.dir.join("admin-token"))?;
    let token = keel_node::ClusterSecret::new(token.trim())
        .map_err(|error| format!("{}: {error}", args.dir.join("admin-token").display()))?;
    let router = dashboard::router(dashboard::DashboardConfig {
        title: "keel devnet".into(),
        members,
        token: Some(token),
        processes: Some(commands),
        observe: dashboard::Observe::Always,
        prefix: "",
    });
    let dashboard = tokio::spawn(async move {
        let _ = axum::serve(dashboard_listener, router).await;
    });
    print_banner(&args, &layout, &pids);

    let restart_after = Duration::from_millis(args.restart_after_ms);
    // When each node (and the L1) was first seen exited, for the restart delay.
    let mut exited: Vec<Option<std::time::Instant>> = vec![None; nodes.len()];
    let mut l1_exited: Option<std::time::Instant> = None;
    let signal = crate::config::wait_for_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = &mut signal => break,
            request = requests.recv() => {
                let Some(request) = request else { continue };
                let (id, kill) = match request {
                    dashboard::ProcessCommand::Kill(id) => (id, true),
                    dashboard::ProcessCommand::Restart(id) => (id, false),
                };
                let Some(index) = layout.nodes.iter().position(|node| node.id == id) else {
                    continue;
                };
                if kill {
                    tracing::warn!(node = id, "killed from the dashboard");
                    let _ = nodes[index].start_kill();
                } else if matches!(nodes[index].try_wait(), Ok(Some(_))) {
                    let node = &layout.nodes[index];
                    restart_node(&args, &exe, &cluster, node, &mut nodes[index], &mut exited[index])?;
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        // A node or the L1 that exited is started again after the delay.
        if args.restart_after_ms == 0 {
            continue;
        }
        if matches!(l1.try_wait(), Ok(Some(_))) {
            let since = *l1_exited.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() >= restart_after {
                tracing::warn!("the dev L1 exited; starting it again");
                l1 = spawn(&mut l1_command(&args, &exe), &args.dir.join("l1.log"))?;
                l1_exited = None;
            }
        }
        for (index, node) in layout.nodes.iter().enumerate() {
            if matches!(nodes[index].try_wait(), Ok(Some(_))) {
                let since = *exited[index].get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= restart_after {
                    tracing::warn!(node = node.id, "a node exited; starting it again");
                    restart_node(
                        &args,
                        &exe,
                        &cluster,
                        node,
                        &mut nodes[index],
                        &mut exited[index],
                    )?;
                }
            }
        }
    }
    dashboard.abort();
    eprintln!("keel devnet: stopping");
    server.abort();
    for child in nodes.iter_mut().chain(std::iter::once(&mut l1)) {
        terminate(child);
    }
    for child in nodes.iter_mut().chain(std::iter::once(&mut l1)) {
        if tokio::time::timeout(DEVNET_STOP_WAIT, child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
    eprintln!("keel devnet: stopped; run again to resume");
    Ok(())
}

/// Waits until the dev L1 answers JSON-RPC: a node checks its L1's chain id as it starts, and
/// one started before the L1 listens stops with "L1 unreachable".
async fn wait_for_l1(args: &DevnetArgs, l1: &mut Child) -> Result<(), BoxError> {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + DEVNET_L1_START_WAIT;
    let request =
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []});
    loop {
        let answer = http
            .post(format!("http://{}", args.l1_addr))
            .json(&request)
            .timeout(Duration::from_millis(500))
            .send()
            .await;
        if answer.is_ok_and(|response| response.status().is_success()) {
            return Ok(());
        }
        if let Ok(Some(status)) = l1.try_wait() {
            return Err(format!(
                "the dev L1 exited ({status}) as it started; see {}",
                args.dir.join("l1.log").display()
            )
            .into());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "the dev L1 did not answer on {} within {DEVNET_L1_START_WAIT:?}; see {}",
                args.l1_addr,
                args.dir.join("l1.log").display()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asks a child to stop (SIGTERM), as Ctrl-C would.
fn terminate(child: &Child) {
    if let Some(pid) = child
        .id()
        .and_then(|pid| rustix::process::Pid::from_raw(pid as i32))
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}

/// The front JSON-RPC: each request goes to a node that answers `/ready`, in turn.
#[derive(Clone)]
struct Front {
    nodes: Arc<Vec<(String, String)>>,
    ready: Arc<Vec<AtomicBool>>,
    next: Arc<AtomicUsize>,
    http: reqwest::Client,
}

impl Front {
    fn new(layout: &Layout) -> Self {
        let nodes: Vec<(String, String)> = layout
            .nodes
            .iter()
            .map(|node| {
                (
                    format!("http://127.0.0.1:{}", node.rpc),
                    format!("http://127.0.0.1:{}/ready", node.ops),
                )
            })
            .collect();
        let ready = nodes.iter().map(|_| AtomicBool::new(false)).collect();
        Self {
            nodes: Arc::new(nodes),
            ready: Arc::new(ready),
            next: Arc::default(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(70))
                .build()
                .expect("an HTTP client builds"),
        }
    }

    /// Polls every node's `/ready`, for the life of the devnet.
    async fn watch_ready(self) {
        loop {
            for (index, (_, ready_url)) in self.nodes.iter().enumerate() {
                let ready = matches!(
                    self.http.get(ready_url).timeout(Duration::from_millis(400)).send().await,
                    Ok(response) if response.status().is_success()
                );
                self.ready[index].store(ready, Ordering::Relaxed);
            }
            tokio::time::sleep(DEVNET_READY_POLL).await;
        }
    }

    fn router(self) -> axum::Router {
        axum::Router::new()
            .route("/", axum::routing::post(forward))
            .layer(axum::extract::DefaultBodyLimit::max(
                DEVNET_REQUEST_BYTES_MAX,
            ))
            .with_state(self)
    }
}

/// Passes one request to a ready node, trying the next ready one when a node does not answer
/// at all (the request never reached it, so no write is sent twice).
async fn forward(
    axum::extract::State(front): axum::extract::State<Front>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let count = front.nodes.len();
    let start = front.next.fetch_add(1, Ordering::Relaxed);
    let mut tried = 0;
    for offset in 0..count {
        let index = (start + offset) % count;
        if !front.ready[index].load(Ordering::Relaxed) {
            continue;
        }
        tried += 1;
        let answer = front
            .http
            .post(&front.nodes[index].0)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        match answer {
            Ok(response) => {
                let status = axum::http::StatusCode::from_u16(response.status().as_u16())
                    .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
                let bytes = response.bytes().await.unwrap_or_default();
                return (
                    status,
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    bytes,
                )
                    .into_response();
            }
            Err(error) if error.is_connect() => {
                front.ready[index].store(false, Ordering::Relaxed);
                continue;
            }
            Err(error) => {
                return (
                    axum::http::StatusCode::BAD_GATEWAY,
                    format!("node {} did not answer: {error}\n", index + 1),
                )
                    .into_response();
            }
        }
    }
    let reason = if tried == 0 {
        "no node is ready: the devnet is starting, or every node is down"
    } else {
        "no ready node answered"
    };
    let error = serde_json::json!({
        "jsonrpc": "2.0", "id": null,
        "error": {"code": -32000, "message": reason},
    });
    (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(error),
    )
        .into_response()
}
