//! The one transaction path that both the builder and the validator run (invariant I4).

use crate::error::TxError;
use crate::state::{BlockState, StateReadError};
use alloy::consensus::{
    Eip658Value, Header, Receipt, ReceiptEnvelope, Transaction, TxEnvelope, proofs,
};
use alloy::eips::eip2718::Encodable2718;
use alloy::primitives::{Address, B256, Bloom, Bytes, TxKind, U256};
use keel_primitives::block::HeaderFields;
use keel_primitives::{BlockWithReceipts, ChainSpec, SealedBlock, limits};
use keel_storage::{Snapshot, StateChanges};
use revm::context::result::{EVMError, InvalidTransaction};
use revm::context::{BlockEnv, CfgEnv, Context, Journal, TxEnv};
use revm::context_interface::block::BlobExcessGasAndPrice;
use revm::context_interface::either::Either;
use revm::handler::MainnetEvm;
use revm::primitives::eip4844::BLOB_BASE_FEE_UPDATE_FRACTION_PRAGUE;
use revm::primitives::hardfork::SpecId;
use revm::{DatabaseCommit, ExecuteEvm, MainBuilder};
use std::sync::Arc;

/// The hardfork keel executes: the latest revm supports that mainnet has activated.
pub const SPEC: SpecId = SpecId::OSAKA;

/// Bytes kept free in a block for the header and list framing when counting its RLP size.
const HEADER_RESERVE_BYTES: usize = 1_024;

type Evm<'a> =
    MainnetEvm<Context<BlockEnv, TxEnv, CfgEnv, BlockState<'a>, Journal<BlockState<'a>>, ()>>;

/// The header fields that the sequencer chooses; everything else follows from execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockEnvironment {
    /// Hash of the parent block.
    pub parent_hash: B256,
    /// Number of the new block.
    pub number: u64,
    /// Seconds since the epoch; never below the parent's.
    pub timestamp: u64,
    /// Receives the priority fees.
    pub beneficiary: Address,
    /// Block gas limit.
    pub gas_limit: u64,
    /// EIP-1559 base fee, from the parent.
    pub base_fee: u64,
    /// PREVRANDAO value (the header's mix hash).
    pub prevrandao: B256,
    /// Header extra data.
    pub extra_data: Bytes,
    /// The L1 block the block commits to (zero on a chain that settles nowhere).
    pub origin: keel_primitives::L1Origin,
    /// The forced cursor: the builder sets the parent's, and
    /// [`BlockExecutor::execute_forced`] moves it past what the block consumes; a header
    /// carries the value after its block.
    pub forced_cursor: u64,
}

impl BlockEnvironment {
    /// The environment a header describes (what the validator re-executes under).
    pub fn from_header(header: &Header) -> Self {
        Self {
            parent_hash: header.parent_hash,
            number: header.number,
            timestamp: header.timestamp,
            beneficiary: header.beneficiary,
            gas_limit: header.gas_limit,
            base_fee: header.base_fee_per_gas.unwrap_or_default(),
            prevrandao: header.mix_hash,
            extra_data: header.extra_data.clone(),
            origin: keel_primitives::origin_of(header),
            forced_cursor: keel_primitives::forced_cursor_of(header).unwrap_or(u64::MAX),
        }
    }

    pub(crate) fn revm_block(&self) -> BlockEnv {
        BlockEnv {
            number: U256::from(self.number),
            beneficiary: self.beneficiary,
            timestamp: U256::from(self.timestamp),
            gas_limit: self.gas_limit,
            basefee: self.base_fee,
            difficulty: U256::ZERO,
            prevrandao: Some(self.prevrandao),
            blob_excess_gas_and_price: Some(BlobExcessGasAndPrice::new(
                0,
                BLOB_BASE_FEE_UPDATE_FRACTION_PRAGUE,
            )),
            ..Default::default()
        }
    }
}

/// A block fully executed: the sealed block with its receipts, and its state changes.
#[derive(Debug, Clone)]
pub struct ExecutedBlock {
    /// The block and its receipts, shared: the store keeps this very value for the stream of
    /// applied blocks.
    pub output: Arc<BlockWithReceipts>,
    /// What the block changed in the state.
    pub changes: StateChanges,
}

/// Executes transactions one by one into a block, then seals it.
///
/// ### Correctness
/// [`BlockExecutor::execute_transaction`] is the only way a transaction enters a block, for the
/// builder and the validator alike. It either keeps the transaction (state, receipt, gas) or
/// keeps nothing of it: block limits are checked first, and revm's result is committed to the
/// block state only after it succeeded.
pub struct BlockExecutor<'a> {
    env: BlockEnvironment,
    evm: Evm<'a>,
    chain_id: u64,
    gas_used: u64,
    transactions_bytes: usize,
    transactions: Vec<TxEnvelope>,
    senders: Vec<Address>,
    receipts: Vec<ReceiptEnvelope>,
}

