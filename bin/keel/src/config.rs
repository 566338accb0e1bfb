//! `keel node`: flags, environment variables and the TOML config file, merged in that order of
//! precedence (a flag beats its variable, which beats the file, which beats the default).

use alloy::primitives::{Address, Bytes};
use clap::Args;
use keel_node::NodeConfig;
use keel_primitives::ChainSpec;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Default JSON-RPC address (anvil's and geth's port).
pub(crate) const DEFAULT_RPC_ADDR: &str = "127.0.0.1:8545";
/// Default operations address (`/metrics`, `/health`, `/ready`).
pub(crate) const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9545";
/// Default block time.
pub(crate) const DEFAULT_BLOCK_TIME_MS: u64 = 1_000;

/// Run a sequencer node.
///
/// With `--dev` the node runs the embedded dev chain (chain id 31337, the standard test
/// mnemonic's first ten accounts funded with 10,000 ether each) in `./.keel/dev` unless
/// `--datadir` says otherwise. Otherwise `--genesis` names a geth-format genesis.json.
#[derive(Debug, Args)]
pub(crate) struct NodeArgs {
    /// Run the embedded dev chain.
    #[arg(long, env = "KEEL_DEV")]
    dev: bool,
    /// TOML config file; its keys are the long flag names with underscores
    /// (datadir, rpc_addr, metrics_addr, block_time_ms, gas_limit, genesis, beneficiary,
    /// extra_data, dev, log_format, state_history_blocks).
    #[arg(long, env = "KEEL_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Genesis file in geth's genesis.json format.
    #[arg(long, env = "KEEL_GENESIS", value_name = "FILE")]
    genesis: Option<PathBuf>,
    /// Data directory (the store is `chain.redb` inside). [default: ./.keel/dev with --dev]
    #[arg(long, env = "KEEL_DATADIR", value_name = "PATH")]
    datadir: Option<PathBuf>,
    /// JSON-RPC address, HTTP and WebSocket on one port. [default: 127.0.0.1:8545]
    #[arg(long, env = "KEEL_RPC_ADDR", value_name = "HOST:PORT")]
    rpc_addr: Option<SocketAddr>,
    /// Operations address serving /metrics, /health and /ready. [default: 127.0.0.1:9545]
    #[arg(long, env = "KEEL_METRICS_ADDR", value_name = "HOST:PORT")]
    metrics_addr: Option<SocketAddr>,
    /// Serve no operations endpoint.
    #[arg(long, env = "KEEL_NO_METRICS")]
    no_metrics: bool,
    /// Milliseconds between blocks (50 to 60000). [default: 1000]
    #[arg(long, env = "KEEL_BLOCK_TIME_MS", value_name = "N")]
    block_time_ms: Option<u64>,
    /// Gas limit of sealed blocks. [default: the genesis gasLimit]
    #[arg(long, env = "KEEL_GAS_LIMIT", value_name = "N")]
    gas_limit: Option<u64>,
    /// Address receiving priority fees. [default: the zero address]
    #[arg(long, env = "KEEL_BENEFICIARY", value_name = "ADDRESS")]
    beneficiary: Option<Address>,
    /// Extra data of sealed headers, hex, at most 32 bytes. [default: empty]
    #[arg(long, env = "KEEL_EXTRA_DATA", value_name = "HEX")]
    extra_data: Option<Bytes>,
    /// Log format: text or json. Levels come from RUST_LOG (default: info).
    #[arg(long, env = "KEEL_LOG_FORMAT", value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    /// Serve state reads (eth_getBalance, eth_call, ...) at the last N blocks besides the head,
    /// and prune older state history in the background (never above the finalized block);
    /// 0 keeps the head's state only. [default: every block, an archive]
    #[arg(long, env = "KEEL_STATE_HISTORY_BLOCKS", value_name = "N")]
    state_history_blocks: Option<u64>,
    /// Cluster file (TOML: members with id, raft_addr, rpc_addr; secret_file): run as a
    /// member of a Raft cluster instead of a single node. Needs --node-id.
    #[arg(long, env = "KEEL_CLUSTER", value_name = "FILE")]
    cluster: Option<PathBuf>,
    /// This node's id in the cluster file.
    #[arg(long, env = "KEEL_NODE_ID", value_name = "N")]
    node_id: Option<u64>,
    /// Admin API address (cluster mode; needs --admin-token-file or KEEL_ADMIN_TOKEN).
    #[arg(long, env = "KEEL_ADMIN_ADDR", value_name = "HOST:PORT")]
    admin_addr: Option<SocketAddr>,
    /// File holding the admin API's bearer token (at least 16 bytes).
    #[arg(long, env = "KEEL_ADMIN_TOKEN_FILE", value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// Check the configuration (flags, variables, the config and cluster files, the secrets)
    /// and exit without starting: 0 when a node would start with it.
    #[arg(long)]
    check_config: bool,
    /// The L1 the chain settles on.
    #[command(flatten)]
    l1: crate::l1::L1Args,
}

