//! The node's L1: which one ([`L1Settings`]), the watcher that follows its heads into the
//! node's [`L1Tracker`] and `/health`, and the embedded dev L1 ([`DevL1`]): keel's own single-node
//! engine assembled a second time, as its own chain, in this process.
//!
//! ```text
//!   L1Client ──poll every L1 block time / 4──► Watcher ──► L1Tracker (heads, recent chain) ─► origin
//!                                                 └──► Health (L1 unreachable, L1 head stale), metrics
//! ```

use crate::{HostSeams, NodeConfig, NodeError, RunningNode};
use keel_l1::{DerivationStatus, EmbeddedL1, ForcedInbox, L1Client, L1Error, L1Tracker};
use keel_primitives::{ChainSpec, RollupConfig, SafeHeads, limits};
use keel_storage::{Snapshot, Store};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The L1 a node reads and writes.
#[derive(Debug, Clone)]
pub struct L1Settings {
    /// How the node reaches it.
    pub client: Arc<dyn L1Client>,
    /// The rollup's rules; its `l1_chain_id` is the chain id the L1 must have (a node whose
    /// L1 answers another halts).
    pub rollup: RollupConfig,
    /// Its block time, in ms: how often the watcher asks, and how old its head may get.
    pub block_time_ms: u64,
    /// L1 blocks the sequencer's origin trails the L1 head.
    pub confirmation_depth: u64,
    /// The batcher key, on a sequencer that posts batches (every member of a cluster has it;
    /// only the leader posts); `None` posts nothing.
    pub batcher: Option<alloy::signers::local::PrivateKeySigner>,
    /// Where the batcher puts its frames (blobs fall back to calldata on an L1 without them).
    pub data_availability: keel_l1::DataAvailability,
}

/// How often the watcher asks the L1 for its heads: four times an L1 block, at most every
/// `limits::L1_POLL_MS_MIN`.
pub(crate) fn poll_interval(block_time_ms: u64) -> Duration {
    Duration::from_millis((block_time_ms / 4).max(limits::L1_POLL_MS_MIN))
}

/// Follows the L1's heads and recent chain into the node's [`L1Tracker`].
pub(crate) struct Watcher {
    pub(crate) settings: L1Settings,
    pub(crate) health: Arc<crate::Health>,
    pub(crate) tracker: Arc<L1Tracker>,
}

impl Watcher {
    /// Runs until the node stops: checks the chain id on first contact (a wrong one halts
    /// the node), then reads the heads every poll interval.
    pub(crate) async fn run(self) {
        let mut interval = tokio::time::interval(poll_interval(self.settings.block_time_ms));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut chain_checked = false;
        loop {
            interval.tick().await;
            if !chain_checked {
                let expected = self.settings.rollup.l1_chain_id;
                match keel_l1::check_chain_id(&*self.settings.client, expected).await {
                    Ok(()) => chain_checked = true,
                    Err(error @ L1Error::WrongChain { .. }) => {
                        tracing::error!(%error, "wrong L1: the node halts");
                        self.health.halt(error.to_string());
                        return;
                    }
                    Err(error) => {
                        self.failed(&error);
                        continue;
                    }
                }
            }
            match self.tracker.update(&*self.settings.client).await {
                Ok(latest) => {
                    self.health.l1_answered(latest.number, latest.timestamp);
                    metrics::gauge!("keel_l1_reachable").set(1.0);
                    let heads = self.tracker.heads();
                    for (name, head) in [
                        ("latest", heads.latest),
                        ("safe", heads.safe),
                        ("finalized", heads.finalized),
                    ] {
                        if let Some(head) = head {
                            metrics::gauge!("keel_l1_block_number", "head" => name)
                                .set(head.number as f64);
                        }
                    }
                }
                Err(error) => self.failed(&error),
            }
        }
    }

    fn failed(&self, error: &L1Error) {
        metrics::counter!("keel_l1_errors_total", "kind" => error.kind().name()).increment(1);
        metrics::gauge!("keel_l1_reachable").set(0.0);
        tracing::debug!(%error, "L1 call failed");
        self.health.l1_failed(error.to_string());
    }
}

/// How often derivation asks the L1 for its next block when caught up: twice an L1 block.
pub(crate) fn derivation_poll(block_time_ms: u64) -> Duration {
    Duration::from_millis((block_time_ms / 2).max(limits::L1_POLL_MS_MIN))
}

/// The running L1 side of a node: the watcher, derivation into its derived store, and the
/// comparison of the derived chain with the applied one that moves `safe` and `finalized`.
pub(crate) struct L1Parts {
    pub(crate) tracker: Arc<L1Tracker>,
    pub(crate) forced: Arc<ForcedInbox>,
    pub(crate) tasks: Vec<tokio::task::JoinHandle<()>>,
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) derived: Arc<Store>,
    pub(crate) status: watch::Receiver<DerivationStatus>,
    /// Derivation's own runtime (none in the simulation): stopped after the L1 parts.
    pub(crate) runtime: Option<crate::runtime::OwnRuntime>,
}

