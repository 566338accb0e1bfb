//! The L1 side of the command line: which L1 a node settles on (`keel node`'s L1 flags),
//! `keel l1` (the embedded dev L1 alone, for a cluster's members to share) and `keel verify`
//! (a node that follows the L1 alone).

use crate::config::{ConfigError, LogFormat};
use alloy::primitives::B256;
use alloy::signers::local::PrivateKeySigner;
use clap::Args;
use keel_node::{DevL1, DevL1Config, L1Settings, NodeConfig, NodeMode};
use keel_primitives::{ChainSpec, DEV_L1_CHAIN_ID, L1Origin, RollupConfig, SafeHeads, limits};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Default JSON-RPC address of the embedded dev L1 (the port after the L2's).
pub(crate) const DEFAULT_DEV_L1_ADDR: &str = "127.0.0.1:8546";

/// Where a node's L1 is, and how it posts to it.
#[derive(Debug, Args, Default)]
pub(crate) struct L1Args {
    /// Ethereum JSON-RPC URL of the L1 to settle on (anvil, geth, a provider); with --dev and
    /// no --l1-rpc the node runs the embedded dev L1 itself.
    #[arg(long, env = "KEEL_L1_RPC", value_name = "URL")]
    pub(crate) l1_rpc: Option<String>,
    /// Settle on no L1: a replicated chain whose `safe` and `finalized` equal `latest`.
    #[arg(long, env = "KEEL_NO_L1", conflicts_with = "l1_rpc")]
    pub(crate) no_l1: bool,
    /// The L1's block time in ms (how often it is polled, how old its head may get).
    /// [default: 12000; the embedded dev L1's own with --dev]
    #[arg(long, env = "KEEL_L1_BLOCK_TIME_MS", value_name = "N")]
    pub(crate) l1_block_time_ms: Option<u64>,
    /// The rollup config (JSON: l1_chain_id, batch_inbox, force_inbox, batcher, l1_start
    /// {number, hash}, and optionally the windows). [default with --dev: the dev rollup,
    /// starting at the L1's block 0]
    #[arg(long, env = "KEEL_ROLLUP", value_name = "FILE")]
    pub(crate) rollup: Option<PathBuf>,
    /// File holding the batcher's private key (hex). `KEEL_BATCHER_KEY` overrides it.
    /// [default with --dev: dev account 9]
    #[arg(long, env = "KEEL_BATCHER_KEY_FILE", value_name = "FILE")]
    pub(crate) batcher_key_file: Option<PathBuf>,
    /// The L1's beacon API (`http://host:port`), where derivation reads blob batches; for
    /// anvil, its own URL. Needed once any batch is posted in blobs.
    #[arg(long, env = "KEEL_L1_BEACON", value_name = "URL", requires = "l1_rpc")]
    pub(crate) l1_beacon: Option<String>,
    /// Where the batcher posts: `calldata` or `blobs` (EIP-4844, with EIP-7594 cell proofs;
    /// calldata where the L1 takes no blobs, as the embedded dev L1). [default: calldata]
    #[arg(long, env = "KEEL_BATCHER_DA", value_name = "KIND", default_value_t)]
    pub(crate) batcher_da: keel_l1::DataAvailability,
    /// JSON-RPC address of the embedded dev L1 (--dev without --l1-rpc).
    /// [default: 127.0.0.1:8546]
    #[arg(long, env = "KEEL_DEV_L1_ADDR", value_name = "HOST:PORT")]
    pub(crate) dev_l1_addr: Option<SocketAddr>,
    /// Block time of the embedded dev L1, in ms. [default: 12000, Ethereum's]
    #[arg(long, env = "KEEL_DEV_L1_BLOCK_TIME_MS", value_name = "N")]
    pub(crate) dev_l1_block_time_ms: Option<u64>,
}

/// The L1 a node will use, before anything is started.
#[derive(Debug)]
pub(crate) enum L1Plan {
    /// None: the chain settles nowhere.
    None,
    /// The embedded dev L1, started by this process.
    Embedded {
        config: DevL1Config,
        batcher: Option<PrivateKeySigner>,
        data_availability: keel_l1::DataAvailability,
    },
    /// An L1 over JSON-RPC.
    Rpc {
        url: String,
        beacon: Option<String>,
        data_availability: keel_l1::DataAvailability,
        block_time_ms: u64,
        rollup: Option<RollupConfig>,
        dev: bool,
        batcher: Option<PrivateKeySigner>,
    },
}

fn fail(path: &std::path::Path, message: String) -> ConfigError {
    ConfigError::File {
        path: path.to_path_buf(),
        message,
    }
}

/// Reads a private key in hex (with or without 0x) from `KEEL_BATCHER_KEY` or `file`.
fn batcher_key(file: Option<&PathBuf>, dev: bool) -> Result<Option<PrivateKeySigner>, ConfigError> {
    let (text, path) = match (std::env::var("KEEL_BATCHER_KEY"), file) {
        (Ok(key), _) => (key, PathBuf::from("KEEL_BATCHER_KEY")),
        (Err(_), Some(path)) => (
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?,
            path.clone(),
        ),
        (Err(_), None) if dev => {
            return Ok(Some(
                keel_primitives::dev_accounts()[keel_primitives::rollup::DEV_BATCHER_INDEX].clone(),
            ));
        }
        (Err(_), None) => return Ok(None),
    };
    let key: B256 = text
        .trim()
        .parse()
        .map_err(|error| fail(&path, format!("not a private key in hex: {error}")))?;
    PrivateKeySigner::from_bytes(&key)
        .map(Some)
        .map_err(|error| fail(&path, format!("not a private key: {error}")))
}

fn read_rollup(path: &PathBuf) -> Result<RollupConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    RollupConfig::from_json(&text).map_err(|error| fail(path, error.to_string()))
}