impl std::fmt::Debug for BlockExecutor<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("BlockExecutor")
            .field("number", &self.env.number)
            .field("transactions", &self.transactions.len())
            .field("gas_used", &self.gas_used)
            .finish()
    }
}

/// The revm configuration keel runs with.
pub(crate) fn cfg(chain: &ChainSpec) -> CfgEnv {
    let mut cfg = CfgEnv::new_with_spec(SPEC);
    cfg.chain_id = chain.chain_id;
    cfg.tx_gas_limit_cap = Some(limits::TX_GAS_LIMIT_MAX);
    cfg
}

pub(crate) fn evm<'a>(chain: &ChainSpec, state: BlockState<'a>, block: BlockEnv) -> Evm<'a> {
    Context::<BlockEnv, TxEnv, CfgEnv, BlockState<'a>>::new(state, SPEC)
        .with_cfg(cfg(chain))
        .with_block(block)
        .build_mainnet()
}

impl<'a> BlockExecutor<'a> {
    /// An executor for a new block on `parent` (which must be the state of `env.parent_hash`).
    pub fn new(chain: &ChainSpec, parent: &'a Snapshot, env: BlockEnvironment) -> Self {
        let evm = evm(chain, BlockState::new(parent), env.revm_block());
        Self {
            env,
            evm,
            chain_id: chain.chain_id,
            gas_used: 0,
            transactions_bytes: 0,
            transactions: Vec::new(),
            senders: Vec::new(),
            receipts: Vec::new(),
        }
    }

    /// Gas used by the transactions kept so far.
    pub fn gas_used(&self) -> u64 {
        self.gas_used
    }

    /// Gas still available in the block.
    pub fn gas_remaining(&self) -> u64 {
        self.env.gas_limit - self.gas_used
    }

    /// Transactions kept so far.
    pub fn transaction_count(&self) -> usize {
        self.transactions.len()
    }

    /// Runs one transaction on top of the block so far and keeps it if it is valid.
    ///
    /// On `Ok` the transaction, its receipt and its state changes are part of the block. On
    /// `Err` nothing about the block changed.
    pub fn execute_transaction(
        &mut self,
        transaction: &TxEnvelope,
        sender: Address,
    ) -> Result<&ReceiptEnvelope, TxError> {
        self.check_block_limits(transaction)?;
        let tx_env = tx_env(transaction, sender);
        let outcome = self.evm.transact(tx_env);
        let outcome =
            outcome.map_err(|error| map_evm_error(error, transaction, sender, &self.env))?;
        let result = outcome.result;
        let gas_used = result.tx_gas_used();
        // revm checks gas limit <= remaining before execution, so this cannot overflow the block.
        assert!(
            gas_used <= transaction.gas_limit(),
            "revm used more gas than the limit"
        );
        self.evm.ctx.journaled_state.database.commit(outcome.state);
        self.gas_used += gas_used;
        self.transactions_bytes += transaction.encode_2718_len();
        self.receipts.push(receipt(
            transaction.tx_type(),
            result.is_success(),
            self.gas_used,
            result.into_logs(),
        ));
        self.transactions.push(transaction.clone());
        self.senders.push(sender);
        Ok(self.receipts.last().expect("just pushed"))
    }

    /// Runs the forced transactions due in this block, first in it (docs/protocol.md, "Forced
    /// inclusion"): each valid one is kept; an invalid one is skipped and leaves no trace;
    /// one that no longer fits the block's gas or size stops the run and waits, with the rest,
    /// for the next block. At most `limits::FORCED_TRANSACTIONS_PER_BLOCK_MAX` are consumed.
    /// Moves the forced cursor past every one consumed (kept or skipped) and returns them,
    /// each with whether it was kept.
    ///
    /// ### Correctness
    /// The sequencer and derivation call this with the same due list on the same state, so
    /// they consume, keep and skip the same transactions: the block's prefix and its forced
    /// cursor follow from the L1 and the parent state alone.
    pub fn execute_forced(
        &mut self,
        due: &[(TxEnvelope, Address)],
    ) -> Result<Vec<bool>, StateReadError> {
        assert_eq!(
            self.transactions.len(),
            0,
            "forced transactions come first in a block"
        );
        let mut consumed = Vec::new();
        for (transaction, sender) in due.iter().take(limits::FORCED_TRANSACTIONS_PER_BLOCK_MAX) {
            match self.execute_transaction(transaction, *sender) {
                Ok(_) => consumed.push(true),
                Err(TxError::State(error)) => return Err(StateReadError(error)),
                Err(TxError::BlockGasExhausted | TxError::BlockFull) => break,
                Err(_) => consumed.push(false),
            }
        }
        self.env.forced_cursor += consumed.len() as u64;
        Ok(consumed)
    }

