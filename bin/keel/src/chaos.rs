//! `keel chaos` and `keel check`: real-process fault runs judged by the history checker
//! (`keel-testkit`), and the checker on a saved history.

use clap::Args;
use keel_testkit::chaos::{ChaosOptions, FaultKind, default_dir};
use keel_testkit::{CheckOptions, History, check};
use std::path::PathBuf;
use std::time::Duration;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `keel chaos`.
#[derive(Debug, Args)]
pub(crate) struct ChaosArgs {
    /// Seed of the nemesis schedule and the clients' choices (default: from the clock; it is
    /// printed either way).
    #[arg(long)]
    seed: Option<u64>,
    /// How long faults run before the final heal (the safety phase), in seconds.
    #[arg(long, default_value_t = 60)]
    duration_s: u64,
    /// Stop the safety phase after this many faults, if sooner.
    #[arg(long)]
    faults_max: Option<usize>,
    /// Fault kinds to pick from, comma-separated (kill-leader, kill-follower, pause-leader,
    /// partition-leader, one-way-leader, partition-follower, restart-all); default all.
    #[arg(long, value_delimiter = ',', conflicts_with = "no_faults")]
    faults: Vec<FaultKind>,
    /// Inject no faults: a soak under load (with `--rotation-interval-ms`, a rotation drill).
    #[arg(long)]
    no_faults: bool,
    /// Rotating leadership: a healthy leader hands over to the next ready voter after leading
    /// this many ms (the cluster file's `rotation_interval_ms`).
    #[arg(long)]
    rotation_interval_ms: Option<u64>,
    /// Cluster size.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Workload clients (closed loop, one dev account each).
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// An open-loop workload beside the clients: this many transfers a second, sent on a fixed
    /// schedule whatever the answers (refused or unanswered ones are sent again) from fresh
    /// senders; 0: none.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// The open-loop workload's fresh senders (each sends `rate / open-senders` a second).
    #[arg(long, default_value_t = 100)]
    open_senders: usize,
    /// Before each fault, wait until every node is caught up with the leader (a failover
    /// benchmark: each kill finds a cluster ready to fail over, not one still recovering from
    /// the last).
    #[arg(long)]
    ready_before_fault: bool,
    #[command(flatten)]
    timing: crate::failover::ClusterTiming,
    /// The longest time without a new block after the last block or fault event (I5).
    #[arg(long, default_value_t = 5_000)]
    liveness_target_ms: u64,
    /// Where node data, logs, history.json and report.txt go (default: a new temporary
    /// directory, kept).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// `keel check`.
#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// A history.json written by `keel chaos` (or any tool writing the same format).
    history: PathBuf,
    /// The longest time without a new block after the last block or fault event (I5).
    #[arg(long, default_value_t = 5_000)]
    liveness_target_ms: u64,
    /// Do not fail transactions that were accepted and never included: for a history of a
    /// single node, whose pool does not survive a restart.
    #[arg(long)]
    accepted_may_be_lost: bool,
}

/// Runs chaos, prints the report; fails when the verdict is invalid.
pub(crate) async fn run(args: ChaosArgs) -> Result<(), BoxError> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64)
    });
    let dir = args.dir.unwrap_or_else(|| default_dir(seed));
    let mut options = ChaosOptions::new(
        std::env::current_exe()?,
        dir.clone(),
        seed,
        Duration::from_secs(args.duration_s),
    );
    options.faults_max = args.faults_max;
    if args.no_faults {
        options.faults = Vec::new();
    } else if !args.faults.is_empty() {
        options.faults = args.faults;
    }
    options.rotation_interval_ms = args.rotation_interval_ms;
    options.nodes = args.nodes;
    options.clients = args.clients;
    options.open_rate = args.rate;
    options.open_senders = args.open_senders;
    options.ready_before_fault = args.ready_before_fault;
    options.block_time_ms = args.timing.block_time_ms;
    options.election_timeout_ms = args.timing.election_timeout_ms;
    options.heartbeat_ms = args.timing.heartbeat_ms;
    options.check = CheckOptions {
        liveness_target_ms: args.liveness_target_ms,
        accepted_must_be_included: true,
    };
    eprintln!("chaos: seed {seed}, files in {}", dir.display());
    let ticker = crate::progress::ticker(format!("chaos seed {seed}"), options.duration);
    let outcome = keel_testkit::chaos::run(&options).await;
    ticker.abort();
    let outcome = outcome?;
    println!("seed: {seed}\n{}", outcome.report);
    if options.rotation_interval_ms.is_some() {
        println!(
            "leadership rotations by node: {:?}",
            outcome.history.rotations
        );
    }
    if outcome.report.valid() {
        Ok(())
    } else {
        Err(format!("seed {seed}: the history is invalid; see {}", dir.display()).into())
    }
}

/// Checks a saved history and prints the report; fails when it is invalid.
pub(crate) fn check_history(args: CheckArgs) -> Result<(), BoxError> {
    let text = std::fs::read_to_string(&args.history)
        .map_err(|error| format!("reading {}: {error}", args.history.display()))?;
    let history: History = serde_json::from_str(&text)
        .map_err(|error| format!("{} is not a history: {error}", args.history.display()))?;
    let options = CheckOptions {
        liveness_target_ms: args.liveness_target_ms,
        accepted_must_be_included: !args.accepted_may_be_lost,
    };
    let report = check(&history, &options);
    println!("{report}");
    if report.valid() {
        Ok(())
    } else {
        Err(format!("{}: the history is invalid", args.history.display()).into())
    }
}