/// The cluster file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClusterFile {
    /// File holding the shared peer secret (relative to the cluster file); the variable
    /// `KEEL_CLUSTER_SECRET` takes precedence.
    secret_file: Option<PathBuf>,
    /// Raft heartbeat interval in ms (default 100).
    heartbeat_ms: Option<u64>,
    /// Raft election timeout in ms, lower bound (default 500).
    election_timeout_ms: Option<u64>,
    /// Raft election timeout in ms, upper bound (default 1.2 times the lower). It is also
    /// openraft's leader lease: how long a follower that heard from its leader refuses other
    /// candidates. A failover takes about this plus the lower bound.
    election_timeout_max_ms: Option<u64>,
    /// Log entries between snapshots (default 10000); half as many stay in the log after one.
    snapshot_entries: Option<u64>,
    /// Rotating leadership: a healthy leader hands over to the next ready voter (in id order,
    /// skipping unready ones) after leading this many ms. Unset: no rotation.
    rotation_interval_ms: Option<u64>,
    /// The members.
    members: Vec<ClusterMember>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterMember {
    id: u64,
    raft_addr: SocketAddr,
    /// Where the peer endpoint listens, when not `raft_addr` (behind a proxy or NAT).
    raft_listen: Option<SocketAddr>,
    rpc_addr: SocketAddr,
    /// Where its admin API listens (its `--admin-addr`), so that the others can name it.
    admin_addr: Option<SocketAddr>,
    /// Where its operations endpoint listens (its `--metrics-addr`), so that the others'
    /// dashboards can show it.
    ops_addr: Option<SocketAddr>,
    /// Starts as a non-voting learner, to be added and promoted by an operator.
    #[serde(default)]
    learner: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, clap::ValueEnum, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// The TOML config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    dev: Option<bool>,
    genesis: Option<PathBuf>,
    datadir: Option<PathBuf>,
    rpc_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    block_time_ms: Option<u64>,
    gas_limit: Option<u64>,
    beneficiary: Option<Address>,
    extra_data: Option<Bytes>,
    log_format: Option<LogFormat>,
    state_history_blocks: Option<u64>,
}

