//! Invariant I4 (builder = validator) and docs/design.md R2 (a failed transaction leaves no trace).
//!
//! A seeded generator mixes valid transactions with invalid ones of every kind (bad nonce, no
//! funds, out of gas, reverts, oversized, bad fees, wrong chain). Every block the builder seals
//! must re-execute on the validator to the same header, receipts and state changes, and must
//! equal the block built from only the transactions it kept.

use alloy::consensus::{TxEip1559, TxEip2930, TxEnvelope, TxLegacy, TxReceipt, TypedTransaction};
use alloy::eips::eip2930::AccessList;
use alloy::genesis::GenesisAccount;
use alloy::primitives::{Address, B256, Bytes, TxKind, U256, address};
use alloy::signers::local::PrivateKeySigner;
use keel_execution::{BlockEnvironment, ListSource, build_block, validate_block};
use keel_primitives::{ChainSpec, dev_accounts, limits, sign_transaction};
use keel_storage::Store;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// Stores its calldata word in slot 0 and logs it.
const STORE_AND_LOG: &[u8] = &[
    0x60, 0x00, 0x35, 0x80, 0x60, 0x00, 0x55, 0x60, 0x00, 0x52, 0x60, 0x20, 0x60, 0x00, 0xa0, 0x00,
];
/// Always reverts.
const REVERTER: &[u8] = &[0x5f, 0x5f, 0xfd];
const STORE_AND_LOG_AT: Address = address!("00000000000000000000000000000000000057a0");
const REVERTER_AT: Address = address!("000000000000000000000000000000000000dead");

fn chain() -> ChainSpec {
    let mut chain = ChainSpec::dev();
    chain.genesis.alloc.insert(
        STORE_AND_LOG_AT,
        GenesisAccount::default().with_code(Some(Bytes::from_static(STORE_AND_LOG))),
    );
    chain.genesis.alloc.insert(
        REVERTER_AT,
        GenesisAccount::default().with_code(Some(Bytes::from_static(REVERTER))),
    );
    // A poor account: it can pay for almost nothing.
    let poor = dev_accounts()[5].address();
    chain.genesis.alloc.insert(
        poor,
        GenesisAccount::default().with_balance(U256::from(30_000u64)),
    );
    ChainSpec::from_genesis(chain.genesis).unwrap()
}

/// One generated transaction: what kind, from whom, with what nonce offset.
#[derive(Debug, Clone)]
enum Kind {
    Transfer,
    LegacyTransfer,
    AccessListCall,
    StoreAndLog,
    Revert,
    OutOfGas,
    Deploy,
    NonceTooLow,
    NonceGap,
    NoFunds,
    Oversized,
    FeeCapBelowBaseFee,
    TipAboveFeeCap,
    WrongChain,
    IntrinsicTooLow,
    OverBlockGas,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        4 => Just(Kind::Transfer),
        1 => Just(Kind::LegacyTransfer),
        1 => Just(Kind::AccessListCall),
        3 => Just(Kind::StoreAndLog),
        1 => Just(Kind::Revert),
        1 => Just(Kind::OutOfGas),
        1 => Just(Kind::Deploy),
        1 => Just(Kind::NonceTooLow),
        1 => Just(Kind::NonceGap),
        1 => Just(Kind::NoFunds),
        1 => Just(Kind::Oversized),
        1 => Just(Kind::FeeCapBelowBaseFee),
        1 => Just(Kind::TipAboveFeeCap),
        1 => Just(Kind::WrongChain),
        1 => Just(Kind::IntrinsicTooLow),
        1 => Just(Kind::OverBlockGas),
    ]
}

struct Generator {
    signers: Vec<PrivateKeySigner>,
    nonces: Vec<u64>,
    chain_id: u64,
}