/// Starts the watcher, derivation (opened in the background, retried until the L1 answers)
/// and the safe-head comparison. `derived` is the store derivation writes: a store of its own
/// on a sequencer, the node's only store on a verifier (then `applied` is the same store).
/// Derivation runs on `runtime` when there is one (`crate::runtime::DERIVE_NICE` says why).
pub(crate) fn start(
    settings: L1Settings,
    chain: ChainSpec,
    applied: Arc<Store>,
    derived: Arc<Store>,
    heads: Arc<SafeHeads>,
    health: Arc<crate::Health>,
    runtime: Option<crate::runtime::OwnRuntime>,
) -> L1Parts {
    health.watch_l1(settings.block_time_ms);
    let tracker = Arc::new(L1Tracker::default());
    let forced = Arc::new(ForcedInbox::default());
    let (stop, stopped) = watch::channel(false);
    let (status_sender, status) = watch::channel(DerivationStatus::default());
    let status_for_parts = status.clone();
    let watcher = Watcher {
        settings: settings.clone(),
        health: health.clone(),
        tracker: tracker.clone(),
    };
    let poll = derivation_poll(settings.block_time_ms);
    let derived_for_compare = derived.clone();
    let derivation = {
        let forced = forced.clone();
        let health = health.clone();
        let stopped = stopped.clone();
        async move {
            let deriver = loop {
                let opened = keel_l1::Deriver::open(
                    settings.rollup.clone(),
                    chain.clone(),
                    settings.client.clone(),
                    derived.clone(),
                    forced.clone(),
                )
                .await;
                match opened {
                    Ok(deriver) => break deriver,
                    Err(error) if error.kind() == keel_primitives::ErrorKind::Halt => {
                        tracing::error!(%error, "derivation cannot start: the node halts");
                        health.halt(format!("derivation: {error}"));
                        return;
                    }
                    Err(error) => {
                        tracing::debug!(%error, "derivation waits for the L1");
                        tokio::time::sleep(poll).await;
                    }
                }
            };
            // Forward the deriver's status to the comparison.
            let mut own = deriver.status();
            tokio::spawn(async move {
                loop {
                    let current = *own.borrow_and_update();
                    status_sender.send_replace(current);
                    if own.changed().await.is_err() {
                        return;
                    }
                }
            });
            if let Some(error) = deriver.run(poll, stopped).await {
                health.halt(format!("derivation halted: {error}"));
            }
        }
    };
    let comparison = compare(
        applied,
        derived_for_compare.clone(),
        heads,
        health,
        status,
        stopped,
    );
    L1Parts {
        tracker,
        forced,
        tasks: vec![
            tokio::spawn(watcher.run()),
            match &runtime {
                Some(runtime) => runtime.handle().spawn(derivation),
                None => tokio::spawn(derivation),
            },
            tokio::spawn(comparison),
        ],
        stop,
        derived: derived_for_compare,
        status: status_for_parts,
        runtime,
    }
}

/// Runs a batcher whenever `fence` allows (a single node: always; a cluster member: while it
/// leads), a new one each time: it keeps nothing from an earlier life (see keel-l1's
/// `batcher` module).
pub(crate) async fn supervise_batcher(
    config: keel_l1::BatcherConfig,
    client: Arc<dyn L1Client>,
    applied: Arc<Store>,
    derived: Arc<Store>,
    status: watch::Receiver<DerivationStatus>,
    fence: keel_l1::Fence,
) {
    let poll = config.poll;
    loop {
        if fence().is_some() {
            keel_l1::Batcher::new(
                config.clone(),
                client.clone(),
                applied.clone(),
                derived.clone(),
                status.clone(),
                fence.clone(),
            )
            .run()
            .await;
        }
        tokio::time::sleep(poll).await;
    }
}

