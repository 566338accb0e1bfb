//! `keel bench`: throughput and latency of any Ethereum JSON-RPC endpoint (keel or a peer such
//! as anvil, on the same workload), the ECDSA recovery ceiling, and the state root cost.
//!
//! The RPC benchmark pre-signs EIP-1559 transfers from many fresh senders (funded first from
//! the dev mnemonic's first account), sends them in JSON-RPC batches over several connections
//! as fast as the endpoint takes them, and watches blocks for inclusion: a transaction's
//! latency runs from just before its batch is sent to when its block is first seen.

use alloy::consensus::{Transaction as _, TxEip1559, TxEnvelope};
use alloy::eips::eip2718::Encodable2718;
use alloy::primitives::{Address, B256, TxKind, U256, keccak256};
use alloy::signers::local::PrivateKeySigner;
use clap::{Args, Subcommand};
use keel_primitives::{ChainSpec, dev_accounts, sign_transaction};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What to measure.
#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Sustained transfers/s, gas/s and send-to-inclusion latency of a JSON-RPC endpoint.
    Rpc(RpcArgs),
    /// Send-to-receipt latency under an open-loop load (a fixed send rate), with HDR
    /// percentiles (p50, p99, p99.9, max), over one endpoint or a cluster's nodes.
    Latency(crate::bench_latency::LatencyArgs),
    /// ECDSA sender recoveries per second on one core.
    Recover(RecoverArgs),
    /// Cost of sealing a block (state root included) at a given number of accounts.
    StateRoot(StateRootArgs),
    /// State history: commit cost with history on and off, bytes per block and per transfer,
    /// reads at older blocks against the head, and tracing a block of transfers.
    History(crate::bench_history::HistoryArgs),
    /// Leader failover of a three-process cluster: gap between blocks and blocks lost.
    Failover(crate::failover::FailoverArgs),
    /// The batcher's compression on real batches (zstd against brotli) and the L1 cost per
    /// L2 transfer, as calldata and as blobs.
    Batch(crate::bench_batch::BatchArgs),
    /// The rollup's L1 side on the embedded dev L1: the batcher under a sustained load, its L1
    /// cost, derivation speed, and forced-inclusion latency (live, and with no sequencer).
    L1(crate::bench_l1::L1BenchArgs),
}

/// `keel bench rpc`.
#[derive(Debug, Args)]
pub(crate) struct RpcArgs {
    /// Endpoint to measure.
    #[arg(long, default_value = "http://127.0.0.1:8545")]
    rpc: String,
    /// Label of the endpoint in the report.
    #[arg(long, default_value = "endpoint")]
    label: String,
    /// Transfers to send.
    #[arg(long, default_value_t = 50_000)]
    transactions: usize,
    /// Distinct senders.
    #[arg(long, default_value_t = 500)]
    senders: usize,
    /// Concurrent HTTP connections sending.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Transactions per JSON-RPC batch.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Give up waiting for inclusion after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
    /// Print the result as JSON too.
    #[arg(long)]
    json: bool,
}

/// `keel bench recover`.
#[derive(Debug, Args)]
pub(crate) struct RecoverArgs {
    /// Signatures to recover.
    #[arg(long, default_value_t = 20_000)]
    signatures: usize,
}

/// `keel bench state-root`.
#[derive(Debug, Args)]
pub(crate) struct StateRootArgs {
    /// Accounts in the state.
    #[arg(long, default_value_t = 10_000)]
    accounts: usize,
    /// Blocks to seal (the median is reported).
    #[arg(long, default_value_t = 5)]
    blocks: usize,
    /// Transfers per block.
    #[arg(long, default_value_t = 1_000)]
    transfers: usize,
}

/// Runs a benchmark and prints its table.
pub(crate) async fn run(command: BenchCommand) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        BenchCommand::Rpc(args) => rpc(args)
            .await
            .map_err(|error| error as Box<dyn std::error::Error>),
        BenchCommand::Recover(args) => {
            recover(args);
            Ok(())
        }
        BenchCommand::Latency(args) => crate::bench_latency::run(args)
            .await
            .map_err(|error| error as Box<dyn std::error::Error>),
        BenchCommand::Failover(args) => crate::failover::run(args)
            .await
            .map_err(|error| error as Box<dyn std::error::Error>),
        BenchCommand::L1(args) => crate::bench_l1::run(args).await,
        BenchCommand::Batch(args) => {
            tokio::task::spawn_blocking(move || crate::bench_batch::run(args))
                .await?
                .map_err(|error| error as Box<dyn std::error::Error>)
        }
        BenchCommand::History(args) => {
            tokio::task::spawn_blocking(move || crate::bench_history::run(args))
                .await?
                .map_err(|error| error as Box<dyn std::error::Error>)
        }
        BenchCommand::StateRoot(args) => tokio::task::spawn_blocking(move || state_root(args))
            .await?
            .map_err(|error| error as Box<dyn std::error::Error>),
    }
}