impl L1Args {
    /// The plan these flags describe, for a node in `datadir` (the embedded L1 keeps its chain
    /// in `datadir/l1`).
    pub(crate) fn plan(
        &self,
        dev: bool,
        cluster: bool,
        datadir: &std::path::Path,
    ) -> Result<L1Plan, ConfigError> {
        if self.no_l1 {
            return Ok(L1Plan::None);
        }
        let rollup = self.rollup.as_ref().map(read_rollup).transpose()?;
        let batcher = batcher_key(self.batcher_key_file.as_ref(), dev)?;
        match &self.l1_rpc {
            Some(url) => Ok(L1Plan::Rpc {
                url: url.clone(),
                beacon: self.l1_beacon.clone(),
                data_availability: self.batcher_da,
                block_time_ms: self
                    .l1_block_time_ms
                    .unwrap_or(limits::L1_BLOCK_TIME_MS_DEFAULT),
                rollup,
                dev,
                batcher,
            }),
            // A cluster's members share one L1: they never run one each.
            None if dev && !cluster => {
                let address = self
                    .dev_l1_addr
                    .unwrap_or_else(|| DEFAULT_DEV_L1_ADDR.parse().expect("valid address"));
                let mut config = DevL1Config::new(datadir.join("l1"), address);
                if let Some(block_time_ms) = self.dev_l1_block_time_ms {
                    config.block_time_ms = block_time_ms;
                }
                Ok(L1Plan::Embedded {
                    config,
                    batcher,
                    data_availability: self.batcher_da,
                })
            }
            None => Ok(L1Plan::None),
        }
    }
}

/// What [`L1Plan::start`] started: the settings a node takes, and the embedded L1 if this
/// process runs it.
pub(crate) struct StartedL1 {
    pub(crate) settings: Option<L1Settings>,
    pub(crate) embedded: Option<DevL1>,
}

