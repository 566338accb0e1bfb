//! The deterministic simulation, seed by seed: each seed runs 3 to 5 nodes of the real cluster
//! code under a seeded schedule of process kills (the kernel keeping every write), power cuts
//! in the middle of a commit, full restarts (a power loss of every host), partitions (leader in the minority, follower cut
//! off, one way, the network split in halves), held links, lossy links, duplicated requests,
//! slow disks and clock jumps, with load. Every
//! applied block is checked for I1 as it happens; after the heal the cluster must converge
//! (I5); the history checker judges the run (I1, I2, I5). A failure prints its seed, and
//! `keel sim --seed N` replays it exactly.

use keel_testkit::sim::{SimFault, SimOptions, SimOutcome, run};
use std::collections::BTreeSet;
use std::time::Duration;

/// The seeds `cargo test` runs; `keel sim --seeds N` runs many more. Together they inject
/// every fault kind (checked below).
const SEEDS: std::ops::RangeInclusive<u64> = 1..=12;

#[test]
fn i1_i2_i5_hold_for_a_fixed_set_of_seeds() {
    let mut kinds = BTreeSet::new();
    for seed in SEEDS {
        let started = std::time::Instant::now();
        match run(&SimOptions::new(seed)) {
            Ok(outcome) => {
                println!(
                    "seed {seed}: valid, {} blocks, {} faults, trace {:016x}, {:.1} s",
                    outcome.report.highest_block,
                    outcome.report.faults.values().sum::<usize>(),
                    outcome.trace_hash,
                    started.elapsed().as_secs_f64()
                );
                kinds.extend(outcome.report.faults.keys().cloned());
            }
            Err(error) => panic!("{error}"),
        }
    }
    let missing: Vec<&str> = SimFault::ALL
        .iter()
        .map(|fault| fault.name())
        .filter(|name| !kinds.contains(*name))
        .collect();
    assert!(
        missing.is_empty(),
        "seeds {SEEDS:?} never injected {missing:?}: pick a wider set"
    );
}

/// I2 and I1 across power cuts that strike in the middle of a commit: the leader's, then a
/// follower's, then the new leader's disk dies part way through its I/O, and each host comes
/// back from what its disks kept: synced writes whole, the rest lost or torn. Nothing a quorum
/// acknowledged may go missing, and no height may change its block.
#[test]
fn i1_i2_power_cuts_mid_commit_lose_only_unacknowledged_writes() {
    // Each cut is held 4.5 s: a member's chain store writes its disk about every 16th block
    // (4 s at 250 ms blocks; `DEFERRED_BLOCKS_MAX`), and a cut there waits for that I/O.
    let script = [
        (2_000, SimFault::PowerLossLeader, 4_500),
        (7_000, SimFault::PowerLossFollower, 4_500),
        (12_000, SimFault::PowerLossLeader, 4_500),
        (17_000, SimFault::PowerLossFollower, 4_500),
        (22_000, SimFault::RestartAll, 4_500),
    ];
    let options = SimOptions::scripted(7, 3, Duration::from_secs(25), &script);
    let outcome = run(&options).unwrap_or_else(|error| panic!("{error}"));
    println!(
        "{} host crashes, {} unsynced writes lost or torn\n{}",
        outcome.power_losses, outcome.writes_damaged, outcome.report
    );
    assert!(
        outcome.power_losses >= 7,
        "the cuts did not all strike: {} host crashes",
        outcome.power_losses
    );
    assert!(
        outcome.writes_damaged > 0,
        "no cut struck with writes in flight: the test proved nothing"
    );
    assert!(outcome.report.valid());
}