/// A node's answer as JSON; an answer that is not (an HTTP error such as 429 "Too many
/// connections") is an error naming its status and the start of its text, so that a report
/// counts refusals by what they were.
async fn json_answer(response: reqwest::Response) -> Result<Value, BoxError> {
    let status = response.status();
    let body = response.bytes().await?;
    serde_json::from_slice(&body).map_err(|_| {
        let text = String::from_utf8_lossy(&body[..body.len().min(120)]);
        format!("HTTP {}: {}", status.as_u16(), text.trim()).into()
    })
}

pub(crate) struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) url: String,
}

impl Client {
    pub(crate) async fn call(&self, method: &str, params: Value) -> Result<Value, BoxError> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let response = json_answer(self.http.post(&self.url).json(&body).send().await?).await?;
        if let Some(error) = response.get("error") {
            return Err(format!("{method}: {error}").into());
        }
        Ok(response["result"].clone())
    }

    /// Sends raw transactions in one batch; returns the error messages of refused ones.
    async fn send_batch(&self, raws: &[String]) -> Result<Vec<String>, BoxError> {
        let body: Vec<Value> = raws
            .iter()
            .enumerate()
            .map(|(id, raw)| {
                json!({"jsonrpc": "2.0", "id": id, "method": "eth_sendRawTransaction", "params": [raw]})
            })
            .collect();
        let response = json_answer(self.http.post(&self.url).json(&body).send().await?).await?;
        let mut errors = Vec::new();
        match response {
            Value::Array(items) => {
                for item in items {
                    if let Some(error) = item.get("error") {
                        errors.push(error["message"].as_str().unwrap_or("?").to_string());
                    }
                }
            }
            other => errors.push(format!("batch refused: {other}")),
        }
        Ok(errors)
    }
}

pub(crate) fn quantity(value: &Value) -> Result<u64, BoxError> {
    let text = value.as_str().ok_or("quantity is not a string")?;
    Ok(u64::from_str_radix(text.trim_start_matches("0x"), 16)?)
}

pub(crate) fn transfer(
    signer: &PrivateKeySigner,
    chain_id: u64,
    nonce: u64,
    to: Address,
    value: U256,
    max_fee: u128,
) -> TxEnvelope {
    sign_transaction(
        signer,
        TxEip1559 {
            chain_id,
            nonce,
            gas_limit: 21_000,
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: 1_000_000,
            to: TxKind::Call(to),
            value,
            ..Default::default()
        }
        .into(),
    )
}

/// Signs `count` transactions on every core.
fn sign_all<F>(count: usize, sign: F) -> Vec<TxEnvelope>
where
    F: Fn(usize) -> TxEnvelope + Sync,
{
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let chunk = count.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..count)
            .step_by(chunk)
            .map(|start| {
                let sign = &sign;
                scope.spawn(move || {
                    (start..(start + chunk).min(count))
                        .map(sign)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().expect("signer thread"))
            .collect()
    })
}

fn percentile(sorted: &[f64], percent: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * percent / 100.0).round() as usize;
    sorted[index]
}

