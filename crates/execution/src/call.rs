//! `eth_call` and `eth_estimateGas`: execution against a block's state that changes nothing.

use crate::error::TxError;
use crate::executor::{BlockEnvironment, evm};
use crate::state::{BlockState, OverrideError};
use alloy::primitives::{Address, B256, Bytes, TxKind, U256};
use alloy::rpc::types::state::StateOverride;
use alloy::rpc::types::{BlockOverrides, TransactionRequest};
use keel_primitives::{ChainSpec, limits};
use keel_storage::Snapshot;
use revm::ExecuteEvm;
use revm::context::TxEnv;
use revm::context::result::{ExecutionResult, HaltReason, OutOfGasError};
use revm::context_interface::either::Either;
use std::collections::BTreeMap;

/// Why a call or estimate failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The transaction itself is invalid (nonce, funds, fees...).
    #[error("{0}")]
    Invalid(#[from] TxError),
    /// The execution reverted; `output` is the revert data.
    #[error("execution reverted{}", reason.as_ref().map(|reason| format!(": {reason}")).unwrap_or_default())]
    Reverted {
        /// The revert data.
        output: Bytes,
        /// The decoded `Error(string)` reason, when there is one.
        reason: Option<String>,
    },
    /// The execution halted (out of gas, invalid opcode...).
    #[error("{0}")]
    Halted(String),
    /// No gas limit up to the cap makes the transaction succeed.
    #[error("gas required exceeds allowance ({0})")]
    GasExceedsAllowance(u64),
    /// A state override could not be applied.
    #[error("{0}")]
    Override(String),
}

/// The state a call runs on: a block's state, with geth's state overrides laid over it.
#[derive(Debug, Clone, Copy)]
pub struct CallState<'a> {
    /// The block's state.
    pub view: &'a Snapshot,
    /// `eth_call`'s third parameter (empty: none).
    pub overrides: &'a StateOverride,
    /// The `blockHash` block override: what BLOCKHASH answers for these blocks.
    pub block_hashes: Option<&'a BTreeMap<u64, B256>>,
}

impl<'a> CallState<'a> {
    /// The block's state as it is.
    pub fn plain(view: &'a Snapshot) -> Self {
        static NONE: std::sync::LazyLock<StateOverride> =
            std::sync::LazyLock::new(Default::default);
        Self::new(view, &NONE, None)
    }

    /// The block's state under state overrides and, from the block overrides, block hashes.
    pub fn new(
        view: &'a Snapshot,
        overrides: &'a StateOverride,
        block: Option<&'a BlockOverrides>,
    ) -> Self {
        Self {
            view,
            overrides,
            block_hashes: block.and_then(|block| block.block_hash.as_ref()),
        }
    }

    pub(crate) fn block_state(&self) -> Result<BlockState<'a>, CallError> {
        let mut state = BlockState::new(self.view);
        state
            .apply_overrides(self.overrides)
            .map_err(|error| CallError::Override(error.to_string()))?;
        for (number, hash) in self.block_hashes.into_iter().flatten() {
            state.set_block_hash(*number, *hash);
        }
        Ok(state)
    }
}

/// Lays geth's block overrides (`eth_call`'s fourth parameter, `debug_traceCall`'s
/// `blockOverrides`) over the environment of the block a call runs in. `difficulty` is
/// accepted and has no effect after the merge, as in geth; `beaconRoot` is `eth_simulateV1`'s
/// only; `blobBaseFee` is refused, as keel's chain carries no blobs. The `blockHash` map goes
/// to the state ([`CallState::new`]).
pub fn apply_block_overrides(
    env: &mut BlockEnvironment,
    overrides: &BlockOverrides,
) -> Result<(), OverrideError> {
    if overrides.beacon_root.is_some() {
        return Err(OverrideError::BlockField("beaconRoot"));
    }
    if overrides.blob_base_fee.is_some() {
        return Err(OverrideError::BlockField("blobBaseFee"));
    }
    if let Some(number) = overrides.number {
        env.number = u64::try_from(number).map_err(|_| OverrideError::TooLarge("number"))?;
    }
    if let Some(time) = overrides.time {
        env.timestamp = time;
    }
    if let Some(gas_limit) = overrides.gas_limit {
        env.gas_limit = gas_limit;
    }
    if let Some(coinbase) = overrides.coinbase {
        env.beneficiary = coinbase;
    }
    if let Some(random) = overrides.random {
        env.prevrandao = random;
    }
    if let Some(base_fee) = overrides.base_fee {
        env.base_fee =
            u64::try_from(base_fee).map_err(|_| OverrideError::TooLarge("baseFeePerGas"))?;
    }
    Ok(())
}