impl Generator {
    fn transaction(&mut self, kind: &Kind, who: usize, word: u64) -> (TxEnvelope, Address) {
        let signer = &self.signers[who];
        let nonce = self.nonces[who];
        let fee = 2_000_000_000u128;
        let eip1559 = |to: TxKind, gas: u64, value: U256, input: Bytes| TxEip1559 {
            chain_id: self.chain_id,
            nonce,
            gas_limit: gas,
            max_fee_per_gas: fee,
            max_priority_fee_per_gas: 1_000,
            to,
            value,
            access_list: AccessList::default(),
            input,
        };
        let recipient = TxKind::Call(Address::with_last_byte(word as u8));
        let calldata = Bytes::from(B256::from(U256::from(word)).to_vec());
        let typed: TypedTransaction = match kind {
            Kind::Transfer => eip1559(recipient, 21_000, U256::from(word), Bytes::new()).into(),
            Kind::LegacyTransfer => TxLegacy {
                chain_id: Some(self.chain_id),
                nonce,
                gas_price: fee,
                gas_limit: 21_000,
                to: recipient,
                value: U256::from(1),
                input: Bytes::new(),
            }
            .into(),
            Kind::AccessListCall => TxEip2930 {
                chain_id: self.chain_id,
                nonce,
                gas_price: fee,
                gas_limit: 100_000,
                to: TxKind::Call(STORE_AND_LOG_AT),
                value: U256::ZERO,
                access_list: AccessList::default(),
                input: calldata,
            }
            .into(),
            Kind::StoreAndLog => eip1559(
                TxKind::Call(STORE_AND_LOG_AT),
                100_000,
                U256::ZERO,
                calldata,
            )
            .into(),
            Kind::Revert => eip1559(TxKind::Call(REVERTER_AT), 50_000, U256::ZERO, calldata).into(),
            Kind::OutOfGas => {
                eip1559(TxKind::Call(STORE_AND_LOG_AT), 22_000, U256::ZERO, calldata).into()
            }
            Kind::Deploy => {
                // Init code that returns STORE_AND_LOG as the runtime code.
                let mut init = vec![
                    0x60,
                    STORE_AND_LOG.len() as u8,
                    0x60,
                    0x0c,
                    0x60,
                    0x00,
                    0x39,
                ];
                init.extend([0x60, STORE_AND_LOG.len() as u8, 0x60, 0x00, 0xf3]);
                init.extend_from_slice(STORE_AND_LOG);
                eip1559(TxKind::Create, 200_000, U256::ZERO, init.into()).into()
            }
            Kind::NonceTooLow => {
                let mut tx = eip1559(recipient, 21_000, U256::ZERO, Bytes::new());
                tx.nonce = nonce.saturating_sub(1 + word % 3);
                if nonce == 0 {
                    tx.nonce = u64::MAX - 1;
                }
                tx.into()
            }
            Kind::NonceGap => {
                let mut tx = eip1559(recipient, 21_000, U256::ZERO, Bytes::new());
                tx.nonce = nonce + 2;
                tx.into()
            }
            Kind::NoFunds => {
                eip1559(recipient, 21_000, U256::from(10u128.pow(30)), Bytes::new()).into()
            }
            Kind::Oversized => {
                let input = Bytes::from(vec![1u8; limits::TX_BYTES_MAX + 1]);
                eip1559(recipient, 16_000_000, U256::ZERO, input).into()
            }
            Kind::FeeCapBelowBaseFee => {
                let mut tx = eip1559(recipient, 21_000, U256::ZERO, Bytes::new());
                tx.max_fee_per_gas = 1;
                tx.max_priority_fee_per_gas = 0;
                tx.into()
            }
            Kind::TipAboveFeeCap => {
                let mut tx = eip1559(recipient, 21_000, U256::ZERO, Bytes::new());
                tx.max_priority_fee_per_gas = fee + 1;
                tx.into()
            }
            Kind::WrongChain => {
                let mut tx = eip1559(recipient, 21_000, U256::ZERO, Bytes::new());
                tx.chain_id = self.chain_id + 1;
                tx.into()
            }
            Kind::IntrinsicTooLow => eip1559(recipient, 20_999, U256::ZERO, Bytes::new()).into(),
            Kind::OverBlockGas => eip1559(recipient, 40_000_000, U256::ZERO, Bytes::new()).into(),
        };
        (sign_transaction(signer, typed), signer.address())
    }
}

