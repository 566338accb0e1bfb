//! A short real-process chaos run: three `keel` processes, a closed-loop workload through
//! their RPC, and a seeded nemesis of every fault kind (SIGKILL of leader and follower,
//! SIGSTOP/SIGCONT, two-way and one-way partitions through the fault proxy, full restarts).
//! The history checker must find no lost receipt (I2), no second hash at any height and no
//! backwards head (I1), and no liveness gap past the target after any fault event (I5).
//! A failure prints the seed; `keel chaos --seed N --duration-s 25` replays its schedule.

use keel_testkit::chaos::{ChaosOptions, run};
use std::time::Duration;

const SEED: u64 = 20_261_126;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_chaos_run_keeps_i1_i2_and_i5() {
    let dir = tempfile::tempdir().unwrap();
    let options = ChaosOptions::new(
        env!("CARGO_BIN_EXE_keel").into(),
        dir.path().to_path_buf(),
        SEED,
        Duration::from_secs(25),
    );
    let outcome = match run(&options).await {
        Ok(outcome) => outcome,
        Err(error) => {
            let kept = dir.keep();
            panic!(
                "seed {SEED}: chaos run failed: {error}; files in {}",
                kept.display()
            )
        }
    };
    let report = &outcome.report;
    if !report.valid() {
        let kept = dir.keep();
        panic!("seed {SEED}: {report}\nfiles in {}", kept.display());
    }
    let faults: usize = report.faults.values().sum();
    assert!(
        faults >= 5,
        "seed {SEED}: only {faults} faults injected\n{report}"
    );
    assert!(
        report.transactions_acknowledged >= 20,
        "seed {SEED}: the workload barely ran\n{report}"
    );
    assert_eq!(report.transactions_lost, 0, "seed {SEED}: I2\n{report}");
    println!("seed {SEED}\n{report}");
}