/// A process killed with its kernel alive keeps every write it made, fsynced or not: the
/// deferred chain store's un-fsynced blocks are on its disk when it restarts, beside a Raft
/// log that may say less was applied. Killing the leader and followers again and again under
/// load loses no acknowledged write (I2) and forks nothing (I1, I5).
#[test]
fn i1_i2_process_kills_keep_unsynced_writes_and_lose_nothing() {
    let script = [
        (3_000, SimFault::CrashLeader, 2_500),
        (7_000, SimFault::CrashFollower, 2_500),
        (11_000, SimFault::CrashLeader, 2_500),
        (15_000, SimFault::CrashFollower, 2_500),
        (19_000, SimFault::CrashLeader, 2_500),
    ];
    let options = SimOptions::scripted(11, 3, Duration::from_secs(24), &script);
    let outcome = run(&options).unwrap_or_else(|error| panic!("{error}"));
    println!(
        "{} processes killed, {} unsynced writes kept\n{}",
        outcome.process_kills, outcome.writes_kept, outcome.report
    );
    assert_eq!(outcome.process_kills, 5, "every kill struck");
    assert_eq!(outcome.power_losses, 0, "a kill is not a power loss");
    assert!(
        outcome.writes_kept > 0,
        "no kill left un-fsynced writes behind: the test proved nothing"
    );
    assert!(outcome.report.valid());
}

/// Runs `options` twice and fails at the first trace line that differs.
fn run_twice(options: &SimOptions) -> (SimOutcome, SimOutcome) {
    let first = run(options).unwrap_or_else(|error| panic!("{error}"));
    let second = run(options).unwrap_or_else(|error| panic!("{error}"));
    if first.trace != second.trace {
        let at = first
            .trace
            .iter()
            .zip(&second.trace)
            .position(|(a, b)| a != b)
            .unwrap_or(first.trace.len().min(second.trace.len()));
        panic!(
            "seed {}{}: the traces differ at line {at}: {:?} vs {:?}",
            options.seed,
            options.replay_flags(),
            first.trace.get(at),
            second.trace.get(at)
        );
    }
    (first, second)
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let seed = 42;
    let (first, second) = run_twice(&SimOptions::new(seed));
    assert_eq!(first.trace_hash, second.trace_hash);
    assert!(
        first.report.highest_block > 10,
        "seed {seed}: the run barely sealed"
    );
}

/// I6 and "only unbatched unsafe blocks are replaced", with the L1 in the run: the batcher's
/// funds are gone for longer than the forced-inclusion window while transactions are forced
/// through the L1 and the leader crashes. Derivation must put the due forced transactions in
/// the safe chain itself, every node must adopt that chain (replacing the unsafe blocks that
/// were never batched, and no others), and the cluster must go on on top of it.
#[test]
fn i6_a_broke_batcher_past_the_window_gets_forced_transactions_in_by_derivation() {
    let window_ms = keel_testkit::sim_l1::SIM_FORCE_INCLUSION_WINDOW_BLOCKS
        * keel_testkit::sim_l1::SIM_L1_BLOCK_TIME_MS;
    let script = [
        (1_000, SimFault::BatcherBroke, window_ms + 6_000),
        (6_000, SimFault::CrashLeader, 1_500),
        (12_000, SimFault::L1Outage, 1_000),
    ];
    let options = SimOptions {
        l1: true,
        ..SimOptions::scripted(11, 3, Duration::from_secs(22), &script)
    };
    let outcome = run(&options).unwrap_or_else(|error| panic!("{error}"));
    println!(
        "{} forced, {} checked by their deadline, {} unsafe blocks replaced, L1 at {}\n{}",
        outcome.forced.0,
        outcome.forced.1,
        outcome.blocks_replaced,
        outcome.l1_blocks.0,
        outcome.report
    );
    assert!(outcome.report.valid());
    assert!(
        outcome.forced.1 >= 2,
        "too few forced transactions were checked to show I6: {:?}",
        outcome.forced
    );
    assert!(
        outcome.blocks_replaced > 0,
        "no unsafe block was replaced: derivation never had to include a forced transaction itself, so the test proved nothing"
    );
}

/// With the L1 in the run too (its blocks, reorgs, batches, forced transactions and derived
/// chains), a seed replays byte for byte.
#[test]
fn the_same_seed_gives_the_same_trace_with_the_l1() {
    let seed = 5;
    let (first, second) = run_twice(&SimOptions::with_l1(seed));
    assert!(
        first.trace.iter().any(|line| line.contains(" l1 block ")),
        "seed {seed}: the trace holds no L1 block"
    );
    assert_eq!(first.l1_blocks, second.l1_blocks);
}
