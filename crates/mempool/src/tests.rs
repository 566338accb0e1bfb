//! Unit tests of the pool: entry validation in geth's words, replacement, ordering, limits.

use crate::{Mempool, MempoolLimits, PoolError, decode_and_recover};
use alloy::consensus::{TxEip1559, TxEnvelope, TxLegacy};
use alloy::eips::eip2718::Encodable2718;
use alloy::primitives::{Address, Bytes, TxKind, U256};
use alloy::signers::local::PrivateKeySigner;
use keel_execution::TransactionSource;
use keel_primitives::{ChainSpec, dev_accounts, limits, sign_transaction};
use keel_storage::Store;

const BASE_FEE: u64 = 1_000_000_000;

fn transfer(signer: &PrivateKeySigner, nonce: u64, max_fee: u128, tip: u128) -> TxEnvelope {
    sign_transaction(
        signer,
        TxEip1559 {
            chain_id: keel_primitives::DEV_CHAIN_ID,
            nonce,
            gas_limit: 21_000,
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: tip,
            to: TxKind::Call(Address::repeat_byte(1)),
            value: U256::from(1),
            ..Default::default()
        }
        .into(),
    )
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    pool: Mempool,
    signers: Vec<PrivateKeySigner>,
}

fn fixture() -> Fixture {
    let chain = ChainSpec::dev();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("chain.redb"), &chain).unwrap();
    let pool = Mempool::new(&chain, chain.genesis.gas_limit);
    Fixture {
        _dir: dir,
        store,
        pool,
        signers: dev_accounts(),
    }
}

impl Fixture {
    fn add(&self, envelope: TxEnvelope) -> Result<(), PoolError> {
        let raw = envelope.encoded_2718();
        let (envelope, sender) = decode_and_recover(&raw)?;
        self.pool
            .add(envelope, sender, &self.store.snapshot().unwrap(), BASE_FEE)
            .map(|_| ())
    }
}

#[test]
fn entry_errors_use_geths_words() {
    let fixture = fixture();
    let signer = &fixture.signers[0];
    let base = TxEip1559 {
        chain_id: keel_primitives::DEV_CHAIN_ID,
        nonce: 0,
        gas_limit: 21_000,
        max_fee_per_gas: 2_000_000_000,
        max_priority_fee_per_gas: 1,
        to: TxKind::Call(Address::repeat_byte(1)),
        ..Default::default()
    };
    let with = |change: fn(&mut TxEip1559)| {
        let mut tx = base.clone();
        change(&mut tx);
        sign_transaction(signer, tx.into())
    };
    let table: Vec<(TxEnvelope, &str)> = vec![
        (with(|tx| tx.nonce = 5_000), "nonce too high"),
        (
            with(|tx| tx.value = U256::from(10u128.pow(30))),
            "insufficient funds for gas * price + value",
        ),
        (with(|tx| tx.chain_id = 1), "invalid chain id"),
        (with(|tx| tx.gas_limit = 20_000), "intrinsic gas too low"),
        (
            with(|tx| tx.gas_limit = 40_000_000),
            "exceeds block gas limit",
        ),
        (
            with(|tx| tx.max_fee_per_gas = 10),
            "max fee per gas less than block base fee",
        ),
        (
            with(|tx| tx.max_priority_fee_per_gas = 3_000_000_000),
            "max priority fee per gas higher than max fee per gas",
        ),
        (
            with(|tx| tx.input = Bytes::from(vec![1u8; limits::TX_BYTES_MAX])),
            "oversized data",
        ),
    ];
    for (envelope, expected) in table {
        let error = fixture.add(envelope).unwrap_err().to_string();
        assert!(
            error.starts_with(expected),
            "expected {expected:?}, got {error:?}"
        );
    }
    // Unprotected legacy transactions are refused over RPC, as geth does by default.
    let legacy = sign_transaction(
        signer,
        TxLegacy {
            chain_id: None,
            gas_limit: 21_000,
            gas_price: 2_000_000_000,
            ..Default::default()
        }
        .into(),
    );
    assert_eq!(fixture.add(legacy).unwrap_err(), PoolError::Unprotected);
    assert!(matches!(
        decode_and_recover(&[0x02, 0xc0]),
        Err(PoolError::Decode(_))
    ));
    assert!(fixture.pool.is_empty());
}