/// Runs `request` against `state` under the environment of the block `env` describes.
pub fn call(
    chain: &ChainSpec,
    state: CallState<'_>,
    env: &BlockEnvironment,
    request: &TransactionRequest,
) -> Result<ExecutionResult, CallError> {
    let gas_limit = request
        .gas
        .unwrap_or(limits::CALL_GAS_MAX)
        .min(limits::CALL_GAS_MAX);
    execute(chain, state, env, request, gas_limit)
}

/// The smallest gas limit, within about 1.5%, under which `request` succeeds (geth's search).
pub fn estimate_gas(
    chain: &ChainSpec,
    state: CallState<'_>,
    env: &BlockEnvironment,
    request: &TransactionRequest,
) -> Result<u64, CallError> {
    let cap = request
        .gas
        .unwrap_or(u64::MAX)
        .min(env.gas_limit)
        .min(limits::TX_GAS_LIMIT_MAX);
    let result = execute(chain, state, env, request, cap)?;
    let used = match outcome(result, cap) {
        Ok(used) => used,
        Err(CallError::Halted(_)) => return Err(CallError::GasExceedsAllowance(cap)),
        Err(error) => return Err(error),
    };
    // Most transactions succeed with their used gas plus the 1/64 kept back by calls.
    let optimistic = (used + 2_300) * 64 / 63;
    let mut high = cap;
    if optimistic < cap
        && matches!(
            execute(chain, state, env, request, optimistic).map(|r| r.is_success()),
            Ok(true)
        )
    {
        high = optimistic;
    }
    let mut low = used.saturating_sub(1);
    while low + 1 < high && (high - low) * 1000 / high > 15 {
        let middle = low + (high - low) / 2;
        match execute(chain, state, env, request, middle) {
            Ok(result) if result.is_success() => high = middle,
            Ok(_) | Err(CallError::Invalid(TxError::IntrinsicGasTooLow { .. })) => low = middle,
            Err(error) => return Err(error),
        }
    }
    Ok(high)
}

/// `eth_createAccessList`: the accounts and slots `request` touches, found as geth finds them
/// (run with the list so far until it stops changing), with the gas used under the final list
/// and the execution's error, if it failed. Leaves out the sender, the recipient, the
/// precompiles and the block's beneficiary, which are warm anyway, unless slots of theirs
/// were touched (slots are cold whoever holds them), as geth does.
pub fn create_access_list(
    chain: &ChainSpec,
    state: CallState<'_>,
    env: &BlockEnvironment,
    request: &TransactionRequest,
) -> Result<alloy::eips::eip2930::AccessListResult, CallError> {
    use alloy::eips::eip2930::{AccessList, AccessListItem, AccessListResult};
    let sender = request.from.unwrap_or(Address::ZERO);
    let gas_limit = request
        .gas
        .unwrap_or(limits::CALL_GAS_MAX)
        .min(limits::CALL_GAS_MAX);
    let mut excluded: std::collections::BTreeSet<Address> = revm::precompile::Precompiles::osaka()
        .addresses()
        .copied()
        .collect();
    excluded.insert(sender);
    excluded.insert(env.beneficiary);
    if let Some(TxKind::Call(to)) = request.to {
        excluded.insert(to);
    } else {
        excluded.insert(sender.create(request.nonce.unwrap_or_else(|| {
            state
                .view
                .account(&sender)
                .ok()
                .flatten()
                .map_or(0, |account| account.nonce)
        })));
    }
    let mut list = request.access_list.clone().unwrap_or_default();
    list.0
        .retain(|item| !excluded.contains(&item.address) || !item.storage_keys.is_empty());
    list.0.sort_by_key(|item| item.address);
    // Each round can only add what the previous list made reachable; geth stops the same way.
    for _ in 0..limits::ACCESS_LIST_ROUNDS_MAX {
        let mut attempt = request.clone();
        attempt.access_list = Some(list.clone());
        let ran = execute_with_state(chain, state, env, &attempt, gas_limit)?;
        let mut touched: Vec<AccessListItem> = ran
            .state
            .iter()
            // geth leaves out the warm addresses, but not their slots: a slot is cold
            // whoever holds it.
            .filter(|(address, account)| {
                !excluded.contains(*address) || !account.storage.is_empty()
            })
            .map(|(address, account)| {
                let mut storage_keys: Vec<_> = account
                    .storage
                    .keys()
                    .map(|slot| B256::from(*slot))
                    .collect();
                storage_keys.sort();
                AccessListItem {
                    address: *address,
                    storage_keys,
                }
            })
            .collect();
        touched.sort_by_key(|item| item.address);
        let touched = AccessList(touched);
        if touched == list {
            let gas_used = U256::from(ran.result.tx_gas_used());
            return Ok(AccessListResult {
                access_list: touched,
                gas_used,
                error: outcome(ran.result, gas_limit)
                    .err()
                    .map(|error| error.to_string()),
            });
        }
        list = touched;
    }
    Err(CallError::Halted(format!(
        "access list did not settle in {} rounds",
        limits::ACCESS_LIST_ROUNDS_MAX
    )))
}