/// What went wrong turning arguments into a node configuration.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for keel.
    #[error("config file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The genesis is unusable.
    #[error("genesis {path}: {message}")]
    Genesis {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Neither a genesis nor --dev.
    #[error("no chain: pass --dev for the embedded dev chain, or --genesis FILE")]
    NoChain,
    /// The cluster file is unusable.
    #[error("cluster file {path}: {message}")]
    Cluster {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

fn load_cluster(
    path: &std::path::Path,
    node_id: Option<u64>,
) -> Result<keel_node::ClusterConfig, ConfigError> {
    let fail = |message: String| ConfigError::Cluster {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|error| fail(error.to_string()))?;
    let file: ClusterFile = toml::from_str(&text).map_err(|error| fail(error.to_string()))?;
    let node_id = node_id.ok_or_else(|| fail("--node-id is required with --cluster".into()))?;
    let mut members = std::collections::BTreeMap::new();
    for member in file.members {
        let entry = keel_node::Member {
            raft_addr: member.raft_addr,
            raft_listen: member.raft_listen.unwrap_or(member.raft_addr),
            rpc_addr: member.rpc_addr,
            admin_addr: member.admin_addr,
            ops_addr: member.ops_addr,
            learner: member.learner,
        };
        if members.insert(member.id, entry).is_some() {
            return Err(fail(format!("member {} appears twice", member.id)));
        }
    }
    if !members.contains_key(&node_id) {
        return Err(fail(format!("node id {node_id} is not among the members")));
    }
    let secret = match std::env::var("KEEL_CLUSTER_SECRET") {
        Ok(secret) => secret,
        Err(_) => {
            let secret_file = file.secret_file.ok_or_else(|| {
                fail("no secret: set secret_file or the KEEL_CLUSTER_SECRET variable".into())
            })?;
            let secret_path = path
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join(secret_file);
            std::fs::read_to_string(&secret_path)
                .map_err(|error| fail(format!("reading {}: {error}", secret_path.display())))?
                .trim()
                .to_string()
        }
    };
    let election_timeout_ms = file.election_timeout_ms.unwrap_or(500);
    let election_timeout_max_ms = file
        .election_timeout_max_ms
        .unwrap_or(election_timeout_ms + election_timeout_ms / 5);
    if election_timeout_max_ms <= election_timeout_ms {
        return Err(fail(format!(
            "election_timeout_max_ms ({election_timeout_max_ms}) must exceed election_timeout_ms \
             ({election_timeout_ms})"
        )));
    }
    let rotation_interval = match file.rotation_interval_ms {
        None => None,
        Some(ms) if ms < keel_primitives::limits::ROTATION_INTERVAL_MS_MIN => {
            return Err(fail(format!(
                "rotation_interval_ms ({ms}) is below the minimum of {} ms: a leader must lead \
                 long enough to seal between hand-overs",
                keel_primitives::limits::ROTATION_INTERVAL_MS_MIN
            )));
        }
        Some(ms) => Some(std::time::Duration::from_millis(ms)),
    };
    Ok(keel_node::ClusterConfig {
        node_id,
        members,
        secret: keel_node::ClusterSecret::new(&secret).map_err(|error| fail(error.to_string()))?,
        heartbeat_ms: file.heartbeat_ms.unwrap_or(100),
        election_timeout_ms,
        election_timeout_max_ms,
        snapshot_entries: file.snapshot_entries.unwrap_or(10_000).max(2),
        admin: None,
        rotation_interval,
    })
}

impl NodeArgs {
    /// The node configuration these arguments (and the file they name) describe.
    pub(crate) fn resolve(self) -> Result<(NodeConfig, LogFormat, crate::l1::L1Plan), ConfigError> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|error| ConfigError::File {
                    path: path.clone(),
                    message: error.to_string(),
                })?
            }
            None => FileConfig::default(),
        };
        let dev = self.dev || file.dev.unwrap_or(false);
        let genesis = self.genesis.or(file.genesis);
        let chain = match (&genesis, dev) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                ChainSpec::from_genesis_json(&text).map_err(|error| ConfigError::Genesis {
                    path: path.clone(),
                    message: error.to_string(),
                })?
            }
            (None, true) => ChainSpec::dev(),
            (None, false) => return Err(ConfigError::NoChain),
        };
        let datadir = self.datadir.or(file.datadir).unwrap_or_else(|| {
            if dev {
                PathBuf::from(".keel/dev")
            } else {
                PathBuf::from(".keel/data")
            }
        });
        let metrics_addr = if self.no_metrics {
            None
        } else {
            Some(
                self.metrics_addr
                    .or(file.metrics_addr)
                    .unwrap_or_else(|| DEFAULT_METRICS_ADDR.parse().expect("valid address")),
            )
        };
        let gas_limit = self
            .gas_limit
            .or(file.gas_limit)
            .unwrap_or(chain.genesis.gas_limit);
        let mut cluster = match &self.cluster {
            Some(path) => Some(load_cluster(path, self.node_id)?),
            None => None,
        };
        if let (Some(cluster), Some(address)) = (cluster.as_mut(), self.admin_addr) {
            let fail = |message: String| ConfigError::Cluster {
                path: self.admin_token_file.clone().unwrap_or_default(),
                message,
            };
            let token = match std::env::var("KEEL_ADMIN_TOKEN") {
                Ok(token) => token,
                Err(_) => {
                    let path = self.admin_token_file.as_ref().ok_or_else(|| {
                        fail("--admin-addr needs --admin-token-file or KEEL_ADMIN_TOKEN".into())
                    })?;
                    std::fs::read_to_string(path)
                        .map_err(|error| fail(error.to_string()))?
                        .trim()
                        .to_string()
                }
            };
            let token =
                keel_node::ClusterSecret::new(&token).map_err(|error| fail(error.to_string()))?;
            cluster.admin = Some((address, token));
        }
        // A cluster member answers JSON-RPC where the cluster file says, unless told otherwise.
        let member_rpc = cluster
            .as_ref()
            .map(|cluster| cluster.members[&cluster.node_id].rpc_addr);
        let config = NodeConfig {
            datadir,
            rpc_addr: self
                .rpc_addr
                .or(file.rpc_addr)
                .or(member_rpc)
                .unwrap_or_else(|| DEFAULT_RPC_ADDR.parse().expect("valid address")),
            metrics_addr,
            block_time_ms: self
                .block_time_ms
                .or(file.block_time_ms)
                .unwrap_or(DEFAULT_BLOCK_TIME_MS),
            gas_limit,
            beneficiary: self.beneficiary.or(file.beneficiary).unwrap_or_default(),
            extra_data: self.extra_data.or(file.extra_data).unwrap_or_default(),
            chain,
            cluster,
            clock: std::sync::Arc::new(keel_primitives::SystemClock),
            safe_heads: std::sync::Arc::new(keel_primitives::SafeHeads::Latest),
            l1: None,
            record_metrics: true,
            mode: Default::default(),
            seal_on_start: false,
            state_history: match self.state_history_blocks.or(file.state_history_blocks) {
                Some(blocks) => keel_node::StateHistory::Window(blocks),
                None => keel_node::StateHistory::Archive,
            },
        };
        let log_format = self
            .log_format
            .or(file.log_format)
            .unwrap_or(LogFormat::Text);
        let plan = self
            .l1
            .plan(dev, config.cluster.is_some(), &config.datadir)?;
        Ok((config, log_format, plan))
    }
}