#[test]
fn duplicates_and_replacements() {
    let fixture = fixture();
    let signer = &fixture.signers[0];
    let first = transfer(signer, 0, 2_000_000_000, 100);
    fixture.add(first.clone()).unwrap();
    assert_eq!(fixture.add(first).unwrap_err(), PoolError::AlreadyKnown);
    // +5% is not enough; +10% on both fee cap and tip is.
    let small_bump = transfer(signer, 0, 2_100_000_000, 105);
    assert_eq!(
        fixture.add(small_bump).unwrap_err(),
        PoolError::ReplacementUnderpriced
    );
    let replacement = transfer(signer, 0, 2_200_000_000, 110);
    let replacement_hash = *replacement.tx_hash();
    fixture.add(replacement).unwrap();
    assert_eq!(fixture.pool.len(), 1);
    assert!(fixture.pool.get(&replacement_hash).is_some());
}

#[test]
fn pending_nonce_counts_only_the_gap_free_run() {
    let fixture = fixture();
    let signer = &fixture.signers[1];
    for nonce in [0, 1, 2, 4] {
        fixture
            .add(transfer(signer, nonce, 2_000_000_000, 1))
            .unwrap();
    }
    assert_eq!(fixture.pool.pending_nonce(&signer.address(), 0), 3);
    // The nonce-4 transaction is future: the builder never sees it.
    let best: Vec<u64> = fixture
        .pool
        .best(BASE_FEE)
        .map(|transaction| alloy::consensus::Transaction::nonce(&transaction.envelope))
        .collect();
    assert_eq!(best, vec![0, 1, 2]);
}

#[test]
fn best_orders_by_effective_tip_then_arrival_and_keeps_nonce_order() {
    let fixture = fixture();
    let [a, b, c] = [
        &fixture.signers[0],
        &fixture.signers[1],
        &fixture.signers[2],
    ];
    fixture.add(transfer(a, 0, 2_000_000_000, 10)).unwrap();
    fixture.add(transfer(a, 1, 2_000_000_000, 1_000)).unwrap();
    fixture.add(transfer(b, 0, 2_000_000_000, 500)).unwrap();
    fixture.add(transfer(c, 0, 2_000_000_000, 500)).unwrap();
    let order: Vec<(Address, u64)> = fixture
        .pool
        .best(BASE_FEE)
        .map(|tx| {
            (
                tx.sender,
                alloy::consensus::Transaction::nonce(&tx.envelope),
            )
        })
        .collect();
    assert_eq!(
        order,
        vec![
            (b.address(), 0),
            (c.address(), 0),
            (a.address(), 0),
            (a.address(), 1)
        ]
    );
    // A skipped sender yields nothing more.
    let mut best = fixture.pool.best(BASE_FEE);
    let first = best.next_candidate().unwrap();
    best.skip_sender(first.1);
    let rest: Vec<Address> = std::iter::from_fn(|| best.next_candidate())
        .map(|c| c.1)
        .collect();
    assert!(!rest.contains(&first.1));
}

#[test]
fn a_sender_is_bounded() {
    let fixture = fixture();
    let signer = &fixture.signers[3];
    let mut accepted = 0;
    let mut refused = None;
    for nonce in 0..=limits::MEMPOOL_NONCE_GAP_MAX + 1 {
        match fixture.add(transfer(signer, nonce, 2_000_000_000, 1)) {
            Ok(()) => accepted += 1,
            Err(error) => {
                refused = Some(error);
                break;
            }
        }
    }
    assert_eq!(accepted, limits::MEMPOOL_NONCE_GAP_MAX + 1);
    assert!(
        matches!(refused, Some(PoolError::NonceTooHigh { .. })),
        "{refused:?}"
    );
}

/// Memory stays bounded under overload: a full pool evicts a cheaper transaction for a
/// better-paying one, and refuses what pays no more than anything it holds.
#[test]
fn a_full_pool_evicts_the_cheapest_or_refuses() {
    let chain = ChainSpec::dev();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("chain.redb"), &chain).unwrap();
    let limits = MempoolLimits {
        transactions_max: 4,
        transactions_per_sender_max: 2,
        bytes_max: 1 << 20,
        ..MempoolLimits::default()
    };
    let pool = Mempool::with_limits(&chain, chain.genesis.gas_limit, limits);
    let signers = dev_accounts();
    let add = |envelope: TxEnvelope| {
        let (envelope, sender) = decode_and_recover(&envelope.encoded_2718()).unwrap();
        pool.add(envelope, sender, &store.snapshot().unwrap(), BASE_FEE)
    };
    for (index, signer) in signers.iter().take(2).enumerate() {
        for nonce in 0..2 {
            add(transfer(signer, nonce, 2_000_000_000 + index as u128, 1)).unwrap();
        }
    }
    assert_eq!(
        add(transfer(&signers[0], 2, 3_000_000_000, 1)),
        Err(PoolError::AccountLimit(2))
    );
    // Paying no more than the cheapest held transaction: refused.
    assert_eq!(
        add(transfer(&signers[2], 0, 2_000_000_000, 1)),
        Err(PoolError::Underpriced)
    );
    // Paying more: the cheapest sender's last transaction makes room.
    let rich = transfer(&signers[2], 0, 5_000_000_000, 1);
    add(rich.clone()).unwrap();
    assert_eq!(pool.len(), 4);
    assert!(pool.get(rich.tx_hash()).is_some());
    assert_eq!(
        pool.pending_nonce(&signers[0].address(), 0),
        1,
        "the tail was evicted, not the head"
    );
}