static KEPT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static FAILED_IN_BLOCK: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static LOGS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Builds `blocks` blocks from generated transactions and checks each one (I4, R2).
fn run(plan: &[Vec<(Kind, usize, u64)>]) -> Result<(), TestCaseError> {
    let chain = chain();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("chain.redb"), &chain).unwrap();
    let mut generator = Generator {
        signers: dev_accounts().into_iter().take(6).collect(),
        nonces: vec![0; 6],
        chain_id: chain.chain_id,
    };
    // The state image after each block, to check unwinding against.
    let mut images = vec![store.snapshot().unwrap().export().unwrap()];
    for block_plan in plan {
        let parent = store.snapshot().unwrap();
        // Nonces follow the chain; the generator offsets them per kind.
        for (index, signer) in generator.signers.iter().enumerate() {
            generator.nonces[index] = parent
                .account(&signer.address())
                .unwrap()
                .map(|a| a.nonce)
                .unwrap_or(0);
        }
        let mut candidates = Vec::new();
        for (kind, who, word) in block_plan {
            let candidate = generator.transaction(kind, *who, *word);
            generator.nonces[*who] += 1;
            candidates.push(candidate);
        }
        let (head_number, head_hash) = parent.head();
        let parent_header = parent.header(head_number).unwrap().unwrap();
        let env = BlockEnvironment {
            parent_hash: head_hash,
            number: head_number + 1,
            timestamp: parent_header.timestamp + 1,
            beneficiary: Address::repeat_byte(0xcb),
            gas_limit: chain.genesis.gas_limit,
            base_fee: chain.next_base_fee(&parent_header),
            prevrandao: B256::repeat_byte(head_number as u8),
            extra_data: Bytes::new(),
            origin: Default::default(),
            forced_cursor: 0,
        };
        let built = build_block(
            &chain,
            &parent,
            env.clone(),
            &mut ListSource::new(candidates),
        )
        .unwrap()
        .executed;

        // I4: the validator re-executes the sealed block to the same result.
        let validated = validate_block(&chain, &parent, &built.output.block);
        prop_assert!(
            validated.is_ok(),
            "validator refused a built block: {:?}",
            validated.err()
        );
        let validated = validated.unwrap();
        prop_assert_eq!(validated.output.block.hash, built.output.block.hash);
        prop_assert_eq!(&validated.output.receipts, &built.output.receipts);
        prop_assert_eq!(&validated.changes, &built.changes);

        // R2: the dropped transactions left no trace: the kept ones alone build the same block.
        let kept: Vec<(TxEnvelope, Address)> = built
            .output
            .block
            .transactions
            .iter()
            .cloned()
            .zip(built.output.block.senders.iter().copied())
            .collect();
        let rebuilt = build_block(&chain, &parent, env, &mut ListSource::new(kept)).unwrap();
        prop_assert_eq!(rebuilt.executed.output.block.hash, built.output.block.hash);
        prop_assert!(rebuilt.invalid.is_empty());

        KEPT.fetch_add(
            built.output.block.transactions.len(),
            std::sync::atomic::Ordering::Relaxed,
        );
        let failed = built
            .output
            .receipts
            .iter()
            .filter(|receipt| !receipt.status())
            .count();
        FAILED_IN_BLOCK.fetch_add(failed, std::sync::atomic::Ordering::Relaxed);
        let logs: usize = built
            .output
            .receipts
            .iter()
            .map(|receipt| receipt.logs().len())
            .sum();
        LOGS.fetch_add(logs, std::sync::atomic::Ordering::Relaxed);
        store
            .commit_block(built.output.clone(), &built.changes)
            .unwrap();
        // The incremental root is Ethereum's: a full walk of the stored state agrees.
        let head = store.snapshot().unwrap();
        let reference = keel_primitives::trie::state_root_sorted(
            head.accounts().unwrap().map(|entry| entry.unwrap()),
        );
        prop_assert_eq!(built.output.block.header.state_root, reference);
        images.push(head.export().unwrap());
    }
    // Unwinding restores the state as it was after an earlier block, exactly; the removed
    // blocks then apply again to the same final state (the change sets are complete).
    let height = plan.len() as u64;
    let target = height / 2;
    let removed = store.unwind_to(target, &[]).unwrap();
    prop_assert_eq!(removed.len() as u64, height - target);
    let unwound = store.snapshot().unwrap();
    prop_assert_eq!(unwound.head().0, target);
    prop_assert!(
        unwound.export().unwrap() == images[target as usize],
        "state after unwinding to {}",
        target
    );
    for block in &removed {
        for transaction in &block.block.transactions {
            prop_assert!(
                unwound
                    .tx_location(transaction.tx_hash())
                    .unwrap()
                    .is_none()
            );
        }
        prop_assert!(unwound.block_number(&block.hash()).unwrap().is_none());
    }
    drop(unwound);
    for block in removed.iter().rev() {
        let parent = store.snapshot().unwrap();
        let validated = validate_block(&chain, &parent, &block.block).unwrap();
        drop(parent);
        store
            .commit_block(validated.output, &validated.changes)
            .unwrap();
    }
    prop_assert!(store.snapshot().unwrap().export().unwrap() == images[height as usize]);
    Ok(())
}