/// The gas used by a successful execution, or why it failed.
pub fn outcome(result: ExecutionResult, cap: u64) -> Result<u64, CallError> {
    match result {
        ExecutionResult::Success { .. } => Ok(result.tx_gas_used()),
        ExecutionResult::Revert { output, .. } => {
            let reason = revert_reason(&output);
            Err(CallError::Reverted { output, reason })
        }
        ExecutionResult::Halt {
            reason: HaltReason::OutOfGas(OutOfGasError::Basic),
            ..
        } => Err(CallError::Halted(format!(
            "out of gas: gas required exceeds allowance: {cap}"
        ))),
        ExecutionResult::Halt { reason, .. } => Err(CallError::Halted(halt_message(&reason))),
    }
}

/// geth's words for a halted execution.
pub fn halt_message(reason: &HaltReason) -> String {
    match reason {
        HaltReason::OutOfGas(_) => "out of gas".into(),
        HaltReason::OpcodeNotFound | HaltReason::InvalidFEOpcode => "invalid opcode".into(),
        HaltReason::StackUnderflow => "stack underflow".into(),
        HaltReason::StackOverflow => "stack limit reached 1024".into(),
        HaltReason::InvalidJump => "invalid jump destination".into(),
        HaltReason::CallTooDeep => "max call depth exceeded".into(),
        HaltReason::OutOfFunds => "insufficient balance for transfer".into(),
        HaltReason::CreateCollision => "contract address collision".into(),
        HaltReason::CreateContractSizeLimit => "max code size exceeded".into(),
        HaltReason::CreateContractStartingWithEF => "invalid code: must not begin with 0xef".into(),
        HaltReason::StateChangeDuringStaticCall => "write protection".into(),
        other => format!("{other:?}"),
    }
}

/// The message of a Solidity `Error(string)` revert, if the data is one.
pub fn revert_reason(output: &[u8]) -> Option<String> {
    alloy::sol_types::decode_revert_reason(output).filter(|reason| !reason.is_empty())
}

fn execute(
    chain: &ChainSpec,
    state: CallState<'_>,
    env: &BlockEnvironment,
    request: &TransactionRequest,
    gas_limit: u64,
) -> Result<ExecutionResult, CallError> {
    execute_with_state(chain, state, env, request, gas_limit).map(|outcome| outcome.result)
}

/// [`execute`], with the accounts and slots the execution loaded.
fn execute_with_state(
    chain: &ChainSpec,
    state: CallState<'_>,
    env: &BlockEnvironment,
    request: &TransactionRequest,
    gas_limit: u64,
) -> Result<revm::context::result::ResultAndState, CallError> {
    let sender = request.from.unwrap_or(Address::ZERO);
    let mut evm = evm(chain, state.block_state()?, env.revm_block());
    call_settings(request)(&mut evm.ctx.cfg);
    let tx = tx_env_for_call(request, sender, gas_limit, chain.chain_id);
    match evm.transact(tx) {
        Ok(outcome) => Ok(outcome),
        Err(error) => Err(CallError::Invalid(map_call_error(
            error, request, sender, env,
        ))),
    }
}

