//! Building the L1 transactions keel sends: calldata to an inbox, priced from the L1's fees,
//! with geth's replacement rules for fee bumps.

use crate::L1Fees;
use alloy::consensus::{
    TxEip1559, TxEip4844, TxEip4844Variant, TxEip4844WithSidecar, TxEnvelope, TypedTransaction,
};
use alloy::eips::Encodable2718;
use alloy::eips::eip7594::BlobTransactionSidecarEip7594;
use alloy::eips::eip7594::BlobTransactionSidecarVariant;
use alloy::primitives::{Address, Bytes, TxKind, U256};
use alloy::signers::local::PrivateKeySigner;

/// Gas of a plain call carrying `data` to an account without code: the intrinsic gas, or
/// EIP-7623's calldata floor when larger (Prague on).
pub fn calldata_gas(data: &[u8]) -> u64 {
    let zeros = data.iter().filter(|byte| **byte == 0).count() as u64;
    let non_zeros = data.len() as u64 - zeros;
    let standard = 21_000 + 16 * non_zeros + 4 * zeros;
    let floor = 21_000 + 10 * (4 * non_zeros + zeros);
    standard.max(floor)
}

/// What one L1 transaction pays per gas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeeCaps {
    /// `maxFeePerGas`.
    pub max_fee: u128,
    /// `maxPriorityFeePerGas`.
    pub tip: u128,
    /// `maxFeePerBlobGas`, for a blob transaction: twice the blob base fee (0 where the L1
    /// takes no blobs).
    pub blob_fee: u128,
}

impl FeeCaps {
    /// Caps for a transaction sent now: the suggested tip, and twice the base fee on top so
    /// that it stays includable while the base fee rises for a few blocks (geth's and
    /// op-batcher's rule).
    pub fn for_fees(fees: &L1Fees) -> Self {
        let tip = fees.tip.max(1);
        Self {
            max_fee: fees.base_fee.saturating_mul(2).saturating_add(tip),
            tip,
            blob_fee: fees
                .blob_base_fee
                .map_or(0, |fee| fee.saturating_mul(2).max(1)),
        }
    }

    /// The caps a replacement at the same nonce must at least pay to be accepted by geth's
    /// pool (`replacement transaction underpriced` otherwise): both raised by
    /// `bump_percent`, plus one wei, since a bump of exactly the threshold is refused by some
    /// pools (base/base#4506). Never below what `fees` asks for now. A blob transaction's
    /// blob fee cap is raised alike (geth's blob pool asks 100 % on all three).
    pub fn bumped(self, fees: &L1Fees, bump_percent: u128) -> Self {
        let raise = |value: u128| value.saturating_mul(100 + bump_percent) / 100 + 1;
        let now = Self::for_fees(fees);
        Self {
            max_fee: raise(self.max_fee).max(now.max_fee),
            tip: raise(self.tip).max(now.tip),
            blob_fee: if self.blob_fee == 0 {
                0
            } else {
                raise(self.blob_fee).max(now.blob_fee)
            },
        }
    }
}

/// A signed EIP-1559 call to `to` with `data`, from `signer`, on L1 chain `chain_id`.
pub fn sign_calldata(
    signer: &PrivateKeySigner,
    chain_id: u64,
    nonce: u64,
    to: Address,
    data: Bytes,
    caps: FeeCaps,
) -> (TxEnvelope, Bytes) {
    let gas_limit = calldata_gas(&data);
    let transaction = TypedTransaction::Eip1559(TxEip1559 {
        chain_id,
        nonce,
        gas_limit,
        max_fee_per_gas: caps.max_fee,
        max_priority_fee_per_gas: caps.tip.min(caps.max_fee),
        to: TxKind::Call(to),
        value: U256::ZERO,
        input: data,
        access_list: Default::default(),
    });
    let envelope = keel_primitives::sign_transaction(signer, transaction);
    let raw = envelope.encoded_2718().into();
    (envelope, raw)
}

/// Gas of a blob transaction's execution part: a plain call with no calldata.
pub const BLOB_TRANSACTION_GAS: u64 = 21_000;

/// A signed EIP-4844 transaction to `to` carrying `data` in one blob (keel's layout,
/// [`crate::blob`]), from `signer`, with its sidecar: the network encoding
/// `eth_sendRawTransaction` takes (EIP-7594 cell proofs) and the envelope (its hash is the
/// transaction's, without the sidecar). `sidecar` may be one built before for the same data
/// (a fee bump re-signs, it does not recompute the proofs).
pub fn sign_blob(
    signer: &PrivateKeySigner,
    chain_id: u64,
    nonce: u64,
    to: Address,
    sidecar: &BlobTransactionSidecarEip7594,
    caps: FeeCaps,
) -> (TxEnvelope, Bytes) {
    let transaction = TxEip4844 {
        chain_id,
        nonce,
        gas_limit: BLOB_TRANSACTION_GAS,
        max_fee_per_gas: caps.max_fee,
        max_priority_fee_per_gas: caps.tip.min(caps.max_fee),
        to,
        value: U256::ZERO,
        access_list: Default::default(),
        blob_versioned_hashes: sidecar.versioned_hashes().collect(),
        max_fee_per_blob_gas: caps.blob_fee.max(1),
        input: Bytes::new(),
    };
    let with_sidecar = TxEip4844WithSidecar::from_tx_and_sidecar(
        transaction,
        BlobTransactionSidecarVariant::Eip7594(sidecar.clone()),
    );
    let envelope = keel_primitives::sign_transaction(
        signer,
        TypedTransaction::Eip4844(TxEip4844Variant::TxEip4844WithSidecar(with_sidecar)),
    );
    let raw = envelope.encoded_2718().into();
    (envelope, raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calldata_gas_follows_the_floor() {
        assert_eq!(calldata_gas(&[]), 21_000);
        // Non-zero bytes: the floor (40 a byte) beats the standard price (16 a byte).
        assert_eq!(calldata_gas(&[1; 100]), 25_000);
        assert_eq!(calldata_gas(&[0; 100]), 22_000);
    }

    #[test]
    fn bumps_clear_the_replacement_threshold_by_a_wei() {
        let fees = L1Fees {
            base_fee: 100,
            tip: 10,
            blob_base_fee: None,
        };
        let first = FeeCaps::for_fees(&fees);
        assert_eq!(
            first,
            FeeCaps {
                max_fee: 210,
                tip: 10,
                blob_fee: 0,
            }
        );
        let bumped = first.bumped(&fees, 10);
        assert_eq!(
            bumped,
            FeeCaps {
                max_fee: 232,
                tip: 12,
                blob_fee: 0,
            }
        );
        // A base fee that rose past the bump wins.
        let risen = L1Fees {
            base_fee: 1_000,
            ..fees
        };
        assert_eq!(first.bumped(&risen, 10).max_fee, 2_010);
    }
}