/// I4 and R2 over random mixes of valid and invalid transactions. The seed is printed so that
/// a failure replays: set `KEEL_SEED` to it.
#[test]
fn builder_equals_validator_on_random_blocks() {
    let seed: u64 = std::env::var("KEEL_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            now.as_nanos() as u64
        });
    println!("differential test seed: {seed} (replay with KEEL_SEED={seed})");
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: 24,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let strategy = proptest::collection::vec(
        proptest::collection::vec((kind(), 0usize..6, 0u64..1_000), 0..24),
        1..5,
    );
    let result = runner.run(&strategy, |plan| run(&plan));
    if let Err(error) = result {
        panic!("seed {seed}: {error}");
    }
    // The generator must exercise both paths: kept transactions, some of which failed inside.
    let kept = KEPT.load(std::sync::atomic::Ordering::Relaxed);
    let failed = FAILED_IN_BLOCK.load(std::sync::atomic::Ordering::Relaxed);
    println!("kept {kept} transactions, {failed} of them reverted or ran out of gas");
    assert!(
        kept > 20 && failed > 0,
        "seed {seed}: the generator kept {kept}, failed {failed}"
    );
}

/// I4: a block whose header lies about its execution is refused, naming the field.
#[test]
fn validator_refuses_tampered_blocks() {
    let chain = chain();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("chain.redb"), &chain).unwrap();
    let parent = store.snapshot().unwrap();
    let genesis = parent.header(0).unwrap().unwrap();
    let signer = &dev_accounts()[0];
    let mut generator = Generator {
        signers: vec![signer.clone()],
        nonces: vec![0],
        chain_id: chain.chain_id,
    };
    let (transaction, sender) = generator.transaction(&Kind::StoreAndLog, 0, 7);
    let env = BlockEnvironment {
        parent_hash: parent.head().1,
        number: 1,
        timestamp: genesis.timestamp + 1,
        beneficiary: Address::ZERO,
        gas_limit: genesis.gas_limit,
        base_fee: chain.next_base_fee(&genesis),
        prevrandao: B256::ZERO,
        extra_data: Bytes::new(),
        origin: Default::default(),
        forced_cursor: 0,
    };
    let built = build_block(
        &chain,
        &parent,
        env,
        &mut ListSource::new(vec![(transaction, sender)]),
    )
    .unwrap()
    .executed
    .output
    .block
    .clone();
    assert_eq!(built.transactions.len(), 1);
    type Tamper = fn(&mut keel_primitives::SealedBlock);
    let table: [(&str, Tamper); 6] = [
        ("stateRoot", |block| {
            block.header.state_root = B256::repeat_byte(1)
        }),
        ("gasUsed", |block| block.header.gas_used += 1),
        ("receiptsRoot", |block| {
            block.header.receipts_root = B256::repeat_byte(2)
        }),
        ("baseFeePerGas", |block| {
            block.header.base_fee_per_gas = Some(1)
        }),
        ("parentHash", |block| {
            block.header.parent_hash = B256::repeat_byte(3)
        }),
        ("transactionsRoot", |block| block.transactions.clear()),
    ];
    for (field, tamper) in table {
        let mut block = built.clone();
        tamper(&mut block);
        if block.transactions.is_empty() {
            block.senders.clear();
        }
        let block =
            keel_primitives::SealedBlock::new(block.header, block.transactions, block.senders);
        let error = validate_block(&chain, &parent, &block)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(field) || field == "transactionsRoot",
            "{field}: {error}"
        );
    }
}

