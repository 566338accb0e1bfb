//! Reverse change sets: what each block overwrote in the state, written in the block's own
//! write transaction, so that the store can unwind blocks (derivation's reset after an L1
//! reorg, the replacement of unsafe blocks that were not batched in time).
//!
//! ```text
//! change_sets: block number ─► [accounts before] [storage wipes] [slots before]
//! ```
//!
//! Like reth's account and storage change sets, they hold values *before* the block, keyed by
//! the block; unlike reth's, they are keyed by hashed address and slot, as keel's state is.
//! Codes are content-addressed and never removed. Encoding (all integers big endian):
//! `u32 n, n × (hashed address, u8 present, [u16 len, record])`, `u32 n, n × hashed address`,
//! `u32 n, n × (hashed address, hashed slot, value)`.

use crate::{Result, StorageError};
use alloy::primitives::{B256, U256};
use keel_primitives::AccountRecord;

/// The state a block overwrote, as it was before the block.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ChangeSet {
    /// Each account the block wrote, with its record before (`None`: it did not exist).
    pub(crate) accounts: Vec<(B256, Option<AccountRecord>)>,
    /// Accounts whose whole storage the block cleared.
    pub(crate) wipes: Vec<B256>,
    /// Each slot the block wrote or cleared, with its value before (zero: absent).
    pub(crate) storage: Vec<(B256, B256, U256)>,
}

impl ChangeSet {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            12 + self.accounts.len() * 120 + self.wipes.len() * 32 + self.storage.len() * 96,
        );
        out.extend_from_slice(&(self.accounts.len() as u32).to_be_bytes());
        for (hashed, record) in &self.accounts {
            out.extend_from_slice(hashed.as_slice());
            match record {
                Some(record) => {
                    let encoded = record.encode();
                    out.push(1);
                    out.extend_from_slice(&(encoded.len() as u16).to_be_bytes());
                    out.extend_from_slice(&encoded);
                }
                None => out.push(0),
            }
        }
        out.extend_from_slice(&(self.wipes.len() as u32).to_be_bytes());
        for hashed in &self.wipes {
            out.extend_from_slice(hashed.as_slice());
        }
        out.extend_from_slice(&(self.storage.len() as u32).to_be_bytes());
        for (hashed_address, hashed_slot, value) in &self.storage {
            out.extend_from_slice(hashed_address.as_slice());
            out.extend_from_slice(hashed_slot.as_slice());
            out.extend_from_slice(&value.to_be_bytes::<32>());
        }
        out
    }

    pub(crate) fn decode(mut bytes: &[u8]) -> Result<Self> {
        let corrupt = || StorageError::Corrupt("change set truncated".into());
        let mut take = |count: usize| -> Result<&[u8]> {
            if bytes.len() < count {
                return Err(corrupt());
            }
            let (head, rest) = bytes.split_at(count);
            bytes = rest;
            Ok(head)
        };
        let mut set = Self::default();
        let accounts = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes"));
        for _ in 0..accounts {
            let hashed = B256::from_slice(take(32)?);
            let record = match take(1)?[0] {
                0 => None,
                1 => {
                    let length = u16::from_be_bytes(take(2)?.try_into().expect("2 bytes"));
                    Some(AccountRecord::decode(take(length as usize)?)?)
                }
                other => {
                    return Err(StorageError::Corrupt(format!(
                        "change set account flag {other}"
                    )));
                }
            };
            set.accounts.push((hashed, record));
        }
        let wipes = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes"));
        for _ in 0..wipes {
            set.wipes.push(B256::from_slice(take(32)?));
        }
        let slots = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes"));
        for _ in 0..slots {
            let hashed_address = B256::from_slice(take(32)?);
            let hashed_slot = B256::from_slice(take(32)?);
            let value = U256::from_be_slice(take(32)?);
            set.storage.push((hashed_address, hashed_slot, value));
        }
        if !bytes.is_empty() {
            return Err(StorageError::Corrupt(format!(
                "change set with {} trailing bytes",
                bytes.len()
            )));
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_sets_round_trip() {
        let record = AccountRecord {
            nonce: 3,
            balance: U256::from(7),
            code_hash: B256::repeat_byte(1),
            storage_root: B256::repeat_byte(2),
        };
        let set = ChangeSet {
            accounts: vec![
                (B256::repeat_byte(3), Some(record)),
                (B256::repeat_byte(4), None),
            ],
            wipes: vec![B256::repeat_byte(5)],
            storage: vec![(B256::repeat_byte(6), B256::repeat_byte(7), U256::from(9))],
        };
        let encoded = set.encode();
        assert_eq!(ChangeSet::decode(&encoded).unwrap(), set);
        assert!(ChangeSet::decode(&encoded[..encoded.len() - 1]).is_err());
        assert_eq!(
            ChangeSet::decode(&ChangeSet::default().encode()).unwrap(),
            ChangeSet::default()
        );
    }
}