pub(crate) fn init_logging(format: LogFormat) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a log written to a file or a journal stays plain text.
    let lines = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let lines = match format {
        LogFormat::Text => lines.boxed(),
        LogFormat::Json => lines.json().boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(lines.with_filter(PeerRetryNoise))
        .init();
}

/// Drops openraft's ERROR and WARN lines for each failed retry to a peer that is down (two a
/// second, or one per block for the leadership check), which made one stopped peer look like
/// a failing cluster. keel's peer network logs each change of a peer's reachability once instead
/// ("peer unreachable", "peer reachable again").
struct PeerRetryNoise;

impl<S> tracing_subscriber::layer::Filter<S> for PeerRetryNoise {
    fn enabled(
        &self,
        _metadata: &tracing::Metadata<'_>,
        _context: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        true
    }

    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        _context: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        let metadata = event.metadata();
        if *metadata.level() > tracing::Level::WARN || !metadata.target().starts_with("openraft") {
            return true;
        }
        struct Text(String);
        impl tracing::field::Visit for Text {
            fn record_debug(
                &mut self,
                _field: &tracing::field::Field,
                value: &dyn std::fmt::Debug,
            ) {
                use std::fmt::Write;
                let _ = write!(self.0, "{value:?} ");
            }
        }
        let mut text = Text(String::new());
        event.record(&mut text);
        !(text.0.contains("Unreachable node")
            || text.0.contains("timeout while confirming leadership")
            || text.0.contains("backoff"))
    }
}

