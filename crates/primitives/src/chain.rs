//! The chain specification: genesis (geth's `genesis.json` format), chain id, EIP-1559
//! parameters, and the embedded development chain every Ethereum tool works against.

use crate::block::HeaderFields;
use crate::{AccountRecord, PrimitivesError, SealedBlock, limits, trie};
use alloy::consensus::constants::KECCAK_EMPTY;
use alloy::consensus::{EMPTY_ROOT_HASH, Header};
use alloy::eips::eip1559::BaseFeeParams;
use alloy::genesis::{Genesis, GenesisAccount};
use alloy::primitives::{Address, B256, Bloom, U256, keccak256};
use alloy::signers::local::{MnemonicBuilder, PrivateKeySigner, coins_bip39::English};
use std::collections::BTreeMap;

/// The mnemonic whose first accounts the dev chain prefunds: the one anvil and hardhat use.
pub const DEV_MNEMONIC: &str = "test test test test test test test test test test test junk";
/// Chain id of the embedded dev chain (anvil's and hardhat's, so tools need no setup).
pub const DEV_CHAIN_ID: u64 = 31337;
/// Chain id of the embedded dev L1 (geth's `--dev` chain id), beside the dev L2's 31337.
pub const DEV_L1_CHAIN_ID: u64 = 1337;
/// Accounts the dev chain prefunds.
pub const DEV_ACCOUNTS: u32 = 10;
/// Balance of each prefunded dev account: 10,000 ether, as anvil gives.
pub const DEV_BALANCE_WEI: u128 = 10_000 * 1_000_000_000_000_000_000;
/// Base fee of the first block when the genesis names none: 1 gwei.
pub const INITIAL_BASE_FEE_WEI: u64 = 1_000_000_000;
/// Priority fee a keel chain suggests (`eth_maxPriorityFeePerGas`): its blocks are rarely
/// full, so a small tip is enough.
pub const SUGGESTED_TIP_WEI: u128 = 1_000_000;
/// Block gas limit of the dev chain.
pub const DEV_GAS_LIMIT: u64 = 30_000_000;
/// Timestamp of the dev genesis, fixed so that its hash is the same on every machine.
pub const DEV_GENESIS_TIMESTAMP: u64 = 1_735_689_600;

/// Everything that fixes which chain a node follows.
#[derive(Debug, Clone)]
pub struct ChainSpec {
    /// EIP-155 chain id, from the genesis `config.chainId`.
    pub chain_id: u64,
    /// The genesis in geth's format.
    pub genesis: Genesis,
    /// EIP-1559 base fee change parameters.
    pub base_fee_params: BaseFeeParams,
    /// Floor under the base fee, so that an idle chain does not drift to zero.
    pub base_fee_min_wei: u64,
}

impl ChainSpec {
    /// The embedded dev chain: chain id 31337 and the standard mnemonic's first ten accounts
    /// prefunded with 10,000 ether each.
    pub fn dev() -> Self {
        Self::dev_with(DEV_CHAIN_ID, b"keel dev")
    }

    /// The embedded dev L1: the dev chain's genesis and accounts under chain id 1337, so the
    /// same ten keys hold ether on both chains (the batcher's and a forcing user's L1 fees).
    pub fn dev_l1() -> Self {
        Self::dev_with(DEV_L1_CHAIN_ID, b"keel dev L1")
    }

    fn dev_with(chain_id: u64, extra_data: &[u8]) -> Self {
        let mut genesis = Genesis {
            timestamp: DEV_GENESIS_TIMESTAMP,
            gas_limit: DEV_GAS_LIMIT,
            base_fee_per_gas: Some(INITIAL_BASE_FEE_WEI.into()),
            extra_data: extra_data.to_vec().into(),
            ..Default::default()
        };
        genesis.config.chain_id = chain_id;
        let alloc: BTreeMap<Address, GenesisAccount> = dev_accounts()
            .iter()
            .map(|signer| {
                let account = GenesisAccount::default().with_balance(U256::from(DEV_BALANCE_WEI));
                (signer.address(), account)
            })
            .collect();
        genesis.alloc = alloc;
        Self::from_genesis(genesis).expect("the embedded dev genesis is valid")
    }