/// Moves `safe` and `finalized` (I7): the highest height up to which the derived chain and
/// the applied chain hold the same blocks, and the derived chain's finalized head below it.
/// A block that differs stops `safe` there, loudly; it is never served as safe.
async fn compare(
    applied: Arc<Store>,
    derived: Arc<Store>,
    heads: Arc<SafeHeads>,
    health: Arc<crate::Health>,
    mut status: watch::Receiver<DerivationStatus>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(Duration::from_millis(limits::L1_POLL_MS_MIN * 2));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut safe = 0u64;
    let mut replacing = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            changed = status.changed() => if changed.is_err() { return },
            _ = stopped.changed() => return,
        }
        let derivation = *status.borrow();

        let compared = applied
            .snapshot()
            .and_then(|applied| Ok((applied, derived.snapshot()?)))
            .map_err(NodeError::from)
            .and_then(|(applied, derived)| matched_height(&applied, &derived, safe));
        match compared {
            Ok((matched, divergence)) => {
                safe = matched;
                match divergence {
                    Some(divergence) if !divergence.replaced => {
                        metrics::gauge!("keel_derivation_divergence").set(1.0);
                        health.diverged(Some(format!(
                            "block {}: derived {}, applied {}",
                            divergence.number, divergence.derived, divergence.applied
                        )));
                    }
                    replaced => {
                        if let Some(divergence) = replaced
                            && replacing != Some(divergence.number)
                        {
                            tracing::warn!(
                                number = divergence.number,
                                derived = %divergence.derived,
                                applied = %divergence.applied,
                                "the L1 replaced unsafe blocks that were not batched in time: the sequencer adopts the derived chain"
                            );
                        }
                        replacing = replaced.map(|divergence| divergence.number);
                        metrics::gauge!("keel_derivation_divergence").set(0.0);
                        health.diverged(None);
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "comparing the derived and applied chains");
                continue;
            }
        }
        let finalized = derivation.finalized.min(safe);
        heads.set(safe, finalized);
        metrics::gauge!("keel_safe_head").set(safe as f64);
        metrics::gauge!("keel_finalized_head").set(finalized as f64);
    }
}

/// Where the derived chain and the applied chain part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Divergence {
    /// The first height whose blocks differ.
    pub number: u64,
    /// The derived block there.
    pub derived: alloy::primitives::B256,
    /// The applied block there.
    pub applied: alloy::primitives::B256,
    /// The derived block holds other transactions than the applied one: the L1 decided
    /// otherwise (a forced-only block past a deadline no batch met, or an origin reorged out),
    /// so the applied blocks from there were never batched in time and the sequencer adopts
    /// the derived ones (docs/protocol.md, "What gets replaced"). `false`: the same
    /// transactions executed to a different block, an execution disagreement that no
    /// adoption fixes (I7: alert, never serve it as safe).
    pub replaced: bool,
}

/// The highest height, from `from` (stepping back first if either chain was unwound below
/// it), up to which both stores hold the same blocks; and the first differing block, if any.
pub(crate) fn matched_height(
    applied: &Snapshot,
    derived: &Snapshot,
    from: u64,
) -> Result<(u64, Option<Divergence>), NodeError> {
    let top = applied.head().0.min(derived.head().0);
    // Blocks commit to their parents: the same block at the top means the same chain below.
    let top_hash = applied.block_hash(top)?;
    if top_hash.is_some() && top_hash == derived.block_hash(top)? {
        return Ok((top, None));
    }
    let mut matched = from.min(top);
    while matched > 0 && applied.block_hash(matched)? != derived.block_hash(matched)? {
        matched -= 1;
    }
    while matched < top {
        let next = matched + 1;
        match (derived.block_hash(next)?, applied.block_hash(next)?) {
            (Some(ours), Some(theirs)) if ours == theirs => matched = next,
            (Some(ours), Some(theirs)) => {
                let hashes = |block: Option<keel_primitives::SealedBlock>| {
                    block.map(|block| {
                        block
                            .transactions
                            .iter()
                            .map(|transaction| *transaction.tx_hash())
                            .collect::<Vec<_>>()
                    })
                };
                let replaced = hashes(derived.block(next)?) != hashes(applied.block(next)?);
                return Ok((
                    matched,
                    Some(Divergence {
                        number: next,
                        derived: ours,
                        applied: theirs,
                        replaced,
                    }),
                ));
            }
            // Below a snapshot install: the applied store lacks the block; trust the head.
            _ => matched = next,
        }
    }
    Ok((matched, None))
}

/// How the embedded dev L1 runs.
#[derive(Debug, Clone)]
pub struct DevL1Config {
    /// Its data directory (its own `chain.redb`).
    pub datadir: PathBuf,
    /// Where its JSON-RPC listens (port 0 picks one).
    pub rpc_addr: SocketAddr,
    /// Its block time, in ms (`limits::L1_BLOCK_TIME_MS_DEFAULT`: Ethereum's 12 s).
    pub block_time_ms: u64,
    /// Blocks its `safe` head trails `latest`.
    pub safe_depth: u64,
    /// Blocks its `finalized` head trails `latest`.
    pub finalized_depth: u64,
}