/// The L1 origin in the header (docs/protocol.md, "L1 origin"): the validator refuses one
/// that goes backwards, or changes its hash without moving (I4 holds for the origin too: it is
/// part of the header, so builder and validator agree on it).
#[test]
fn validator_keeps_the_l1_origin_monotone() {
    let chain = chain();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("chain.redb"), &chain).unwrap();
    let origin = |number: u64, byte: u8| keel_primitives::L1Origin {
        number,
        hash: B256::repeat_byte(byte),
    };
    let seal = |origin: keel_primitives::L1Origin| {
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
            prevrandao: B256::ZERO,
            extra_data: Bytes::new(),
            origin,
            forced_cursor: 0,
        };
        let built = build_block(&chain, &parent, env, &mut ListSource::new(vec![])).unwrap();
        let block = built.executed.output.block.clone();
        (validate_block(&chain, &parent, &block), built)
    };
    // Any origin on the genesis; then the same one, or a later one.
    for next in [origin(5, 5), origin(5, 5), origin(9, 9)] {
        let (validated, built) = seal(next);
        let validated = validated.unwrap();
        assert_eq!(
            keel_primitives::origin_of(&validated.output.block.header),
            next
        );
        store
            .commit_block(built.executed.output, &built.executed.changes)
            .unwrap();
    }
    for (bad, field) in [
        (origin(8, 8), "L1 origin number"),
        (origin(9, 1), "L1 origin hash"),
    ] {
        let error = seal(bad).0.unwrap_err().to_string();
        assert!(error.contains(field), "{error}");
    }
}

/// Execution is Ethereum's, not only self-consistent: a contract call stores its calldata,
/// emits its log, and the store reads the new slot back.
#[test]
fn contracts_run_and_their_effects_persist() {
    let chain = chain();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("chain.redb"), &chain).unwrap();
    let parent = store.snapshot().unwrap();
    let genesis = parent.header(0).unwrap().unwrap();
    let mut generator = Generator {
        signers: vec![dev_accounts()[0].clone()],
        nonces: vec![0],
        chain_id: chain.chain_id,
    };
    let (store_call, sender) = generator.transaction(&Kind::StoreAndLog, 0, 0x1234);
    let env = BlockEnvironment {
        parent_hash: parent.head().1,
        number: 1,
        timestamp: genesis.timestamp + 1,
        beneficiary: Address::ZERO,
        gas_limit: genesis.gas_limit,
        base_fee: chain.next_base_fee(&genesis),
        prevrandao: B256::ZERO,
        extra_data: Bytes::new(),
        origin: Default::default(),
        forced_cursor: 0,
    };
    let built = build_block(
        &chain,
        &parent,
        env,
        &mut ListSource::new(vec![(store_call, sender)]),
    )
    .unwrap()
    .executed;
    assert_eq!(built.output.receipts.len(), 1);
    assert!(built.output.receipts[0].status());
    assert_eq!(built.output.receipts[0].logs().len(), 1);
    assert!(
        built.output.block.header.gas_used > 21_000 + 20_000,
        "SSTORE ran"
    );
    drop(parent);
    store
        .commit_block(built.output.clone(), &built.changes)
        .unwrap();
    let slot = store
        .snapshot()
        .unwrap()
        .storage(&STORE_AND_LOG_AT, &B256::ZERO)
        .unwrap();
    assert_eq!(slot, U256::from(0x1234));
}

