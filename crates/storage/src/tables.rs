//! Table definitions and the encodings of their keys.

use crate::{Result, StorageError};
use alloy::consensus::ReceiptEnvelope;
use alloy::primitives::{Address, B256};
use alloy::rlp::Decodable;
use keel_primitives::{BlockWithReceipts, ChainSpec, SealedBlock};
use redb::{Table, TableDefinition, WriteTransaction};

/// Small named values: the head pointer.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Block number → RLP header.
pub(crate) const HEADERS: TableDefinition<u64, &[u8]> = TableDefinition::new("headers");
/// Block number → body (transactions and senders).
pub(crate) const BODIES: TableDefinition<u64, &[u8]> = TableDefinition::new("bodies");
/// Block number → RLP list of the block's receipts.
pub(crate) const RECEIPTS: TableDefinition<u64, &[u8]> = TableDefinition::new("receipts");
/// Block number → block hash.
pub(crate) const BLOCK_HASHES: TableDefinition<u64, &[u8; 32]> =
    TableDefinition::new("block_hashes");
/// Block hash → block number.
pub(crate) const BLOCK_NUMBERS: TableDefinition<&[u8; 32], u64> =
    TableDefinition::new("block_numbers");
/// Transaction hash → block number (8 bytes, big endian) and index in the block (4 bytes).
pub(crate) const TX_LOCATIONS: TableDefinition<&[u8; 32], &[u8; 12]> =
    TableDefinition::new("tx_locations");
/// Log index: emitting address and block number (big endian) → logs of that address there.
pub(crate) const LOG_ADDRESSES: TableDefinition<&[u8; 28], u32> =
    TableDefinition::new("log_addresses");
/// keccak(address) → account record.
pub(crate) const ACCOUNTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("accounts");
/// keccak(address) ++ keccak(slot) → value (32 bytes, big endian; zero values are absent).
pub(crate) const STORAGE: TableDefinition<&[u8; 64], &[u8; 32]> = TableDefinition::new("storage");
/// Block number → the state the block overwrote, as it was before ([`crate::change_set`]).
pub(crate) const CHANGE_SETS: TableDefinition<u64, &[u8]> = TableDefinition::new("change_sets");
/// keccak(address) ++ block number (big endian) → the account record before that block changed
/// it (empty: it did not exist); [`crate::history`].
pub(crate) const ACCOUNT_HISTORY: TableDefinition<&[u8; 40], &[u8]> =
    TableDefinition::new("account_history");
/// keccak(address) ++ keccak(slot) ++ block number (big endian) → the slot's value before that
/// block changed it (zero: absent); [`crate::history`].
pub(crate) const STORAGE_HISTORY: TableDefinition<&[u8; 72], &[u8; 32]> =
    TableDefinition::new("storage_history");
/// keccak(code) → code.
pub(crate) const CODES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("codes");

pub(crate) const HEAD_KEY: &str = "head";
/// The genesis hash the store was created for.
pub(crate) const GENESIS_KEY: &str = "genesis";
/// The lowest block whose state the store answers reads at (u64, big endian).
pub(crate) const HISTORY_FLOOR_KEY: &str = "history_floor";
/// The highest block whose change set and history entries were pruned (u64, big endian).
pub(crate) const HISTORY_PRUNED_KEY: &str = "history_pruned";
/// The highest block whose history entries are written: the index's cursor (u64, big endian);
/// [`crate::history`].
pub(crate) const HISTORY_INDEXED_KEY: &str = "history_indexed";

pub(crate) fn storage_key(hashed_address: &B256, hashed_slot: &B256) -> [u8; 64] {
    let mut key = [0u8; 64];
    key[..32].copy_from_slice(hashed_address.as_slice());
    key[32..].copy_from_slice(hashed_slot.as_slice());
    key
}

/// The first and last possible storage keys of one account.
pub(crate) fn storage_range(hashed_address: &B256) -> ([u8; 64], [u8; 64]) {
    (
        storage_key(hashed_address, &B256::ZERO),
        storage_key(hashed_address, &B256::repeat_byte(0xff)),
    )
}

pub(crate) fn log_address_key(address: &Address, number: u64) -> [u8; 28] {
    let mut key = [0u8; 28];
    key[..20].copy_from_slice(address.as_slice());
    key[20..].copy_from_slice(&number.to_be_bytes());
    key
}

