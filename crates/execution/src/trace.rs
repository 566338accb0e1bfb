//! geth's debug tracers (`debug_traceTransaction`, `debug_traceBlockBy*`, `debug_traceCall`)
//! with revm-inspectors, the tracers reth and Foundry use.
//!
//! ```text
//!   block N, tx i: parent state ─► txs 0..i through BlockExecutor::execute_transaction (the
//!                  builder's and validator's own path, I4) ─► tx i under the inspector on that
//!                  state ─► its result checked against the block's receipt ─► the tracer's frame
//!   a call:        a view's state (+ overrides) ─► the call under the inspector
//! ```
//!
//! Tracers: the struct logger (geth's default, with `disableStack`, `disableStorage`,
//! `enableMemory`, `enableReturnData`), `callTracer` (`onlyTopCall`, `withLog`),
//! `prestateTracer` (`diffMode`), `4byteTracer` and `noopTracer`.
//!
//! ### Correctness and bounds
//! - A traced transaction of a block must end as the block's receipt says (status, gas,
//!   logs); otherwise the trace is refused as [`TraceError::Diverged`], an alarm, never served.
//! - Time: geth's `timeout` (default 5 s, at most [`limits::TRACE_TIMEOUT_MS_MAX`]) stops
//!   the execution itself, not only the answer.
//! - Memory: the tracer records at most [`limits::TRACE_RECORDED_BYTES_MAX`] bytes, then stops.
//! - The caller runs traces off the sealing path (the RPC's blocking pool).

use crate::call::CallState;
use crate::executor::{BlockEnvironment, BlockExecutor, SPEC, cfg, tx_env};
use crate::state::{BlockState, StateReadError};
use alloy::consensus::ReceiptEnvelope;
use alloy::primitives::B256;
use alloy::rpc::types::TransactionRequest;
use alloy::rpc::types::trace::geth::{
    CallConfig, FourByteFrame, GethDebugBuiltInTracerType, GethDebugTracerType,
    GethDebugTracingOptions, GethTrace, NoopFrame, PreStateConfig, TraceResult,
};
use keel_primitives::{ChainSpec, SealedBlock, limits};
use keel_storage::Snapshot;
use revm::context::result::{EVMError, ExecutionResult, ResultAndState};
use revm::context::{BlockEnv, CfgEnv, Context, ContextError, ContextTr, TxEnv};
use revm::inspector::{InspectEvm, Inspector};
use revm::interpreter::Interpreter;
use revm::{DatabaseCommit, MainBuilder};
use revm_inspectors::tracing::{
    FourByteInspector, TraceLimitBehavior, TraceLimits, TracingInspector, TracingInspectorConfig,
};
use std::time::{Duration, Instant};

/// Why a trace was not produced.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TraceError {
    /// The tracer or an option is not one keel serves.
    #[error("{0}")]
    Unsupported(String),
    /// An option does not parse.
    #[error("{0}")]
    BadOption(String),
    /// The execution ran past the timeout (geth's words).
    #[error("execution timeout")]
    Timeout,
    /// The trace grew past its memory bound.
    #[error(
        "trace exceeds {} bytes of recorded data",
        limits::TRACE_RECORDED_BYTES_MAX
    )]
    TooLarge,
    /// A block's transaction did not replay as the block says: the tracer and the builder
    /// disagree (an I4 alarm; the trace is not served).
    #[error("replaying transaction {index} of block {number} diverged from its receipt: {detail}")]
    Diverged {
        /// The block.
        number: u64,
        /// The transaction's index.
        index: usize,
        /// What differed.
        detail: String,
    },
    /// The call itself is invalid (nonce, funds, fees...).
    #[error("{0}")]
    Invalid(String),
    /// Reading the state failed.
    #[error(transparent)]
    State(#[from] StateReadError),
}

/// Stops an execution that runs past its deadline, checking the clock every few thousand
/// steps.
#[derive(Debug)]
pub(crate) struct Deadline {
    until: Instant,
    steps: u32,
    /// The execution was stopped.
    pub(crate) passed: bool,
}

impl Deadline {
    fn new(timeout: Duration) -> Self {
        Self::at(Instant::now() + timeout)
    }

    /// A deadline at `until`.
    pub(crate) fn at(until: Instant) -> Self {
        Self {
            until,
            steps: 0,
            passed: false,
        }
    }
}

impl<CTX: ContextTr> Inspector<CTX> for Deadline {
    fn step(&mut self, interp: &mut Interpreter, context: &mut CTX) {
        self.steps = self.steps.wrapping_add(1);
        if !self.steps.is_multiple_of(4_096) || Instant::now() < self.until {
            return;
        }
        self.passed = true;
        *context.error() = Err(ContextError::Custom("execution timeout".into()));
        interp.halt_fatal();
    }
}

