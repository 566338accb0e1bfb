//! A Raft snapshot's data: the chain store's state image and the pool's pending transactions,
//! so that a node catching up by snapshot holds what the cluster accepted and has not included
//! ("accepted means kept", docs/cluster.md).
//!
//! Format: `"KEELSNP1"`, the image (u64 big-endian length, then its bytes), then the pending
//! transactions (u64 big-endian length, then keel's codec of a list of `IntakeTransaction`).
//! Data that starts with the image's own magic instead (`KEELIMG1`: what builds before this
//! format sent) is an image with nothing pending. Hand-written: two length-prefixed parts need
//! no framing crate.

use crate::IntakeTransaction;
use crate::codec::{self, CodecError};

const MAGIC: &[u8; 8] = b"KEELSNP1";

/// A snapshot's data, read.
#[derive(Debug)]
pub struct SnapshotData<'a> {
    /// The state image (`keel_storage::Store::import` reads it).
    pub image: &'a [u8],
    /// What the pool that built it held, each sender's in nonce order.
    pub pending: Vec<IntakeTransaction>,
}

/// Why a snapshot's data does not read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotDataError {
    /// Neither this format's magic nor a bare image's.
    #[error("not a keel snapshot")]
    NotASnapshot,
    /// A length runs past the end, or bytes follow the last part.
    #[error("snapshot data is truncated or has trailing bytes")]
    Framing,
    /// The pending transactions do not decode.
    #[error("snapshot pending transactions: {0}")]
    Pending(#[from] CodecError),
}

/// The data of a snapshot of `image` with `pending`.
pub fn encode_snapshot(image: &[u8], pending: &[IntakeTransaction]) -> Result<Vec<u8>, CodecError> {
    let pending = codec::encode(pending)?;
    let mut data = Vec::with_capacity(8 + 16 + image.len() + pending.len());
    data.extend_from_slice(MAGIC);
    data.extend_from_slice(&(image.len() as u64).to_be_bytes());
    data.extend_from_slice(image);
    data.extend_from_slice(&(pending.len() as u64).to_be_bytes());
    data.extend_from_slice(&pending);
    Ok(data)
}

/// Reads a snapshot's data: this format, or a bare image from an earlier build.
pub fn decode_snapshot(data: &[u8]) -> Result<SnapshotData<'_>, SnapshotDataError> {
    // The state image's own magic: data of an earlier build, a bare image.
    if data.starts_with(keel_storage::STATE_IMAGE_MAGIC) {
        return Ok(SnapshotData {
            image: data,
            pending: Vec::new(),
        });
    }
    let rest = data
        .strip_prefix(MAGIC.as_slice())
        .ok_or(SnapshotDataError::NotASnapshot)?;
    let (image, rest) = part(rest)?;
    let (pending, rest) = part(rest)?;
    if !rest.is_empty() {
        return Err(SnapshotDataError::Framing);
    }
    Ok(SnapshotData {
        image,
        pending: codec::decode(pending)?,
    })
}

/// A length-prefixed part and what follows it.
fn part(bytes: &[u8]) -> Result<(&[u8], &[u8]), SnapshotDataError> {
    let (length, rest) = bytes
        .split_first_chunk::<8>()
        .ok_or(SnapshotDataError::Framing)?;
    let length = usize::try_from(u64::from_be_bytes(*length))
        .ok()
        .filter(|length| *length <= rest.len())
        .ok_or(SnapshotDataError::Framing)?;
    Ok(rest.split_at(length))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> Vec<IntakeTransaction> {
        (0..3u8)
            .map(|byte| IntakeTransaction {
                raw: vec![0x02, byte, 7].into(),
                sender: alloy::primitives::Address::repeat_byte(byte),
            })
            .collect()
    }

    /// A snapshot carries its pending transactions; an earlier build's bare image reads as a
    /// snapshot with none; anything cut short, extended or foreign is refused, never misread.
    #[test]
    fn snapshot_data_round_trips_reads_bare_images_and_refuses_damage() {
        let image = b"KEELIMG1 and the rest of an image".to_vec();
        let data = encode_snapshot(&image, &pending()).unwrap();
        let read = decode_snapshot(&data).unwrap();
        assert_eq!(read.image, image.as_slice());
        assert_eq!(read.pending, pending());

        let bare = decode_snapshot(&image).unwrap();
        assert_eq!(bare.image, image.as_slice());
        assert!(bare.pending.is_empty());

        for cut in 1..data.len() {
            assert!(decode_snapshot(&data[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = data.clone();
        longer.push(0);
        assert!(matches!(
            decode_snapshot(&longer),
            Err(SnapshotDataError::Framing)
        ));
        assert!(matches!(
            decode_snapshot(b"KEELSNP2........"),
            Err(SnapshotDataError::NotASnapshot)
        ));
    }
}
