//! `keel sim`: the deterministic simulation (`keel-testkit`), seed after seed, for soak runs
//! and for replaying one seed exactly.

use clap::Args;
use keel_testkit::sim::{SimOptions, run};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `keel sim`.
#[derive(Debug, Args)]
pub(crate) struct SimArgs {
    /// How many seeds to run, from `--start`.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    start: u64,
    /// Run this one seed only (replay), and print its trace with `--trace`.
    #[arg(long, conflicts_with_all = ["seeds", "start"])]
    seed: Option<u64>,
    /// Print every line of the trace (applied blocks and faults with simulated times) as it
    /// happens, up to the failure if the seed fails.
    #[arg(long)]
    trace: bool,
    /// Print the nodes' own logs too, at the levels `RUST_LOG` sets (default `info`); a soak
    /// of thousands of seeds would print millions of lines.
    #[arg(long)]
    logs: bool,
    /// Simulated seconds of faults and load per seed.
    #[arg(long, default_value_t = 20)]
    safety_s: u64,
    /// Cluster size (3 to 5); by default the seed picks it.
    #[arg(long)]
    nodes: Option<u64>,
    /// Run the L1 too: every node derives, the leader batches, transactions are forced
    /// through the L1, and L1 reorgs, L1 outages and a batcher out of funds join the faults.
    #[arg(long)]
    l1: bool,
}

/// Runs the seeds; stops at the first failure, naming its seed.
pub(crate) fn run_seeds(args: SimArgs) -> Result<(), BoxError> {
    if args.logs {
        crate::config::init_logging(crate::config::LogFormat::Text);
    }
    let seeds = match args.seed {
        Some(seed) => seed..=seed,
        None => args.start..=args.start + args.seeds.saturating_sub(1),
    };
    let started = Instant::now();
    let (mut count, mut blocks) = (0u64, 0u64);
    let (mut power_losses, mut writes_damaged) = (0u64, 0u64);
    let (mut process_kills, mut writes_kept) = (0u64, 0u64);
    let (mut replaced, mut forced_sent, mut forced_checked, mut l1_blocks, mut l1_reorgs) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut faults: BTreeMap<String, usize> = BTreeMap::new();
    let mut gaps = Vec::new();
    let mut progress =
        crate::progress::Progress::new("sim", Some(seeds.end() - seeds.start() + 1), "seeds");
    for seed in seeds {
        let mut options = if args.l1 {
            SimOptions::with_l1(seed)
        } else {
            SimOptions::new(seed)
        };
        options.safety = Duration::from_secs(args.safety_s);
        if let Some(nodes) = args.nodes {
            options.nodes = nodes;
        }
        options.echo_trace = args.trace;
        let outcome = run(&options).map_err(|error| error.to_string())?;
        if args.seed.is_some() {
            println!(
                "seed {seed}: {} nodes, trace {:016x}",
                options.nodes, outcome.trace_hash
            );
            println!("{}", outcome.report);
            println!(
                "power losses {}, un-fsynced writes lost or torn {}; processes killed {}, un-fsynced writes kept {}",
                outcome.power_losses,
                outcome.writes_damaged,
                outcome.process_kills,
                outcome.writes_kept
            );
            if args.l1 {
                println!(
                    "L1: {} blocks, {} reorgs; forced {} sent, {} in a derived chain; {} unsafe blocks replaced",
                    outcome.l1_blocks.0,
                    outcome.l1_blocks.1,
                    outcome.forced.0,
                    outcome.forced.1,
                    outcome.blocks_replaced
                );
            }
        }
        count += 1;
        blocks += outcome.report.highest_block;
        power_losses += outcome.power_losses;
        writes_damaged += outcome.writes_damaged;
        process_kills += outcome.process_kills;
        writes_kept += outcome.writes_kept;
        replaced += outcome.blocks_replaced;
        forced_sent += outcome.forced.0;
        forced_checked += outcome.forced.1;
        l1_blocks += outcome.l1_blocks.0;
        l1_reorgs += outcome.l1_blocks.1;
        for (kind, n) in &outcome.report.faults {
            *faults.entry(kind.clone()).or_default() += n;
        }
        gaps.extend(outcome.report.failover_gaps_ms.iter().copied());
        progress.update(count);
    }
    gaps.sort_unstable();
    let pick = |percent: f64| {
        gaps.get(((gaps.len().max(1) - 1) as f64 * percent / 100.0).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    let elapsed = started.elapsed().as_secs_f64();
    let total: usize = faults.values().sum();
    let kinds: Vec<String> = faults.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!(
        "{count} seeds valid in {elapsed:.0} s ({:.2} seeds/s); {blocks} blocks; {total} faults ({}); anomalies 0",
        count as f64 / elapsed,
        kinds.join(", ")
    );
    println!(
        "power losses: {power_losses}; un-fsynced writes lost or torn: {writes_damaged}; processes killed (kernel alive): {process_kills}; un-fsynced writes kept: {writes_kept}"
    );
    if args.l1 {
        println!(
            "L1: {l1_blocks} blocks, {l1_reorgs} reorgs; forced transactions {forced_sent} sent, {forced_checked} in a derived chain (I6 checked on every L1 block); unsafe blocks replaced {replaced}"
        );
    }
    println!(
        "failover gaps (simulated, {} leader faults): p50 {} ms, p99 {} ms, max {} ms",
        gaps.len(),
        pick(50.0),
        pick(99.0),
        pick(100.0)
    );
    Ok(())
}
