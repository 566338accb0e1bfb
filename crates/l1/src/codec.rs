//! Frames and channels: how batches travel in L1 transactions, in the OP Stack's format
//! (docs/protocol.md, "Channels and frames").
//!
//! ```text
//! L1 transaction data = derivation_version (0x00) ++ frame ++ frame ++ ...
//! frame   = channel_id (16) ++ frame_number (u16 BE) ++ frame_data_length (u32 BE)
//!           ++ frame_data ++ is_last (1 byte: 0 or 1)
//! channel = compression (1 byte) ++ compressed (the RLP batches, one after another)
//! ```
//!
//! Every length is bounded before anything is allocated: a frame's data by
//! `limits::FRAME_BYTES_MAX`, a channel by `limits::CHANNEL_BYTES_MAX`, and what a channel
//! decompresses to by `limits::CHANNEL_DECOMPRESSED_BYTES_MAX` (a decompression bomb stops
//! there, having allocated at most that).

use alloy::primitives::Bytes;
use keel_primitives::limits;
use std::io::Read;

/// The first byte of every batch-inbox transaction's data.
pub const DERIVATION_VERSION: u8 = 0;
/// Bytes of a frame besides its data.
pub const FRAME_OVERHEAD_BYTES: usize = 16 + 2 + 4 + 1;

/// Why derivation dropped some L1 input: the label of `keel_derivation_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// A batch-inbox transaction from another key than the batcher.
    NotBatcher,
    /// A batch-inbox transaction that failed on the L1.
    Failed,
    /// Frame bytes that do not parse (truncated, a bad version, a bad flag, oversize).
    BadFrame,
    /// A frame out of Holocene's strict order.
    FrameOutOfOrder,
    /// A channel that outgrew `limits::CHANNEL_BYTES_MAX` or `limits::CHANNEL_FRAMES_MAX`.
    ChannelTooLarge,
    /// A channel whose frames took longer than the channel timeout.
    ChannelTimeout,
    /// A channel replaced by a new one before its last frame.
    ChannelReplaced,
    /// A channel that does not decompress, or decompresses past its bound.
    BadCompression,
    /// A channel payload that does not decode as batches.
    BadBatch,
    /// A batch for blocks already derived (an earlier copy landed first).
    BatchPast,
    /// A batch that does not continue the safe head (a gap, or another parent).
    BatchFuture,
    /// A batch that breaks a derivation rule (origin, timestamps, windows, execution).
    BatchInvalid,
    /// A force-inbox payload that does not decode as a signed L2 transaction.
    BadForcedPayload,
    /// A blob that does not follow keel's blob layout (docs/protocol.md, "Blobs").
    BadBlob,
}

impl DropReason {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::NotBatcher => "not_batcher",
            Self::Failed => "failed_on_l1",
            Self::BadFrame => "bad_frame",
            Self::FrameOutOfOrder => "frame_out_of_order",
            Self::ChannelTooLarge => "channel_too_large",
            Self::ChannelTimeout => "channel_timeout",
            Self::ChannelReplaced => "channel_replaced",
            Self::BadCompression => "bad_compression",
            Self::BadBatch => "bad_batch",
            Self::BatchPast => "batch_past",
            Self::BatchFuture => "batch_future",
            Self::BatchInvalid => "batch_invalid",
            Self::BadForcedPayload => "bad_forced_payload",
            Self::BadBlob => "bad_blob",
        }
    }
}

/// Bytes from the L1 that derivation refuses: what, and why. Never retried: the same bytes
/// give the same answer on every node, which drops them alike and counts them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", reason.label())]
pub struct CodecError {
    /// The class, for the metric.
    pub reason: DropReason,
    /// What exactly.
    pub detail: String,
}

impl CodecError {
    pub(crate) fn new(reason: DropReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// A channel's id: 16 bytes the batcher picks at random.
pub type ChannelId = [u8; 16];

/// One frame: a piece of a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The channel it belongs to.
    pub channel_id: ChannelId,
    /// Its place in the channel, from 0.
    pub number: u16,
    /// Its piece of the channel's bytes.
    pub data: Bytes,
    /// Whether it is the channel's last.
    pub is_last: bool,
}

impl Frame {
    /// Appends the frame's encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        assert!(
            self.data.len() <= limits::FRAME_BYTES_MAX,
            "the batcher cuts frames within the bound"
        );
        out.extend_from_slice(&self.channel_id);
        out.extend_from_slice(&self.number.to_be_bytes());
        out.extend_from_slice(&(self.data.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.data);
        out.push(u8::from(self.is_last));
    }

