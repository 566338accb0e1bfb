//! `keel bench latency`: send-to-receipt latency under an open-loop load.
//!
//! Transfer `i` is due at `start + i / rate`, whatever the answers to earlier ones (open loop:
//! a slow answer does not slow the load, as it does not slow real users). Each one's latency
//! runs from when it was due, not from when a busy sender got to it, so a stall shows in full
//! instead of being hidden by the sends it held back (coordinated omission). Two ways to wait:
//! `sync` sends with `eth_sendRawTransactionSync` (the answer is the receipt); `poll` sends with
//! `eth_sendRawTransaction` and asks `eth_getTransactionReceipt` every `--poll-ms`. The
//! percentiles come from an HDR histogram (3 significant figures), so p99.9 and the maximum are
//! exact to the histogram's precision however long the run. Sends rotate over every `--rpc`
//! URL (the nodes of a cluster); kill a leader during a run to measure the failover window.
//!
//! Where the tail is: the percentiles of each endpoint (a follower forwards the send and
//! answers from its own applied block), and the blocks whose transfers waited longest, each
//! with the second of the run it fell in (a stall of the whole machine, or one slow block).

use crate::bench::{Client, fund_senders, quantity, transfer};
use alloy::eips::eip2718::Encodable2718;
use alloy::primitives::{Address, U256};
use clap::Args;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long `sync` asks the node to wait for the receipt, and `poll` polls, before the
/// transfer counts as without a receipt.
const RECEIPT_WAIT_MS: u64 = 30_000;
/// Histogram bounds: 1 µs to an hour, 3 significant figures.
const HISTOGRAM_MAX_US: u64 = 3_600_000_000;
/// The slowest blocks the report lists.
const SLOWEST_BLOCKS_SHOWN: usize = 5;

/// How a transfer's receipt is awaited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Mode {
    /// `eth_sendRawTransactionSync`: one call, answered with the receipt.
    Sync,
    /// `eth_sendRawTransaction`, then `eth_getTransactionReceipt` until it answers.
    Poll,
}

/// `keel bench latency`.
#[derive(Debug, Args)]
pub(crate) struct LatencyArgs {
    /// JSON-RPC endpoints, comma-separated; sends rotate over them.
    #[arg(long, default_value = "http://127.0.0.1:8545", value_delimiter = ',')]
    rpc: Vec<String>,
    /// Label of the run in the report.
    #[arg(long, default_value = "endpoint")]
    label: String,
    /// Transfers per second, sent on a fixed schedule.
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Seconds of load.
    #[arg(long, default_value_t = 20)]
    duration_s: u64,
    /// How a receipt is awaited.
    #[arg(long, value_enum, default_value = "sync")]
    mode: Mode,
    /// With `--mode poll`: ms between receipt polls.
    #[arg(long, default_value_t = 10)]
    poll_ms: u64,
    /// Distinct senders (fresh, funded by dev account 0).
    #[arg(long, default_value_t = 200)]
    senders: usize,
    /// The most transfers awaiting their receipt at once; a transfer due beyond it counts as
    /// "not sent: the bench's own limit" (the machine, not the node, is then the bottleneck).
    #[arg(long, default_value_t = 20_000)]
    in_flight_max: usize,
    /// Print the result as JSON too.
    #[arg(long)]
    json: bool,
}

/// What one transfer came to.
enum Outcome {
    /// The latency, and the block the receipt names (`None` if it names none).
    Receipt(Duration, Option<u64>),
    Failed(String),
}

/// The block number a receipt names.
fn receipt_block(receipt: &serde_json::Value) -> Option<u64> {
    quantity(receipt.get("blockNumber")?).ok()
}

fn new_histogram() -> Result<hdrhistogram::Histogram<u64>, BoxError> {
    Ok(hdrhistogram::Histogram::new_with_bounds(
        1,
        HISTOGRAM_MAX_US,
        3,
    )?)
}

async fn await_receipt(
    client: &Client,
    mode: Mode,
    poll: Duration,
    raw: &str,
    hash: &str,
    due: Instant,
) -> Outcome {
    match mode {
        Mode::Sync => match client
            .call("eth_sendRawTransactionSync", json!([raw, RECEIPT_WAIT_MS]))
            .await
        {
            Ok(receipt) => Outcome::Receipt(due.elapsed(), receipt_block(&receipt)),
            Err(error) => Outcome::Failed(error.to_string()),
        },
        Mode::Poll => {
            if let Err(error) = client.call("eth_sendRawTransaction", json!([raw])).await {
                return Outcome::Failed(error.to_string());
            }
            let deadline = due + Duration::from_millis(RECEIPT_WAIT_MS);
            loop {
                if let Ok(receipt) = client
                    .call("eth_getTransactionReceipt", json!([hash]))
                    .await
                    && !receipt.is_null()
                {
                    return Outcome::Receipt(due.elapsed(), receipt_block(&receipt));
                }
                if Instant::now() > deadline {
                    return Outcome::Failed("no receipt within 30 s".into());
                }
                tokio::time::sleep(poll).await;
            }
        }
    }
}

