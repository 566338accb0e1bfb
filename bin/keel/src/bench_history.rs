//! `keel bench history`: what state history costs and gives.
//!
//! Two stores hold the same chain, one an archive (history on), one with history off
//! (`--state-history-blocks 0`). Each block of transfers is built and validated once, then
//! committed to both, in alternating order; the only difference is the history the archive
//! writes. Then, on the archive: state reads at random older blocks against reads at the head,
//! and the tracing of a block of transfers.

use crate::bench::{BoxError, median, next_block, tempfile_dir, transfer};
use alloy::primitives::{Address, U256, keccak256};
use alloy::rpc::types::trace::geth::{
    GethDebugBuiltInTracerType, GethDebugTracerType, GethDebugTracingOptions,
};
use keel_execution::{ListSource, build_block, validate_block};
use keel_primitives::{ChainSpec, dev_accounts};
use keel_storage::{StateHistory, Store};
use std::time::Instant;

/// `keel bench history`.
#[derive(Debug, clap::Args)]
pub(crate) struct HistoryArgs {
    /// Accounts in the genesis state.
    #[arg(long, default_value_t = 100_000)]
    accounts: usize,
    /// Blocks to seal.
    #[arg(long, default_value_t = 40)]
    blocks: usize,
    /// Transfers per block (to existing accounts).
    #[arg(long, default_value_t = 1_000)]
    transfers: usize,
    /// Historical reads to time.
    #[arg(long, default_value_t = 20_000)]
    reads: usize,
}

fn percentile(mut values: Vec<f64>, fraction: f64) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let index = ((values.len() as f64 - 1.0) * fraction).round() as usize;
    values.get(index).copied().unwrap_or(f64::NAN)
}

/// A small deterministic generator (xorshift64*), so runs read the same keys.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
    }
}

fn filler(index: usize) -> Address {
    Address::from_word(keccak256((index as u64).to_be_bytes()))
}

pub(crate) fn run(args: HistoryArgs) -> Result<(), BoxError> {
    use alloy::genesis::GenesisAccount;
    let mut chain = ChainSpec::dev();
    chain.genesis.gas_limit = 1_000_000_000;
    let fillers = args.accounts.saturating_sub(10).max(1);
    for index in 0..fillers {
        chain.genesis.alloc.insert(
            filler(index),
            GenesisAccount::default().with_balance(U256::from(1_000_000_000u64)),
        );
    }
    let chain = ChainSpec::from_genesis(chain.genesis)?;
    let dir = tempfile_dir()?;
    eprintln!(
        "writing two genesis states of {} accounts",
        chain.genesis.alloc.len()
    );
    let archive = Store::open(&dir.join("archive.redb"), &chain)?;
    let off = Store::open(&dir.join("off.redb"), &chain)?;
    off.set_state_history(StateHistory::Window(0));

    let signers = dev_accounts();
    let mut nonces = vec![0u64; signers.len()];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut build_ms, mut commit_on, mut commit_off) = (Vec::new(), Vec::new(), Vec::new());
    let mut history_bytes = 0usize;
    let mut last_block = None;
    for round in 0..args.blocks {
        let parent = archive.snapshot()?;
        let env = next_block(&chain, &parent)?;
        let mut candidates = Vec::with_capacity(args.transfers);
        for index in 0..args.transfers {
            let who = index % signers.len();
            let to = filler(rng.below(fillers as u64) as usize);
            candidates.push((
                transfer(
                    &signers[who],
                    chain.chain_id,
                    nonces[who],
                    to,
                    U256::from(1),
                    100_000_000_000,
                ),
                signers[who].address(),
            ));
            nonces[who] += 1;
        }
        let started = Instant::now();
        let built = build_block(&chain, &parent, env, &mut ListSource::new(candidates))?;
        let validated = validate_block(&chain, &parent, &built.executed.output.block)?;
        build_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        drop(parent);
        // History bytes as written: one entry per account and per slot the block changed.
        history_bytes += validated.changes.accounts.len() * (40 + 104)
            + validated.changes.storage.len() * (72 + 32);
        let commit = |store: &Store, into: &mut Vec<f64>| -> Result<(), BoxError> {
            let started = Instant::now();
            store.commit_block(validated.output.clone(), &validated.changes)?;
            into.push(started.elapsed().as_secs_f64() * 1000.0);
            Ok(())
        };
        if round % 2 == 0 {
            commit(&archive, &mut commit_on)?;
            commit(&off, &mut commit_off)?;
        } else {
            commit(&off, &mut commit_off)?;
            commit(&archive, &mut commit_on)?;
        }
        last_block = Some(validated.output.clone());
    }
    let (build, on, off_ms) = (median(build_ms), median(commit_on), median(commit_off));
    let blocks = args.blocks as f64;
    println!("| | history off | archive (history on) | ratio |");
    println!("|---|---:|---:|---:|");
    println!(
        "| commit a block, ms (median) | {off_ms:.2} | {on:.2} | {:.2} |",
        on / off_ms
    );
    println!(
        "| build + validate + commit, ms (median) | {:.2} | {:.2} | {:.3} |",
        build + off_ms,
        build + on,
        (build + on) / (build + off_ms)
    );
    println!(
        "| history entries per block, bytes | 0 | {:.0} | |",
        history_bytes as f64 / blocks
    );
    println!(
        "| history entries per transfer, bytes | 0 | {:.0} | |",
        history_bytes as f64 / (blocks * args.transfers as f64)
    );

    // Reads: at random older blocks through the history, against the head.
    let head = archive.snapshot()?.head().0;
    let (mut old, mut current) = (Vec::new(), Vec::new());
    for _ in 0..args.reads {
        let address = filler(rng.below(fillers as u64) as usize);
        let at = rng.below(head);
        let started = Instant::now();
        let view = archive.snapshot()?.at(at)?;
        std::hint::black_box(view.account(&address)?);
        old.push(started.elapsed().as_secs_f64() * 1e6);
        let started = Instant::now();
        let view = archive.snapshot()?;
        std::hint::black_box(view.account(&address)?);
        current.push(started.elapsed().as_secs_f64() * 1e6);
    }
    println!();
    println!("| account read (view + read) | p50 µs | p99 µs |");
    println!("|---|---:|---:|");
    println!(
        "| at the head | {:.1} | {:.1} |",
        percentile(current.clone(), 0.5),
        percentile(current, 0.99)
    );
    println!(
        "| at a random older block | {:.1} | {:.1} |",
        percentile(old.clone(), 0.5),
        percentile(old, 0.99)
    );

    // Tracing the last block of transfers, on its parent's state.
    let block = last_block.ok_or("no block sealed")?;
    let parent = archive.snapshot()?.at(block.block.number() - 1)?;
    println!();
    println!(
        "| trace a block of {} transfers | ms (median of 5) |",
        args.transfers
    );
    println!("|---|---:|");
    for (name, tracer) in [
        ("callTracer", Some(GethDebugBuiltInTracerType::CallTracer)),
        ("noopTracer", Some(GethDebugBuiltInTracerType::NoopTracer)),
        ("struct logger", None),
    ] {
        let options = GethDebugTracingOptions {
            tracer: tracer.map(GethDebugTracerType::BuiltInTracer),
            ..Default::default()
        };
        let mut times = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            keel_execution::trace_block(
                &chain,
                &parent,
                &block.block,
                &block.receipts,
                None,
                &options,
            )?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        println!("| {name} | {:.1} |", median(times));
    }
    drop(parent);
    drop((archive, off));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
