//! A sealed block: header, its hash, the transactions and their recovered senders.
//!
//! Senders travel with the block so that a node applying it never recovers a signature twice:
//! recovery happens once, when the transaction enters the mempool.

use crate::PrimitivesError;
use alloy::consensus::{
    EMPTY_OMMER_ROOT_HASH, EMPTY_ROOT_HASH, Header, ReceiptEnvelope, TxEnvelope,
};
use alloy::eips::eip7685::EMPTY_REQUESTS_HASH;
use alloy::primitives::{Address, B256, Bloom, Bytes, U256};
use alloy::rlp::{Decodable, Encodable};

/// The header fields that vary from block to block; [`HeaderFields::into_header`] fills in
/// the ones keel's chain fixes (no ommers, withdrawals, blobs or requests, as on a rollup) and
/// writes the L1 origin where [`crate::rollup`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderFields {
    /// Hash of the parent block.
    pub parent_hash: B256,
    /// Receives the priority fees.
    pub beneficiary: Address,
    /// State root after the block.
    pub state_root: B256,
    /// Root of the transactions trie.
    pub transactions_root: B256,
    /// Root of the receipts trie.
    pub receipts_root: B256,
    /// Union of the receipts' blooms.
    pub logs_bloom: Bloom,
    /// Block number.
    pub number: u64,
    /// Gas limit.
    pub gas_limit: u64,
    /// Gas used by the transactions.
    pub gas_used: u64,
    /// Seconds since the epoch.
    pub timestamp: u64,
    /// Extra data.
    pub extra_data: Bytes,
    /// PREVRANDAO value.
    pub mix_hash: B256,
    /// EIP-1559 base fee.
    pub base_fee: u64,
    /// The L1 block this block commits to (zero on a chain that settles nowhere).
    pub origin: crate::L1Origin,
    /// Forced transactions consumed by the chain up to this block ([`crate::rollup`]).
    pub forced_cursor: u64,
}

impl HeaderFields {
    /// The full header.
    pub fn into_header(self) -> Header {
        let mut header = Header {
            parent_hash: self.parent_hash,
            ommers_hash: EMPTY_OMMER_ROOT_HASH,
            beneficiary: self.beneficiary,
            state_root: self.state_root,
            transactions_root: self.transactions_root,
            receipts_root: self.receipts_root,
            logs_bloom: self.logs_bloom,
            difficulty: U256::from(self.forced_cursor),
            number: self.number,
            gas_limit: self.gas_limit,
            gas_used: self.gas_used,
            timestamp: self.timestamp,
            extra_data: self.extra_data,
            mix_hash: self.mix_hash,
            nonce: Default::default(),
            base_fee_per_gas: Some(self.base_fee),
            withdrawals_root: Some(EMPTY_ROOT_HASH),
            blob_gas_used: Some(0),
            excess_blob_gas: Some(0),
            parent_beacon_block_root: Some(B256::ZERO),
            requests_hash: Some(EMPTY_REQUESTS_HASH),
            block_access_list_hash: None,
            slot_number: None,
        };
        crate::set_origin(&mut header, self.origin);
        header
    }
}

/// A block with its hash computed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedBlock {
    /// The header; its keccak is [`SealedBlock::hash`].
    pub header: Header,
    /// Keccak of the RLP header.
    pub hash: B256,
    /// The transactions, in block order.
    pub transactions: Vec<TxEnvelope>,
    /// The sender of each transaction, in the same order.
    pub senders: Vec<Address>,
}

impl SealedBlock {
    /// Seals a header with its body, computing the hash.
    pub fn new(header: Header, transactions: Vec<TxEnvelope>, senders: Vec<Address>) -> Self {
        assert_eq!(
            transactions.len(),
            senders.len(),
            "one sender per transaction"
        );
        let hash = header.hash_slow();
        Self {
            header,
            hash,
            transactions,
            senders,
        }
    }

    /// The block number.
    pub fn number(&self) -> u64 {
        self.header.number
    }

    /// Size of the block's RLP encoding as Ethereum sends it (header, transactions, empty
    /// ommers and withdrawals), the measure EIP-7934 bounds.
    pub fn rlp_length(&self) -> usize {
        let transactions_length: usize = self.transactions.iter().map(Encodable::length).sum();
        let transactions_list =
            alloy::rlp::length_of_length(transactions_length) + transactions_length;
        // Header, the transaction list, and two empty lists (ommers, withdrawals) of one byte.
        let payload = self.header.length() + transactions_list + 1 + 1;
        alloy::rlp::length_of_length(payload) + payload
    }

    /// Encodes the body (transactions and senders) for storage.
    pub fn encode_body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.transactions.len() * 140);
        self.transactions.encode(&mut out);
        self.senders.encode(&mut out);
        out
    }

    /// Rebuilds a block from a stored header, hash and body.
    pub fn decode(header: &[u8], mut body: &[u8]) -> Result<Self, PrimitivesError> {
        let header = Header::decode(&mut &header[..])
            .map_err(|error| PrimitivesError::decode("header", error))?;
        let transactions = Vec::<TxEnvelope>::decode(&mut body)
            .map_err(|error| PrimitivesError::decode("block transactions", error))?;
        let senders = Vec::<Address>::decode(&mut body)
            .map_err(|error| PrimitivesError::decode("block senders", error))?;
        if senders.len() != transactions.len() {
            return Err(PrimitivesError::decode(
                "block body",
                "sender count differs",
            ));
        }
        Ok(Self::new(header, transactions, senders))
    }

    /// RLP of the header, as storage keeps it.
    pub fn encode_header(&self) -> Vec<u8> {
        alloy::rlp::encode(&self.header)
    }
}

/// A sealed block with the receipts its execution gave: the one type a block has from the
/// builder to every consumer. The executor returns it, the store persists it, the stream of
/// applied blocks (`keel_storage::BlockStream`) delivers it, and the RPC, the pool, the
/// batcher and derivation read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockWithReceipts {
    /// The block.
    pub block: SealedBlock,
    /// One receipt per transaction, in block order.
    pub receipts: Vec<ReceiptEnvelope>,
}

impl BlockWithReceipts {
    /// Pairs a block with its receipts.
    ///
    /// # Panics
    /// When the counts differ: a receipt belongs to exactly one transaction (a bug, not input).
    pub fn new(block: SealedBlock, receipts: Vec<ReceiptEnvelope>) -> Self {
        assert_eq!(
            block.transactions.len(),
            receipts.len(),
            "one receipt per transaction"
        );
        Self { block, receipts }
    }

    /// The block number.
    pub fn number(&self) -> u64 {
        self.block.number()
    }

    /// The block hash.
    pub fn hash(&self) -> B256 {
        self.block.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChainSpec;

    #[test]
    fn body_round_trips() {
        let block = ChainSpec::dev().genesis_block();
        let decoded = SealedBlock::decode(&block.encode_header(), &block.encode_body()).unwrap();
        assert_eq!(decoded, block);
        assert!(SealedBlock::decode(&[1, 2, 3], &[]).is_err());
        assert!(block.rlp_length() > 500);
    }
}