impl L1Plan {
    /// Starts the embedded L1 (if planned) and resolves the rollup config (the dev rollup
    /// reads the L1's chain id and block 0).
    pub(crate) async fn start(self) -> Result<StartedL1, Box<dyn std::error::Error>> {
        match self {
            Self::None => Ok(StartedL1 {
                settings: None,
                embedded: None,
            }),
            Self::Embedded {
                config,
                batcher,
                data_availability,
            } => {
                let dev_l1 = tokio::task::spawn_blocking(move || DevL1::start(config)).await??;
                let start = L1Origin {
                    number: 0,
                    hash: ChainSpec::dev_l1().genesis_block().hash,
                };
                let mut settings = dev_l1.settings(RollupConfig::dev(DEV_L1_CHAIN_ID, start));
                settings.batcher = batcher;
                if data_availability == keel_l1::DataAvailability::Blobs {
                    eprintln!("the embedded dev L1 takes no blobs: the batcher posts calldata");
                }
                eprintln!(
                    "embedded dev L1: chain id {DEV_L1_CHAIN_ID}, JSON-RPC http://{}, {} ms blocks",
                    dev_l1.rpc_addr, dev_l1.block_time_ms
                );
                Ok(StartedL1 {
                    settings: Some(settings),
                    embedded: Some(dev_l1),
                })
            }
            Self::Rpc {
                url,
                beacon,
                data_availability,
                block_time_ms,
                rollup,
                dev,
                batcher,
            } => {
                let mut client = keel_l1::RpcL1::new(&url)?;
                if let Some(beacon) = &beacon {
                    client = client.with_beacon(beacon);
                }
                let client = Arc::new(client);
                let rollup = match rollup {
                    Some(rollup) => rollup,
                    None if dev => {
                        use keel_l1::L1Client;
                        let chain_id = client.chain_id().await?;
                        let genesis = client
                            .block_by_number(0)
                            .await?
                            .ok_or("the L1 has no block 0")?;
                        RollupConfig::dev(
                            chain_id,
                            L1Origin {
                                number: 0,
                                hash: genesis.hash,
                            },
                        )
                    }
                    None => {
                        return Err(
                            "--l1-rpc needs --rollup FILE (or --dev for the dev rollup)".into()
                        );
                    }
                };
                Ok(StartedL1 {
                    settings: Some(L1Settings {
                        client,
                        rollup,
                        block_time_ms,
                        confirmation_depth: limits::SEQUENCER_CONFIRMATION_DEPTH,
                        batcher,
                        data_availability,
                    }),
                    embedded: None,
                })
            }
        }
    }
}

/// Puts `started` into `config`: the L1 settings and the derived `safe`/`finalized` heads.
pub(crate) fn apply(config: &mut NodeConfig, started: &StartedL1) {
    if let Some(settings) = &started.settings {
        config.l1 = Some(settings.clone());
        config.safe_heads = Arc::new(SafeHeads::derived());
    }
}

/// `keel l1`: the embedded dev L1 on its own.
#[derive(Debug, Args)]
pub(crate) struct DevL1Args {
    /// Data directory of the L1 chain. [default: ./.keel/l1]
    #[arg(long, env = "KEEL_L1_DATADIR", value_name = "PATH")]
    datadir: Option<PathBuf>,
    /// JSON-RPC address. [default: 127.0.0.1:8546]
    #[arg(long, env = "KEEL_L1_RPC_ADDR", value_name = "HOST:PORT")]
    rpc_addr: Option<SocketAddr>,
    /// Block time in ms. [default: 12000]
    #[arg(long, env = "KEEL_L1_BLOCK_TIME_MS", value_name = "N")]
    block_time_ms: Option<u64>,
    /// Blocks `safe` trails `latest`. [default: 32]
    #[arg(long, value_name = "N")]
    safe_depth: Option<u64>,
    /// Blocks `finalized` trails `latest`. [default: 64]
    #[arg(long, value_name = "N")]
    finalized_depth: Option<u64>,
}

/// Runs the embedded dev L1 until SIGINT or SIGTERM.
pub(crate) async fn run_dev_l1(args: DevL1Args) -> Result<(), Box<dyn std::error::Error>> {
    crate::config::init_logging(LogFormat::Text);
    let mut config = DevL1Config::new(
        args.datadir.unwrap_or_else(|| PathBuf::from(".keel/l1")),
        args.rpc_addr
            .unwrap_or_else(|| DEFAULT_DEV_L1_ADDR.parse().expect("valid address")),
    );
    if let Some(block_time_ms) = args.block_time_ms {
        config.block_time_ms = block_time_ms;
    }
    if let Some(depth) = args.safe_depth {
        config.safe_depth = depth;
    }
    if let Some(depth) = args.finalized_depth {
        config.finalized_depth = depth;
    }
    let l1 = tokio::task::spawn_blocking(move || DevL1::start(config)).await??;
    println!(
        "embedded dev L1: chain id {DEV_L1_CHAIN_ID}, JSON-RPC http://{}, {} ms blocks; block 0 is {}",
        l1.rpc_addr,
        l1.block_time_ms,
        ChainSpec::dev_l1().genesis_block().hash
    );
    crate::config::wait_for_signal().await?;
    l1.shutdown().await;
    Ok(())
}

