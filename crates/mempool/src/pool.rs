//! The pool itself.

use crate::PoolError;
use alloy::consensus::transaction::SignerRecoverable;
use alloy::consensus::{Transaction, TxEnvelope};
use alloy::eips::eip2718::Decodable2718;
use alloy::primitives::{Address, B256, U256};
use keel_execution::{TransactionSource, TxError, intrinsic_gas};
use keel_primitives::{ChainSpec, SealedBlock, limits};
use keel_storage::Snapshot;
use parking_lot::Mutex;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// A validated transaction with everything the pool and the builder ask of it, computed once.
#[derive(Debug)]
pub struct PoolTransaction {
    /// The signed transaction.
    pub envelope: TxEnvelope,
    /// Its recovered sender.
    pub sender: Address,
    /// Its hash.
    pub hash: B256,
    /// Bytes of its EIP-2718 encoding.
    pub size: usize,
    /// Arrival order in the pool.
    pub arrival: u64,
    /// When the pool took it: the start of its send-to-receipt latency. A measurement only;
    /// nothing the pool or the builder decides reads it (the simulation stays deterministic).
    pub received: std::time::Instant,
}

impl PoolTransaction {
    fn nonce(&self) -> u64 {
        self.envelope.nonce()
    }

    fn max_fee(&self) -> u128 {
        self.envelope.max_fee_per_gas()
    }

    fn max_tip(&self) -> u128 {
        self.envelope
            .max_priority_fee_per_gas()
            .unwrap_or(self.envelope.max_fee_per_gas())
    }

    /// What the block's beneficiary earns per gas at `base_fee`.
    pub fn effective_tip(&self, base_fee: u64) -> u128 {
        self.max_fee()
            .saturating_sub(base_fee as u128)
            .min(self.max_tip())
    }
}

/// Decodes raw EIP-2718 bytes, at most `TX_BYTES_MAX` of them, without recovering the sender:
/// enough for a hash, or for bytes whose sender is already known (an intake entry's).
pub fn decode(raw: &[u8]) -> Result<TxEnvelope, PoolError> {
    if raw.len() > limits::TX_BYTES_MAX {
        return Err(PoolError::OversizedData {
            size: raw.len(),
            limit: limits::TX_BYTES_MAX,
        });
    }
    TxEnvelope::decode_2718_exact(raw).map_err(|error| PoolError::Decode(error.to_string()))
}

/// Decodes raw EIP-2718 bytes and recovers the sender: the only signature recovery a
/// transaction goes through in keel. Runs without the pool lock.
pub fn decode_and_recover(raw: &[u8]) -> Result<(TxEnvelope, Address), PoolError> {
    let envelope = decode(raw)?;
    let sender = envelope
        .recover_signer()
        .map_err(|_| PoolError::InvalidSender)?;
    Ok((envelope, sender))
}

#[derive(Debug, Default)]
struct SenderQueue {
    /// The account nonce at the head the pool last saw.
    state_nonce: u64,
    /// The head's number when the sender was last active (a transaction added or included):
    /// its key in `Inner::idle`.
    active_at: u64,
    by_nonce: BTreeMap<u64, Arc<PoolTransaction>>,
}

impl SenderQueue {
    /// The nonce after the last transaction that follows `state_nonce` without a gap.
    fn next_pending_nonce(&self, state_nonce: u64) -> u64 {
        let mut next = state_nonce;
        for nonce in self.by_nonce.range(state_nonce..).map(|(nonce, _)| *nonce) {
            if nonce != next {
                break;
            }
            next += 1;
        }
        next
    }
}

#[derive(Debug, Default)]
struct Inner {
    by_hash: HashMap<B256, Arc<PoolTransaction>>,
    senders: HashMap<Address, SenderQueue>,
    /// Every transaction by (fee cap, arrival): the eviction order, cheapest first.
    by_price: BTreeSet<(u128, Reverse<u64>, B256)>,
    /// Every sender with a queue, by the block it was last active at: the expiry order of the
    /// future queue (each sender once, at `(queue.active_at, sender)`).
    idle: BTreeSet<(u64, Address)>,
    bytes: usize,
    arrivals: u64,
}