async fn wait_for_nonce(
    client: &Client,
    address: Address,
    nonce: u64,
    timeout: Duration,
) -> Result<(), BoxError> {
    let deadline = Instant::now() + timeout;
    loop {
        let current = quantity(
            &client
                .call("eth_getTransactionCount", json!([address, "latest"]))
                .await?,
        )?;
        if current >= nonce {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{address} reached nonce {current}, not {nonce}, in time").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `count` fresh senders (new keys each run, so reruns against one chain start at nonce 0),
/// each funded by dev account 0 for `per_sender` transfers at `max_fee`, once the funding is
/// included.
pub(crate) async fn fund_senders(
    client: &Client,
    label: &str,
    count: usize,
    per_sender: usize,
    max_fee: u128,
    batch: usize,
    timeout: Duration,
) -> Result<Vec<PrivateKeySigner>, BoxError> {
    let chain_id = quantity(&client.call("eth_chainId", json!([])).await?)?;
    let run_seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let senders: Vec<PrivateKeySigner> = (0..count)
        .map(|index| {
            let key = keccak256(format!("keel-bench-{run_seed}-{index}"));
            PrivateKeySigner::from_bytes(&key)
                .expect("a keccak is a valid key with overwhelming odds")
        })
        .collect();
    let funder = dev_accounts().remove(0);
    let funder_nonce = quantity(
        &client
            .call(
                "eth_getTransactionCount",
                json!([funder.address(), "pending"]),
            )
            .await?,
    )?;
    let per_sender = per_sender as u128;
    let funding_value = U256::from(per_sender * 21_000 * max_fee * 2 + 1_000_000_000_000_000);
    let funding: Vec<String> = senders
        .iter()
        .enumerate()
        .map(|(index, sender)| {
            let tx = transfer(
                &funder,
                chain_id,
                funder_nonce + index as u64,
                sender.address(),
                funding_value,
                max_fee,
            );
            alloy::hex::encode_prefixed(tx.encoded_2718())
        })
        .collect();
    eprintln!("[{}] funding {} senders", label, senders.len());
    for batch in funding.chunks(batch) {
        let errors = client.send_batch(batch).await?;
        if let Some(error) = errors.first() {
            return Err(format!("funding refused: {error}").into());
        }
    }
    wait_for_nonce(
        client,
        funder.address(),
        funder_nonce + senders.len() as u64,
        timeout,
    )
    .await?;

    Ok(senders)
}

async fn rpc(args: RpcArgs) -> Result<(), BoxError> {
    let client = Arc::new(Client {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(args.connections * 2)
            .build()?,
        url: args.rpc.clone(),
    });
    let chain_id = quantity(&client.call("eth_chainId", json!([])).await?)?;
    let gas_price = quantity(&client.call("eth_gasPrice", json!([])).await?)? as u128;
    let max_fee = (gas_price * 4).max(4_000_000_000);

    let senders = fund_senders(
        &client,
        &args.label,
        args.senders,
        args.transactions.div_ceil(args.senders),
        max_fee,
        args.batch,
        Duration::from_secs(args.timeout_s),
    )
    .await?;

    eprintln!("[{}] signing {} transfers", args.label, args.transactions);
    let sink = Address::repeat_byte(0x5e);
    let transactions = sign_all(args.transactions, |index| {
        let sender = &senders[index % senders.len()];
        let nonce = (index / senders.len()) as u64;
        transfer(sender, chain_id, nonce, sink, U256::from(1), max_fee)
    });
    let hashes: Vec<B256> = transactions.iter().map(|tx| *tx.tx_hash()).collect();
    let raws: Vec<String> = transactions
        .iter()
        .map(|tx| alloy::hex::encode_prefixed(tx.encoded_2718()))
        .collect();
    let gas_per_tx = transactions[0].gas_limit();
    let batches: Vec<(usize, &[String])> = raws
        .chunks(args.batch)
        .enumerate()
        .map(|(index, chunk)| (index * args.batch, chunk))
        .collect();

    let start_block = quantity(&client.call("eth_blockNumber", json!([])).await?)?;
    let started = Instant::now();
    let sent_at: Arc<parking::SentTimes> = Arc::new(parking::SentTimes::new(raws.len()));
    let next_batch = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(std::sync::Mutex::new(HashMap::<String, usize>::new()));
    let batches = Arc::new(
        batches
            .into_iter()
            .map(|(start, chunk)| (start, chunk.to_vec()))
            .collect::<Vec<_>>(),
    );

    eprintln!("[{}] sending", args.label);
    let mut senders_tasks = Vec::new();
    for _ in 0..args.connections {
        let client = client.clone();
        let next_batch = next_batch.clone();
        let batches = batches.clone();
        let sent_at = sent_at.clone();
        let errors = errors.clone();
        senders_tasks.push(tokio::spawn(async move {
            loop {
                let index = next_batch.fetch_add(1, Ordering::Relaxed);
                let Some((start, chunk)) = batches.get(index) else {
                    break;
                };
                let at = started.elapsed().as_secs_f64();
                for offset in 0..chunk.len() {
                    sent_at.set(start + offset, at);
                }
                match client.send_batch(chunk).await {
                    Ok(refused) => {
                        let mut errors = errors.lock().expect("not poisoned");
                        for message in refused {
                            *errors.entry(message).or_default() += 1;
                        }
                    }
                    Err(error) => {
                        *errors
                            .lock()
                            .expect("not poisoned")
                            .entry(error.to_string())
                            .or_default() += chunk.len();
                    }
                }
            }
        }));
    }

    // Watch blocks for inclusion.
    let index_of: HashMap<B256, usize> = hashes
        .iter()
        .enumerate()
        .map(|(index, hash)| (*hash, index))
        .collect();
    let mut latencies = Vec::with_capacity(hashes.len());
    let mut included_at = Vec::with_capacity(hashes.len());
    let mut seen_block = start_block;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    let mut sending_done = false;
    let mut progress = crate::progress::Progress::new(
        format!("[{}] included", args.label),
        Some(hashes.len() as u64),
        "transactions",
    );
    while latencies.len() < hashes.len() && Instant::now() < deadline {
        progress.update(latencies.len() as u64);
        let head = quantity(&client.call("eth_blockNumber", json!([])).await?)?;
        while seen_block < head {
            seen_block += 1;
            let block = client
                .call(
                    "eth_getBlockByNumber",
                    json!([format!("0x{seen_block:x}"), false]),
                )
                .await?;
            let now = started.elapsed().as_secs_f64();
            for hash in block["transactions"].as_array().into_iter().flatten() {
                let Some(hash) = hash.as_str().and_then(|hash| hash.parse::<B256>().ok()) else {
                    continue;
                };
                if let Some(index) = index_of.get(&hash) {
                    latencies.push((now - sent_at.get(*index)) * 1000.0);
                    included_at.push(now);
                }
            }
        }
        if !sending_done && senders_tasks.iter().all(|task| task.is_finished()) {
            sending_done = true;
        }
        let refused: usize = errors.lock().expect("not poisoned").values().sum();
        if sending_done && latencies.len() + refused >= hashes.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for task in senders_tasks {
        task.abort();
    }
    let errors = errors.lock().expect("not poisoned").clone();
    let refused: usize = errors.values().sum();
    let included = latencies.len();
    let window = included_at.iter().copied().fold(0.0f64, f64::max);
    let tps = if window > 0.0 {
        included as f64 / window
    } else {
        0.0
    };
    latencies.sort_by(|a, b| a.partial_cmp(b).expect("latencies are finite"));
    let p50 = percentile(&latencies, 50.0);
    let p99 = percentile(&latencies, 99.0);
    println!(
        "| endpoint | sent | included | refused | window s | tx/s | Mgas/s | p50 ms | p99 ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {} | {} | {} | {:.2} | {:.0} | {:.1} | {:.0} | {:.0} |",
        args.label,
        hashes.len(),
        included,
        refused,
        window,
        tps,
        tps * gas_per_tx as f64 / 1e6,
        p50,
        p99
    );
    for (message, count) in &errors {
        println!("refused {count}x: {message}");
    }
    if args.json {
        println!(
            "{}",
            json!({"label": args.label, "sent": hashes.len(), "included": included, "refused": refused,
                   "window_s": window, "tps": tps, "gas_per_s": tps * gas_per_tx as f64,
                   "p50_ms": p50, "p99_ms": p99})
        );
    }
    if included + refused < hashes.len() {
        return Err(format!(
            "{} transfers neither refused nor included in time",
            hashes.len() - included - refused
        )
        .into());
    }
    Ok(())
}

/// Send times, written by the sending tasks and read by the watcher.
mod parking {
    use std::sync::atomic::{AtomicU64, Ordering};

    pub(super) struct SentTimes(Vec<AtomicU64>);

    impl SentTimes {
        pub(super) fn new(count: usize) -> Self {
            Self(
                (0..count)
                    .map(|_| AtomicU64::new(f64::NAN.to_bits()))
                    .collect(),
            )
        }
        pub(super) fn set(&self, index: usize, seconds: f64) {
            self.0[index].store(seconds.to_bits(), Ordering::Relaxed);
        }
        pub(super) fn get(&self, index: usize) -> f64 {
            f64::from_bits(self.0[index].load(Ordering::Relaxed))
        }
    }
}

fn recover(args: RecoverArgs) {
    use alloy::consensus::transaction::SignerRecoverable;
    let signer = dev_accounts().remove(0);
    let transactions = sign_all(args.signatures, |index| {
        transfer(&signer, 1, index as u64, Address::ZERO, U256::ZERO, 1)
    });
    let raws: Vec<Vec<u8>> = transactions.iter().map(|tx| tx.encoded_2718()).collect();
    let started = Instant::now();
    for tx in &transactions {
        assert_eq!(
            tx.recover_signer().expect("valid signature"),
            signer.address()
        );
    }
    let recover_rate = transactions.len() as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for raw in &raws {
        let (_, sender) = keel_mempool_decode(raw);
        assert_eq!(sender, signer.address());
    }
    let decode_rate = raws.len() as f64 / started.elapsed().as_secs_f64();
    println!("| measure (one core) | per second |");
    println!("|---|---:|");
    println!("| ECDSA sender recovery (libsecp256k1) | {recover_rate:.0} |");
    println!("| decode + hash + recover (mempool entry) | {decode_rate:.0} |");
}

fn keel_mempool_decode(raw: &[u8]) -> (TxEnvelope, Address) {
    keel_mempool::decode_and_recover(raw).expect("valid transaction")
}

fn state_root(args: StateRootArgs) -> Result<(), BoxError> {
    use alloy::genesis::GenesisAccount;
    let mut chain = ChainSpec::dev();
    chain.genesis.gas_limit = 1_000_000_000;
    let filler = U256::from(1_000_000_000u64);
    for index in 0..args.accounts.saturating_sub(10) {
        let address = Address::from_word(keccak256((index as u64).to_be_bytes()));
        chain
            .genesis
            .alloc
            .insert(address, GenesisAccount::default().with_balance(filler));
    }
    let chain = ChainSpec::from_genesis(chain.genesis)?;
    let dir = tempfile_dir()?;
    eprintln!(
        "writing a genesis of {} accounts",
        chain.genesis.alloc.len()
    );
    let report = seal_blocks(&chain, &dir, args.blocks, args.transfers)?;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "| accounts | transfers/block | seal empty block ms (median) | seal full block ms (median) | validate ms (median) |"
    );
    println!("|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {} | {:.1} | {:.1} | {:.1} |",
        chain.genesis.alloc.len(),
        args.transfers,
        report.empty_seal_ms,
        report.full_seal_ms,
        report.validate_ms
    );
    Ok(())
}

pub(crate) fn tempfile_dir() -> Result<std::path::PathBuf, BoxError> {
    let dir = std::env::temp_dir().join(format!("keel-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

struct SealReport {
    empty_seal_ms: f64,
    full_seal_ms: f64,
    validate_ms: f64,
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The environment of the block after `parent`'s head, one second later, paying no one.
pub(crate) fn next_block(
    chain: &ChainSpec,
    parent: &keel_storage::Snapshot,
) -> Result<keel_execution::BlockEnvironment, BoxError> {
    let (number, hash) = parent.head();
    let header = parent.header(number)?.ok_or("head header missing")?;
    Ok(keel_execution::BlockEnvironment {
        parent_hash: hash,
        number: number + 1,
        timestamp: header.timestamp + 1,
        beneficiary: Address::ZERO,
        gas_limit: chain.genesis.gas_limit,
        base_fee: chain.next_base_fee(&header),
        prevrandao: hash,
        extra_data: Default::default(),
        origin: Default::default(),
        forced_cursor: 0,
    })
}

/// Seals `blocks` empty blocks and `blocks` blocks of `transfers` transfers on a store holding
/// the chain's genesis, timing the builder (state root included) and the validator.
fn seal_blocks(
    chain: &ChainSpec,
    dir: &std::path::Path,
    blocks: usize,
    transfers: usize,
) -> Result<SealReport, BoxError> {
    use keel_execution::{ListSource, build_block, validate_block};
    let store = keel_storage::Store::open(&dir.join("chain.redb"), chain)?;
    let signers = dev_accounts();
    let mut nonces = vec![0u64; signers.len()];
    let (mut empty, mut full, mut validate) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..blocks * 2 {
        let parent = store.snapshot()?;
        let env = next_block(chain, &parent)?;
        let with_transfers = round % 2 == 1;
        let mut candidates = Vec::new();
        if with_transfers {
            for index in 0..transfers {
                let who = index % signers.len();
                let to = Address::from_word(keccak256((index as u64 * 7919).to_be_bytes()));
                let tx = transfer(
                    &signers[who],
                    chain.chain_id,
                    nonces[who],
                    to,
                    U256::from(1),
                    100_000_000_000,
                );
                nonces[who] += 1;
                candidates.push((tx, signers[who].address()));
            }
        }
        let started = Instant::now();
        let built = build_block(chain, &parent, env, &mut ListSource::new(candidates))?;
        let seal_ms = started.elapsed().as_secs_f64() * 1000.0;
        let started = Instant::now();
        let validated = validate_block(chain, &parent, &built.executed.output.block)?;
        let validate_ms = started.elapsed().as_secs_f64() * 1000.0;
        if with_transfers {
            full.push(seal_ms);
            validate.push(validate_ms);
        } else {
            empty.push(seal_ms);
        }
        drop(parent);
        store.commit_block(validated.output.clone(), &validated.changes)?;
    }
    Ok(SealReport {
        empty_seal_ms: median(empty),
        full_seal_ms: median(full),
        validate_ms: median(validate),
    })
}