/// `keel verify`: derive the chain from the L1 alone and serve it.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The L1 to derive from (Ethereum JSON-RPC).
    #[arg(long, env = "KEEL_L1_RPC", value_name = "URL")]
    l1_rpc: String,
    /// The L1's beacon API, where blob batches are read (for anvil, its own URL).
    #[arg(long, env = "KEEL_L1_BEACON", value_name = "URL")]
    l1_beacon: Option<String>,
    /// The L2 is the embedded dev chain, and the rollup the dev rollup (unless --rollup).
    #[arg(long, env = "KEEL_DEV")]
    dev: bool,
    /// The L2's genesis file (geth's format), when not --dev.
    #[arg(long, env = "KEEL_GENESIS", value_name = "FILE")]
    genesis: Option<PathBuf>,
    /// The rollup config (JSON). [default with --dev: the dev rollup]
    #[arg(long, env = "KEEL_ROLLUP", value_name = "FILE")]
    rollup: Option<PathBuf>,
    /// Data directory. [default: ./.keel/verify]
    #[arg(long, env = "KEEL_DATADIR", value_name = "PATH")]
    datadir: Option<PathBuf>,
    /// JSON-RPC address of the derived chain. [default: 127.0.0.1:8547]
    #[arg(long, env = "KEEL_RPC_ADDR", value_name = "HOST:PORT")]
    rpc_addr: Option<SocketAddr>,
    /// Operations address (/metrics, /health). [default: none]
    #[arg(long, env = "KEEL_METRICS_ADDR", value_name = "HOST:PORT")]
    metrics_addr: Option<SocketAddr>,
    /// The L1's block time in ms. [default: 12000]
    #[arg(long, env = "KEEL_L1_BLOCK_TIME_MS", value_name = "N")]
    l1_block_time_ms: Option<u64>,
    /// A sequencer's JSON-RPC to compare with: each block where its chain differs from the
    /// derived one is reported.
    #[arg(long, value_name = "URL")]
    compare_rpc: Option<String>,
}

/// Runs a verifier until SIGINT or SIGTERM.
pub(crate) async fn run_verify(args: VerifyArgs) -> Result<(), Box<dyn std::error::Error>> {
    crate::config::init_logging(LogFormat::Text);
    let chain = crate::config::offline_chain(args.genesis.as_deref(), args.dev)?;
    let plan = L1Plan::Rpc {
        url: args.l1_rpc.clone(),
        beacon: args.l1_beacon.clone(),
        data_availability: keel_l1::DataAvailability::Calldata,
        block_time_ms: args
            .l1_block_time_ms
            .unwrap_or(limits::L1_BLOCK_TIME_MS_DEFAULT),
        rollup: args.rollup.as_ref().map(read_rollup).transpose()?,
        dev: args.dev,
        batcher: None,
    };
    let started = plan.start().await?;
    let mut config = NodeConfig {
        datadir: args
            .datadir
            .unwrap_or_else(|| PathBuf::from(".keel/verify")),
        rpc_addr: args
            .rpc_addr
            .unwrap_or_else(|| "127.0.0.1:8547".parse().expect("valid address")),
        metrics_addr: args.metrics_addr,
        block_time_ms: crate::config::DEFAULT_BLOCK_TIME_MS,
        gas_limit: chain.genesis.gas_limit,
        beneficiary: Default::default(),
        extra_data: Default::default(),
        chain,
        cluster: None,
        clock: Arc::new(keel_primitives::SystemClock),
        safe_heads: Arc::new(SafeHeads::Latest),
        l1: None,
        record_metrics: true,
        mode: NodeMode::Verifier,
        seal_on_start: false,
        state_history: keel_node::StateHistory::Archive,
    };
    apply(&mut config, &started);
    let node = keel_node::start(config).await?;
    println!(
        "keel verify: deriving from {} ; JSON-RPC on http://{}",
        args.l1_rpc,
        node.rpc_addr
            .map(|address| address.to_string())
            .unwrap_or_default()
    );
    let comparing = args.compare_rpc.map(|url| {
        let store = node.store.clone();
        tokio::spawn(compare_with(store, url))
    });
    crate::config::wait_for_signal().await?;
    if let Some(task) = comparing {
        task.abort();
    }
    node.shutdown().await;
    Ok(())
}