impl Inner {
    /// Sets each sender's state nonce from `head` and drops its transactions below it, then
    /// reports the pool's size.
    fn resync(&mut self, senders: HashSet<Address>, head: &Snapshot) {
        for sender in senders {
            let Some(queue) = self.senders.get_mut(&sender) else {
                continue;
            };
            let Ok(account) = head.account(&sender) else {
                continue;
            };
            queue.state_nonce = account.map(|account| account.nonce).unwrap_or(0);
            let stale: Vec<B256> = queue
                .by_nonce
                .range(..queue.state_nonce)
                .map(|(_, transaction)| transaction.hash)
                .collect();
            for hash in stale {
                self.remove(&hash);
            }
        }
        metrics::gauge!("keel_mempool_transactions").set(self.by_hash.len() as f64);
        metrics::gauge!("keel_mempool_bytes").set(self.bytes as f64);
    }

    fn remove(&mut self, hash: &B256) -> Option<Arc<PoolTransaction>> {
        let transaction = self.by_hash.remove(hash)?;
        self.by_price
            .remove(&(transaction.max_fee(), Reverse(transaction.arrival), *hash));
        self.bytes -= transaction.size;
        if let Some(queue) = self.senders.get_mut(&transaction.sender) {
            queue.by_nonce.remove(&transaction.nonce());
            if queue.by_nonce.is_empty() {
                self.idle.remove(&(queue.active_at, transaction.sender));
                self.senders.remove(&transaction.sender);
            }
        }
        Some(transaction)
    }

    /// Records `sender` as active at block `at`, if it has a queue.
    fn touch(&mut self, sender: Address, at: u64) {
        if let Some(queue) = self.senders.get_mut(&sender) {
            self.idle.remove(&(queue.active_at, sender));
            queue.active_at = queue.active_at.max(at);
            self.idle.insert((queue.active_at, sender));
        }
    }

    /// Drops the future queue (the transactions behind a nonce gap) of every sender idle for
    /// `lifetime` blocks at block `head`; such a sender's pending transactions stay, and its
    /// idle time starts again. The number dropped.
    fn expire(&mut self, head: u64, lifetime: u64) -> usize {
        let mut dropped = 0;
        while let Some(&(at, sender)) = self.idle.first() {
            if at.saturating_add(lifetime) > head {
                break;
            }
            let queue = &self.senders[&sender];
            let gap = queue.next_pending_nonce(queue.state_nonce);
            let future: Vec<B256> = queue
                .by_nonce
                .range(gap..)
                .map(|(_, transaction)| transaction.hash)
                .collect();
            for hash in &future {
                self.remove(hash);
            }
            dropped += future.len();
            self.touch(sender, head);
            assert!(
                self.idle.first() != Some(&(at, sender)),
                "the pool's expiry made no progress"
            );
        }
        dropped
    }

    fn insert(&mut self, transaction: Arc<PoolTransaction>, state_nonce: u64, at: u64) {
        self.bytes += transaction.size;
        self.by_price.insert((
            transaction.max_fee(),
            Reverse(transaction.arrival),
            transaction.hash,
        ));
        self.by_hash.insert(transaction.hash, transaction.clone());
        let sender = transaction.sender;
        let queue = self.senders.entry(sender).or_default();
        queue.state_nonce = state_nonce;
        queue.by_nonce.insert(transaction.nonce(), transaction);
        // Puts a new sender into `idle`, or moves a known one to `at`.
        self.touch(sender, at);
    }

