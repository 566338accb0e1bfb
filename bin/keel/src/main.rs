//! `keel`: the command line. Configuration and wiring only; the node lives in `keel-node`.
//!
//! ```text
//! keel devnet a local rollup in one command: a cluster, the dev L1 and a front JSON-RPC
//! keel node   run a sequencer node (`--dev` for the embedded dev chain and dev L1)
//! keel l1     run the embedded dev L1 alone (for a cluster's members to share)
//! keel verify follow the L1 alone: derive the chain from its batches and serve it
//! keel force  send a signed L2 transaction to the force inbox on the L1
//! keel admin  operate a cluster node (status, pause, resume, add-learner, promote, remove)
//! keel bench  measure a node (or any Ethereum JSON-RPC endpoint), recovery and state roots
//! keel chaos  a real cluster under a seeded nemesis, judged by the history checker
//! keel check  the history checker on a saved history.json
//! keel sim    the deterministic simulation, seed after seed (soak), or one seed (replay)
//! ```

/// jemalloc, as reth's binary uses: under load a node allocates and frees in many threads at
/// once (blocks, receipts, redb pages, JSON), and glibc's malloc was 7% of a 3-node devnet's
/// CPU at 2,000 transfers/s (BENCHMARKS.md, "The allocator and keccak").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod admin;
mod bench;
mod bench_batch;
mod bench_history;
mod bench_l1;
mod bench_latency;
mod chaos;
mod config;
mod devnet;
mod failover;
mod l1;
mod progress;
mod sim;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// keel: a highly available, crash-safe EVM rollup sequencer.
#[derive(Debug, Parser)]
#[command(name = "keel", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a local rollup in one command: a cluster of nodes (each its own data directory and
    /// ports), the dev L1 and a front JSON-RPC that routes to healthy nodes.
    Devnet(devnet::DevnetArgs),
    /// Run a sequencer node.
    Node(Box<config::NodeArgs>),
    /// Run the embedded dev L1 alone (keel's engine as a second chain, id 1337), for the
    /// members of a cluster to share with --l1-rpc.
    L1(l1::DevL1Args),
    /// Follow the L1 alone (no connection to any sequencer): derive the chain from the
    /// batcher's batches and the force inbox, and serve it over JSON-RPC.
    Verify(Box<l1::VerifyArgs>),
    /// Force a signed L2 transaction in through the L1's force inbox (what `cast send` to the
    /// inbox does, with the payload checked first).
    Force(l1::ForceArgs),
    /// Disaster recovery: make a stopped node's data directory found a new cluster (when the
    /// old cluster lost its quorum for good). Keeps every block and the state.
    Recover(config::RecoverArgs),
    /// Put a backup (`keel admin backup`) into a new member's data directory, checked; the
    /// member then joins as a learner and catches up from the backup's head.
    Restore(config::RestoreArgs),
    /// Operate a cluster node through its admin API.
    Admin(admin::AdminArgs),
    /// Measure throughput and latency of a node, or keel's building blocks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Run a real cluster under faults (SIGKILL, SIGSTOP, partitions, full restarts) with a
    /// workload, then check what the clients saw (I1, I2, I5).
    Chaos(chaos::ChaosArgs),
    /// Check a saved history (history.json from `keel chaos`) for lost receipts, forks,
    /// backwards heads and liveness gaps.
    Check(chaos::CheckArgs),
    /// Run the deterministic simulation: many seeds (soak) or one (`--seed N`, replays
    /// exactly).
    Sim(sim::SimArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: starting the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Devnet(args) => runtime
            .block_on(devnet::run(args))
            .map_err(|error| error as _),
        Command::Node(args) => runtime.block_on(config::run_node(*args)),
        Command::L1(args) => runtime.block_on(l1::run_dev_l1(args)),
        Command::Verify(args) => runtime.block_on(l1::run_verify(*args)),
        Command::Force(args) => runtime.block_on(l1::run_force(args)),
        Command::Bench(command) => runtime.block_on(bench::run(command)),
        Command::Admin(args) => runtime.block_on(admin::run(args)),
        Command::Recover(args) => config::recover(args),
        Command::Restore(args) => config::restore(args),
        Command::Chaos(args) => runtime
            .block_on(chaos::run(args))
            .map_err(|error| error as _),
        Command::Check(args) => chaos::check_history(args).map_err(|error| error as _),
        Command::Sim(args) => sim::run_seeds(args).map_err(|error| error as _),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