/// Reports every block where the sequencer at `url` holds another hash than the derived
/// chain, up to the lower of the two heads, as the derived chain grows.
async fn compare_with(store: Arc<keel_storage::Store>, url: String) {
    use alloy::providers::{Provider, RootProvider};
    let Ok(parsed) = url.parse() else {
        eprintln!("--compare-rpc {url}: not a URL");
        return;
    };
    let remote: RootProvider = RootProvider::new_http(parsed);
    let mut checked = 0u64;
    let mut reported = 0u64;
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let Ok(snapshot) = store.snapshot() else {
            continue;
        };
        let ours = snapshot.head().0;
        let Ok(theirs) = remote.get_block_number().await else {
            eprintln!("compare: {url} does not answer");
            continue;
        };
        while checked < ours.min(theirs) {
            let number = checked + 1;
            let Ok(Some(local)) = snapshot.block_hash(number) else {
                break;
            };
            match remote.get_block_by_number(number.into()).await {
                Ok(Some(block)) if block.header.hash == local => {}
                Ok(Some(block)) => println!(
                    "block {number} differs: derived {local}, {url} has {}",
                    block.header.hash
                ),
                Ok(None) => break,
                Err(error) => {
                    eprintln!("compare: {url}: {error}");
                    break;
                }
            }
            checked = number;
        }
        if checked > reported {
            println!("compare: blocks 1..={checked} checked against {url}");
            reported = checked;
        }
    }
}

/// `keel force`: send a signed L2 transaction to the force inbox on the L1.
#[derive(Debug, Args)]
pub(crate) struct ForceArgs {
    /// The L1 (Ethereum JSON-RPC).
    #[arg(long, env = "KEEL_L1_RPC", value_name = "URL")]
    l1_rpc: String,
    /// The L1 account that pays for the L1 transaction: a private key in hex, or a file
    /// holding one. `KEEL_L1_KEY` overrides it.
    #[arg(long, env = "KEEL_L1_KEY_FILE", value_name = "FILE")]
    l1_key_file: Option<PathBuf>,
    /// The rollup config (JSON), for the force inbox's address. [default: the dev rollup's]
    #[arg(long, env = "KEEL_ROLLUP", value_name = "FILE")]
    rollup: Option<PathBuf>,
    /// The signed L2 transaction (hex, as `cast mktx` prints it).
    raw: alloy::primitives::Bytes,
}

/// Forces `raw` through the L1 and waits for the L1 transaction's inclusion.
pub(crate) async fn run_force(args: ForceArgs) -> Result<(), Box<dyn std::error::Error>> {
    use keel_l1::L1Client;
    let force_inbox = match &args.rollup {
        Some(path) => read_rollup(path)?.force_inbox,
        None => keel_primitives::rollup::DEV_FORCE_INBOX,
    };
    let l2_chain_id = {
        use alloy::eips::Decodable2718;
        let envelope = alloy::consensus::TxEnvelope::decode_2718(&mut args.raw.as_ref())
            .map_err(|error| format!("not a signed transaction: {error}"))?;
        alloy::consensus::Transaction::chain_id(&envelope)
            .ok_or("the transaction names no chain id (pre-EIP-155): derivation would skip it")?
    };
    // Refuse what derivation would skip, before paying for it on the L1.
    keel_l1::decode_forced_payload(&args.raw, l2_chain_id)?;
    let key = match std::env::var("KEEL_L1_KEY") {
        Ok(key) => key,
        Err(_) => match &args.l1_key_file {
            Some(path) => std::fs::read_to_string(path)?,
            None => {
                return Err("--l1-key-file FILE or KEEL_L1_KEY: the L1 account that pays".into());
            }
        },
    };
    let key: B256 = key
        .trim()
        .parse()
        .map_err(|error| format!("the L1 key: {error}"))?;
    let signer = PrivateKeySigner::from_bytes(&key)?;
    let client = keel_l1::RpcL1::new(&args.l1_rpc)?;
    let chain_id = client.chain_id().await?;
    let nonce = client
        .nonce(signer.address(), keel_l1::NonceAt::Pending)
        .await?;
    let fees = client.fees().await?;
    let (envelope, raw) = keel_l1::sign_calldata(
        &signer,
        chain_id,
        nonce,
        force_inbox,
        args.raw.clone(),
        keel_l1::FeeCaps::for_fees(&fees),
    );
    client.send_raw_transaction(raw).await?;
    let l2_hash = alloy::primitives::keccak256(&args.raw);
    println!(
        "forced: L1 transaction {} to {force_inbox}, L2 transaction {l2_hash}",
        envelope.tx_hash()
    );
    for _ in 0..600 {
        if let Some(receipt) = client.receipt(*envelope.tx_hash()).await? {
            println!(
                "in L1 block {} ({}); the L2 includes it within the forced-inclusion window",
                receipt.block_number,
                if receipt.succeeded {
                    "succeeded"
                } else {
                    "FAILED: it does not count"
                }
            );
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    Err("the L1 transaction was not included within 5 minutes".into())
}
