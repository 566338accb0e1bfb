//! A state image: the head block with its receipts and the whole state at it, as one byte
//! string. Raft snapshots carry it (a snapshot always has a head: docs/design.md R4).
//!
//! Format (all integers big endian), versioned by its magic:
//! `"KEELIMG1"`, genesis hash, then length-prefixed header RLP, body and receipts RLP, then
//! the accounts (count, then 32-byte key and record), the storage (count, then 64-byte key and
//! 32-byte value) and the codes (count, then 32-byte hash and length-prefixed code).
//! Hand-written because no crate encodes this store's own tables; every length is checked.

use crate::{Result, StorageError};
use alloy::consensus::ReceiptEnvelope;
use alloy::primitives::B256;
use alloy::rlp::Decodable;
use keel_primitives::{AccountRecord, SealedBlock};

/// The first bytes of every state image (its format version).
pub const STATE_IMAGE_MAGIC: &[u8; 8] = b"KEELIMG1";
const MAGIC: &[u8; 8] = STATE_IMAGE_MAGIC;

pub(crate) struct StateImage {
    pub(crate) genesis: B256,
    pub(crate) head: SealedBlock,
    pub(crate) receipts: Vec<ReceiptEnvelope>,
    pub(crate) accounts: Vec<(B256, AccountRecord)>,
    pub(crate) storage: Vec<([u8; 64], [u8; 32])>,
    pub(crate) codes: Vec<(B256, Vec<u8>)>,
}

/// Appends a length-prefixed byte string.
pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8]> {
        if self.0.len() < count {
            return Err(StorageError::Corrupt("state image is truncated".into()));
        }
        let (head, rest) = self.0.split_at(count);
        self.0 = rest;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn bytes(&mut self) -> Result<&'a [u8]> {
        let length = self.u64()?;
        let length = usize::try_from(length)
            .ok()
            .filter(|length| *length <= self.0.len())
            .ok_or_else(|| StorageError::Corrupt("state image length out of range".into()))?;
        self.take(length)
    }

    fn count(&mut self, item_bytes: usize) -> Result<usize> {
        let count = self.u64()?;
        usize::try_from(count)
            .ok()
            .filter(|count| count.saturating_mul(item_bytes) <= self.0.len())
            .ok_or_else(|| StorageError::Corrupt("state image count out of range".into()))
    }
}

impl StateImage {
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        let mut reader = Reader(bytes);
        if reader.take(8)? != MAGIC {
            return Err(StorageError::Corrupt("not a keel state image".into()));
        }
        let genesis = B256::from_slice(reader.take(32)?);
        let header = reader.bytes()?;
        let body = reader.bytes()?;
        let head = SealedBlock::decode(header, body)?;
        let mut receipts_bytes = reader.bytes()?;
        let receipts = Vec::<ReceiptEnvelope>::decode(&mut receipts_bytes)
            .map_err(|error| StorageError::Corrupt(format!("image receipts: {error}")))?;
        if receipts.len() != head.transactions.len() {
            return Err(StorageError::Corrupt(format!(
                "image head has {} transactions and {} receipts",
                head.transactions.len(),
                receipts.len()
            )));
        }
        let mut accounts = Vec::new();
        for _ in 0..reader.count(32 + AccountRecord::ENCODED_BYTES)? {
            let key = B256::from_slice(reader.take(32)?);
            accounts.push((
                key,
                AccountRecord::decode(reader.take(AccountRecord::ENCODED_BYTES)?)?,
            ));
        }
        let mut storage = Vec::new();
        for _ in 0..reader.count(96)? {
            let key: [u8; 64] = reader.take(64)?.try_into().expect("64 bytes");
            let value: [u8; 32] = reader.take(32)?.try_into().expect("32 bytes");
            storage.push((key, value));
        }
        let mut codes = Vec::new();
        for _ in 0..reader.count(40)? {
            let hash = B256::from_slice(reader.take(32)?);
            codes.push((hash, reader.bytes()?.to_vec()));
        }
        if !reader.0.is_empty() {
            return Err(StorageError::Corrupt(
                "state image has trailing bytes".into(),
            ));
        }
        Ok(Self {
            genesis,
            head,
            receipts,
            accounts,
            storage,
            codes,
        })
    }
}

pub(crate) fn magic() -> &'static [u8; 8] {
    MAGIC
}
