//! Batch data in EIP-4844 blobs: how the batcher fills a blob and derivation reads one back
//! (docs/protocol.md, "Blobs").
//!
//! ```text
//!  batcher: L1 transaction data (version ++ frame) ──encode_blob──► blob ──sidecar──► type-3
//!           transaction (EIP-7594 cell proofs) ──► L1 pool; the block keeps only the
//!           versioned hashes
//!  derivation: versioned hashes ──L1Client::blobs (the beacon API)──► blobs, each checked
//!           against its versioned hash ──decode_blob──► L1 transaction data ──► frames
//! ```
//!
//! The layout is keel's own, simpler than the OP Stack's 4-into-3 packing: byte 0 of each of
//! the 4,096 field elements is zero (so every element is below the BLS modulus), and the other
//! 31 bytes, in order, carry a 4-byte big-endian length, the data, then zeros. That gives up
//! 2.4 % of the blob (126,972 bytes of data against the OP Stack's 130,044) for a reader of a
//! few lines. No crate does this layout: alloy's `SimpleCoder` prefixes 8-byte lengths and
//! spans blobs, and says it is not meant for production.

use crate::codec::{CodecError, DropReason};
use alloy::eips::eip4844::{
    AsCkzg, BYTES_PER_BLOB, Blob, FIELD_ELEMENTS_PER_BLOB, kzg_to_versioned_hash,
};
use alloy::eips::eip7594::BlobTransactionSidecarEip7594;
use alloy::primitives::B256;

/// Bytes of one field element.
const FIELD_ELEMENT_BYTES: usize = 32;
/// Bytes of data each field element carries (its first byte stays zero).
const FIELD_ELEMENT_DATA_BYTES: usize = FIELD_ELEMENT_BYTES - 1;
/// Bytes of the length prefix.
const LENGTH_BYTES: usize = 4;
/// The most data one blob carries.
pub const BLOB_DATA_BYTES_MAX: usize =
    FIELD_ELEMENTS_PER_BLOB as usize * FIELD_ELEMENT_DATA_BYTES - LENGTH_BYTES;
const _: () = assert!(FIELD_ELEMENTS_PER_BLOB as usize * FIELD_ELEMENT_BYTES == BYTES_PER_BLOB);
const _: () = assert!(BLOB_DATA_BYTES_MAX == 126_972);

/// Why data cannot go in a blob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    /// More than a blob holds.
    #[error("{bytes} bytes do not fit one blob (at most {BLOB_DATA_BYTES_MAX})")]
    TooLarge {
        /// The data's length.
        bytes: usize,
    },
    /// The KZG library refused the blob (it cannot, for a blob this module made).
    #[error("KZG: {0}")]
    Kzg(String),
}

/// `data` laid out in one blob.
pub fn encode_blob(data: &[u8]) -> Result<Box<Blob>, BlobError> {
    if data.len() > BLOB_DATA_BYTES_MAX {
        return Err(BlobError::TooLarge { bytes: data.len() });
    }
    let length = u32::try_from(data.len()).expect("at most BLOB_DATA_BYTES_MAX");
    let mut stream = Vec::with_capacity(LENGTH_BYTES + data.len());
    stream.extend_from_slice(&length.to_be_bytes());
    stream.extend_from_slice(data);
    let mut blob = Box::new(Blob::ZERO);
    for (element, chunk) in blob
        .chunks_mut(FIELD_ELEMENT_BYTES)
        .zip(stream.chunks(FIELD_ELEMENT_DATA_BYTES))
    {
        element[1..1 + chunk.len()].copy_from_slice(chunk);
    }
    Ok(blob)
}