/// A u64 named value, checked.
pub(crate) fn decode_u64(key: &str, bytes: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StorageError::Corrupt(format!("{key} of {} bytes", bytes.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

pub(crate) fn encode_head(number: u64, hash: &B256) -> [u8; 40] {
    let mut out = [0u8; 40];
    out[..8].copy_from_slice(&number.to_be_bytes());
    out[8..].copy_from_slice(hash.as_slice());
    out
}

pub(crate) fn decode_head(bytes: &[u8]) -> Result<(u64, B256)> {
    if bytes.len() != 40 {
        return Err(StorageError::Corrupt(format!(
            "head pointer of {} bytes",
            bytes.len()
        )));
    }
    Ok((
        u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes")),
        B256::from_slice(&bytes[8..]),
    ))
}

/// Every table, opened for one write transaction.
pub(crate) struct WriteTables<'txn> {
    pub(crate) meta: Table<'txn, &'static str, &'static [u8]>,
    headers: Table<'txn, u64, &'static [u8]>,
    bodies: Table<'txn, u64, &'static [u8]>,
    receipts: Table<'txn, u64, &'static [u8]>,
    block_hashes: Table<'txn, u64, &'static [u8; 32]>,
    block_numbers: Table<'txn, &'static [u8; 32], u64>,
    tx_locations: Table<'txn, &'static [u8; 32], &'static [u8; 12]>,
    log_addresses: Table<'txn, &'static [u8; 28], u32>,
    pub(crate) accounts: Table<'txn, &'static [u8; 32], &'static [u8]>,
    pub(crate) storage: Table<'txn, &'static [u8; 64], &'static [u8; 32]>,
    pub(crate) codes: Table<'txn, &'static [u8; 32], &'static [u8]>,
    pub(crate) change_sets: Table<'txn, u64, &'static [u8]>,
    pub(crate) account_history: Table<'txn, &'static [u8; 40], &'static [u8]>,
    pub(crate) storage_history: Table<'txn, &'static [u8; 72], &'static [u8; 32]>,
}

impl<'txn> WriteTables<'txn> {
    pub(crate) fn open(txn: &'txn WriteTransaction) -> Result<Self> {
        Ok(Self {
            meta: txn.open_table(META)?,
            headers: txn.open_table(HEADERS)?,
            bodies: txn.open_table(BODIES)?,
            receipts: txn.open_table(RECEIPTS)?,
            block_hashes: txn.open_table(BLOCK_HASHES)?,
            block_numbers: txn.open_table(BLOCK_NUMBERS)?,
            tx_locations: txn.open_table(TX_LOCATIONS)?,
            log_addresses: txn.open_table(LOG_ADDRESSES)?,
            accounts: txn.open_table(ACCOUNTS)?,
            storage: txn.open_table(STORAGE)?,
            codes: txn.open_table(CODES)?,
            change_sets: txn.open_table(CHANGE_SETS)?,
            account_history: txn.open_table(ACCOUNT_HISTORY)?,
            storage_history: txn.open_table(STORAGE_HISTORY)?,
        })
    }

    /// The genesis hash the store was created for.
    pub(crate) fn genesis_hash(&self) -> Result<Option<B256>> {
        use redb::ReadableTable;
        let Some(guard) = self.meta.get(GENESIS_KEY)? else {
            return Ok(None);
        };
        let bytes = guard.value();
        if bytes.len() != 32 {
            return Err(StorageError::Corrupt(
                "genesis hash of the wrong length".into(),
            ));
        }
        Ok(Some(B256::from_slice(bytes)))
    }

    /// Empties the state tables and the state's history (an image replaces them; the blocks
    /// stay, but the state between them and the image's head is not known).
    pub(crate) fn clear_state(&mut self) -> Result<()> {
        self.accounts.retain(|_, _| false)?;
        self.storage.retain(|_, _| false)?;
        self.codes.retain(|_, _| false)?;
        self.change_sets.retain(|_, _| false)?;
        self.account_history.retain(|_, _| false)?;
        self.storage_history.retain(|_, _| false)?;
        Ok(())
    }

    /// A u64 named value (big endian), if set.
    pub(crate) fn meta_u64(&self, key: &str) -> Result<Option<u64>> {
        use redb::ReadableTable;
        self.meta
            .get(key)?
            .map(|guard| decode_u64(key, guard.value()))
            .transpose()
    }

    /// Sets a u64 named value (big endian).
    pub(crate) fn put_meta_u64(&mut self, key: &str, value: u64) -> Result<()> {
        self.meta.insert(key, value.to_be_bytes().as_slice())?;
        Ok(())
    }

    /// Writes the genesis state and block into an empty store.
    pub(crate) fn put_genesis(&mut self, chain: &ChainSpec, genesis: &SealedBlock) -> Result<()> {
        let state = chain.genesis_state();
        for (hashed, _, record) in &state.accounts {
            self.accounts
                .insert(&hashed.0, record.encode().as_slice())?;
        }
        for (hashed_address, hashed_slot, value) in &state.storage {
            let key = storage_key(hashed_address, hashed_slot);
            self.storage.insert(&key, &value.to_be_bytes::<32>())?;
        }
        for (hash, code) in &state.codes {
            self.codes.insert(&hash.0, code.as_slice())?;
        }
        self.meta.insert(GENESIS_KEY, genesis.hash.as_slice())?;
        self.put_block(genesis, &[])
    }

    /// Reads block `number` with its receipts, inside this write transaction.
    pub(crate) fn block_with_receipts(&self, number: u64) -> Result<Option<BlockWithReceipts>> {
        use redb::ReadableTable;
        let (Some(header), Some(body)) = (self.headers.get(number)?, self.bodies.get(number)?)
        else {
            return Ok(None);
        };
        let block = SealedBlock::decode(header.value(), body.value())?;
        let receipts = match self.receipts.get(number)? {
            Some(guard) => Vec::<ReceiptEnvelope>::decode(&mut guard.value())
                .map_err(|error| StorageError::Corrupt(format!("receipts {number}: {error}")))?,
            None => Vec::new(),
        };
        if receipts.len() != block.transactions.len() {
            return Err(StorageError::Corrupt(format!(
                "block {number} has {} transactions and {} receipts",
                block.transactions.len(),
                receipts.len()
            )));
        }
        Ok(Some(BlockWithReceipts::new(block, receipts)))
    }

    /// Removes the block, its receipts and indexes (the inverse of [`Self::put_block`], but
    /// for the head pointer, which the caller moves).
    pub(crate) fn remove_block(&mut self, applied: &BlockWithReceipts) -> Result<()> {
        let block = &applied.block;
        let number = block.number();
        self.headers.remove(number)?;
        self.bodies.remove(number)?;
        self.receipts.remove(number)?;
        self.block_hashes.remove(number)?;
        self.block_numbers.remove(&block.hash.0)?;
        for transaction in &block.transactions {
            self.tx_locations.remove(&transaction.tx_hash().0)?;
        }
        for receipt in &applied.receipts {
            for log in receipt.logs() {
                self.log_addresses
                    .remove(&log_address_key(&log.address, number))?;
            }
        }
        Ok(())
    }

    /// Writes the block, its receipts and indexes, and moves the head pointer to it.
    pub(crate) fn put_block(
        &mut self,
        block: &SealedBlock,
        receipts: &[ReceiptEnvelope],
    ) -> Result<()> {
        let number = block.number();
        self.headers
            .insert(number, block.encode_header().as_slice())?;
        self.bodies.insert(number, block.encode_body().as_slice())?;
        let mut encoded_receipts = Vec::with_capacity(receipts.len() * 120);
        alloy::rlp::encode_list(receipts, &mut encoded_receipts);
        self.receipts.insert(number, encoded_receipts.as_slice())?;
        self.block_hashes.insert(number, &block.hash.0)?;
        self.block_numbers.insert(&block.hash.0, number)?;
        for (index, transaction) in block.transactions.iter().enumerate() {
            let mut location = [0u8; 12];
            location[..8].copy_from_slice(&number.to_be_bytes());
            location[8..].copy_from_slice(&(index as u32).to_be_bytes());
            self.tx_locations
                .insert(&transaction.tx_hash().0, &location)?;
        }
        let mut log_counts: std::collections::BTreeMap<Address, u32> = Default::default();
        for receipt in receipts {
            for log in receipt.logs() {
                *log_counts.entry(log.address).or_default() += 1;
            }
        }
        for (address, count) in log_counts {
            self.log_addresses
                .insert(&log_address_key(&address, number), count)?;
        }
        self.meta
            .insert(HEAD_KEY, encode_head(number, &block.hash).as_slice())?;
        Ok(())
    }
}
