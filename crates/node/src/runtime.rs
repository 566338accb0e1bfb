//! Raft's own runtime: the consensus tasks on threads no other work queues on.
//!
//! ```text
//!   main runtime (2 workers)                 keel-raft runtime (RAFT_WORKER_THREADS)
//!   JSON-RPC: decode, recover, pool  ──┐     openraft core: ticks, elections, votes
//!   leader loop, health, dashboard     │     replication streams: AppendEntries, heartbeats
//!   blocking pool: sealing (EVM)       │     peer endpoint: /raft/append, /raft/vote, …
//!                                      │     state machine apply, log fsync
//!                                      └──►  Raft handle: client_write, ensure_linearizable
//! ```
//!
//! A tokio task runs when a worker thread of its runtime picks it from the run queue. On a
//! runtime shared with JSON-RPC, a heartbeat due now waits behind every request queued before
//! it: at 2,000 transfers a second on 2 cores, AppendEntries timed out after 100 ms and a
//! healthy leader lost its leadership (BENCHMARKS.md, the latency baseline). On threads of its
//! own, Raft waits only for the operating system's scheduler, which shares the cores between
//! threads every few milliseconds whatever tokio queued.
//!
//! The simulation runs everything on turmoil's one runtime and has none of this
//! ([`crate::Seams::raft_runtime`] is `None` there): its time is simulated, and one thread
//! keeps a seed's run deterministic.

use crate::NodeError;

/// Worker threads of Raft's runtime: two, so that a state machine apply (a block's
/// re-execution) never holds back the heartbeats on the other.
pub const RAFT_WORKER_THREADS: usize = 2;

/// Worker threads of derivation's runtime: one (it derives one block at a time).
pub const DERIVE_WORKER_THREADS: usize = 1;

/// The nice value of derivation's threads (0 is the process's, 19 the lowest). Derivation
/// re-executes every block batched to the L1 (the `safe` chain, I7): a batch of eight 500-
/// transaction blocks is a quarter second of one core, in one burst each time a batch lands.
/// On a worker of the main runtime that burst held half of JSON-RPC's workers; at a nice value
/// above the node's own threads the operating system gives the cores to sends and blocks
/// first, and derivation the rest. 5, not 19: under a load that keeps both cores busy,
/// derivation keeps about a quarter of a core's share (the kernel's weight of 335 against
/// 1,024) and does not fall behind for good.
pub const DERIVE_NICE: i32 = 5;

/// A tokio runtime on threads of its own, stopped (its threads joined) by [`OwnRuntime::stop`]
/// or when dropped.
#[derive(Debug)]
pub struct OwnRuntime {
    handle: tokio::runtime::Handle,
    runtime: Option<tokio::runtime::Runtime>,
}

impl OwnRuntime {
    /// Starts a multi-thread runtime of `workers` threads named `name`.
    pub fn start(name: &str, workers: usize) -> Result<Self, NodeError> {
        Self::build(name, workers, None)
    }

    /// A runtime like [`OwnRuntime::start`]'s, whose threads run at nice value `nice`: work
    /// the node needs done but not before its sends and blocks (derivation). A kernel that
    /// refuses the change leaves the threads at the process's priority, with a warning.
    pub fn start_background(name: &str, workers: usize, nice: i32) -> Result<Self, NodeError> {
        Self::build(name, workers, Some(nice))
    }

    fn build(name: &str, workers: usize, nice: Option<i32>) -> Result<Self, NodeError> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder
            .worker_threads(workers)
            .thread_name(name)
            .enable_all();
        if let Some(nice) = nice {
            builder.on_thread_start(move || lower_this_thread(nice));
        }
        let runtime = builder
            .build()
            .map_err(NodeError::io(format!("starting the {name} runtime")))?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    /// Where to spawn onto it.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// Runs `future` on this runtime (whatever it spawns lands here too) and waits for it.
    pub async fn run<F>(&self, future: F) -> F::Output
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.handle.spawn(future).await {
            Ok(output) => output,
            // Only a panic in `future` ends a task early here (nothing aborts it): pass it on.
            Err(failure) => std::panic::resume_unwind(failure.into_panic()),
        }
    }

    /// Stops the runtime: its tasks are dropped at their next await, and its threads are
    /// joined off the async threads.
    pub async fn stop(mut self) {
        if let Some(runtime) = self.runtime.take() {
            let _ = tokio::task::spawn_blocking(move || {
                runtime.shutdown_timeout(std::time::Duration::from_secs(5))
            })
            .await;
        }
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        // Dropping a runtime blocks; inside an async context tokio forbids that, so the
        // threads are left to finish on their own there.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Sets the calling thread's nice value (Linux: `setpriority` on a thread id names that thread
/// alone).
fn lower_this_thread(nice: i32) {
    let thread = rustix::thread::gettid();
    if let Err(error) = rustix::process::setpriority_process(Some(thread), nice) {
        tracing::warn!(%error, nice, "could not lower a background thread's priority");
    }
}
