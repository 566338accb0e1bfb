//! The block builder: fills a block from a source of candidate transactions.

use crate::error::TxError;
use crate::executor::{BlockEnvironment, BlockExecutor, ExecutedBlock};
use crate::state::StateReadError;
use alloy::consensus::TxEnvelope;
use alloy::primitives::{Address, B256};
use keel_primitives::ChainSpec;
use keel_storage::Snapshot;

/// Gas of the cheapest transaction: with less left, the builder stops asking for more.
const TRANSFER_GAS: u64 = 21_000;

/// Candidate transactions in the order the builder should try them.
///
/// ### Correctness
/// A source yields each sender's transactions in nonce order. After
/// [`TransactionSource::skip_sender`] it yields no more from that sender in this block: their
/// nonces would no longer follow. Implemented by the mempool's best-transactions view and, in
/// tests, by plain lists.
pub trait TransactionSource {
    /// The next candidate: the transaction, its recovered sender, and its hash.
    fn next_candidate(&mut self) -> Option<(TxEnvelope, Address, B256)>;
    /// Yields nothing more from `sender` in this block.
    fn skip_sender(&mut self, sender: Address);
}

/// A built block and what happened to the candidates that did not make it.
#[derive(Debug)]
pub struct BuildOutcome {
    /// The sealed block.
    pub executed: ExecutedBlock,
    /// Candidates that are invalid on this state, with why; the pool should drop them.
    pub invalid: Vec<(B256, TxError)>,
    /// The forced transactions the block consumed, in order: kept (`true`) or skipped as
    /// invalid (`false`). The forced cursor moved past each.
    pub forced: Vec<bool>,
}

/// Builds the block described by `env` on `parent`, taking candidates from `source` until the
/// block is full or the source is empty.
pub fn build_block(
    chain: &ChainSpec,
    parent: &Snapshot,
    env: BlockEnvironment,
    source: &mut dyn TransactionSource,
) -> Result<BuildOutcome, StateReadError> {
    build_block_with_forced(chain, parent, env, &[], source)
}

/// [`build_block`] with the forced transactions due in this block run first
/// ([`BlockExecutor::execute_forced`]).
pub fn build_block_with_forced(
    chain: &ChainSpec,
    parent: &Snapshot,
    env: BlockEnvironment,
    forced: &[(TxEnvelope, Address)],
    source: &mut dyn TransactionSource,
) -> Result<BuildOutcome, StateReadError> {
    let mut executor = BlockExecutor::new(chain, parent, env);
    let forced = executor.execute_forced(forced)?;
    let mut invalid = Vec::new();
    while executor.gas_remaining() >= TRANSFER_GAS {
        let Some((transaction, sender, hash)) = source.next_candidate() else {
            break;
        };
        match executor.execute_transaction(&transaction, sender) {
            Ok(_) => {}
            Err(TxError::State(error)) => return Err(StateReadError(error)),
            Err(error) => {
                source.skip_sender(sender);
                if !error.is_transient() {
                    invalid.push((hash, error));
                }
            }
        }
    }
    Ok(BuildOutcome {
        executed: executor.finish()?,
        invalid,
        forced,
    })
}

/// A [`TransactionSource`] over a fixed list, in list order.
#[derive(Debug, Default)]
pub struct ListSource {
    candidates: std::collections::VecDeque<(TxEnvelope, Address)>,
    skipped: std::collections::HashSet<Address>,
}

impl ListSource {
    /// A source yielding `candidates` in order.
    pub fn new(candidates: Vec<(TxEnvelope, Address)>) -> Self {
        Self {
            candidates: candidates.into(),
            skipped: Default::default(),
        }
    }
}

impl TransactionSource for ListSource {
    fn next_candidate(&mut self) -> Option<(TxEnvelope, Address, B256)> {
        while let Some((transaction, sender)) = self.candidates.pop_front() {
            if !self.skipped.contains(&sender) {
                let hash = *transaction.tx_hash();
                return Some((transaction, sender, hash));
            }
        }
        None
    }

    fn skip_sender(&mut self, sender: Address) {
        self.skipped.insert(sender);
    }
}
