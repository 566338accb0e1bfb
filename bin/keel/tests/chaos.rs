//! A short real-process chaos run: three `keel` processes, a closed-loop workload through
//! their RPC, and a seeded nemesis of every fault kind (SIGKILL of leader and follower,
//! SIGSTOP/SIGCONT, two-way and one-way partitions through the fault proxy, full restarts).
//! The history checker must find no lost receipt (I2), no second hash at any height and no
//! backwards head (I1), and no liveness gap past the target after any fault event (I5).
//! A failure prints the seed; `keel chaos --seed N --duration-s 25` replays its schedule.
//!
//! A second run has no faults and rotating leadership: every voter leads in turn under load,
//! no slot goes without a block, nothing acknowledged is lost. A third puts open-loop load
//! through three leader kills: every accepted transaction lands.

use keel_testkit::chaos::{ChaosOptions, ChaosOutcome, FaultKind, run};
use std::time::Duration;

const SEED: u64 = 20_261_126;

/// The runs take turns: two clusters at once on two cores would measure the machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `options`; a run that cannot finish, or whose history is invalid, panics with the seed
/// and keeps `dir` (node logs, history.json, report.txt) for a look.
async fn run_valid(options: &ChaosOptions, dir: tempfile::TempDir) -> ChaosOutcome {
    let outcome = match run(options).await {
        Ok(outcome) => outcome,
        Err(error) => {
            let kept = dir.keep();
            panic!(
                "seed {SEED}: chaos run failed: {error}; files in {}",
                kept.display()
            )
        }
    };
    if !outcome.report.valid() {
        let kept = dir.keep();
        panic!(
            "seed {SEED}: {}\nfiles in {}",
            outcome.report,
            kept.display()
        );
    }
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_chaos_run_keeps_i1_i2_and_i5() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let options = ChaosOptions::new(
        env!("CARGO_BIN_EXE_keel").into(),
        dir.path().to_path_buf(),
        SEED,
        Duration::from_secs(25),
    );
    let outcome = run_valid(&options, dir).await;
    let report = &outcome.report;
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

/// "Accepted means kept" under open-loop load (part 7): transfers sent on a fixed schedule from
/// 50 fresh senders at 100 a second, whatever the answers, while the leader is SIGKILLed three
/// times (and restarted). Every transaction a node answered with its hash is in the final
/// chains (the checker fails `AcceptedNotIncluded` otherwise), which also means no sender was
/// left stuck behind a nonce gap; no acknowledged block is lost (I2) and the chain is one (I1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_load_through_three_leader_kills_keeps_every_accepted_transaction() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut options = ChaosOptions::new(
        env!("CARGO_BIN_EXE_keel").into(),
        dir.path().to_path_buf(),
        SEED,
        Duration::from_secs(20),
    );
    options.faults = vec![FaultKind::KillLeader];
    options.faults_max = Some(3);
    options.open_rate = 100;
    options.open_senders = 50;
    let outcome = run_valid(&options, dir).await;
    let report = &outcome.report;
    assert_eq!(report.faults.get("kill-leader"), Some(&3), "{report}");
    let accepted = outcome
        .history
        .sends
        .iter()
        .filter(|send| matches!(send.answer, keel_testkit::history::Answer::Accepted))
        .count();
    assert!(
        accepted >= 500,
        "seed {SEED}: only {accepted} open-loop sends accepted\n{report}"
    );
    println!("seed {SEED}: {accepted} accepted\n{report}");
}

/// Rotating leadership under load, at 250 ms blocks: at least 10 rotations, every voter leads
/// at least once, no block slot goes empty (no gap between new blocks reaches two block
/// times), no acknowledged transaction is lost (I2), no accepted one is dropped (the pool
/// hand-off) and the chain is one chain (I1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_leadership_under_load_misses_no_slot_and_loses_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut options = ChaosOptions::new(
        env!("CARGO_BIN_EXE_keel").into(),
        dir.path().to_path_buf(),
        SEED,
        Duration::from_secs(22),
    );
    options.faults = Vec::new();
    options.rotation_interval_ms = Some(1_200);
    let outcome = match run(&options).await {
        Ok(outcome) => outcome,
        Err(error) => {
            let kept = dir.keep();
            panic!("chaos run failed: {error}; files in {}", kept.display())
        }
    };
    let report = &outcome.report;
    let rotations = &outcome.history.rotations;
    let mut problems = Vec::new();
    if !report.valid() {
        problems.push("invalid history".to_string());
    }
    if rotations.values().sum::<u64>() < 10 {
        problems.push("fewer than 10 rotations".into());
    }
    if rotations.len() != 3 || rotations.values().any(|count| *count == 0) {
        problems.push("a voter never led (and rotated away)".into());
    }
    if !report.never_included.is_empty() {
        problems.push("accepted transactions were dropped in a hand-over".into());
    }
    if report.longest_gap_ms >= 2 * options.block_time_ms {
        problems.push(format!(
            "a slot was missed: a gap of {} ms",
            report.longest_gap_ms
        ));
    }
    if !problems.is_empty() {
        let kept = dir.keep();
        panic!(
            "{}\nrotations by node: {rotations:?}\n{report}\nfiles in {}",
            problems.join("; "),
            kept.display()
        );
    }
    assert_eq!(report.transactions_lost, 0, "I2\n{report}");
    println!("rotations by node: {rotations:?}\n{report}");
}
