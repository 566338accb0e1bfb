//! Batches: consecutive L2 blocks as the L1 carries them (docs/protocol.md, "Batches").
//!
//! ```text
//! batch       = [version = 0, parent_hash, first_number, beneficiary, gas_limit, extra_data, blocks]
//! block       = [timestamp, origin_number, transactions]
//! transaction = the EIP-2718 bytes, as in an Ethereum block body
//! ```
//!
//! Everything else of a header follows from executing the block on its parent, so a batch is
//! what a verifier needs and nothing more. The origin's hash is not carried: derivation reads it
//! from the L1 at `origin_number`.

use crate::codec::{CodecError, DropReason};
use alloy::consensus::TxEnvelope;
use alloy::primitives::{Address, B256, Bytes};
use alloy_rlp::{Decodable, Encodable, RlpDecodable, RlpEncodable};
use keel_primitives::{SealedBlock, limits, origin_of};

/// The only batch version keel writes and reads.
pub const BATCH_VERSION: u8 = 0;

/// One L2 block of a batch: what the sequencer chose; the rest is computed.
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct BatchBlock {
    /// The block's timestamp, in seconds.
    pub timestamp: u64,
    /// The number of its L1 origin.
    pub origin_number: u64,
    /// Its transactions, forced ones first, in block order.
    pub transactions: Vec<TxEnvelope>,
}

/// Consecutive L2 blocks that share a beneficiary, gas limit and extra data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The hash of the block before the first.
    pub parent_hash: B256,
    /// The first block's number.
    pub first_number: u64,
    /// The blocks' fee recipient.
    pub beneficiary: Address,
    /// The blocks' gas limit.
    pub gas_limit: u64,
    /// The blocks' extra data.
    pub extra_data: Bytes,
    /// The blocks, in order; at least one, at most `limits::BATCH_BLOCKS_MAX`.
    pub blocks: Vec<BatchBlock>,
}

#[derive(RlpEncodable, RlpDecodable)]
struct BatchRlp {
    version: u8,
    parent_hash: B256,
    first_number: u64,
    beneficiary: Address,
    gas_limit: u64,
    extra_data: Bytes,
    blocks: Vec<BatchBlock>,
}

impl Batch {
    /// The batch of one sealed block.
    pub fn of(block: &SealedBlock) -> Self {
        let header = &block.header;
        Self {
            parent_hash: header.parent_hash,
            first_number: header.number,
            beneficiary: header.beneficiary,
            gas_limit: header.gas_limit,
            extra_data: header.extra_data.clone(),
            blocks: vec![BatchBlock::of(block)],
        }
    }

    /// Whether `block` may join this batch: the next number, the same shared fields, room left.
    pub fn takes(&self, block: &SealedBlock) -> bool {
        let header = &block.header;
        header.number == self.first_number + self.blocks.len() as u64
            && header.beneficiary == self.beneficiary
            && header.gas_limit == self.gas_limit
            && header.extra_data == self.extra_data
            && self.blocks.len() < limits::BATCH_BLOCKS_MAX
    }

    /// The number of the last block.
    pub fn last_number(&self) -> u64 {
        self.first_number + self.blocks.len() as u64 - 1
    }

    /// RLP bytes, appended to `out`.
    pub fn encode(&self, out: &mut dyn alloy::rlp::BufMut) {
        BatchRlp {
            version: BATCH_VERSION,
            parent_hash: self.parent_hash,
            first_number: self.first_number,
            beneficiary: self.beneficiary,
            gas_limit: self.gas_limit,
            extra_data: self.extra_data.clone(),
            blocks: self.blocks.clone(),
        }
        .encode(out)
    }