    /// The data of an L1 transaction carrying `frames`.
    pub fn encode_all(frames: &[Frame]) -> Bytes {
        let mut out = vec![DERIVATION_VERSION];
        for frame in frames {
            frame.encode(&mut out);
        }
        out.into()
    }

    /// The frames of one batch-inbox transaction's data. One bad frame refuses them all (the
    /// OP Stack's rule: a transaction is read whole or not at all).
    pub fn parse_all(data: &[u8]) -> Result<Vec<Frame>, CodecError> {
        let bad = |detail: String| Err(CodecError::new(DropReason::BadFrame, detail));
        let Some((&version, mut rest)) = data.split_first() else {
            return bad("empty transaction data".into());
        };
        if version != DERIVATION_VERSION {
            return bad(format!("derivation version {version}"));
        }
        let mut frames = Vec::new();
        while !rest.is_empty() {
            if rest.len() < FRAME_OVERHEAD_BYTES {
                return bad(format!("{} bytes left, less than a frame", rest.len()));
            }
            let channel_id: ChannelId = rest[..16].try_into().expect("16 bytes");
            let number = u16::from_be_bytes(rest[16..18].try_into().expect("2 bytes"));
            let length = u32::from_be_bytes(rest[18..22].try_into().expect("4 bytes")) as usize;
            if length > limits::FRAME_BYTES_MAX {
                return bad(format!(
                    "frame data of {length} bytes, over {}",
                    limits::FRAME_BYTES_MAX
                ));
            }
            let body = &rest[22..];
            if body.len() < length + 1 {
                return bad(format!(
                    "frame data of {length} bytes, {} left",
                    body.len().saturating_sub(1)
                ));
            }
            let is_last = match body[length] {
                0 => false,
                1 => true,
                other => return bad(format!("is_last byte {other}")),
            };
            frames.push(Frame {
                channel_id,
                number,
                data: Bytes::copy_from_slice(&body[..length]),
                is_last,
            });
            rest = &body[length + 1..];
        }
        if frames.is_empty() {
            return bad("no frame".into());
        }
        Ok(frames)
    }
}

/// How a channel's payload is compressed: its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Brotli (the OP Stack's channel version byte 1, since Fjord).
    Brotli,
    /// Zstandard, keel's choice (BENCHMARKS.md, "Batch compression", says why).
    Zstd,
}

impl Compression {
    /// The channel's first byte.
    pub fn byte(self) -> u8 {
        match self {
            Self::Brotli => 1,
            Self::Zstd => 2,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Brotli),
            2 => Some(Self::Zstd),
            _ => None,
        }
    }
}

/// What the batcher writes: zstd at this level (BENCHMARKS.md).
pub const ZSTD_LEVEL: i32 = 3;
/// Brotli's quality when keel writes it (the benchmark's comparison): the OP batcher's.
pub const BROTLI_QUALITY: u32 = 10;
/// Brotli's window (log2 bytes), as the OP batcher's.
const BROTLI_WINDOW_LOG: u32 = 22;

/// Compresses a channel's payload: the compression byte, then the compressed bytes.
pub fn compress(compression: Compression, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![compression.byte()];
    match compression {
        Compression::Zstd => {
            let compressed =
                zstd::bulk::compress(payload, ZSTD_LEVEL).expect("zstd compresses any bytes");
            out.extend_from_slice(&compressed);
        }
        Compression::Brotli => {
            let mut writer =
                brotli::CompressorWriter::new(&mut out, 4096, BROTLI_QUALITY, BROTLI_WINDOW_LOG);
            std::io::Write::write_all(&mut writer, payload).expect("writes to a Vec");
            drop(writer);
        }
    }
    out
}

/// Decompresses a channel, refusing one that is empty, names an unknown algorithm, is
/// corrupt, or grows past `limits::CHANNEL_DECOMPRESSED_BYTES_MAX`.
pub fn decompress(channel: &[u8]) -> Result<Vec<u8>, CodecError> {
    decompress_bounded(channel, limits::CHANNEL_DECOMPRESSED_BYTES_MAX)
}

