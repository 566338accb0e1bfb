//! The beacon API, for the blobs of blob batches: `GET /eth/v1/beacon/blobs/{block_id}`
//! with `versioned_hashes`, the endpoint beacon nodes serve since Fusaka (and anvil too).
//!
//! A beacon node names a block by its slot: `(timestamp - genesis_time) / SECONDS_PER_SLOT`,
//! from `/eth/v1/beacon/genesis` and `/eth/v1/config/spec` (the OP Stack's rule). anvil
//! serves no spec and names blocks by their execution block hash instead, so an endpoint
//! without a spec is asked by hash. Either way every blob is checked against the versioned
//! hash the L1 transaction committed to, so a wrong answer is refused, never read.

use crate::{L1BlockRef, L1Error, bounded};
use alloy::eips::eip4844::Blob;
use alloy::primitives::B256;
use keel_primitives::limits;

/// How the endpoint names blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockNaming {
    /// By slot, from the genesis time and the slot length.
    Slot {
        genesis_time: u64,
        seconds_per_slot: u64,
    },
    /// By execution block hash (anvil).
    ExecutionHash,
}

/// A beacon API endpoint.
#[derive(Debug)]
pub struct Beacon {
    url: String,
    http: reqwest::Client,
    naming: tokio::sync::OnceCell<BlockNaming>,
}

fn transport(doing: &'static str, error: impl std::fmt::Display) -> L1Error {
    L1Error::Transport {
        doing,
        reason: error.to_string(),
    }
}

fn malformed(doing: &'static str, reason: impl Into<String>) -> L1Error {
    L1Error::Malformed {
        doing,
        reason: reason.into(),
    }
}

/// A number the beacon API writes as a decimal string.
fn decimal(value: &serde_json::Value, doing: &'static str, what: &str) -> Result<u64, L1Error> {
    value
        .as_str()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| malformed(doing, format!("{what} is not a decimal string: {value}")))
}

impl Beacon {
    /// The endpoint at `url` (`http://host:port`, no path).
    pub fn new(url: &str) -> Self {
        Self {
            url: url.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            naming: tokio::sync::OnceCell::new(),
        }
    }

    /// The endpoint's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    async fn get(
        &self,
        doing: &'static str,
        path: &str,
    ) -> Result<(reqwest::StatusCode, serde_json::Value), L1Error> {
        bounded(doing, async {
            let answer = self
                .http
                .get(format!("{}{path}", self.url))
                .header("accept", "application/json")
                .send()
                .await
                .map_err(|error| transport(doing, error))?;
            let status = answer.status();
            let bytes = answer
                .bytes()
                .await
                .map_err(|error| transport(doing, error))?;
            if bytes.len() > limits::BEACON_ANSWER_BYTES_MAX {
                return Err(malformed(
                    doing,
                    format!("an answer of {} bytes", bytes.len()),
                ));
            }
            let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
            Ok((status, body))
        })
        .await
    }

    async fn naming(&self) -> Result<BlockNaming, L1Error> {
        self.naming
            .get_or_try_init(|| async {
                let doing = "reading the beacon spec";
                let (status, spec) = self.get(doing, "/eth/v1/config/spec").await?;
                if status == reqwest::StatusCode::NOT_FOUND {
                    return Ok(BlockNaming::ExecutionHash);
                }
                if !status.is_success() {
                    return Err(malformed(doing, format!("HTTP {status}: {spec}")));
                }
                let seconds_per_slot =
                    decimal(&spec["data"]["SECONDS_PER_SLOT"], doing, "SECONDS_PER_SLOT")?;
                if seconds_per_slot == 0 {
                    return Err(malformed(doing, "SECONDS_PER_SLOT is 0"));
                }
                let doing = "reading the beacon genesis";
                let (status, genesis) = self.get(doing, "/eth/v1/beacon/genesis").await?;
                if !status.is_success() {
                    return Err(malformed(doing, format!("HTTP {status}: {genesis}")));
                }
                let genesis_time =
                    decimal(&genesis["data"]["genesis_time"], doing, "genesis_time")?;
                Ok(BlockNaming::Slot {
                    genesis_time,
                    seconds_per_slot,
                })
            })
            .await
            .copied()
    }

    /// The blobs of `block` with versioned hashes `hashes`, in that order, each checked.
    pub async fn blobs(
        &self,
        block: &L1BlockRef,
        hashes: &[B256],
    ) -> Result<Vec<Box<Blob>>, L1Error> {
        let doing = "GET /eth/v1/beacon/blobs";
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        if hashes.len() > limits::BEACON_BLOBS_PER_ANSWER_MAX {
            return Err(malformed(doing, format!("{} blobs asked", hashes.len())));
        }
        let block_id = match self.naming().await? {
            BlockNaming::Slot {
                genesis_time,
                seconds_per_slot,
            } => {
                let since = block.timestamp.checked_sub(genesis_time).ok_or_else(|| {
                    malformed(
                        doing,
                        format!("L1 block {} is before the beacon genesis", block.number),
                    )
                })?;
                (since / seconds_per_slot).to_string()
            }
            BlockNaming::ExecutionHash => block.hash.to_string(),
        };
        let filter: Vec<String> = hashes.iter().map(ToString::to_string).collect();
        let path = format!(
            "/eth/v1/beacon/blobs/{block_id}?versioned_hashes={}",
            filter.join(",")
        );
        let (status, body) = self.get(doing, &path).await?;
        if !status.is_success() {
            return Err(malformed(
                doing,
                format!(
                    "HTTP {status} for L1 block {} ({block_id}): {body}",
                    block.number
                ),
            ));
        }
        let Some(data) = body["data"].as_array() else {
            return Err(malformed(doing, "no data array"));
        };
        if data.len() > limits::BEACON_BLOBS_PER_ANSWER_MAX {
            return Err(malformed(doing, format!("{} blobs answered", data.len())));
        }
        // Match by versioned hash: an endpoint may ignore the filter and answer every blob
        // of the block, in its own order.
        let mut found: Vec<Option<Box<Blob>>> = vec![None; hashes.len()];
        for entry in data {
            let text = entry
                .as_str()
                .ok_or_else(|| malformed(doing, "a blob is not a string"))?;
            let bytes = alloy::primitives::hex::decode(text)
                .map_err(|error| malformed(doing, format!("a blob is not hex: {error}")))?;
            let blob = Blob::try_from(bytes.as_slice())
                .map(Box::new)
                .map_err(|_| malformed(doing, format!("a blob of {} bytes", bytes.len())))?;
            let hash = crate::blob::versioned_hash(&blob)
                .map_err(|error| malformed(doing, error.to_string()))?;
            for (slot, wanted) in found.iter_mut().zip(hashes) {
                if *wanted == hash && slot.is_none() {
                    *slot = Some(blob.clone());
                }
            }
        }
        found
            .into_iter()
            .zip(hashes)
            .map(|(blob, hash)| {
                blob.ok_or_else(|| {
                    malformed(
                        doing,
                        format!(
                            "the beacon endpoint has no blob {hash} for L1 block {}",
                            block.number
                        ),
                    )
                })
            })
            .collect()
    }
}
