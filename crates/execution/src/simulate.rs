//! `eth_simulateV1`: blocks of calls chained on a block's state, as geth simulates them.
//!
//! ```text
//!  base block's state ─► BlockState (one, across every simulated block)
//!    per block: number and time checked and filled (gaps become empty blocks) ─► block
//!               overrides on the environment ─► state overrides on the state
//!      per call: nonce and gas filled ─► revm (validation on or off) ─► committed ─► receipt
//!    ─► state root ─► seal (the builder's own header assembly) ─► its hash for BLOCKHASH
//! ```
//!
//! Nothing is written: the state lives in memory for the request and is dropped after it.
//!
//! ### Correctness and bounds
//! - The header of a simulated block is assembled by the same code as a real block's, from
//!   receipts built the same way; only the transactions are unsigned (a zero signature, as
//!   geth returns them) and come from the calls.
//! - Without `validation`, a call skips the nonce and base-fee checks (geth's simulation
//!   mode); with it, a call must be a valid transaction on the simulated chain.
//! - Bounds: [`limits::SIMULATE_BLOCKS_MAX`] blocks from the base,
//!   [`limits::SIMULATE_CALLS_MAX`] calls, [`limits::SIMULATE_GAS_MAX`] gas over all calls,
//!   and the deadline the caller gives, which stops the execution itself.

use crate::call::{halt_message, map_call_error, revert_reason, tx_env_for_call};
use crate::error::TxError;
use crate::executor::{BlockEnvironment, SPEC, cfg, receipt, seal};
use crate::state::{BlockState, OverrideError, StateReadError};
use crate::trace::Deadline;
use alloy::consensus::{Header, Signed, TxEip1559, TxEip7702, TxEnvelope};
use alloy::primitives::{
    Address, B256, Bytes, Log, LogData, Signature, TxKind, U256, address, b256,
};
use alloy::rpc::types::simulate::{SimCallResult, SimulateError as CallFailure, SimulatePayload};
use alloy::rpc::types::{BlockOverrides, TransactionRequest};
use keel_primitives::{BlockWithReceipts, ChainSpec, limits};
use keel_storage::Snapshot;
use revm::context::result::{EVMError, ExecutionResult};
use revm::context::{BlockEnv, CfgEnv, Context, ContextTr, TxEnv};
use revm::inspector::{InspectEvm, Inspector};
use revm::interpreter::{CallInputs, CallOutcome, CreateInputs, CreateOutcome};
use revm::{DatabaseCommit, DatabaseRef, MainBuilder};
use std::time::{Duration, Instant};

/// ERC-7528's address for ether in token events.
const ETHER_ADDRESS: Address = address!("eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee");
/// `Transfer(address,address,uint256)`.
const TRANSFER_TOPIC: B256 =
    b256!("ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef");
/// The code geth gives a reverted call in a simulation result.
const REVERTED_CODE: i32 = -32000;