/// Waits for SIGINT or SIGTERM.
pub(crate) async fn wait_for_signal() -> std::io::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down");
    Ok(())
}

/// Runs a node (and, with `--dev`, the embedded dev L1) until SIGINT or SIGTERM.
pub(crate) async fn run_node(args: NodeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let check_only = args.check_config;
    let (mut config, log_format, plan) = args.resolve()?;
    if check_only {
        config.validate()?;
        let role = match &config.cluster {
            Some(cluster) => format!(
                "member {} of a {}-member cluster",
                cluster.node_id,
                cluster.members.len()
            ),
            None => "a single node".to_string(),
        };
        println!(
            "configuration is valid: {role}, chain {}, data in {}",
            config.chain.chain_id,
            config.datadir.display()
        );
        return Ok(());
    }
    init_logging(log_format);
    let started = plan.start().await?;
    crate::l1::apply(&mut config, &started);
    let node = keel_node::start(config).await?;
    wait_for_signal().await?;
    node.shutdown().await;
    if let Some(l1) = started.embedded {
        l1.shutdown().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: NodeArgs,
    }

    fn parse(args: &[&str]) -> NodeArgs {
        Wrapper::parse_from(std::iter::once("keel").chain(args.iter().copied())).args
    }

    #[test]
    fn flags_beat_the_file_which_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keel.toml");
        std::fs::write(
            &file,
            "dev = true\nblock_time_ms = 250\ngas_limit = 60000000\n",
        )
        .unwrap();
        let (config, _, _) = parse(&["--config", file.to_str().unwrap(), "--block-time-ms", "100"])
            .resolve()
            .unwrap();
        assert_eq!(config.block_time_ms, 100);
        assert_eq!(config.gas_limit, 60_000_000);
        assert_eq!(config.rpc_addr.to_string(), DEFAULT_RPC_ADDR);
        assert_eq!(config.datadir, PathBuf::from(".keel/dev"));
        assert_eq!(config.chain.chain_id, keel_primitives::DEV_CHAIN_ID);
    }

    #[test]
    fn bad_configuration_is_refused_with_a_reason() {
        assert!(matches!(parse(&[]).resolve(), Err(ConfigError::NoChain)));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keel.toml");
        std::fs::write(&file, "unknown_key = 1\n").unwrap();
        let error = parse(&["--config", file.to_str().unwrap()])
            .resolve()
            .unwrap_err();
        assert!(error.to_string().contains("unknown field"), "{error}");
        let genesis = dir.path().join("genesis.json");
        std::fs::write(&genesis, "{}").unwrap();
        let error = parse(&["--genesis", genesis.to_str().unwrap()])
            .resolve()
            .unwrap_err();
        assert!(error.to_string().contains("chainId"), "{error}");
    }

    #[test]
    fn cluster_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), "a-sufficiently-long-secret\n").unwrap();
        let members = "[[members]]\nid = 1\nraft_addr = \"127.0.0.1:7101\"\nrpc_addr = \"127.0.0.1:8601\"\n\
                       [[members]]\nid = 2\nraft_addr = \"127.0.0.1:7102\"\nrpc_addr = \"127.0.0.1:8602\"\n";
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.to_str().unwrap().to_string()
        };
        let good = write("good.toml", format!("secret_file = \"secret\"\n{members}"));
        let (config, _, _) = parse(&["--dev", "--cluster", &good, "--node-id", "2"])
            .resolve()
            .unwrap();
        let cluster = config.cluster.expect("a cluster member");
        assert_eq!(cluster.node_id, 2);
        assert_eq!(cluster.members.len(), 2);
        assert_eq!(
            config.rpc_addr.to_string(),
            "127.0.0.1:8602",
            "the member's rpc_addr"
        );
        let table = [
            (
                vec!["--dev", "--cluster", good.as_str()],
                "--node-id is required",
            ),
            (
                vec!["--dev", "--cluster", good.as_str(), "--node-id", "9"],
                "not among the members",
            ),
        ];
        for (args, expected) in table {
            let error = parse(&args).resolve().unwrap_err().to_string();
            assert!(error.contains(expected), "{args:?}: {error}");
        }
        let duplicate = write(
            "dup.toml",
            format!("secret_file = \"secret\"\n{members}{members}"),
        );
        let error = parse(&["--dev", "--cluster", &duplicate, "--node-id", "1"])
            .resolve()
            .unwrap_err();
        assert!(error.to_string().contains("appears twice"), "{error}");
        let short = write("short-secret", "short".into());
        let weak = write("weak.toml", format!("secret_file = \"{short}\"\n{members}"));
        let error = parse(&["--dev", "--cluster", &weak, "--node-id", "1"])
            .resolve()
            .unwrap_err();
        assert!(error.to_string().contains("at least 16 bytes"), "{error}");
    }
}