/// Seals an empty child of `store`'s head and moves `pool` to it; the new head's number.
fn seal_empty(chain: &ChainSpec, store: &Store, pool: &Mempool) -> u64 {
    use keel_execution::{BlockEnvironment, ListSource, build_block};
    let parent = store.snapshot().unwrap();
    let (number, hash) = parent.head();
    let header = parent.header(number).unwrap().unwrap();
    let env = BlockEnvironment {
        parent_hash: hash,
        number: number + 1,
        timestamp: header.timestamp + 1,
        beneficiary: Address::ZERO,
        gas_limit: header.gas_limit,
        base_fee: chain.next_base_fee(&header),
        prevrandao: hash,
        extra_data: Bytes::new(),
        origin: Default::default(),
        forced_cursor: 0,
    };
    let built = build_block(chain, &parent, env, &mut ListSource::new(Vec::new()))
        .unwrap()
        .executed;
    store
        .commit_block(built.output.clone(), &built.changes)
        .unwrap();
    pool.on_block(&built.output.block, &store.snapshot().unwrap());
    number + 1
}

/// Nonce gaps expire: a sender's transactions behind a gap are dropped once the sender has
/// been idle (nothing added, nothing included) for the lifetime in blocks, the same height on
/// every node; its pending transactions stay, and a new transaction restarts its time.
#[test]
fn transactions_behind_a_nonce_gap_expire_after_the_lifetime_in_blocks() {
    let chain = ChainSpec::dev();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("chain.redb"), &chain).unwrap();
    let limits = MempoolLimits {
        future_lifetime_blocks: 3,
        ..MempoolLimits::default()
    };
    let pool = Mempool::with_limits(&chain, chain.genesis.gas_limit, limits);
    let signers = dev_accounts();
    let add = |envelope: &TxEnvelope| {
        let (envelope, sender) = decode_and_recover(&envelope.encoded_2718()).unwrap();
        pool.add(envelope, sender, &store.snapshot().unwrap(), BASE_FEE)
            .unwrap();
    };
    // A: only a gapped one. B: one pending, one behind a gap. C: gapped, active again later.
    let fee = 2_000_000_000;
    let gapped_a = transfer(&signers[0], 1, fee, 1);
    let pending_b = transfer(&signers[1], 0, fee, 1);
    let gapped_b = transfer(&signers[1], 2, fee, 1);
    let gapped_c = transfer(&signers[2], 1, fee, 1);
    for envelope in [&gapped_a, &pending_b, &gapped_b, &gapped_c] {
        add(envelope);
    }
    let held = |envelope: &TxEnvelope| pool.get(envelope.tx_hash()).is_some();
    assert_eq!(seal_empty(&chain, &store, &pool), 1);
    assert_eq!(seal_empty(&chain, &store, &pool), 2);
    let later_c = transfer(&signers[2], 2, fee, 1);
    add(&later_c);
    assert!([&gapped_a, &pending_b, &gapped_b, &gapped_c].map(held) == [true; 4]);
    assert_eq!(seal_empty(&chain, &store, &pool), 3);
    assert!(!held(&gapped_a), "idle 3 blocks behind a gap: dropped");
    assert!(!held(&gapped_b), "B's gapped transaction dropped");
    assert!(held(&pending_b), "B's pending transaction stays");
    assert!(held(&gapped_c) && held(&later_c), "C was active at block 2");
    assert_eq!(pool.len(), 3);
    assert_eq!(seal_empty(&chain, &store, &pool), 4);
    assert!(held(&gapped_c));
    assert_eq!(seal_empty(&chain, &store, &pool), 5);
    assert!(
        !held(&gapped_c) && !held(&later_c),
        "C idle from block 2 to 5"
    );
    // B's pending one restarted its time at block 3 and is no gap: it stays.
    for _ in 0..4 {
        seal_empty(&chain, &store, &pool);
    }
    assert!(held(&pending_b));
    assert_eq!(pool.len(), 1);
}
