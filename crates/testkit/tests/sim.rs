//! The deterministic simulation, seed by seed: each seed runs 3 to 5 nodes of the real cluster
//! code under a seeded schedule of crashes, full restarts, partitions (leader in the minority,
//! follower cut off, one way), held links, lossy links and clock jumps, with load. Every
//! applied block is checked for I1 as it happens; after the heal the cluster must converge
//! (I5); the history checker judges the run (I1, I2, I5). A failure prints its seed, and
//! `keel sim --seed N` replays it exactly.

use keel_testkit::sim::{SimOptions, run};

/// The seeds `cargo test` runs; `keel sim --seeds N` runs many more.
const SEEDS: std::ops::RangeInclusive<u64> = 1..=6;

#[test]
fn i1_i2_i5_hold_for_a_fixed_set_of_seeds() {
    for seed in SEEDS {
        let started = std::time::Instant::now();
        match run(&SimOptions::new(seed)) {
            Ok(outcome) => println!(
                "seed {seed}: valid, {} blocks, {} faults, trace {:016x}, {:.1} s",
                outcome.report.highest_block,
                outcome.report.faults.values().sum::<usize>(),
                outcome.trace_hash,
                started.elapsed().as_secs_f64()
            ),
            Err(error) => panic!("{error}"),
        }
    }
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let seed = 42;
    let first = run(&SimOptions::new(seed)).unwrap_or_else(|error| panic!("{error}"));
    let second = run(&SimOptions::new(seed)).unwrap_or_else(|error| panic!("{error}"));
    if first.trace != second.trace {
        let at = first
            .trace
            .iter()
            .zip(&second.trace)
            .position(|(a, b)| a != b)
            .unwrap_or(first.trace.len().min(second.trace.len()));
        panic!(
            "seed {seed}: the traces differ at line {at}: {:?} vs {:?}",
            first.trace.get(at),
            second.trace.get(at)
        );
    }
    assert_eq!(first.trace_hash, second.trace_hash);
    assert!(
        first.report.highest_block > 10,
        "seed {seed}: the run barely sealed"
    );
}