impl DevL1Config {
    /// The embedded dev L1 in `datadir`, serving JSON-RPC at `rpc_addr`, with Ethereum's block
    /// time and anvil's safe and finalized depths.
    pub fn new(datadir: PathBuf, rpc_addr: SocketAddr) -> Self {
        Self {
            datadir,
            rpc_addr,
            block_time_ms: limits::L1_BLOCK_TIME_MS_DEFAULT,
            safe_depth: limits::DEV_L1_SAFE_DEPTH_DEFAULT,
            finalized_depth: limits::DEV_L1_FINALIZED_DEPTH_DEFAULT,
        }
    }
}

/// The embedded dev L1: a keel single node on chain 1337 (the dev accounts funded), run on a
/// runtime and threads of its own so that its work never delays the L2's, and recording no
/// metrics, so that its blocks never move the L2 node's gauges (the metrics recorder is one
/// per process).
#[derive(Debug)]
pub struct DevL1 {
    /// Its client, reading its store directly.
    pub client: Arc<EmbeddedL1>,
    /// Where its JSON-RPC listens.
    pub rpc_addr: SocketAddr,
    /// Its block time, in ms.
    pub block_time_ms: u64,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Makes the calling thread record no metrics (the embedded dev L1's threads).
pub(crate) fn record_no_metrics() {
    static NOOP: metrics::NoopRecorder = metrics::NoopRecorder;
    // The guard would restore the global recorder when dropped; the thread keeps the no-op
    // recorder for its whole life instead.
    std::mem::forget(metrics::set_default_local_recorder(&NOOP));
}

impl DevL1 {
    /// Starts the embedded dev L1 and waits until it serves.
    pub fn start(config: DevL1Config) -> Result<Self, NodeError> {
        if config.safe_depth > config.finalized_depth {
            return Err(NodeError::Config(format!(
                "L1 safe depth {} is beyond its finalized depth {}",
                config.safe_depth, config.finalized_depth
            )));
        }
        let chain = ChainSpec::dev_l1();
        let heads = Arc::new(SafeHeads::behind(config.safe_depth, config.finalized_depth));
        let node_config = NodeConfig {
            datadir: config.datadir.clone(),
            rpc_addr: config.rpc_addr,
            metrics_addr: None,
            block_time_ms: config.block_time_ms,
            gas_limit: chain.genesis.gas_limit,
            beneficiary: Default::default(),
            extra_data: Default::default(),
            chain: chain.clone(),
            cluster: None,
            clock: Arc::new(keel_primitives::SystemClock),
            safe_heads: heads.clone(),
            l1: None,
            record_metrics: false,
            mode: Default::default(),
            seal_on_start: true,
            state_history: crate::StateHistory::Archive,
        };
        let (started_tx, started_rx) = std::sync::mpsc::sync_channel(1);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("keel-dev-l1".into())
            .spawn(move || {
                record_no_metrics();
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("keel-dev-l1-worker")
                    .on_thread_start(record_no_metrics)
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = started_tx
                            .send(Err(NodeError::io("starting the dev L1 runtime")(error)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let span = tracing::info_span!("l1");
                    let _entered = span.enter();
                    let started = match HostSeams::new(&node_config) {
                        Ok(seams) => crate::assemble(node_config, seams).await,
                        Err(error) => Err(error),
                    };
                    let node: RunningNode = match started {
                        Ok(node) => node,
                        Err(error) => {
                            let _ = started_tx.send(Err(error));
                            return;
                        }
                    };
                    let _ = started_tx.send(Ok((
                        node.store.clone(),
                        node.mempool.clone(),
                        node.rpc_addr,
                    )));
                    let _ = stop_rx.await;
                    node.shutdown().await;
                });
            })
            .map_err(NodeError::io("starting the dev L1 thread"))?;
        let (store, mempool, rpc_addr) = started_rx
            .recv()
            .map_err(|_| NodeError::Config("the dev L1 thread ended before it started".into()))??;
        let rpc_addr =
            rpc_addr.ok_or_else(|| NodeError::Config("the dev L1 serves no JSON-RPC".into()))?;
        tracing::info!(
            chain_id = chain.chain_id,
            %rpc_addr,
            block_time_ms = config.block_time_ms,
            "embedded dev L1 running"
        );
        Ok(Self {
            client: Arc::new(EmbeddedL1::new(chain, store, mempool, heads)),
            rpc_addr,
            block_time_ms: config.block_time_ms,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// What an L2 node reading this L1 under `rollup` is configured with. The origin trails
    /// nothing: the embedded L1 is a single keel node, which never reorgs.
    pub fn settings(&self, rollup: RollupConfig) -> L1Settings {
        L1Settings {
            client: self.client.clone(),
            rollup,
            block_time_ms: self.block_time_ms,
            confirmation_depth: 0,
            batcher: None,
            data_availability: keel_l1::DataAvailability::Calldata,
        }
    }

    /// Stops it: sealing, then serving; waits for its thread.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for DevL1 {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