/// The data of one blob. Strict, so that a blob has exactly one reading: every field
/// element's first byte zero, the length within [`BLOB_DATA_BYTES_MAX`], zeros after the data.
pub fn decode_blob(blob: &[u8]) -> Result<Vec<u8>, CodecError> {
    let bad = |detail: String| CodecError {
        reason: DropReason::BadBlob,
        detail,
    };
    if blob.len() != BYTES_PER_BLOB {
        return Err(bad(format!(
            "a blob of {} bytes, not {BYTES_PER_BLOB}",
            blob.len()
        )));
    }
    let mut stream = Vec::with_capacity(BLOB_DATA_BYTES_MAX + LENGTH_BYTES);
    for (index, element) in blob.chunks(FIELD_ELEMENT_BYTES).enumerate() {
        if element[0] != 0 {
            return Err(bad(format!(
                "blob field element {index} has a non-zero first byte"
            )));
        }
        stream.extend_from_slice(&element[1..]);
    }
    let length = u32::from_be_bytes(stream[..LENGTH_BYTES].try_into().expect("4 bytes")) as usize;
    if length > BLOB_DATA_BYTES_MAX {
        return Err(bad(format!(
            "blob data length {length} is over {BLOB_DATA_BYTES_MAX}"
        )));
    }
    let end = LENGTH_BYTES + length;
    if stream[end..].iter().any(|byte| *byte != 0) {
        return Err(bad("blob has bytes after its data".into()));
    }
    stream.truncate(end);
    stream.drain(..LENGTH_BYTES);
    Ok(stream)
}

/// The sidecar of one blob carrying `data`: the blob, its KZG commitment and its EIP-7594
/// cell proofs (what an Osaka L1's pool asks for).
pub fn sidecar(data: &[u8]) -> Result<BlobTransactionSidecarEip7594, BlobError> {
    let blob = encode_blob(data)?;
    BlobTransactionSidecarEip7594::try_from_blobs(vec![*blob])
        .map_err(|error| BlobError::Kzg(error.to_string()))
}

/// The versioned hash of `blob` (EIP-4844: 0x01 ++ sha256(commitment)[1..]), from its KZG
/// commitment: what derivation checks a blob from the beacon API against.
pub fn versioned_hash(blob: &Blob) -> Result<B256, BlobError> {
    let settings = alloy::eips::eip4844::env_settings::EnvKzgSettings::Default;
    let commitment = settings
        .get()
        .blob_to_kzg_commitment(blob.as_ckzg())
        .map_err(|error| BlobError::Kzg(error.to_string()))?;
    Ok(kzg_to_versioned_hash(commitment.to_bytes().as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_round_trips_through_a_blob() {
        for length in [0, 1, 30, 31, 32, 1_000, BLOB_DATA_BYTES_MAX] {
            let data: Vec<u8> = (0..length).map(|index| (index % 251) as u8 + 1).collect();
            let blob = encode_blob(&data).unwrap();
            assert_eq!(
                decode_blob(blob.as_slice()).unwrap(),
                data,
                "{length} bytes"
            );
        }
        assert_eq!(
            encode_blob(&vec![1; BLOB_DATA_BYTES_MAX + 1]).unwrap_err(),
            BlobError::TooLarge {
                bytes: BLOB_DATA_BYTES_MAX + 1
            }
        );
    }

    #[test]
    fn malformed_blobs_are_refused_not_misread() {
        let blob = encode_blob(b"frames").unwrap();
        let mut high = *blob;
        high[32 * 7] = 1;
        assert!(decode_blob(high.as_slice()).is_err(), "a first byte set");
        let mut trailing = *blob;
        trailing[32 * 100 + 5] = 9;
        assert!(
            decode_blob(trailing.as_slice()).is_err(),
            "bytes after the data"
        );
        let mut long = *blob;
        long[1..5].copy_from_slice(&(BLOB_DATA_BYTES_MAX as u32 + 1).to_be_bytes());
        assert!(
            decode_blob(long.as_slice()).is_err(),
            "a length past the blob"
        );
        assert!(decode_blob(&blob[..1_000]).is_err(), "a short blob");
    }

    #[test]
    fn the_sidecar_commits_to_the_blob_it_carries() {
        let sidecar = sidecar(b"frames").unwrap();
        assert_eq!(sidecar.blobs.len(), 1);
        let hash = versioned_hash(&sidecar.blobs[0]).unwrap();
        assert_eq!(Some(hash), sidecar.versioned_hashes().next());
        assert_eq!(hash.0[0], 1, "version 0x01: KZG");
        assert_eq!(
            decode_blob(sidecar.blobs[0].as_slice()).unwrap(),
            b"frames".to_vec()
        );
    }
}