/// Runs the benchmark and prints its table.
pub(crate) async fn run(args: LatencyArgs) -> Result<(), BoxError> {
    if args.rpc.is_empty() || args.rate == 0 || args.senders == 0 {
        return Err("--rpc, --rate and --senders must not be empty or 0".into());
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1_024)
        .build()?;
    let clients: Vec<Arc<Client>> = args
        .rpc
        .iter()
        .map(|url| {
            Arc::new(Client {
                http: http.clone(),
                url: url.clone(),
            })
        })
        .collect();
    let first = &clients[0];
    let chain_id = quantity(&first.call("eth_chainId", json!([])).await?)?;
    let gas_price = quantity(&first.call("eth_gasPrice", json!([])).await?)? as u128;
    let max_fee = (gas_price * 4).max(4_000_000_000);
    let total = (args.rate * args.duration_s) as usize;
    let senders = fund_senders(
        first,
        &args.label,
        args.senders,
        total.div_ceil(args.senders),
        max_fee,
        100,
        Duration::from_secs(120),
    )
    .await?;
    eprintln!("[{}] signing {total} transfers", args.label);
    let sink = Address::repeat_byte(0x5e);
    let signed: Vec<(String, String)> = (0..total)
        .map(|index| {
            let sender = &senders[index % senders.len()];
            let nonce = (index / senders.len()) as u64;
            let tx = transfer(sender, chain_id, nonce, sink, U256::from(1), max_fee);
            (
                alloy::hex::encode_prefixed(tx.encoded_2718()),
                format!("{:#x}", tx.tx_hash()),
            )
        })
        .collect();

    eprintln!(
        "[{}] {} transfers/s for {} s, open loop, {:?} mode, over {} endpoint(s)",
        args.label,
        args.rate,
        args.duration_s,
        args.mode,
        clients.len()
    );
    let (done, mut outcomes) = tokio::sync::mpsc::unbounded_channel();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(args.in_flight_max));
    let poll = Duration::from_millis(args.poll_ms.max(1));
    let start = Instant::now() + Duration::from_millis(100);
    let mut over_limit = 0usize;
    let mut progress = crate::progress::Progress::new(
        format!("[{}] sent", args.label),
        Some(total as u64),
        "transfers",
    );
    for (index, (raw, hash)) in signed.into_iter().enumerate() {
        let due = start + Duration::from_secs_f64(index as f64 / args.rate as f64);
        tokio::time::sleep_until(due.into()).await;
        progress.update(index as u64);
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            over_limit += 1;
            continue;
        };
        let endpoint = index % clients.len();
        let client = clients[endpoint].clone();
        let done = done.clone();
        let mode = args.mode;
        tokio::spawn(async move {
            let outcome = await_receipt(&client, mode, poll, &raw, &hash, due).await;
            drop(permit);
            let _ = done.send((endpoint, due, outcome));
        });
    }
    drop(done);
    let mut histogram = new_histogram()?;
    let mut by_endpoint = (0..clients.len())
        .map(|_| new_histogram())
        .collect::<Result<Vec<_>, _>>()?;
    // Per block: (the slowest latency, when its earliest transfer was due, receipts).
    let mut blocks: BTreeMap<u64, (Duration, Duration, usize)> = BTreeMap::new();
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    while let Some((endpoint, due, outcome)) = outcomes.recv().await {
        match outcome {
            Outcome::Receipt(latency, block) => {
                let micros = (latency.as_micros() as u64).max(1);
                histogram.saturating_record(micros);
                by_endpoint[endpoint].saturating_record(micros);
                if let Some(number) = block {
                    let since_start = due.saturating_duration_since(start);
                    let entry = blocks.entry(number).or_insert((latency, since_start, 0));
                    entry.0 = entry.0.max(latency);
                    entry.1 = entry.1.min(since_start);
                    entry.2 += 1;
                }
            }
            Outcome::Failed(message) => *failures.entry(message).or_default() += 1,
        }
    }
    let ms = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1_000.0;
    let failed: usize = failures.values().sum();
    println!(
        "| endpoint | mode | rate/s | due | receipts | failed | not sent | p50 ms | p99 ms | p99.9 ms | max ms |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {:?} | {} | {total} | {} | {failed} | {over_limit} | {:.1} | {:.1} | {:.1} | {:.1} |",
        args.label,
        args.mode,
        args.rate,
        histogram.len(),
        ms(0.5),
        ms(0.99),
        ms(0.999),
        histogram.max() as f64 / 1_000.0
    );
    for (message, count) in &failures {
        println!("failed {count}x: {message}");
    }
    for (url, endpoint) in args.rpc.iter().zip(&by_endpoint) {
        let ms = |quantile: f64| endpoint.value_at_quantile(quantile) as f64 / 1_000.0;
        println!(
            "endpoint {url}: {} receipts, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            endpoint.len(),
            ms(0.5),
            ms(0.99),
            endpoint.max() as f64 / 1_000.0
        );
    }
    let mut slowest: Vec<_> = blocks.iter().collect();
    slowest.sort_by_key(|(_, (latency, _, _))| std::cmp::Reverse(*latency));
    for (number, (latency, first_due, receipts)) in slowest.iter().take(SLOWEST_BLOCKS_SHOWN) {
        println!(
            "slow block {number}: {receipts} receipts, the slowest {:.1} ms, its first transfer due at {:.1} s",
            latency.as_secs_f64() * 1_000.0,
            first_due.as_secs_f64()
        );
    }
    if args.json {
        println!(
            "{}",
            json!({
                "label": args.label,
                "mode": format!("{:?}", args.mode).to_lowercase(),
                "rate": args.rate,
                "due": total,
                "receipts": histogram.len(),
                "failed": failed,
                "not_sent": over_limit,
                "p50_ms": ms(0.5),
                "p99_ms": ms(0.99),
                "p999_ms": ms(0.999),
                "max_ms": histogram.max() as f64 / 1_000.0,
            })
        );
    }
    Ok(())
}