pub(crate) fn decompress_bounded(channel: &[u8], bound: usize) -> Result<Vec<u8>, CodecError> {
    let bad = |detail: String| CodecError::new(DropReason::BadCompression, detail);
    let Some((&byte, compressed)) = channel.split_first() else {
        return Err(bad("an empty channel".into()));
    };
    let compression =
        Compression::from_byte(byte).ok_or_else(|| bad(format!("compression byte {byte}")))?;
    let reader: Box<dyn Read + '_> = match compression {
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(compressed)
                .map_err(|error| bad(format!("zstd: {error}")))?,
        ),
        Compression::Brotli => Box::new(brotli::Decompressor::new(compressed, 4096)),
    };
    // One byte past the bound tells a bomb from a payload of exactly the bound.
    let mut out = Vec::new();
    reader
        .take(bound as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|error| bad(format!("{compression:?}: {error}")))?;
    if out.len() > bound {
        return Err(bad(format!("decompresses past {bound} bytes")));
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloy::consensus::{TxEip1559, TxEnvelope, TypedTransaction};
    use alloy::primitives::{Address, TxKind, U256};
    use alloy::signers::local::PrivateKeySigner;

    pub(crate) fn transfer(signer: &PrivateKeySigner, nonce: u64) -> TxEnvelope {
        keel_primitives::sign_transaction(
            signer,
            TypedTransaction::Eip1559(TxEip1559 {
                chain_id: keel_primitives::DEV_CHAIN_ID,
                nonce,
                gas_limit: 21_000,
                max_fee_per_gas: 2_000_000_000,
                max_priority_fee_per_gas: 1_000_000,
                to: TxKind::Call(Address::repeat_byte(0x42)),
                value: U256::from(1),
                ..Default::default()
            }),
        )
    }

    #[test]
    fn frames_round_trip_and_one_bad_frame_refuses_the_transaction() {
        let frames = vec![
            Frame {
                channel_id: [7; 16],
                number: 0,
                data: Bytes::from_static(b"hello"),
                is_last: false,
            },
            Frame {
                channel_id: [7; 16],
                number: 1,
                data: Bytes::new(),
                is_last: true,
            },
        ];
        let data = Frame::encode_all(&frames);
        assert_eq!(Frame::parse_all(&data).unwrap(), frames);
        let mut bad_flag = data.to_vec();
        *bad_flag.last_mut().unwrap() = 2;
        let table: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "empty"),
            (vec![1], "derivation version 1"),
            (vec![0], "no frame"),
            (data[..data.len() - 1].to_vec(), "left"),
            (bad_flag, "is_last byte 2"),
            (
                {
                    let mut oversize = vec![0u8; 1 + 18];
                    oversize.extend_from_slice(&(2_000_000u32).to_be_bytes());
                    oversize.push(0);
                    oversize
                },
                "over 1000000",
            ),
        ];
        for (bytes, expected) in table {
            let error = Frame::parse_all(&bytes).unwrap_err();
            assert_eq!(error.reason, DropReason::BadFrame);
            assert!(error.detail.contains(expected), "{error}");
        }
    }

    #[test]
    fn channels_decompress_within_their_bound_only() {
        let payload: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_be_bytes())
            .collect();
        for compression in [Compression::Zstd, Compression::Brotli] {
            let channel = compress(compression, &payload);
            assert!(
                channel.len() < payload.len() / 4,
                "{compression:?} compresses"
            );
            assert_eq!(decompress(&channel).unwrap(), payload);
            // A bomb: the same bytes with a bound below their size.
            let error = decompress_bounded(&channel, payload.len() - 1).unwrap_err();
            assert_eq!(error.reason, DropReason::BadCompression);
            assert_eq!(
                decompress_bounded(&channel, payload.len()).unwrap(),
                payload
            );
            // Truncated or corrupt.
            assert!(decompress(&channel[..channel.len() / 2]).is_err());
        }
        assert!(decompress(&[]).is_err());
        assert!(
            decompress(&[9, 1, 2, 3])
                .unwrap_err()
                .detail
                .contains("byte 9")
        );
        // A real bomb: 200 MB of zeros compress to a few KB and stop at the bound.
        let zeros = vec![0u8; limits::CHANNEL_DECOMPRESSED_BYTES_MAX + 1];
        let bomb = compress(Compression::Zstd, &zeros);
        assert!(bomb.len() < 64 * 1024);
        drop(zeros);
        assert!(decompress(&bomb).unwrap_err().detail.contains("past"));
    }
}