/// The chain of a command that opens a data directory without starting a node (`recover`,
/// `restore`, `verify`): the genesis file's, or the dev chain's.
pub(crate) fn offline_chain(
    genesis: Option<&std::path::Path>,
    dev: bool,
) -> Result<ChainSpec, Box<dyn std::error::Error>> {
    Ok(match (genesis, dev) {
        (Some(path), _) => ChainSpec::from_genesis_json(&std::fs::read_to_string(path)?)?,
        (None, true) => ChainSpec::dev(),
        (None, false) => return Err(ConfigError::NoChain.into()),
    })
}

/// `keel recover`.
#[derive(Debug, Args)]
pub(crate) struct RecoverArgs {
    /// The stopped node's data directory (the most advanced survivor's).
    #[arg(long, value_name = "PATH")]
    datadir: PathBuf,
    /// The chain is the embedded dev chain.
    #[arg(long)]
    dev: bool,
    /// The chain's genesis file, when not --dev.
    #[arg(long, value_name = "FILE")]
    genesis: Option<PathBuf>,
}

/// Forgets the old cluster's Raft log and membership in `datadir`, keeping the chain.
pub(crate) fn recover(args: RecoverArgs) -> Result<(), Box<dyn std::error::Error>> {
    let chain = offline_chain(args.genesis.as_deref(), args.dev)?;
    let store = std::sync::Arc::new(keel_storage::Store::open(
        &args.datadir.join("chain.redb"),
        &chain,
    )?);
    let log = args.datadir.join("raft.redb");
    if log.exists() {
        // A member's chain store defers its blocks' fsync to the Raft log: what a crash took
        // from the store is applied again from the log before the log goes.
        let mut raft_log = keel_cluster::LogStore::open(&log)?;
        let mut machine = keel_cluster::StateMachine::new(chain.clone(), store.clone());
        let applied = tokio::runtime::Builder::new_current_thread()
            .build()?
            .block_on(machine.apply_logged(&mut raft_log))?;
        if applied > 0 {
            println!("applied {applied} committed Raft entries the chain store had not kept");
        }
    }
    keel_cluster::StateMachine::forget_raft_position(&store)?;
    let (number, hash) = store.snapshot()?.head();
    drop(store);
    if log.exists() {
        std::fs::remove_file(&log)?;
    }
    println!(
        "{} now holds block {number} ({hash}) and no Raft state: start it as the lowest id of a \
         new cluster file to found the new cluster, then add the others as learners",
        args.datadir.display()
    );
    Ok(())
}