    /// Decodes one batch from the front of `buf`, checking its version and bounds.
    pub fn decode(buf: &mut &[u8]) -> Result<Self, CodecError> {
        let rlp = BatchRlp::decode(buf)
            .map_err(|error| CodecError::new(DropReason::BadBatch, error.to_string()))?;
        if rlp.version != BATCH_VERSION {
            return Err(CodecError::new(
                DropReason::BadBatch,
                format!("batch version {}", rlp.version),
            ));
        }
        if rlp.blocks.is_empty() || rlp.blocks.len() > limits::BATCH_BLOCKS_MAX {
            return Err(CodecError::new(
                DropReason::BadBatch,
                format!(
                    "{} blocks, not 1..={}",
                    rlp.blocks.len(),
                    limits::BATCH_BLOCKS_MAX
                ),
            ));
        }
        if rlp.extra_data.len() > limits::EXTRA_DATA_BYTES_MAX {
            return Err(CodecError::new(
                DropReason::BadBatch,
                "extra data longer than 32 bytes",
            ));
        }
        if rlp.first_number == 0
            || rlp
                .first_number
                .checked_add(rlp.blocks.len() as u64)
                .is_none()
        {
            return Err(CodecError::new(
                DropReason::BadBatch,
                format!("first block number {}", rlp.first_number),
            ));
        }
        Ok(Self {
            parent_hash: rlp.parent_hash,
            first_number: rlp.first_number,
            beneficiary: rlp.beneficiary,
            gas_limit: rlp.gas_limit,
            extra_data: rlp.extra_data,
            blocks: rlp.blocks,
        })
    }
}

impl BatchBlock {
    /// What a batch carries of `block`.
    pub fn of(block: &SealedBlock) -> Self {
        Self {
            timestamp: block.header.timestamp,
            origin_number: origin_of(&block.header).number,
            transactions: block.transactions.clone(),
        }
    }
}

/// Encodes `batches` as a channel's uncompressed payload: their RLP, one after another.
pub fn encode_batches(batches: &[Batch]) -> Vec<u8> {
    let mut out = Vec::new();
    for batch in batches {
        batch.encode(&mut out);
    }
    out
}

/// Decodes a channel's uncompressed payload into its batches, at most
/// `limits::CHANNEL_BATCHES_MAX`; any bad byte refuses the whole payload.
pub fn decode_batches(mut payload: &[u8]) -> Result<Vec<Batch>, CodecError> {
    let mut batches = Vec::new();
    while !payload.is_empty() {
        if batches.len() == limits::CHANNEL_BATCHES_MAX {
            return Err(CodecError::new(
                DropReason::BadBatch,
                format!("more than {} batches", limits::CHANNEL_BATCHES_MAX),
            ));
        }
        batches.push(Batch::decode(&mut payload)?);
    }
    if batches.is_empty() {
        return Err(CodecError::new(
            DropReason::BadBatch,
            "a channel of no batch",
        ));
    }
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample_batch(first_number: u64, blocks: usize) -> Batch {
        let signer = &keel_primitives::dev_accounts()[0];
        let blocks = (0..blocks)
            .map(|index| BatchBlock {
                timestamp: 1_700_000_000 + index as u64,
                origin_number: 3,
                transactions: vec![crate::codec::tests::transfer(signer, index as u64)],
            })
            .collect();
        Batch {
            parent_hash: B256::repeat_byte(1),
            first_number,
            beneficiary: Address::repeat_byte(2),
            gas_limit: 30_000_000,
            extra_data: Bytes::from_static(b"keel"),
            blocks,
        }
    }

    #[test]
    fn batches_round_trip_and_bad_ones_are_refused() {
        let batches = vec![sample_batch(1, 3), sample_batch(4, 1)];
        let payload = encode_batches(&batches);
        assert_eq!(decode_batches(&payload).unwrap(), batches);
        // Truncated, trailing garbage, empty, a wrong version: each refuses the payload.
        assert!(decode_batches(&payload[..payload.len() - 1]).is_err());
        let mut trailing = payload.clone();
        trailing.push(0x01);
        assert!(decode_batches(&trailing).is_err());
        assert!(decode_batches(&[]).is_err());
        let mut versioned = Vec::new();
        BatchRlp {
            version: 1,
            parent_hash: B256::ZERO,
            first_number: 1,
            beneficiary: Address::ZERO,
            gas_limit: 1,
            extra_data: Bytes::new(),
            blocks: batches[0].blocks.clone(),
        }
        .encode(&mut versioned);
        let error = decode_batches(&versioned).unwrap_err();
        assert!(error.to_string().contains("batch version 1"), "{error}");
        let mut empty = sample_batch(1, 1);
        empty.blocks.clear();
        assert!(decode_batches(&encode_batches(&[empty])).is_err());
    }
}