    /// Evicts the cheapest transaction that is the last of its sender's queue (so no gap opens
    /// in front of a kept transaction), if it pays less than `max_fee`.
    fn evict_cheaper_than(&mut self, max_fee: u128) -> bool {
        let victim = self.by_price.iter().find_map(|(fee, _, hash)| {
            if *fee >= max_fee {
                return Some(None);
            }
            let transaction = &self.by_hash[hash];
            let queue = &self.senders[&transaction.sender];
            let last = queue.by_nonce.keys().next_back() == Some(&transaction.nonce());
            last.then_some(Some(*hash))
        });
        match victim.flatten() {
            Some(hash) => {
                self.remove(&hash);
                metrics::counter!("keel_mempool_evicted_total").increment(1);
                true
            }
            None => false,
        }
    }
}

/// The pool's bounds. [`MempoolLimits::default`] takes keel's named limits; tests and small
/// deployments may lower them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MempoolLimits {
    /// Transactions held, pending and future together.
    pub transactions_max: usize,
    /// Transactions held for one sender.
    pub transactions_per_sender_max: usize,
    /// Bytes of encoded transactions held.
    pub bytes_max: usize,
    /// Blocks a sender's future queue stays while it is idle.
    pub future_lifetime_blocks: u64,
}

impl Default for MempoolLimits {
    fn default() -> Self {
        Self {
            transactions_max: limits::MEMPOOL_TXS_MAX,
            transactions_per_sender_max: limits::MEMPOOL_TXS_PER_SENDER_MAX,
            bytes_max: limits::MEMPOOL_BYTES_MAX,
            future_lifetime_blocks: limits::MEMPOOL_FUTURE_LIFETIME_BLOCKS,
        }
    }
}

/// The bounded transaction pool. All methods take `&self`; one mutex guards the state and is
/// never held across I/O or signature recovery.
#[derive(Debug)]
pub struct Mempool {
    chain_id: u64,
    block_gas_limit: u64,
    limits: MempoolLimits,
    inner: Mutex<Inner>,
}

impl Mempool {
    /// An empty pool for `chain`, whose blocks have `block_gas_limit` gas.
    pub fn new(chain: &ChainSpec, block_gas_limit: u64) -> Self {
        Self::with_limits(chain, block_gas_limit, MempoolLimits::default())
    }