/// The tracer an options object asks for, ready to run.
enum Tracer {
    Struct(
        TracingInspector,
        alloy::rpc::types::trace::geth::GethDefaultTracingOptions,
    ),
    Call(TracingInspector, CallConfig),
    PreState(TracingInspector, PreStateConfig),
    FourByte(FourByteInspector),
    Noop,
}

impl Tracer {
    fn new(options: &GethDebugTracingOptions) -> Result<Self, TraceError> {
        let limits = TraceLimits::default()
            .set_max_recorded_bytes(Some(limits::TRACE_RECORDED_BYTES_MAX))
            .set_behavior(TraceLimitBehavior::Halt);
        let config = &options.tracer_config;
        let bad = |error: serde_json::Error| TraceError::BadOption(error.to_string());
        Ok(match &options.tracer {
            None => Self::Struct(
                TracingInspector::new(TracingInspectorConfig::from_geth_config(&options.config))
                    .with_limits(limits),
                options.config,
            ),
            Some(GethDebugTracerType::BuiltInTracer(kind)) => match kind {
                GethDebugBuiltInTracerType::CallTracer => {
                    let call = config.clone().into_call_config().map_err(bad)?;
                    Self::Call(
                        TracingInspector::new(TracingInspectorConfig::from_geth_call_config(&call))
                            .with_limits(limits),
                        call,
                    )
                }
                GethDebugBuiltInTracerType::PreStateTracer => {
                    let prestate = config.clone().into_pre_state_config().map_err(bad)?;
                    Self::PreState(
                        TracingInspector::new(TracingInspectorConfig::from_geth_prestate_config(
                            &prestate,
                        ))
                        .with_limits(limits),
                        prestate,
                    )
                }
                GethDebugBuiltInTracerType::FourByteTracer => {
                    Self::FourByte(FourByteInspector::default())
                }
                GethDebugBuiltInTracerType::NoopTracer => Self::Noop,
                other => {
                    return Err(TraceError::Unsupported(format!(
                        "tracer {other:?} is not served by keel (callTracer, prestateTracer, \
                         4byteTracer, noopTracer and the struct logger are)"
                    )));
                }
            },
            Some(GethDebugTracerType::JsTracer(_)) => {
                return Err(TraceError::Unsupported(
                    "JavaScript tracers are not served by keel".into(),
                ));
            }
        })
    }
}

/// geth's `timeout` option ("5s", "500ms", "1m"), bounded by keel's maximum.
fn timeout(options: &GethDebugTracingOptions) -> Result<Duration, TraceError> {
    let maximum = Duration::from_millis(limits::TRACE_TIMEOUT_MS_MAX);
    let Some(text) = options.timeout.as_deref() else {
        return Ok(Duration::from_millis(limits::TRACE_TIMEOUT_MS_DEFAULT));
    };
    let parsed = [("ms", 1u64), ("s", 1_000), ("m", 60_000)]
        .iter()
        .find_map(|(unit, scale)| {
            let number = text.strip_suffix(unit)?;
            let value: f64 = number.parse().ok()?;
            (value >= 0.0).then(|| Duration::from_millis((value * *scale as f64) as u64))
        })
        .ok_or_else(|| TraceError::BadOption(format!("time: invalid duration \"{text}\"")))?;
    Ok(parsed.min(maximum))
}

/// Runs one transaction environment under `tracer` on `state`, and returns its frame with the
/// execution's result and state (uncommitted).
fn run<'a>(
    chain: &ChainSpec,
    state: BlockState<'a>,
    block: BlockEnv,
    tx: TxEnv,
    configure: impl FnOnce(&mut CfgEnv),
    tracer: Tracer,
    deadline: Duration,
) -> Result<(GethTrace, ResultAndState, BlockState<'a>), TraceError> {
    let mut cfg = cfg(chain);
    configure(&mut cfg);
    let context = Context::<BlockEnv, TxEnv, CfgEnv, BlockState<'a>>::new(state, SPEC)
        .with_cfg(cfg)
        .with_block(block);
    macro_rules! inspect {
        ($inspector:expr) => {{
            let mut evm =
                context.build_mainnet_with_inspector(($inspector, Deadline::new(deadline)));
            let outcome = evm.inspect_tx(tx);
            let (inspector, deadline) = evm.inspector;
            let state = evm.ctx.journaled_state.database;
            if deadline.passed {
                return Err(TraceError::Timeout);
            }
            let outcome = outcome.map_err(|error| match error {
                EVMError::Database(error) => TraceError::State(error),
                EVMError::Custom(message) if message.contains("limit exceeded") => {
                    TraceError::TooLarge
                }
                other => TraceError::Invalid(other.to_string()),
            })?;
            (inspector, outcome, state)
        }};
    }
    let (frame, outcome, state) = match tracer {
        Tracer::Struct(inspector, options) => {
            let (inspector, outcome, state) = inspect!(inspector);
            let output = outcome.result.output().cloned().unwrap_or_default();
            let frame = inspector.into_geth_builder().geth_traces(
                outcome.result.tx_gas_used(),
                output,
                options,
            );
            (GethTrace::Default(frame), outcome, state)
        }
        Tracer::Call(inspector, config) => {
            let (inspector, outcome, state) = inspect!(inspector);
            let frame = inspector
                .into_geth_builder()
                .geth_call_traces(config, outcome.result.tx_gas_used());
            (GethTrace::CallTracer(frame), outcome, state)
        }
        Tracer::PreState(inspector, config) => {
            let (inspector, outcome, state) = inspect!(inspector);
            let frame = inspector
                .into_geth_builder()
                .geth_prestate_traces(&outcome, &config, &state)?;
            (GethTrace::PreStateTracer(frame), outcome, state)
        }
        Tracer::FourByte(inspector) => {
            let (inspector, outcome, state) = inspect!(inspector);
            (
                GethTrace::FourByteTracer(FourByteFrame::from(&inspector)),
                outcome,
                state,
            )
        }
        Tracer::Noop => {
            let (_, outcome, state) = inspect!(revm::inspector::NoOpInspector);
            (GethTrace::NoopTracer(NoopFrame::default()), outcome, state)
        }
    };
    Ok((frame, outcome, state))
}

