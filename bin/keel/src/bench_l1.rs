//! `keel bench l1`: the rollup's L1 side, measured in one process on the embedded dev L1:
//! whether the batcher keeps up with a sustained load, what it costs on the L1 per transfer,
//! how fast a verifier derives the chain from the L1 alone, and how long a forced transaction
//! takes to get in, with a live sequencer and with none.

use alloy::eips::eip2718::Encodable2718;
use alloy::primitives::{Address, U256};
use clap::Args;
use keel_l1::{FeeCaps, L1Client, NonceAt, sign_calldata};
use keel_node::{DevL1, DevL1Config, NodeConfig, NodeMode, RunningNode};
use keel_primitives::rollup::{DEV_BATCH_INBOX, DEV_FORCE_INBOX};
use keel_primitives::{
    ChainSpec, DEV_L1_CHAIN_ID, L1Origin, RollupConfig, SafeHeads, dev_accounts,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `keel bench l1`.
#[derive(Debug, Args)]
pub(crate) struct L1BenchArgs {
    /// Transfers of the sustained load.
    #[arg(long, default_value_t = 20_000)]
    transfers: usize,
    /// Distinct senders of the load.
    #[arg(long, default_value_t = 200)]
    senders: usize,
    /// Transfers offered per second.
    #[arg(long, default_value_t = 2_000)]
    rate: usize,
    /// The L2's block time in ms.
    #[arg(long, default_value_t = 250)]
    block_time_ms: u64,
    /// The embedded L1's block time in ms.
    #[arg(long, default_value_t = 1_000)]
    l1_block_time_ms: u64,
    /// Forced transactions measured with a live sequencer.
    #[arg(long, default_value_t = 5)]
    forces: usize,
    /// Also measure a forced transaction with every sequencer down (waits out the 50-block
    /// window: about 50 L1 block times).
    #[arg(long)]
    sequencer_down: bool,
}

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

fn node_config(
    chain: ChainSpec,
    datadir: std::path::PathBuf,
    block_time_ms: u64,
    l1: keel_node::L1Settings,
    mode: NodeMode,
    heads: Arc<SafeHeads>,
) -> NodeConfig {
    NodeConfig {
        datadir,
        rpc_addr: "127.0.0.1:0".parse().expect("valid address"),
        metrics_addr: None,
        block_time_ms,
        gas_limit: 1_000_000_000,
        beneficiary: Address::ZERO,
        extra_data: Default::default(),
        chain,
        cluster: None,
        clock: Arc::new(keel_primitives::SystemClock),
        safe_heads: heads,
        l1: Some(l1),
        record_metrics: true,
        mode,
        seal_on_start: false,
        state_history: keel_node::StateHistory::Archive,
    }
}

async fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn head(node: &RunningNode) -> u64 {
    node.store
        .snapshot()
        .map(|snapshot| snapshot.head().0)
        .unwrap_or(0)
}

fn percentile(values: &mut [f64], percent: usize) -> f64 {
    values.sort_by(f64::total_cmp);
    values[(values.len() - 1) * percent / 100]
}

pub(crate) async fn run(args: L1BenchArgs) -> BenchResult<()> {
    let dir = tempfile::tempdir()?;
    let mut l1_config = DevL1Config::new(dir.path().join("l1"), "127.0.0.1:0".parse()?);
    l1_config.block_time_ms = args.l1_block_time_ms;
    l1_config.safe_depth = 2;
    l1_config.finalized_depth = 4;
    let dev_l1 = tokio::task::spawn_blocking(move || DevL1::start(l1_config)).await??;
    let start = L1Origin {
        number: 0,
        hash: ChainSpec::dev_l1().genesis_block().hash,
    };
    let rollup = RollupConfig::dev(DEV_L1_CHAIN_ID, start);
    let mut settings = dev_l1.settings(rollup.clone());
    settings.batcher = Some(dev_accounts()[keel_primitives::rollup::DEV_BATCHER_INDEX].clone());
    let chain = ChainSpec::dev();
    let heads = Arc::new(SafeHeads::derived());
    let sequencer = keel_node::start(node_config(
        chain.clone(),
        dir.path().join("sequencer"),
        args.block_time_ms,
        settings.clone(),
        NodeMode::Sequencer,
        heads.clone(),
    ))
    .await?;
    println!(
        "keel bench l1: L2 blocks {} ms, embedded L1 blocks {} ms, gas limit 1e9 on the L2",
        args.block_time_ms, args.l1_block_time_ms
    );
    wait_until(Duration::from_secs(30), || head(&sequencer) >= 2).await;

    // 1. A sustained load: does the safe head keep up?
    let senders: Vec<_> = (0..args.senders)
        .map(|index| {
            let key = alloy::primitives::keccak256((index as u64 + 77).to_be_bytes());
            alloy::signers::local::PrivateKeySigner::from_bytes(&key).expect("a valid key")
        })
        .collect();
    // Fund the senders from the dev accounts, through the pool like any transfer.
    let funders = dev_accounts();
    let mut funding = Vec::new();
    for (index, sender) in senders.iter().enumerate() {
        let funder = &funders[index % 8];
        let nonce = (index / 8) as u64;
        funding.push(keel_testkit::transfer(
            funder,
            nonce,
            sender.address(),
            U256::from(10u128.pow(20)),
        ));
    }
    let add = |node: &RunningNode, transaction: alloy::consensus::TxEnvelope| -> BenchResult<()> {
        let snapshot = node.store.snapshot()?;
        let header = snapshot
            .header(snapshot.head().0)?
            .ok_or("no head header")?;
        let sender =
            alloy::consensus::transaction::SignerRecoverable::recover_signer(&transaction)?;
        let base_fee = chain.next_base_fee(&header);
        node.mempool.add(transaction, sender, &snapshot, base_fee)?;
        Ok(())
    };
    let funding_hashes: Vec<_> = funding
        .iter()
        .map(|transaction| *transaction.tx_hash())
        .collect();
    for transaction in funding {
        add(&sequencer, transaction)?;
    }
    let funded = wait_until(Duration::from_secs(60), || {
        let Ok(snapshot) = sequencer.store.snapshot() else {
            return false;
        };
        funding_hashes
            .iter()
            .all(|hash| matches!(snapshot.tx_location(hash), Ok(Some(_))))
    })
    .await;
    if !funded {
        return Err("the senders were never funded".into());
    }
    let safe_of = |node: &RunningNode, heads: &SafeHeads| heads.safe(head(node));
    let started = Instant::now();
    let load_from = head(&sequencer);
    let per_tick = (args.rate / 20).max(1);
    let mut nonces = vec![0u64; args.senders];
    let mut sent = 0usize;
    let mut refused = 0usize;
    while sent < args.transfers {
        let tick = Instant::now();
        for _ in 0..per_tick.min(args.transfers - sent) {
            let index = sent % args.senders;
            let transfer = keel_testkit::transfer(
                &senders[index],
                nonces[index],
                Address::repeat_byte(0x5e),
                U256::from(1),
            );
            match add(&sequencer, transfer) {
                Ok(()) => {
                    nonces[index] += 1;
                    sent += 1;
                }
                Err(error) => {
                    refused += 1;
                    if refused == 1 {
                        eprintln!("the pool refused a transfer: {error}");
                    }
                }
            }
        }
        let spent = tick.elapsed();
        if spent < Duration::from_millis(50) {
            tokio::time::sleep(Duration::from_millis(50) - spent).await;
        }
    }
    let offered_s = started.elapsed().as_secs_f64();
    let included = |node: &RunningNode| -> usize {
        let snapshot = node.store.snapshot().expect("a snapshot");
        (load_from + 1..=snapshot.head().0)
            .map(|number| {
                snapshot
                    .block(number)
                    .ok()
                    .flatten()
                    .map_or(0, |block| block.transactions.len())
            })
            .sum()
    };
    wait_until(Duration::from_secs(120), || {
        included(&sequencer) >= args.transfers
    })
    .await;
    let sealed_s = started.elapsed().as_secs_f64();
    let last_loaded = head(&sequencer);
    let caught_up = wait_until(Duration::from_secs(300), || {
        safe_of(&sequencer, &heads) >= last_loaded
    })
    .await;
    let safe_s = started.elapsed().as_secs_f64();
    println!(
        "load: {} transfers offered at {} a second over {:.1} s; all sealed after {:.1} s; safe after {:.1} s{}",
        args.transfers,
        args.rate,
        offered_s,
        sealed_s,
        safe_s,
        if caught_up {
            ""
        } else {
            " (NOT caught up in 300 s)"
        }
    );
    // What the batches cost on the L1.
    let l1 = &dev_l1.client;
    let l1_head = l1.head(keel_l1::L1Head::Latest).await?.number;
    let (mut gas, mut bytes, mut batch_transactions) = (0u64, 0usize, 0usize);
    for number in 1..=l1_head {
        let Some(block) = l1.block_by_number(number).await? else {
            continue;
        };
        for transaction in l1.inbox_transactions(&block, &[DEV_BATCH_INBOX]).await? {
            if let Some(receipt) = l1.receipt(transaction.hash).await? {
                gas += receipt.gas_used;
                bytes += transaction.input.len();
                batch_transactions += 1;
            }
        }
    }
    let l2_transactions = included(&sequencer) + load_from as usize;
    println!(
        "batches: {batch_transactions} L1 transactions, {bytes} bytes of calldata, {gas} L1 gas: {:.1} bytes and {:.0} L1 gas an L2 transaction (empty blocks' overhead included)",
        bytes as f64 / l2_transactions.max(1) as f64,
        gas as f64 / l2_transactions.max(1) as f64
    );

    // 2. Forced transactions with a live sequencer.
    // Account 8: not one of the funders (0..8 of the load), so its L2 nonces start at 0.
    let forcing = &dev_accounts()[8];
    let payer = &dev_accounts()[7];
    let mut l1_blocks = Vec::new();
    let mut seconds = Vec::new();
    for index in 0..args.forces {
        let signed = keel_testkit::transfer(
            forcing,
            index as u64,
            Address::repeat_byte(0xf0),
            U256::from(1),
        );
        let (forced_at, sent_at) = force(l1.as_ref(), payer, signed.encoded_2718().into()).await?;
        let hash = *signed.tx_hash();
        let found = wait_until(Duration::from_secs(120), || {
            matches!(
                sequencer
                    .store
                    .snapshot()
                    .and_then(|snapshot| snapshot.tx_location(&hash)),
                Ok(Some(_))
            )
        })
        .await;
        if !found {
            return Err("a forced transaction never reached the L2".into());
        }
        seconds.push(sent_at.elapsed().as_secs_f64());
        let location = sequencer
            .store
            .snapshot()?
            .tx_location(&hash)?
            .ok_or("located")?;
        let header = sequencer
            .store
            .snapshot()?
            .header(location.block_number)?
            .ok_or("header")?;
        l1_blocks.push((keel_primitives::origin_of(&header).number - forced_at) as f64);
    }
    if args.forces > 0 {
        println!(
            "forced, live sequencer ({} forces): L2 origin minus forcing L1 block p50 {:.0}, max {:.0} L1 blocks; L1 inclusion to L2 inclusion p50 {:.2} s, max {:.2} s",
            args.forces,
            percentile(&mut l1_blocks.clone(), 50),
            percentile(&mut l1_blocks, 100),
            percentile(&mut seconds.clone(), 50),
            percentile(&mut seconds, 100),
        );
    }

    // 3. Derivation from the L1 alone: a fresh verifier catches up.
    let target = safe_of(&sequencer, &heads);
    let mut verifier_settings = settings.clone();
    verifier_settings.batcher = None;
    let derive_started = Instant::now();
    let verifier = keel_node::start(node_config(
        chain.clone(),
        dir.path().join("verifier"),
        args.block_time_ms,
        verifier_settings,
        NodeMode::Verifier,
        Arc::new(SafeHeads::derived()),
    ))
    .await?;
    wait_until(Duration::from_secs(600), || head(&verifier) >= target).await;
    let derive_s = derive_started.elapsed().as_secs_f64();
    let derived_transactions: usize = {
        let snapshot = verifier.store.snapshot()?;
        (1..=target)
            .map(|number| {
                snapshot
                    .block(number)
                    .ok()
                    .flatten()
                    .map_or(0, |block| block.transactions.len())
            })
            .sum()
    };
    println!(
        "derivation: {target} L2 blocks ({derived_transactions} transactions) from {l1_head}+ L1 blocks in {derive_s:.1} s: {:.0} blocks/s, {:.0} transactions/s",
        target as f64 / derive_s,
        derived_transactions as f64 / derive_s
    );

    // 4. A forced transaction with every sequencer down.
    if args.sequencer_down {
        sequencer.shutdown().await;
        let signed = keel_testkit::transfer(
            forcing,
            args.forces as u64,
            Address::repeat_byte(0xf0),
            U256::from(1),
        );
        let (forced_at, sent_at) = force(l1.as_ref(), payer, signed.encoded_2718().into()).await?;
        let hash = *signed.tx_hash();
        let window = rollup.force_inclusion_window_blocks;
        let timeout = Duration::from_millis(args.l1_block_time_ms * (window + 20));
        let found = wait_until(timeout, || {
            matches!(
                verifier
                    .store
                    .snapshot()
                    .and_then(|snapshot| snapshot.tx_location(&hash)),
                Ok(Some(_))
            )
        })
        .await;
        let l1_now = l1.head(keel_l1::L1Head::Latest).await?.number;
        println!(
            "forced, every sequencer down: {} after {:.1} s, at L1 block {} ({} L1 blocks after the forcing block; the window is {window})",
            if found {
                "in the derived chain"
            } else {
                "NOT in the derived chain"
            },
            sent_at.elapsed().as_secs_f64(),
            l1_now,
            l1_now - forced_at
        );
    } else {
        sequencer.shutdown().await;
    }
    verifier.shutdown().await;
    dev_l1.shutdown().await;
    Ok(())
}

/// Sends `payload` to the force inbox from `payer`; the L1 block that holds it, and when its
/// inclusion was seen.
async fn force(
    l1: &dyn L1Client,
    payer: &alloy::signers::local::PrivateKeySigner,
    payload: alloy::primitives::Bytes,
) -> BenchResult<(u64, Instant)> {
    let nonce = l1.nonce(payer.address(), NonceAt::Pending).await?;
    let fees = l1.fees().await?;
    let (envelope, raw) = sign_calldata(
        payer,
        DEV_L1_CHAIN_ID,
        nonce,
        DEV_FORCE_INBOX,
        payload,
        FeeCaps::for_fees(&fees),
    );
    l1.send_raw_transaction(raw).await?;
    for _ in 0..6_000 {
        if let Some(receipt) = l1.receipt(*envelope.tx_hash()).await? {
            return Ok((receipt.block_number, Instant::now()));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err("the forcing L1 transaction was never included".into())
}