    /// An empty pool with the given bounds.
    pub fn with_limits(chain: &ChainSpec, block_gas_limit: u64, limits: MempoolLimits) -> Self {
        Self {
            chain_id: chain.chain_id,
            block_gas_limit,
            limits,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Transactions held.
    pub fn len(&self) -> usize {
        self.inner.lock().by_hash.len()
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the transactions held.
    pub fn bytes(&self) -> usize {
        self.inner.lock().bytes
    }

    /// Every transaction held, each sender's in nonce order (`txpool_*`).
    pub fn all(&self) -> Vec<Arc<PoolTransaction>> {
        let inner = self.inner.lock();
        inner
            .senders
            .values()
            .flat_map(|queue| queue.by_nonce.values().cloned())
            .collect()
    }

    /// A transaction in the pool, by hash.
    pub fn get(&self, hash: &B256) -> Option<Arc<PoolTransaction>> {
        self.inner.lock().by_hash.get(hash).cloned()
    }

    /// The nonce a sender's next transaction should carry, counting its pending transactions
    /// on top of `state_nonce` (the account nonce at the head).
    pub fn pending_nonce(&self, sender: &Address, state_nonce: u64) -> u64 {
        let inner = self.inner.lock();
        match inner.senders.get(sender) {
            Some(queue) => queue.next_pending_nonce(state_nonce),
            None => state_nonce,
        }
    }

    /// Validates a decoded transaction against `head` (the state the next block builds on,
    /// whose block has base fee `next_base_fee` for its child) and the pool, without adding
    /// it: what a cluster's leader checks before it replicates a transaction (a full pool is
    /// left to [`Mempool::add`], which may evict to make room).
    pub fn check(
        &self,
        envelope: &TxEnvelope,
        sender: Address,
        head: &Snapshot,
        next_base_fee: u64,
    ) -> Result<(), PoolError> {
        let size = envelope.eip2718_encoded_length();
        self.check_state(envelope, sender, size, head, next_base_fee)?;
        self.check_pool(&self.inner.lock(), envelope, sender)
            .map(|_| ())
    }

    /// Validates a decoded transaction against `head` (the state the next block builds on,
    /// whose block has base fee `next_base_fee` for its child) and adds it.
    pub fn add(
        &self,
        envelope: TxEnvelope,
        sender: Address,
        head: &Snapshot,
        next_base_fee: u64,
    ) -> Result<B256, PoolError> {
        let hash = *envelope.tx_hash();
        let size = envelope.eip2718_encoded_length();
        let state_nonce = self.check_state(&envelope, sender, size, head, next_base_fee)?;
        let mut inner = self.inner.lock();
        let replaced = self.check_pool(&inner, &envelope, sender)?;
        if let Some(existing) = replaced {
            inner.remove(&existing.hash);
        }
        while inner.by_hash.len() >= self.limits.transactions_max
            || inner.bytes + size > self.limits.bytes_max
        {
            if !inner.evict_cheaper_than(envelope.max_fee_per_gas()) {
                return Err(if inner.by_hash.is_empty() {
                    PoolError::PoolFull
                } else {
                    PoolError::Underpriced
                });
            }
        }
        inner.arrivals += 1;
        let arrival = inner.arrivals;
        let transaction = Arc::new(PoolTransaction {
            envelope,
            sender,
            hash,
            size,
            arrival,
            received: std::time::Instant::now(),
        });
        inner.insert(transaction, state_nonce, head.head().0);
        metrics::gauge!("keel_mempool_transactions").set(inner.by_hash.len() as f64);
        metrics::gauge!("keel_mempool_bytes").set(inner.bytes as f64);
        Ok(hash)
    }

    /// The checks against `head`'s state (and the stateless ones, given the transaction's
    /// encoded `size`); the sender's nonce there.
    fn check_state(
        &self,
        envelope: &TxEnvelope,
        sender: Address,
        size: usize,
        head: &Snapshot,
        next_base_fee: u64,
    ) -> Result<u64, PoolError> {
        self.check_stateless(envelope, sender, size, next_base_fee)?;
        let account = head.account(&sender)?.unwrap_or_default();
        let nonce = envelope.nonce();
        if nonce < account.nonce {
            return Err(PoolError::NonceTooLow {
                address: sender,
                tx: nonce,
                state: account.nonce,
            });
        }
        if nonce > account.nonce + limits::MEMPOOL_NONCE_GAP_MAX {
            return Err(PoolError::NonceTooHigh {
                address: sender,
                tx: nonce,
                state: account.nonce,
            });
        }
        let cost = U256::from(envelope.gas_limit()) * U256::from(envelope.max_fee_per_gas())
            + envelope.value();
        if cost > account.balance {
            return Err(PoolError::InsufficientFunds {
                balance: account.balance,
                cost,
                overshot: cost - account.balance,
            });
        }
        Ok(account.nonce)
    }

    /// The checks against what the pool holds: a duplicate, an underpriced replacement, a
    /// sender at its limit. The transaction it would replace, if any.
    fn check_pool(
        &self,
        inner: &Inner,
        envelope: &TxEnvelope,
        sender: Address,
    ) -> Result<Option<Arc<PoolTransaction>>, PoolError> {
        if inner.by_hash.contains_key(envelope.tx_hash()) {
            return Err(PoolError::AlreadyKnown);
        }
        let nonce = envelope.nonce();
        let replaced = inner
            .senders
            .get(&sender)
            .and_then(|queue| queue.by_nonce.get(&nonce))
            .cloned();
        if let Some(existing) = &replaced {
            let bump = |old: u128| old + old * limits::MEMPOOL_REPLACEMENT_BUMP_PERCENT / 100;
            let new_fee = envelope.max_fee_per_gas();
            let new_tip = envelope.max_priority_fee_per_gas().unwrap_or(new_fee);
            if new_fee < bump(existing.max_fee()) || new_tip < bump(existing.max_tip()) {
                return Err(PoolError::ReplacementUnderpriced);
            }
        } else {
            let held = inner
                .senders
                .get(&sender)
                .map_or(0, |queue| queue.by_nonce.len());
            if held >= self.limits.transactions_per_sender_max {
                return Err(PoolError::AccountLimit(held));
            }
        }
        Ok(replaced)
    }

    fn check_stateless(
        &self,
        envelope: &TxEnvelope,
        sender: Address,
        size: usize,
        next_base_fee: u64,
    ) -> Result<(), PoolError> {
        if size > limits::TX_BYTES_MAX {
            return Err(PoolError::OversizedData {
                size,
                limit: limits::TX_BYTES_MAX,
            });
        }
        if envelope.is_eip4844() {
            return Err(PoolError::TypeNotSupported);
        }
        match envelope.chain_id() {
            None => return Err(PoolError::Unprotected),
            Some(have) if have != self.chain_id => {
                return Err(PoolError::InvalidChainId {
                    have,
                    want: self.chain_id,
                });
            }
            Some(_) => {}
        }
        let gas_limit = envelope.gas_limit();
        if gas_limit > self.block_gas_limit {
            return Err(PoolError::ExceedsBlockGasLimit);
        }
        if gas_limit > limits::TX_GAS_LIMIT_MAX {
            return Err(PoolError::GasLimitTooHigh {
                cap: limits::TX_GAS_LIMIT_MAX,
                gas_limit,
            });
        }
        let needed = intrinsic_gas(envelope, sender);
        if gas_limit < needed {
            return Err(PoolError::IntrinsicGasTooLow {
                gas: gas_limit,
                needed,
            });
        }
        if envelope.is_create() && envelope.input().len() > limits::INITCODE_BYTES_MAX {
            return Err(PoolError::OversizedData {
                size: envelope.input().len(),
                limit: limits::INITCODE_BYTES_MAX,
            });
        }
        let max_fee = envelope.max_fee_per_gas();
        if let Some(tip) = envelope.max_priority_fee_per_gas()
            && tip > max_fee
        {
            return Err(PoolError::TipAboveFeeCap {
                address: sender,
                tip,
                max_fee,
            });
        }
        if max_fee < next_base_fee as u128 {
            return Err(PoolError::FeeCapBelowBaseFee {
                address: sender,
                max_fee,
                base_fee: next_base_fee,
            });
        }
        Ok(())
    }

    /// The builder's view: each sender's pending transactions, best effective tip first (then
    /// earliest arrival), skipping senders whose next transaction cannot pay `base_fee`.
    pub fn best(&self, base_fee: u64) -> BestTransactions {
        let inner = self.inner.lock();
        let mut queues = HashMap::with_capacity(inner.senders.len());
        let mut heap = BinaryHeap::with_capacity(inner.senders.len());
        for (sender, queue) in &inner.senders {
            let mut pending: VecDeque<Arc<PoolTransaction>> = (queue.state_nonce..)
                .zip(queue.by_nonce.range(queue.state_nonce..))
                .take_while(|(expected, (nonce, _))| expected == *nonce)
                .map(|(_, (_, transaction))| transaction.clone())
                .collect();
            if let Some(first) = pending.pop_front()
                && first.max_fee() >= base_fee as u128
            {
                heap.push(Candidate::new(first, base_fee));
                queues.insert(*sender, pending);
            }
        }
        BestTransactions {
            base_fee,
            heap,
            queues,
            skipped: HashSet::new(),
        }
    }

    /// Drops transactions a builder found invalid on `parent` (the state it built on), and
    /// moves their senders' queues to `parent`'s nonces. The block itself reaches the pool
    /// later, through [`Mempool::on_block`].
    pub fn drop_invalid(&self, invalid: &[(B256, TxError)], parent: &Snapshot) {
        let mut inner = self.inner.lock();
        let mut senders = HashSet::new();
        for (hash, _) in invalid {
            if let Some(removed) = inner.remove(hash) {
                senders.insert(removed.sender);
            }
        }
        inner.resync(senders, parent);
    }

    /// Moves every sender's queue to `head`'s nonces: after a snapshot install or an unwind,
    /// when the head did not move by one block the pool saw.
    pub fn resync_all(&self, head: &Snapshot) {
        let mut inner = self.inner.lock();
        let senders: HashSet<Address> = inner.senders.keys().copied().collect();
        inner.resync(senders, head);
    }

    /// Moves the pool to a new head: drops the block's transactions and the transactions whose
    /// nonce the head has passed. The block is applied here, so its receipts are served: each
    /// of its transactions this pool took records its send-to-receipt latency.
    pub fn on_block(&self, block: &SealedBlock, head: &Snapshot) {
        let mut inner = self.inner.lock();
        let senders: HashSet<Address> = block.senders.iter().copied().collect();
        for transaction in &block.transactions {
            if let Some(taken) = inner.remove(transaction.tx_hash()) {
                metrics::histogram!("keel_send_to_receipt_seconds")
                    .record(taken.received.elapsed().as_secs_f64());
            }
        }
        let number = head.head().0;
        for sender in &senders {
            inner.touch(*sender, number);
        }
        inner.resync(senders, head);
        let expired = inner.expire(number, self.limits.future_lifetime_blocks);
        if expired > 0 {
            metrics::counter!("keel_mempool_expired_total").increment(expired as u64);
            metrics::gauge!("keel_mempool_transactions").set(inner.by_hash.len() as f64);
            metrics::gauge!("keel_mempool_bytes").set(inner.bytes as f64);
        }
    }
}

#[derive(Debug)]
struct Candidate {
    tip: u128,
    arrival: Reverse<u64>,
    transaction: Arc<PoolTransaction>,
}

impl Candidate {
    fn new(transaction: Arc<PoolTransaction>, base_fee: u64) -> Self {
        Self {
            tip: transaction.effective_tip(base_fee),
            arrival: Reverse(transaction.arrival),
            transaction,
        }
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        (self.tip, self.arrival) == (other.tip, other.arrival)
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.tip, self.arrival).cmp(&(other.tip, other.arrival))
    }
}

/// Pending transactions in the order a block should take them; see [`Mempool::best`].
#[derive(Debug)]
pub struct BestTransactions {
    base_fee: u64,
    heap: BinaryHeap<Candidate>,
    queues: HashMap<Address, VecDeque<Arc<PoolTransaction>>>,
    skipped: HashSet<Address>,
}

impl Iterator for BestTransactions {
    type Item = Arc<PoolTransaction>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let candidate = self.heap.pop()?;
            let sender = candidate.transaction.sender;
            if self.skipped.contains(&sender) {
                continue;
            }
            if let Some(next) = self.queues.get_mut(&sender).and_then(VecDeque::pop_front)
                && next.max_fee() >= self.base_fee as u128
            {
                self.heap.push(Candidate::new(next, self.base_fee));
            }
            return Some(candidate.transaction);
        }
    }
}

impl TransactionSource for BestTransactions {
    fn next_candidate(&mut self) -> Option<(TxEnvelope, Address, B256)> {
        self.next().map(|transaction| {
            (
                transaction.envelope.clone(),
                transaction.sender,
                transaction.hash,
            )
        })
    }

    fn skip_sender(&mut self, sender: Address) {
        self.skipped.insert(sender);
    }
}
