//! The binary encoding of everything Raft stores and sends: log entries, the vote, log ids,
//! membership, and peer requests and answers.
//!
//! postcard (compact, serde, no schema) with a leading format byte, so a node that finds
//! bytes of another format refuses them by name instead of misreading them. Blocks travel as
//! their RLP header and body (`Proposal`), raw bytes here rather than hex in JSON: half
//! the size on disk and on the wire, and snapshot images (`Vec<u8>`) are no longer a JSON array
//! of numbers.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The first byte of every encoded value.
pub const FORMAT: u8 = 2;

/// The media type of peer request and answer bodies.
pub const MEDIA_TYPE: &str = "application/x-keel-raft";

/// Why bytes could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Encoding failed.
    #[error("encoding: {0}")]
    Encode(postcard::Error),
    /// The bytes are not this format or do not decode.
    #[error("decoding: {0}")]
    Decode(String),
}

/// `value` as bytes: the format byte, then postcard.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    postcard::to_extend(value, vec![FORMAT]).map_err(CodecError::Encode)
}

/// The value `bytes` encode.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes.split_first() {
        Some((&FORMAT, rest)) => {
            postcard::from_bytes(rest).map_err(|error| CodecError::Decode(error.to_string()))
        }
        Some((other, _)) => Err(CodecError::Decode(format!(
            "format {other} where {FORMAT} was expected"
        ))),
        None => Err(CodecError::Decode("no bytes".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Proposal, TypeConfig};
    use keel_primitives::ChainSpec;
    use openraft::{Entry, EntryPayload, LogId, Vote};

    #[test]
    fn entries_and_votes_round_trip_and_foreign_bytes_are_refused() {
        let chain = ChainSpec::dev();
        let genesis = chain.genesis_block();
        let entry: Entry<TypeConfig> = Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(3, 1), 42),
            payload: EntryPayload::Normal(Proposal::Block(genesis.clone())),
        };
        let bytes = encode(&entry).unwrap();
        let back: Entry<TypeConfig> = decode(&bytes).unwrap();
        assert_eq!(back.log_id, entry.log_id);
        match back.payload {
            EntryPayload::Normal(Proposal::Block(block)) => assert_eq!(block, genesis),
            other => panic!("payload changed: {other:?}"),
        }
        // Smaller than the JSON it replaces.
        assert!(bytes.len() * 2 < serde_json::to_vec(&entry).unwrap().len());
        let vote = Vote::new(7, 2u64);
        assert_eq!(decode::<Vote<u64>>(&encode(&vote).unwrap()).unwrap(), vote);

        assert!(matches!(
            decode::<Vote<u64>>(br#"{"leader_id":{}}"#),
            Err(CodecError::Decode(message)) if message.contains("format 123")
        ));
        assert!(decode::<Vote<u64>>(&[]).is_err());
        assert!(decode::<Vote<u64>>(&[FORMAT, 0xff]).is_err());
    }
}
