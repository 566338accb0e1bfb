//! The account record that the state stores, keyed by the keccak of the address.

use crate::PrimitivesError;
use alloy::consensus::constants::KECCAK_EMPTY;
use alloy::consensus::{EMPTY_ROOT_HASH, TrieAccount};
use alloy::primitives::{B256, U256};

/// One account of the state: what the account trie commits to.
///
/// The storage root is kept with the account so that the state root can be computed without
/// walking every storage slot of every account: it changes only when the account's storage does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountRecord {
    /// Transactions sent (or contracts created, for a contract).
    pub nonce: u64,
    /// Balance in wei.
    pub balance: U256,
    /// Keccak of the account's code; `KECCAK_EMPTY` for none.
    pub code_hash: B256,
    /// Root of the account's storage trie; `EMPTY_ROOT_HASH` for none.
    pub storage_root: B256,
}

impl Default for AccountRecord {
    fn default() -> Self {
        Self {
            nonce: 0,
            balance: U256::ZERO,
            code_hash: KECCAK_EMPTY,
            storage_root: EMPTY_ROOT_HASH,
        }
    }
}

impl AccountRecord {
    /// Bytes of [`AccountRecord::encode`].
    pub const ENCODED_BYTES: usize = 8 + 32 + 32 + 32;

    /// Fixed-width encoding for storage: nonce (big endian), balance, code hash, storage root.
    pub fn encode(&self) -> [u8; Self::ENCODED_BYTES] {
        let mut out = [0u8; Self::ENCODED_BYTES];
        out[..8].copy_from_slice(&self.nonce.to_be_bytes());
        out[8..40].copy_from_slice(&self.balance.to_be_bytes::<32>());
        out[40..72].copy_from_slice(self.code_hash.as_slice());
        out[72..].copy_from_slice(self.storage_root.as_slice());
        out
    }

    /// Decodes [`AccountRecord::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, PrimitivesError> {
        if bytes.len() != Self::ENCODED_BYTES {
            return Err(PrimitivesError::decode(
                "account",
                format!("{} bytes", bytes.len()),
            ));
        }
        Ok(Self {
            nonce: u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes")),
            balance: U256::from_be_slice(&bytes[8..40]),
            code_hash: B256::from_slice(&bytes[40..72]),
            storage_root: B256::from_slice(&bytes[72..]),
        })
    }

    /// Whether the account is empty in EIP-161's sense (and so does not exist in the trie).
    pub fn is_empty(&self) -> bool {
        self.nonce == 0 && self.balance.is_zero() && self.code_hash == KECCAK_EMPTY
    }

    /// The account as the state trie's leaf holds it.
    pub fn trie_account(&self) -> TrieAccount {
        TrieAccount {
            nonce: self.nonce,
            balance: self.balance,
            storage_root: self.storage_root,
            code_hash: self.code_hash,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips() {
        let record = AccountRecord {
            nonce: 7,
            balance: U256::from(123_456_789u64) << 100,
            code_hash: B256::repeat_byte(3),
            storage_root: B256::repeat_byte(9),
        };
        assert_eq!(AccountRecord::decode(&record.encode()).unwrap(), record);
        assert!(AccountRecord::decode(&[0u8; 5]).is_err());
        assert!(AccountRecord::default().is_empty());
    }
}