/// `keel restore`.
#[derive(Debug, Args)]
pub(crate) struct RestoreArgs {
    /// The backup directory (`keel admin backup --dir` wrote it).
    #[arg(long, value_name = "PATH")]
    from: PathBuf,
    /// The new member's data directory: absent or empty.
    #[arg(long, value_name = "PATH")]
    datadir: PathBuf,
    /// The chain is the embedded dev chain.
    #[arg(long)]
    dev: bool,
    /// The chain's genesis file, when not --dev.
    #[arg(long, value_name = "FILE")]
    genesis: Option<PathBuf>,
}

/// Puts a backup's chain into a new data directory, checked: a finished backup (its manifest),
/// of this chain (the genesis), whole (the head the manifest names). The directory then holds
/// no Raft log: the node joins as a learner and catches up from the backup's head.
pub(crate) fn restore(args: RestoreArgs) -> Result<(), Box<dyn std::error::Error>> {
    let chain = offline_chain(args.genesis.as_deref(), args.dev)?;
    let manifest_path = args.from.join(keel_node::BACKUP_MANIFEST);
    let manifest: serde_json::Value = match std::fs::read_to_string(&manifest_path) {
        Ok(text) => serde_json::from_str(&text).map_err(|error| {
            format!(
                "{} is not a backup manifest: {error}",
                manifest_path.display()
            )
        })?,
        Err(error) => {
            return Err(format!(
                "{} is not a finished backup (reading {}: {error}): take one with `keel admin \
                 backup --dir`",
                args.from.display(),
                manifest_path.display()
            )
            .into());
        }
    };
    let head = manifest["head"]
        .as_u64()
        .ok_or_else(|| format!("{} names no head", manifest_path.display()))?;
    if manifest["chain_id"].as_u64() != Some(chain.chain_id) {
        return Err(format!(
            "the backup is of chain {}, and this node's chain is {}: pass the right --genesis",
            manifest["chain_id"], chain.chain_id
        )
        .into());
    }
    for file in ["chain.redb", "raft.redb", "derived.redb"] {
        if args.datadir.join(file).exists() {
            return Err(format!(
                "{} holds a node already ({file}): restore into a new, empty data directory",
                args.datadir.display()
            )
            .into());
        }
    }
    std::fs::create_dir_all(&args.datadir)?;
    let partial = args.datadir.join("chain.redb.partial");
    let target = args.datadir.join("chain.redb");
    eprintln!(
        "copying {} ({:.1} MB) …",
        args.from.join("chain.redb").display(),
        manifest["bytes"].as_f64().unwrap_or(0.0) / 1e6
    );
    std::fs::copy(args.from.join("chain.redb"), &partial)
        .map_err(|error| format!("copying the backup's chain.redb: {error}"))?;
    std::fs::File::open(&partial)?.sync_all()?;
    std::fs::rename(&partial, &target)?;
    std::fs::File::open(&args.datadir)?.sync_all()?;
    // Opening checks the genesis; the head must be the manifest's.
    let store = keel_storage::Store::open(&target, &chain).map_err(|error| {
        let _ = std::fs::remove_file(&target);
        format!("the backup does not open as this chain's store: {error}")
    })?;
    let (number, hash) = store.snapshot()?.head();
    drop(store);
    if number != head {
        std::fs::remove_file(&target)?;
        return Err(format!(
            "the backup's store is at block {number}, its manifest says {head}: the copy is \
             damaged, take another backup"
        )
        .into());
    }
    println!(
        "{} now holds block {number} ({hash}) from the backup and no Raft log. Next: give it a \
         new id in every cluster file with `learner = true`, start it, then on the leader \
         `keel admin add-learner --id N`, and `keel admin promote --id N` once caught up. Never \
         start it under the id of a member that still votes (docs/operations.md, \"Backup and \
         restore\").",
        args.datadir.display()
    );
    Ok(())
}