/// How a call's execution differs from a transaction's: no nonce check unless a nonce is
/// given, no base fee unless a price is, no block gas limit, and the call gas cap.
fn call_settings(request: &TransactionRequest) -> impl FnOnce(&mut revm::context::CfgEnv) + use<> {
    let check_nonce = request.nonce.is_some();
    let priced = request.gas_price.is_some() || request.max_fee_per_gas.is_some();
    move |cfg| {
        cfg.disable_nonce_check = !check_nonce;
        cfg.disable_base_fee = !priced;
        cfg.disable_block_gas_limit = true;
        cfg.tx_gas_limit_cap = Some(limits::CALL_GAS_MAX);
    }
}

/// The transaction and settings a call runs with (`debug_traceCall` shares them).
pub(crate) fn call_environment(
    chain: &ChainSpec,
    request: &TransactionRequest,
) -> (TxEnv, impl FnOnce(&mut revm::context::CfgEnv) + use<>) {
    let sender = request.from.unwrap_or(Address::ZERO);
    let gas_limit = request
        .gas
        .unwrap_or(limits::CALL_GAS_MAX)
        .min(limits::CALL_GAS_MAX);
    (
        tx_env_for_call(request, sender, gas_limit, chain.chain_id),
        call_settings(request),
    )
}

pub(crate) fn map_call_error(
    error: revm::context::result::EVMError<crate::state::StateReadError>,
    request: &TransactionRequest,
    sender: Address,
    env: &BlockEnvironment,
) -> TxError {
    use revm::context::result::{EVMError, InvalidTransaction};
    match error {
        EVMError::Transaction(InvalidTransaction::GasPriceLessThanBasefee) => {
            TxError::FeeCapTooLow {
                address: sender,
                max_fee: request
                    .max_fee_per_gas
                    .or(request.gas_price)
                    .unwrap_or_default(),
                base_fee: env.base_fee,
            }
        }
        EVMError::Transaction(InvalidTransaction::NonceTooLow { tx, state }) => {
            TxError::NonceTooLow {
                address: sender,
                tx,
                state,
            }
        }
        EVMError::Transaction(InvalidTransaction::NonceTooHigh { tx, state }) => {
            TxError::NonceTooHigh {
                address: sender,
                tx,
                state,
            }
        }
        EVMError::Transaction(InvalidTransaction::LackOfFundForMaxFee { fee, balance }) => {
            TxError::InsufficientFunds {
                address: sender,
                have: *balance,
                want: *fee,
            }
        }
        EVMError::Transaction(InvalidTransaction::CallGasCostMoreThanGasLimit {
            initial_gas,
            gas_limit,
        }) => TxError::IntrinsicGasTooLow {
            have: gas_limit,
            want: initial_gas,
        },
        EVMError::Transaction(InvalidTransaction::GasFloorMoreThanGasLimit {
            gas_floor,
            gas_limit,
        }) => TxError::IntrinsicGasTooLow {
            have: gas_limit,
            want: gas_floor,
        },
        EVMError::Database(error) => TxError::State(error.0),
        other => TxError::Invalid(other.to_string()),
    }
}

pub(crate) fn tx_env_for_call(
    request: &TransactionRequest,
    sender: Address,
    gas_limit: u64,
    chain_id: u64,
) -> TxEnv {
    let (gas_price, gas_priority_fee, tx_type) = match (request.gas_price, request.max_fee_per_gas)
    {
        (Some(price), _) => (price, None, 0),
        (None, Some(max_fee)) => (
            max_fee,
            Some(request.max_priority_fee_per_gas.unwrap_or(0)),
            2,
        ),
        (None, None) => (0, None, 0),
    };
    let authorization_list: Vec<_> = request
        .authorization_list
        .iter()
        .flatten()
        .cloned()
        .map(Either::Left)
        .collect();
    let tx_type = if authorization_list.is_empty() {
        if tx_type == 0 && request.access_list.is_some() {
            1
        } else {
            tx_type
        }
    } else {
        4
    };
    TxEnv {
        tx_type,
        caller: sender,
        gas_limit,
        gas_price,
        kind: request.to.unwrap_or(TxKind::Create),
        value: request.value.unwrap_or(U256::ZERO),
        data: request.input.input().cloned().unwrap_or_default(),
        nonce: request.nonce.unwrap_or_default(),
        chain_id: Some(chain_id),
        access_list: request.access_list.clone().unwrap_or_default(),
        gas_priority_fee,
        blob_hashes: Vec::new(),
        max_fee_per_blob_gas: 0,
        authorization_list,
    }
}