/// Why a simulation was refused as a whole, in geth's words (each call's own failure is in its
/// result instead).
#[derive(Debug, Clone, thiserror::Error)]
pub enum SimulateError {
    /// No blocks.
    #[error("empty input")]
    EmptyInput,
    /// More blocks than [`limits::SIMULATE_BLOCKS_MAX`] from the base.
    #[error("too many blocks")]
    TooManyBlocks,
    /// More calls than [`limits::SIMULATE_CALLS_MAX`].
    #[error("too many calls: {calls} > {max}", max = limits::SIMULATE_CALLS_MAX)]
    TooManyCalls {
        /// Calls in the request.
        calls: usize,
    },
    /// A block's number is not above the one before it.
    #[error("block numbers must be in order: {number} <= {previous}")]
    BlockNumberOrder {
        /// The block's number.
        number: u64,
        /// The number before it.
        previous: u64,
    },
    /// A block's time is not above the one before it.
    #[error("block timestamps must be in order: {time} <= {previous}")]
    BlockTimestampOrder {
        /// The block's time.
        time: u64,
        /// The time before it.
        previous: u64,
    },
    /// A call's gas does not fit what is left of its block's.
    #[error("block gas limit reached: {used} >= {limit}")]
    BlockGasLimitReached {
        /// Gas the block used before the call.
        used: u64,
        /// The block's gas limit.
        limit: u64,
    },
    /// A call is not a valid transaction (nonce, funds, fees...).
    #[error("err: {error} (supplied gas {gas})")]
    Invalid {
        /// Why.
        error: TxError,
        /// The call's gas.
        gas: u64,
    },
    /// A state or block override cannot be applied.
    #[error(transparent)]
    Override(#[from] OverrideError),
    /// The simulation ran past its deadline (geth's words).
    #[error("execution aborted (timeout = {0:?})")]
    Timeout(Duration),
    /// Reading the state failed.
    #[error(transparent)]
    State(#[from] StateReadError),
}

/// One simulated block: the block with its receipts, and each call's result.
#[derive(Debug, Clone)]
pub struct SimulatedBlock {
    /// The block, as the chain would hold it (unsigned transactions).
    pub block: BlockWithReceipts,
    /// Each call's result, its logs placed in the block.
    pub calls: Vec<SimCallResult>,
}

/// A block to simulate after the checks: its number and time known.
struct Planned<'p> {
    overrides: BlockOverrides,
    state: Option<&'p alloy::rpc::types::state::StateOverride>,
    calls: &'p [TransactionRequest],
}

/// Runs `payload` on the state of `base` (`view` reads it), stopping at `timeout`.
pub fn simulate(
    chain: &ChainSpec,
    view: &Snapshot,
    base: &Header,
    payload: &SimulatePayload,
    timeout: Duration,
) -> Result<Vec<SimulatedBlock>, SimulateError> {
    let until = Instant::now() + timeout;
    let planned = plan(base, payload)?;
    let mut state = BlockState::new(view);
    let mut parent = base.clone();
    let mut previous = BlockEnvironment::from_header(base);
    let mut gas_pool = limits::SIMULATE_GAS_MAX;
    let mut out = Vec::with_capacity(planned.len());
    for block in planned {
        let mut env = BlockEnvironment {
            parent_hash: parent.hash_slow(),
            base_fee: if payload.validation {
                chain.next_base_fee(&parent)
            } else {
                0
            },
            prevrandao: B256::ZERO,
            extra_data: Bytes::new(),
            ..previous.clone()
        };
        let mut overrides = block.overrides;
        if let Some(root) = overrides.beacon_root.take() {
            env.origin.hash = root;
        }
        crate::call::apply_block_overrides(&mut env, &overrides)?;
        for (number, hash) in overrides.block_hash.iter().flatten() {
            state.set_block_hash(*number, *hash);
        }
        if let Some(changes) = block.state {
            state.apply_overrides(changes)?;
        }
        let (simulated, after) = run_block(
            chain,
            state,
            env.clone(),
            block.calls,
            payload,
            &mut gas_pool,
            (until, timeout),
        )?;
        state = after;
        state.set_block_hash(simulated.block.number(), simulated.block.hash());
        parent = simulated.block.block.header.clone();
        previous = env;
        out.push(simulated);
    }
    Ok(out)
}

/// geth's checks of the chain of blocks: numbers and times strictly increase (filled in
/// when absent: the next number, [`limits::SIMULATE_BLOCK_TIME_SECS`] later), gaps in
/// numbers become empty blocks, and no block is more than
/// [`limits::SIMULATE_BLOCKS_MAX`] past the base.
fn plan<'p>(
    base: &Header,
    payload: &'p SimulatePayload,
) -> Result<Vec<Planned<'p>>, SimulateError> {
    let blocks = &payload.block_state_calls;
    if blocks.is_empty() {
        return Err(SimulateError::EmptyInput);
    }
    if blocks.len() as u64 > limits::SIMULATE_BLOCKS_MAX {
        return Err(SimulateError::TooManyBlocks);
    }
    let calls: usize = blocks.iter().map(|block| block.calls.len()).sum();
    if calls > limits::SIMULATE_CALLS_MAX {
        return Err(SimulateError::TooManyCalls { calls });
    }
    let mut planned = Vec::with_capacity(blocks.len());
    let (mut number, mut time) = (base.number, base.timestamp);
    for block in blocks {
        let mut overrides = block.block_overrides.clone().unwrap_or_default();
        let wanted = match overrides.number {
            None => number + 1,
            Some(wanted) => {
                let wanted = u64::try_from(wanted).map_err(|_| SimulateError::TooManyBlocks)?;
                if wanted <= number {
                    return Err(SimulateError::BlockNumberOrder {
                        number: wanted,
                        previous: number,
                    });
                }
                wanted
            }
        };
        if wanted - base.number > limits::SIMULATE_BLOCKS_MAX {
            return Err(SimulateError::TooManyBlocks);
        }
        while number + 1 < wanted {
            number += 1;
            time += limits::SIMULATE_BLOCK_TIME_SECS;
            planned.push(Planned {
                overrides: BlockOverrides {
                    number: Some(U256::from(number)),
                    time: Some(time),
                    ..Default::default()
                },
                state: None,
                calls: &[],
            });
        }
        let wanted_time = match overrides.time {
            None => time + limits::SIMULATE_BLOCK_TIME_SECS,
            Some(wanted_time) if wanted_time <= time => {
                return Err(SimulateError::BlockTimestampOrder {
                    time: wanted_time,
                    previous: time,
                });
            }
            Some(wanted_time) => wanted_time,
        };
        (number, time) = (wanted, wanted_time);
        overrides.number = Some(U256::from(number));
        overrides.time = Some(time);
        planned.push(Planned {
            overrides,
            state: block.state_overrides.as_ref(),
            calls: &block.calls,
        });
    }
    Ok(planned)
}