    /// A chain spec from a genesis in geth's JSON format.
    pub fn from_genesis_json(json: &str) -> Result<Self, PrimitivesError> {
        let value: serde_json::Value = serde_json::from_str(json)
            .map_err(|error| PrimitivesError::ChainSpec(error.to_string()))?;
        // alloy defaults a missing chain id to 1 (mainnet's): refuse that instead of guessing.
        if value.pointer("/config/chainId").is_none() {
            return Err(PrimitivesError::ChainSpec(
                "config.chainId must be set".into(),
            ));
        }
        let genesis: Genesis = serde_json::from_value(value)
            .map_err(|error| PrimitivesError::ChainSpec(error.to_string()))?;
        Self::from_genesis(genesis)
    }

    /// A chain spec from a parsed genesis, checked against keel's limits.
    pub fn from_genesis(genesis: Genesis) -> Result<Self, PrimitivesError> {
        let chain_id = genesis.config.chain_id;
        if chain_id == 0 {
            return Err(PrimitivesError::ChainSpec(
                "config.chainId must be set and non-zero".into(),
            ));
        }
        if !(limits::BLOCK_GAS_LIMIT_MIN..=limits::BLOCK_GAS_LIMIT_MAX).contains(&genesis.gas_limit)
        {
            return Err(PrimitivesError::ChainSpec(format!(
                "gasLimit {} outside {}..={}",
                genesis.gas_limit,
                limits::BLOCK_GAS_LIMIT_MIN,
                limits::BLOCK_GAS_LIMIT_MAX
            )));
        }
        if genesis.extra_data.len() > limits::EXTRA_DATA_BYTES_MAX {
            return Err(PrimitivesError::ChainSpec(
                "extraData longer than 32 bytes".into(),
            ));
        }
        Ok(Self {
            chain_id,
            genesis,
            base_fee_params: BaseFeeParams::ethereum(),
            base_fee_min_wei: 7,
        })
    }

    /// Base fee of the genesis block.
    pub fn genesis_base_fee(&self) -> u64 {
        self.genesis
            .base_fee_per_gas
            .map(|fee| fee as u64)
            .unwrap_or(INITIAL_BASE_FEE_WEI)
    }

    /// The base fee of the block after `parent` (EIP-1559), never below the floor.
    pub fn next_base_fee(&self, parent: &Header) -> u64 {
        let base_fee = parent.base_fee_per_gas.unwrap_or(self.genesis_base_fee());
        self.base_fee_params
            .next_block_base_fee(parent.gas_used, parent.gas_limit, base_fee)
            .max(self.base_fee_min_wei)
    }

    /// The genesis state as account records and storage, keyed by hashed address and slot.
    pub fn genesis_state(&self) -> GenesisState {
        let mut state = GenesisState::default();
        for (address, account) in &self.genesis.alloc {
            let hashed_address = keccak256(address);
            let mut slots: Vec<(B256, U256)> = account
                .storage
                .iter()
                .flatten()
                .map(|(slot, value)| (keccak256(slot), U256::from_be_bytes(value.0)))
                .filter(|(_, value)| !value.is_zero())
                .collect();
            slots.sort_by_key(|(key, _)| *key);
            let code_hash = match &account.code {
                Some(code) if !code.is_empty() => {
                    let hash = keccak256(code);
                    state.codes.push((hash, code.to_vec()));
                    hash
                }
                _ => KECCAK_EMPTY,
            };
            let record = AccountRecord {
                nonce: account.nonce.unwrap_or(0),
                balance: account.balance,
                code_hash,
                storage_root: trie::storage_root_sorted(slots.iter().copied()),
            };
            state.accounts.push((hashed_address, *address, record));
            state.storage.extend(
                slots
                    .into_iter()
                    .map(|(slot, value)| (hashed_address, slot, value)),
            );
        }
        state.accounts.sort_by_key(|(key, _, _)| *key);
        state
    }

    /// The genesis block: block 0, whose state root commits to the alloc.
    pub fn genesis_block(&self) -> SealedBlock {
        let state = self.genesis_state();
        let state_root = trie::state_root_sorted(
            state
                .accounts
                .iter()
                .map(|(key, _, record)| (*key, *record)),
        );
        let header = HeaderFields {
            parent_hash: B256::ZERO,
            beneficiary: self.genesis.coinbase,
            state_root,
            transactions_root: EMPTY_ROOT_HASH,
            receipts_root: EMPTY_ROOT_HASH,
            logs_bloom: Bloom::ZERO,
            number: 0,
            gas_limit: self.genesis.gas_limit,
            gas_used: 0,
            timestamp: self.genesis.timestamp,
            extra_data: self.genesis.extra_data.clone(),
            mix_hash: self.genesis.mix_hash,
            base_fee: self.genesis_base_fee(),
            origin: Default::default(),
            forced_cursor: 0,
        }
        .into_header();
        SealedBlock::new(header, Vec::new(), Vec::new())
    }
}