/// The bucketed state root stays Ethereum's root while blocks create accounts, across a change
/// of bucket depth (which rebuilds the cache), and the cache follows every head.
#[test]
fn bucketed_state_root_matches_a_full_walk_across_blocks() {
    let mut chain = chain();
    // Just under 4 * 16^3 accounts: the blocks below cross into bucket depth 3.
    for index in 0..16_360u64 {
        let address = Address::from_word(alloy::primitives::keccak256(index.to_be_bytes()));
        chain.genesis.alloc.insert(
            address,
            GenesisAccount::default().with_balance(U256::from(1)),
        );
    }
    let chain = ChainSpec::from_genesis(chain.genesis).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("chain.redb"), &chain).unwrap();
    let signers = dev_accounts();
    let mut depths = Vec::new();
    for block in 0..8u64 {
        let parent = store.snapshot().unwrap();
        let cache = parent
            .account_buckets()
            .expect("the cache describes the head")
            .clone();
        depths.push(cache.depth);
        let (number, hash) = parent.head();
        let header = parent.header(number).unwrap().unwrap();
        let mut candidates = Vec::new();
        for index in 0..8u64 {
            // Dev account 5 is the poor one in `chain()`.
            let signer = &signers[[0, 1, 2, 3, 4, 6, 7, 8][index as usize]];
            let nonce = parent.account(&signer.address()).unwrap().unwrap().nonce;
            // Half the transfers create accounts, half pay existing ones.
            let to = if index % 2 == 0 {
                Address::from_word(alloy::primitives::keccak256(
                    (1_000_000 + block * 8 + index).to_be_bytes(),
                ))
            } else {
                Address::from_word(alloy::primitives::keccak256(
                    (block * 8 + index).to_be_bytes(),
                ))
            };
            let tx = TxEip1559 {
                chain_id: chain.chain_id,
                nonce,
                gas_limit: 21_000,
                max_fee_per_gas: 10_000_000_000,
                max_priority_fee_per_gas: 1,
                to: TxKind::Call(to),
                value: U256::from(5),
                ..Default::default()
            };
            candidates.push((sign_transaction(signer, tx.into()), signer.address()));
        }
        let env = BlockEnvironment {
            parent_hash: hash,
            number: number + 1,
            timestamp: header.timestamp + 1,
            beneficiary: Address::repeat_byte(0xcb),
            gas_limit: header.gas_limit,
            base_fee: chain.next_base_fee(&header),
            prevrandao: hash,
            extra_data: Bytes::new(),
            origin: Default::default(),
            forced_cursor: 0,
        };
        let built = build_block(&chain, &parent, env, &mut ListSource::new(candidates))
            .unwrap()
            .executed;
        assert_eq!(built.output.block.transactions.len(), 8);
        assert!(
            built.changes.buckets.is_some(),
            "the block was computed on the cache"
        );
        drop(parent);
        store
            .commit_block(built.output.clone(), &built.changes)
            .unwrap();
        let head = store.snapshot().unwrap();
        let reference = keel_primitives::trie::state_root_sorted(
            head.accounts().unwrap().map(|entry| entry.unwrap()),
        );
        assert_eq!(
            built.output.block.header.state_root,
            reference,
            "block {}",
            number + 1
        );
        let rebuilt = keel_storage::AccountBuckets::build(&head).unwrap();
        assert_eq!(
            head.account_buckets(),
            Some(&rebuilt),
            "the advanced cache equals a rebuild"
        );
    }
    assert!(
        depths.contains(&2) && depths.contains(&3),
        "the depth changed: {depths:?}"
    );
}