/// Runs one block's calls on `state`, then seals the block.
fn run_block<'a>(
    chain: &ChainSpec,
    mut state: BlockState<'a>,
    env: BlockEnvironment,
    calls: &[TransactionRequest],
    payload: &SimulatePayload,
    gas_pool: &mut u64,
    (until, timeout): (Instant, Duration),
) -> Result<(SimulatedBlock, BlockState<'a>), SimulateError> {
    let mut gas_used = 0u64;
    let mut transactions = Vec::with_capacity(calls.len());
    let mut senders = Vec::with_capacity(calls.len());
    let mut receipts = Vec::with_capacity(calls.len());
    let mut results = Vec::with_capacity(calls.len());
    let cap = if payload.validation {
        limits::TX_GAS_LIMIT_MAX
    } else {
        limits::CALL_GAS_MAX
    };
    for call in calls {
        if Instant::now() >= until {
            return Err(SimulateError::Timeout(timeout));
        }
        let sender = call.from.unwrap_or(Address::ZERO);
        let mut call = call.clone();
        if call.nonce.is_none() {
            call.nonce = Some(state.basic_ref(sender)?.map_or(0, |account| account.nonce));
        }
        let left = env.gas_limit.saturating_sub(gas_used);
        let gas = call.gas.unwrap_or(left.min(cap)).min(*gas_pool);
        if gas > left {
            return Err(SimulateError::BlockGasLimitReached {
                used: gas_used,
                limit: env.gas_limit,
            });
        }
        call.gas = Some(gas);
        let tx = tx_env_for_call(&call, sender, gas, chain.chain_id);
        let mut cfg = cfg(chain);
        cfg.disable_nonce_check = !payload.validation;
        cfg.disable_base_fee = !payload.validation;
        cfg.tx_gas_limit_cap = Some(cap);
        let (outcome, logs, after) = execute(
            state,
            cfg,
            env.revm_block(),
            tx,
            payload.trace_transfers,
            until,
        );
        state = after;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(Stop::Timeout) => return Err(SimulateError::Timeout(timeout)),
            Err(Stop::Evm(EVMError::Database(error))) => return Err(error.into()),
            Err(Stop::Evm(error)) => {
                return Err(SimulateError::Invalid {
                    error: map_call_error(error, &call, sender, &env),
                    gas,
                });
            }
        };
        state.commit(outcome.state);
        let result = outcome.result;
        let used = result.tx_gas_used();
        gas_used += used;
        *gas_pool -= used.min(*gas_pool);
        let transaction = unsigned_transaction(&call, chain.chain_id, gas);
        receipts.push(receipt(
            transaction.tx_type(),
            result.is_success(),
            gas_used,
            result.logs().to_vec(),
        ));
        let logs = if payload.trace_transfers {
            logs
        } else {
            result.logs().to_vec()
        };
        results.push(call_result(result, logs));
        transactions.push(transaction);
        senders.push(sender);
    }
    let (_, state_root) = state.clone().into_changes()?;
    let block = seal(env, state_root, gas_used, transactions, senders, receipts);
    place_logs(&block, &mut results);
    Ok((
        SimulatedBlock {
            block,
            calls: results,
        },
        state,
    ))
}