/// The genesis alloc as the state store holds it.
#[derive(Debug, Default, Clone)]
pub struct GenesisState {
    /// `(keccak(address), address, record)`, sorted by hashed address.
    pub accounts: Vec<(B256, Address, AccountRecord)>,
    /// `(keccak(address), keccak(slot), value)` for every non-zero slot.
    pub storage: Vec<(B256, B256, U256)>,
    /// `(keccak(code), code)` for every contract.
    pub codes: Vec<(B256, Vec<u8>)>,
}

/// The signers of the dev chain's prefunded accounts, from [`DEV_MNEMONIC`]
/// (derivation path m/44'/60'/0'/0/i, as anvil and hardhat derive them).
pub fn dev_accounts() -> Vec<PrivateKeySigner> {
    (0..DEV_ACCOUNTS)
        .map(|index| {
            MnemonicBuilder::<English>::default()
                .phrase(DEV_MNEMONIC)
                .index(index)
                .expect("index is in range")
                .build()
                .expect("the dev mnemonic is valid")
        })
        .collect()
}

/// Signs `transaction` with `signer` (tests, benchmarks and the dev tooling sign this way).
pub fn sign_transaction(
    signer: &PrivateKeySigner,
    transaction: alloy::consensus::TypedTransaction,
) -> alloy::consensus::TxEnvelope {
    use alloy::consensus::SignableTransaction;
    use alloy::signers::SignerSync;
    let signature = signer
        .sign_hash_sync(&transaction.signature_hash())
        .expect("a local key signs any hash");
    transaction.into_envelope(signature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::address;

    #[test]
    fn dev_accounts_are_anvils() {
        let accounts = dev_accounts();
        assert_eq!(accounts.len(), 10);
        assert_eq!(
            accounts[0].address(),
            address!("f39Fd6e51aad88F6F4ce6aB8827279cffFb92266")
        );
        assert_eq!(
            accounts[9].address(),
            address!("a0Ee7A142d267C1f36714E4a8F75612F20a79720")
        );
    }

    #[test]
    fn dev_genesis_is_stable_and_funded() {
        let spec = ChainSpec::dev();
        let genesis = spec.genesis_block();
        assert_eq!(genesis.hash, ChainSpec::dev().genesis_block().hash);
        assert_eq!(genesis.header.number, 0);
        assert_ne!(genesis.header.state_root, EMPTY_ROOT_HASH);
        assert_eq!(spec.genesis_state().accounts.len(), 10);
    }

    #[test]
    fn genesis_json_is_checked() {
        let table = [
            (
                r#"{"config":{"chainId":0},"gasLimit":"0x1c9c380","alloc":{}}"#,
                false,
            ),
            (
                r#"{"config":{"chainId":7},"gasLimit":"0x1","alloc":{}}"#,
                false,
            ),
            (
                r#"{"config":{"chainId":7},"gasLimit":"0x1c9c380","alloc":{}}"#,
                true,
            ),
            (r#"not json"#, false),
            (r#"{"gasLimit":"0x1c9c380","alloc":{}}"#, false),
            (r#"{"gasLimit":"0x1c9c380","alloc":{}}"#, false),
        ];
        for (json, ok) in table {
            assert_eq!(ChainSpec::from_genesis_json(json).is_ok(), ok, "{json}");
        }
    }

    #[test]
    fn base_fee_follows_eip1559_with_a_floor() {
        let spec = ChainSpec::dev();
        let mut parent = spec.genesis_block().header;
        parent.gas_used = parent.gas_limit;
        assert_eq!(spec.next_base_fee(&parent), INITIAL_BASE_FEE_WEI * 9 / 8);
        parent.gas_used = 0;
        parent.base_fee_per_gas = Some(1);
        assert_eq!(spec.next_base_fee(&parent), spec.base_fee_min_wei);
    }
}