    fn check_block_limits(&self, transaction: &TxEnvelope) -> Result<(), TxError> {
        if transaction.is_eip4844() {
            return Err(TxError::TypeNotSupported);
        }
        let size = transaction.encode_2718_len();
        if size > limits::TX_BYTES_MAX {
            return Err(TxError::Invalid(format!(
                "oversized data: transaction size {size}, limit {}",
                limits::TX_BYTES_MAX
            )));
        }
        if self.transactions.len() >= limits::BLOCK_TXS_MAX
            || self.transactions_bytes + size + HEADER_RESERVE_BYTES > limits::BLOCK_RLP_BYTES_MAX
        {
            return Err(TxError::BlockFull);
        }
        if let Some(chain_id) = transaction.chain_id()
            && chain_id != self.chain_id
        {
            return Err(TxError::InvalidChainId {
                have: chain_id,
                want: self.chain_id,
            });
        }
        if transaction.gas_limit() > limits::TX_GAS_LIMIT_MAX {
            return Err(TxError::GasLimitTooHigh {
                cap: limits::TX_GAS_LIMIT_MAX,
                gas_limit: transaction.gas_limit(),
            });
        }
        if transaction.gas_limit() > self.env.gas_limit {
            return Err(TxError::ExceedsBlockGasLimit);
        }
        if transaction.gas_limit() > self.gas_remaining() {
            return Err(TxError::BlockGasExhausted);
        }
        Ok(())
    }

    /// The block's state after the transactions so far (the tracer goes on from there).
    pub(crate) fn into_state(self) -> BlockState<'a> {
        self.evm.ctx.journaled_state.database
    }

    /// Seals the block: computes the state changes, every root and the header.
    pub fn finish(self) -> Result<ExecutedBlock, StateReadError> {
        let Self {
            env,
            evm,
            gas_used,
            transactions,
            senders,
            receipts,
            ..
        } = self;
        let state = evm.ctx.journaled_state.database;
        let (changes, state_root) = state.into_changes()?;
        Ok(ExecutedBlock {
            output: Arc::new(seal(
                env,
                state_root,
                gas_used,
                transactions,
                senders,
                receipts,
            )),
            changes,
        })
    }
}

/// A transaction's receipt as a block keeps it (blocks and `eth_simulateV1` alike).
pub(crate) fn receipt(
    tx_type: alloy::consensus::TxType,
    success: bool,
    cumulative_gas_used: u64,
    logs: Vec<alloy::primitives::Log>,
) -> ReceiptEnvelope {
    let receipt = Receipt {
        status: Eip658Value::Eip658(success),
        cumulative_gas_used,
        logs,
    };
    ReceiptEnvelope::from_typed(tx_type, receipt.with_bloom())
}

/// The block executed transactions make: every root and the header under `env` (blocks and
/// `eth_simulateV1` alike).
pub(crate) fn seal(
    env: BlockEnvironment,
    state_root: B256,
    gas_used: u64,
    transactions: Vec<TxEnvelope>,
    senders: Vec<Address>,
    receipts: Vec<ReceiptEnvelope>,
) -> BlockWithReceipts {
    let mut logs_bloom = Bloom::ZERO;
    for receipt in &receipts {
        logs_bloom.accrue_bloom(receipt.logs_bloom());
    }
    let header = HeaderFields {
        parent_hash: env.parent_hash,
        beneficiary: env.beneficiary,
        state_root,
        transactions_root: proofs::calculate_transaction_root(&transactions),
        receipts_root: proofs::calculate_receipt_root(&receipts),
        logs_bloom,
        number: env.number,
        gas_limit: env.gas_limit,
        gas_used,
        timestamp: env.timestamp,
        extra_data: env.extra_data,
        mix_hash: env.prevrandao,
        base_fee: env.base_fee,
        origin: env.origin,
        forced_cursor: env.forced_cursor,
    }
    .into_header();
    BlockWithReceipts::new(SealedBlock::new(header, transactions, senders), receipts)
}