/// Why an execution stopped without a result.
enum Stop {
    Timeout,
    Evm(EVMError<StateReadError>),
}

/// One call under the log collector and the deadline; gives the state back whatever happens.
fn execute<'a>(
    state: BlockState<'a>,
    cfg: CfgEnv,
    block: BlockEnv,
    tx: TxEnv,
    transfers: bool,
    until: Instant,
) -> (
    Result<revm::context::result::ResultAndState, Stop>,
    Vec<Log>,
    BlockState<'a>,
) {
    let context = Context::<BlockEnv, TxEnv, CfgEnv, BlockState<'a>>::new(state, SPEC)
        .with_cfg(cfg)
        .with_block(block);
    let collector = CallLogs {
        transfers,
        frames: Vec::new(),
        logs: Vec::new(),
    };
    let mut evm = context.build_mainnet_with_inspector((collector, Deadline::at(until)));
    let outcome = evm.inspect_tx(tx);
    let (collector, deadline) = evm.inspector;
    let state = evm.ctx.journaled_state.database;
    let outcome = if deadline.passed {
        Err(Stop::Timeout)
    } else {
        outcome.map_err(Stop::Evm)
    };
    (outcome, collector.logs, state)
}

/// A call's result as geth reports it in a simulated block.
fn call_result(result: ExecutionResult, logs: Vec<Log>) -> SimCallResult {
    let gas_used = result.tx_gas_used();
    let max_used_gas = Some(result.gas().total_gas_spent());
    let (status, return_data, error) = match result {
        ExecutionResult::Success { output, .. } => (true, output.into_data(), None),
        ExecutionResult::Revert { output, .. } => {
            let message = match revert_reason(&output) {
                Some(reason) => format!("execution reverted: {reason}"),
                None => "execution reverted".to_string(),
            };
            let error = CallFailure {
                code: REVERTED_CODE,
                message,
                data: Some(output.clone()),
            };
            (false, output, Some(error))
        }
        ExecutionResult::Halt { reason, .. } => {
            let error = CallFailure {
                code: CallFailure::VM_EXECUTION_ERROR_CODE,
                message: halt_message(&reason),
                data: None,
            };
            (false, Bytes::new(), Some(error))
        }
    };
    SimCallResult {
        return_data,
        logs: logs
            .into_iter()
            .map(|inner| alloy::rpc::types::Log {
                inner,
                ..Default::default()
            })
            .collect(),
        gas_used,
        max_used_gas,
        status,
        error,
    }
}

/// Places each call's logs in the sealed block: its hash, number and time, the transaction,
/// and the log's index across the block.
fn place_logs(block: &BlockWithReceipts, results: &mut [SimCallResult]) {
    let mut log_index = 0u64;
    for (index, result) in results.iter_mut().enumerate() {
        for log in &mut result.logs {
            log.block_hash = Some(block.hash());
            log.block_number = Some(block.number());
            log.block_timestamp = Some(block.block.header.timestamp);
            log.transaction_hash = Some(*block.block.transactions[index].tx_hash());
            log.transaction_index = Some(index as u64);
            log.log_index = Some(log_index);
            log_index += 1;
        }
    }
}