/// Checks a replayed transaction against the block's receipt (I4).
fn check_receipt(
    block: &SealedBlock,
    receipts: &[ReceiptEnvelope],
    index: usize,
    result: &ExecutionResult,
) -> Result<(), TraceError> {
    let receipt = &receipts[index];
    let before = index
        .checked_sub(1)
        .map_or(0, |previous| receipts[previous].cumulative_gas_used());
    let gas = receipt.cumulative_gas_used() - before;
    let diverged = |detail: String| TraceError::Diverged {
        number: block.number(),
        index,
        detail,
    };
    if receipt.status() != result.is_success() {
        return Err(diverged(format!("status {}", result.is_success())));
    }
    if gas != result.tx_gas_used() {
        return Err(diverged(format!(
            "gas {} against {gas}",
            result.tx_gas_used()
        )));
    }
    if receipt.logs() != result.logs() {
        return Err(diverged("logs differ".into()));
    }
    Ok(())
}

/// Traces the transactions of `block` (executed on `parent`, the state of its parent block):
/// the one at `only`, or all of them. `receipts` are the block's own.
pub fn trace_block(
    chain: &ChainSpec,
    parent: &Snapshot,
    block: &SealedBlock,
    receipts: &[ReceiptEnvelope],
    only: Option<usize>,
    options: &GethDebugTracingOptions,
) -> Result<Vec<TraceResult>, TraceError> {
    let deadline = Instant::now() + timeout(options)?;
    let env = BlockEnvironment::from_header(&block.header);
    let first = only.unwrap_or(0);
    let mut executor = BlockExecutor::new(chain, parent, env.clone());
    for index in 0..first {
        executor
            .execute_transaction(&block.transactions[index], block.senders[index])
            .map_err(|error| TraceError::Diverged {
                number: block.number(),
                index,
                detail: error.to_string(),
            })?;
    }
    let mut state = executor.into_state();
    let last = only.map_or(block.transactions.len(), |index| index + 1);
    let mut traces = Vec::with_capacity(last - first);
    for index in first..last {
        let transaction = &block.transactions[index];
        let left = deadline.saturating_duration_since(Instant::now());
        let (frame, outcome, mut after) = run(
            chain,
            state,
            env.revm_block(),
            tx_env(transaction, block.senders[index]),
            |_| {},
            Tracer::new(options)?,
            left,
        )?;
        check_receipt(block, receipts, index, &outcome.result)?;
        after.commit(outcome.state);
        state = after;
        traces.push(TraceResult::Success {
            result: frame,
            tx_hash: Some(*transaction.tx_hash()),
        });
    }
    Ok(traces)
}

/// Traces a call on `state` in the environment `env` (`debug_traceCall`).
pub fn trace_call(
    chain: &ChainSpec,
    state: CallState<'_>,
    env: &BlockEnvironment,
    request: &TransactionRequest,
    options: &GethDebugTracingOptions,
) -> Result<GethTrace, TraceError> {
    let deadline = timeout(options)?;
    let tracer = Tracer::new(options)?;
    let block_state = state
        .block_state()
        .map_err(|error| TraceError::BadOption(error.to_string()))?;
    let (tx, configure) = crate::call::call_environment(chain, request);
    let (frame, _, _) = run(
        chain,
        block_state,
        env.revm_block(),
        tx,
        configure,
        tracer,
        deadline,
    )?;
    Ok(frame)
}

/// The hash of a traced transaction, for block traces.
pub fn traced_hash(result: &TraceResult) -> Option<B256> {
    match result {
        TraceResult::Success { tx_hash, .. } | TraceResult::Error { tx_hash, .. } => *tx_hash,
    }
}
