//! The channel assembler: frames in, whole channels out, under Holocene's strict order
//! (docs/protocol.md, "Strict order"). kona calls this stage the `ChannelAssembler`.
//!
//! ```text
//!  frames (batcher's transactions, in L1 order) ─► ChannelAssembler ─► complete channels
//!                                                     one open channel at a time
//! ```
//!
//! - Frame 0 opens a channel, dropping one still open (`ChannelReplaced`).
//! - Any other frame must continue the open channel in order, else it is dropped
//!   (`FrameOutOfOrder`).
//! - The last frame closes the channel and hands it out whole.
//! - A channel open for more than the channel timeout is dropped (`ChannelTimeout`), and so
//!   is one that grows past `limits::CHANNEL_BYTES_MAX` or `limits::CHANNEL_FRAMES_MAX`.

use crate::codec::{ChannelId, DropReason, Frame};
use keel_primitives::limits;
use serde::{Deserialize, Serialize};

/// The channel being assembled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OpenChannel {
    pub(crate) id: ChannelId,
    /// The L1 block of its first frame.
    pub(crate) opened_at: u64,
    /// Its bytes so far, frames joined.
    pub(crate) data: Vec<u8>,
    /// The number the next frame must have.
    pub(crate) next_frame: u16,
}

/// What one frame did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Assembled {
    /// The frame joined the open channel (or opened one).
    Pending,
    /// The frame closed its channel: its bytes.
    Complete(Vec<u8>),
}

/// Frames to channels, one open channel at a time.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChannelAssembler {
    pub(crate) open: Option<OpenChannel>,
}

impl ChannelAssembler {
    /// Drops the open channel if it timed out by L1 block `l1_block`.
    pub(crate) fn expire(&mut self, l1_block: u64, timeout: u64) -> Option<DropReason> {
        let expired = self
            .open
            .as_ref()
            .is_some_and(|open| l1_block > open.opened_at + timeout);
        if expired {
            self.open = None;
            return Some(DropReason::ChannelTimeout);
        }
        None
    }

    /// Takes one frame from L1 block `l1_block`. Returns what it did, and any drop it caused.
    pub(crate) fn push(
        &mut self,
        frame: Frame,
        l1_block: u64,
        timeout: u64,
    ) -> (Assembled, Option<DropReason>) {
        let mut dropped = self.expire(l1_block, timeout);
        if frame.number == 0 {
            if self.open.is_some() {
                dropped = Some(DropReason::ChannelReplaced);
            }
            self.open = Some(OpenChannel {
                id: frame.channel_id,
                opened_at: l1_block,
                data: Vec::new(),
                next_frame: 0,
            });
        }
        let Some(open) = self.open.as_mut() else {
            return (Assembled::Pending, Some(DropReason::FrameOutOfOrder));
        };
        if open.id != frame.channel_id || open.next_frame != frame.number {
            return (Assembled::Pending, Some(DropReason::FrameOutOfOrder));
        }
        if open.data.len() + frame.data.len() > limits::CHANNEL_BYTES_MAX
            || usize::from(frame.number) + 1 > limits::CHANNEL_FRAMES_MAX
        {
            self.open = None;
            return (Assembled::Pending, Some(DropReason::ChannelTooLarge));
        }
        open.data.extend_from_slice(&frame.data);
        open.next_frame += 1;
        if frame.is_last {
            let open = self.open.take().expect("just appended to it");
            return (Assembled::Complete(open.data), dropped);
        }
        (Assembled::Pending, dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::Bytes;

    fn frame(id: u8, number: u16, data: &'static [u8], is_last: bool) -> Frame {
        Frame {
            channel_id: [id; 16],
            number,
            data: Bytes::from_static(data),
            is_last,
        }
    }

    #[test]
    fn frames_assemble_in_strict_order_only() {
        let mut assembler = ChannelAssembler::default();
        // In order: a channel of two frames.
        assert_eq!(
            assembler.push(frame(1, 0, b"ab", false), 10, 50),
            (Assembled::Pending, None)
        );
        assert_eq!(
            assembler.push(frame(1, 1, b"cd", true), 11, 50),
            (Assembled::Complete(b"abcd".to_vec()), None)
        );
        // A frame with no open channel, or out of order, is dropped.
        assert_eq!(
            assembler.push(frame(2, 1, b"x", true), 12, 50),
            (Assembled::Pending, Some(DropReason::FrameOutOfOrder))
        );
        assembler.push(frame(2, 0, b"x", false), 12, 50);
        assert_eq!(
            assembler.push(frame(2, 2, b"y", true), 12, 50),
            (Assembled::Pending, Some(DropReason::FrameOutOfOrder))
        );
        assert_eq!(
            assembler.push(frame(3, 1, b"y", true), 12, 50),
            (Assembled::Pending, Some(DropReason::FrameOutOfOrder)),
            "another channel's frame"
        );
        // A new first frame replaces the open channel.
        assert_eq!(
            assembler.push(frame(3, 0, b"z", true), 13, 50),
            (
                Assembled::Complete(b"z".to_vec()),
                Some(DropReason::ChannelReplaced)
            )
        );
        // A channel that outlives the timeout is dropped; its next frame finds none open.
        assembler.push(frame(4, 0, b"a", false), 20, 50);
        assert_eq!(
            assembler.push(frame(4, 1, b"b", true), 71, 50),
            (Assembled::Pending, Some(DropReason::FrameOutOfOrder))
        );
        assert_eq!(assembler.open, None);
    }
}