/// The transaction a call stands for: EIP-1559 (EIP-7702 with an authorization list), with a
/// zero signature, as geth lists it in a simulated block.
fn unsigned_transaction(call: &TransactionRequest, chain_id: u64, gas: u64) -> TxEnvelope {
    let signature = Signature::new(U256::ZERO, U256::ZERO, false);
    let input = call.input.input().cloned().unwrap_or_default();
    let max_fee_per_gas = call.max_fee_per_gas.or(call.gas_price).unwrap_or(0);
    let max_priority_fee_per_gas = call.max_priority_fee_per_gas.unwrap_or(0);
    let nonce = call.nonce.unwrap_or_default();
    let value = call.value.unwrap_or_default();
    let access_list = call.access_list.clone().unwrap_or_default();
    match (&call.authorization_list, call.to) {
        (Some(authorizations), Some(TxKind::Call(to))) if !authorizations.is_empty() => {
            let tx = TxEip7702 {
                chain_id,
                nonce,
                gas_limit: gas,
                max_fee_per_gas,
                max_priority_fee_per_gas,
                to,
                value,
                access_list,
                authorization_list: authorizations.clone(),
                input,
            };
            TxEnvelope::Eip7702(Signed::new_unhashed(tx, signature))
        }
        _ => {
            let tx = TxEip1559 {
                chain_id,
                nonce,
                gas_limit: gas,
                max_fee_per_gas,
                max_priority_fee_per_gas,
                to: call.to.unwrap_or(TxKind::Create),
                value,
                access_list,
                input,
            };
            TxEnvelope::Eip1559(Signed::new_unhashed(tx, signature))
        }
    }
}

/// The logs a call leaves, frame by frame: a reverted frame's logs are dropped with it. With
/// `transfers`, every movement of ether is an ERC-7528 `Transfer` log from
/// [`ETHER_ADDRESS`], at the point it happens (geth's `traceTransfers`).
struct CallLogs {
    transfers: bool,
    frames: Vec<Vec<Log>>,
    logs: Vec<Log>,
}

impl CallLogs {
    fn transfer(from: Address, to: Address, value: U256) -> Log {
        Log {
            address: ETHER_ADDRESS,
            data: LogData::new_unchecked(
                vec![TRANSFER_TOPIC, from.into_word(), to.into_word()],
                Bytes::from(value.to_be_bytes::<32>()),
            ),
        }
    }

    fn end_frame(&mut self, kept: bool) {
        let frame = self.frames.pop().unwrap_or_default();
        if !kept {
            return;
        }
        match self.frames.last_mut() {
            Some(parent) => parent.extend(frame),
            None => self.logs.extend(frame),
        }
    }
}

impl<CTX: ContextTr> Inspector<CTX> for CallLogs {
    fn log(&mut self, _context: &mut CTX, log: Log) {
        if let Some(frame) = self.frames.last_mut() {
            frame.push(log);
        }
    }

    fn call(&mut self, _context: &mut CTX, inputs: &mut CallInputs) -> Option<CallOutcome> {
        let mut frame = Vec::new();
        if self.transfers && inputs.transfers_value() {
            frame.push(Self::transfer(
                inputs.transfer_from(),
                inputs.transfer_to(),
                inputs.call_value(),
            ));
        }
        self.frames.push(frame);
        None
    }

    fn call_end(&mut self, _context: &mut CTX, _inputs: &CallInputs, outcome: &mut CallOutcome) {
        self.end_frame(outcome.result.result.is_ok());
    }

    fn create(&mut self, _context: &mut CTX, _inputs: &mut CreateInputs) -> Option<CreateOutcome> {
        self.frames.push(Vec::new());
        None
    }

    fn create_end(
        &mut self,
        _context: &mut CTX,
        inputs: &CreateInputs,
        outcome: &mut CreateOutcome,
    ) {
        let kept = outcome.result.result.is_ok();
        if kept
            && self.transfers
            && !inputs.value().is_zero()
            && let (Some(address), Some(frame)) = (outcome.address, self.frames.last_mut())
        {
            // The value moves before the init code runs, so before any log it leaves.
            frame.insert(0, Self::transfer(inputs.caller(), address, inputs.value()));
        }
        self.end_frame(kept);
    }

    fn selfdestruct(&mut self, contract: Address, target: Address, value: U256) {
        if self.transfers
            && !value.is_zero()
            && let Some(frame) = self.frames.last_mut()
        {
            frame.push(Self::transfer(contract, target, value));
        }
    }
}