/// revm's view of a signed transaction from a known sender.
pub fn tx_env(transaction: &TxEnvelope, sender: Address) -> TxEnv {
    let (gas_price, gas_priority_fee) = match transaction.max_priority_fee_per_gas() {
        Some(tip) => (transaction.max_fee_per_gas(), Some(tip)),
        None => (transaction.max_fee_per_gas(), None),
    };
    TxEnv {
        tx_type: transaction.tx_type() as u8,
        caller: sender,
        gas_limit: transaction.gas_limit(),
        gas_price,
        kind: transaction.kind(),
        value: transaction.value(),
        data: transaction.input().clone(),
        nonce: transaction.nonce(),
        chain_id: transaction.chain_id(),
        access_list: transaction.access_list().cloned().unwrap_or_default(),
        gas_priority_fee,
        blob_hashes: Vec::new(),
        max_fee_per_blob_gas: 0,
        authorization_list: transaction
            .authorization_list()
            .map(|list| list.iter().cloned().map(Either::Left).collect())
            .unwrap_or_default(),
    }
}

/// Translates revm's refusal of a transaction into geth's words.
pub(crate) fn map_evm_error(
    error: EVMError<StateReadError>,
    transaction: &TxEnvelope,
    sender: Address,
    env: &BlockEnvironment,
) -> TxError {
    let invalid = match error {
        EVMError::Transaction(invalid) => invalid,
        EVMError::Database(error) => return TxError::State(error.0),
        EVMError::Header(error) => return TxError::Invalid(error.to_string()),
        EVMError::Custom(error) => return TxError::Invalid(error),
        other => return TxError::Invalid(other.to_string()),
    };
    match invalid {
        InvalidTransaction::NonceTooLow { tx, state } => TxError::NonceTooLow {
            address: sender,
            tx,
            state,
        },
        InvalidTransaction::NonceTooHigh { tx, state } => TxError::NonceTooHigh {
            address: sender,
            tx,
            state,
        },
        InvalidTransaction::LackOfFundForMaxFee { fee, balance } => TxError::InsufficientFunds {
            address: sender,
            have: *balance,
            want: *fee,
        },
        InvalidTransaction::CallGasCostMoreThanGasLimit {
            initial_gas,
            gas_limit,
        } => TxError::IntrinsicGasTooLow {
            have: gas_limit,
            want: initial_gas,
        },
        InvalidTransaction::GasFloorMoreThanGasLimit {
            gas_floor,
            gas_limit,
        } => TxError::IntrinsicGasTooLow {
            have: gas_limit,
            want: gas_floor,
        },
        InvalidTransaction::GasPriceLessThanBasefee => TxError::FeeCapTooLow {
            address: sender,
            max_fee: transaction.max_fee_per_gas(),
            base_fee: env.base_fee,
        },
        InvalidTransaction::PriorityFeeGreaterThanMaxFee => TxError::TipAboveFeeCap {
            address: sender,
            tip: transaction.max_priority_fee_per_gas().unwrap_or_default(),
            max_fee: transaction.max_fee_per_gas(),
        },
        InvalidTransaction::CallerGasLimitMoreThanBlock => TxError::ExceedsBlockGasLimit,
        InvalidTransaction::TxGasLimitGreaterThanCap { gas_limit, cap } => {
            TxError::GasLimitTooHigh { cap, gas_limit }
        }
        InvalidTransaction::InvalidChainId | InvalidTransaction::MissingChainId => {
            TxError::InvalidChainId {
                have: transaction.chain_id().unwrap_or_default(),
                want: 0,
            }
        }
        InvalidTransaction::RejectCallerWithCode => TxError::SenderNotEoa {
            address: sender,
            code_hash: B256::ZERO,
        },
        InvalidTransaction::CreateInitCodeSizeLimit => TxError::InitcodeTooLarge {
            size: transaction.input().len(),
            limit: limits::INITCODE_BYTES_MAX,
        },
        InvalidTransaction::Eip4844NotSupported => TxError::TypeNotSupported,
        other => TxError::Invalid(other.to_string()),
    }
}

/// The address a contract-creating transaction deploys to.
pub fn created_address(transaction: &TxEnvelope, sender: Address) -> Option<Address> {
    match transaction.kind() {
        TxKind::Create => Some(sender.create(transaction.nonce())),
        TxKind::Call(_) => None,
    }
}

/// The least gas `transaction` needs before executing a single instruction: the intrinsic gas
/// or, when larger, the EIP-7623 calldata floor.
pub fn intrinsic_gas(transaction: &TxEnvelope, sender: Address) -> u64 {
    let gas = revm::context_interface::cfg::gas::calculate_initial_tx_gas_for_tx(
        tx_env(transaction, sender),
        SPEC,
        None,
    );
    (gas.initial_regular_gas + gas.initial_state_gas).max(gas.floor_gas)
}
