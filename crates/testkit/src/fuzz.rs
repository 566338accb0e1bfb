//! The bodies of keel's fuzz targets: every decoder that takes bytes from outside. The
//! cargo-fuzz targets in `fuzz/` are one-line wrappers around these, so the stable build and
//! the test suite compile and run them too (`tests/fuzz_corpus.rs` replays the corpus and
//! every crash ever found).
//!
//! | target | outside bytes | decoder |
//! |---|---|---|
//! | `raw_transaction` | `eth_sendRawTransaction` payloads, forwarded writes | EIP-2718 decode and signer recovery (`keel_mempool::decode_and_recover`) |
//! | `json_rpc` | JSON-RPC request bodies, batches included | the real `eth_*` module, in process |
//! | `raft_message` | peer requests and the Raft log on disk | keel's peer codec: append, vote, snapshot, log entries (blocks as RLP) and votes |
//! | `batch_data` | batch-inbox transactions on the L1 (anyone can send them; derivation reads the batcher's) | frames, Holocene channel assembly, bounded decompression, batches (`keel_l1::decode_batch_transaction`) |
//! | `forced_payload` | force-inbox transactions on the L1, from anyone | one signed L2 transaction (`keel_l1::decode_forced_payload`) |
//! | `blob` | blobs on the L1 (the beacon API's sidecars) | blob field elements to batch data (`keel_l1::blob::decode_blob`), then `batch_data` |
//! | `state_image` | a Raft snapshot's data, from the leader | the envelope with the pending transactions (`keel_cluster::snapshot_data`) and the state image inside (`keel_storage::read_state_image`): what `install_snapshot` decodes |
//! | `json_rpc_server` | JSON-RPC bodies over HTTP | keel's whole server path: jsonrpsee's HTTP and batch handling, keel's concurrent-batch middleware, the `eth_*` module |
//! | `peer_answer` | a peer's answers to append, vote and snapshot requests | keel's peer codec, as the network decodes them (`Result<answer, RaftError>`) |
//! | `peer_json` | `/raft/transfer`, `/raft/leader-gone` bodies, `/raft/health` and `/raft/leader-gone` answers | `HandOver`, `LeaderGone`, `PeerHealth`, `LeaderGoneAnswer` (JSON) |
//! | `admin_body` | admin API request bodies | `MemberRequest`, `TransferRequest`, `BackupRequest` (JSON) |
//! | `forward_reply` | the leader's answer to a follower's forwarded batch | `keel_rpc::read_forwarded_answers` |

use keel_cluster::{NodeId, TypeConfig, codec};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use std::sync::Arc;

/// A raw transaction: decoding either fails with an error or yields a transaction whose
/// re-encoding decodes to the same hash and sender.
pub fn raw_transaction(data: &[u8]) {
    use alloy::eips::eip2718::Encodable2718;
    if let Ok((envelope, sender)) = keel_mempool::decode_and_recover(data) {
        let again = envelope.encoded_2718();
        let (round_trip, sender_again) =
            keel_mempool::decode_and_recover(&again).expect("a decoded transaction re-decodes");
        assert_eq!(round_trip.tx_hash(), envelope.tx_hash());
        assert_eq!(sender_again, sender);
    }
}

/// A batch-inbox transaction's data: decoding either fails with a classed error or yields
/// batches that re-encode and decode to the same batches.
pub fn batch_data(data: &[u8]) {
    if let Ok(batches) = keel_l1::decode_batch_transaction(data) {
        let encoded = keel_l1::encode_batches(&batches);
        if !batches.is_empty() {
            assert_eq!(
                keel_l1::decode_batches(&encoded).expect("encoded batches decode"),
                batches
            );
        }
    }
}

/// A blob (the input, zero-padded or cut to a blob's size): decoding either fails with a
/// classed error, or yields data that lays out to this very blob (a blob has one reading),
/// read on as a batch transaction's data.
pub fn blob(data: &[u8]) {
    let mut blob = alloy::eips::eip4844::Blob::ZERO;
    let length = data.len().min(blob.len());
    blob[..length].copy_from_slice(&data[..length]);
    if let Ok(decoded) = keel_l1::blob::decode_blob(blob.as_slice()) {
        let again = keel_l1::blob::encode_blob(&decoded).expect("decoded data fits a blob");
        assert_eq!(*again, blob, "a blob read two ways");
        batch_data(&decoded);
    }
}

/// A force-inbox payload: decoding either fails with an error or yields a transaction of the
/// dev chain whose re-encoding decodes to the same transaction and sender.
pub fn forced_payload(data: &[u8]) {
    use alloy::eips::eip2718::Encodable2718;
    let chain_id = keel_primitives::DEV_CHAIN_ID;
    if let Ok((transaction, sender)) = keel_l1::decode_forced_payload(data, chain_id) {
        let (again, sender_again) =
            keel_l1::decode_forced_payload(&transaction.encoded_2718(), chain_id)
                .expect("a decoded payload re-decodes");
        assert_eq!(again, transaction);
        assert_eq!(sender_again, sender);
    }
}

/// A peer message or log entry: decoding either fails with an error or yields a value that
/// re-encodes and decodes to the same bytes.
pub fn raft_message(data: &[u8]) {
    fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(data: &[u8]) {
        if let Ok(value) = codec::decode::<T>(data) {
            let bytes = codec::encode(&value).expect("a decoded value encodes");
            let again: T = codec::decode(&bytes).expect("an encoded value decodes");
            assert_eq!(
                codec::encode(&again).expect("encodes"),
                bytes,
                "the codec is stable"
            );
        }
    }
    round_trip::<AppendEntriesRequest<TypeConfig>>(data);
    round_trip::<VoteRequest<NodeId>>(data);
    round_trip::<InstallSnapshotRequest<TypeConfig>>(data);
    round_trip::<openraft::Entry<TypeConfig>>(data);
    round_trip::<openraft::Vote<NodeId>>(data);
}

/// A state image (a Raft snapshot's data): reading it either fails with an error or finds a
/// head, and reads the same twice.
pub fn state_image(data: &[u8]) {
    // A snapshot's data: the image inside keel-cluster's envelope (with the pending
    // transactions), or a bare image from an earlier build; the image alone is tried too.
    let image = match keel_cluster::snapshot_data::decode_snapshot(data) {
        Ok(read) => read.image,
        Err(_) => data,
    };
    if let Ok(summary) = keel_storage::read_state_image(image) {
        assert_eq!(
            keel_storage::read_state_image(image).expect("it read once"),
            summary
        );
    }
}

/// A peer's answer, decoded as the network decodes it: an error, or a value that re-encodes
/// to the same bytes.
pub fn peer_answer(data: &[u8]) {
    use openraft::error::{InstallSnapshotError, RaftError};
    use openraft::raft::{AppendEntriesResponse, InstallSnapshotResponse, VoteResponse};
    fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(data: &[u8]) {
        if let Ok(value) = codec::decode::<T>(data) {
            let bytes = codec::encode(&value).expect("a decoded answer encodes");
            let again: T = codec::decode(&bytes).expect("an encoded answer decodes");
            assert_eq!(codec::encode(&again).expect("encodes"), bytes);
        }
    }
    round_trip::<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>>(data);
    round_trip::<Result<VoteResponse<NodeId>, RaftError<NodeId>>>(data);
    round_trip::<Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>>(
        data,
    );
}

/// JSON that decodes as `T` re-encodes to JSON that decodes to the same encoding.
fn json_round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(data: &[u8]) {
    if let Ok(value) = serde_json::from_slice::<T>(data) {
        let text = serde_json::to_string(&value).expect("a decoded body encodes");
        let again: T = serde_json::from_str(&text).expect("an encoded body decodes");
        assert_eq!(serde_json::to_string(&again).expect("encodes"), text);
    }
}

/// A `/raft/transfer` body or a `/raft/health` answer.
pub fn peer_json(data: &[u8]) {
    json_round_trip::<keel_cluster::HandOver>(data);
    json_round_trip::<keel_cluster::PeerHealth>(data);
    json_round_trip::<keel_cluster::LeaderGone>(data);
    json_round_trip::<keel_cluster::LeaderGoneAnswer>(data);
}

/// An admin API request body.
pub fn admin_body(data: &[u8]) {
    json_round_trip::<keel_node::MemberRequest>(data);
    json_round_trip::<keel_node::TransferRequest>(data);
    json_round_trip::<keel_node::BackupRequest>(data);
}

/// The leader's answer to a forwarded batch: an error for the whole batch, or one answer per
/// call.
pub fn forward_reply(data: &[u8]) {
    for calls in [0, 1, 3] {
        if let Ok(answers) = keel_rpc::read_forwarded_answers(data, calls) {
            assert_eq!(answers.len(), calls);
        }
    }
}

/// A JSON-RPC context over a new dev-chain store in a temporary directory (kept alive by the
/// caller): what both JSON-RPC targets serve.
fn dev_rpc_context() -> (tempfile::TempDir, keel_rpc::RpcContext) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let chain = keel_primitives::ChainSpec::dev();
    let store = Arc::new(
        keel_storage::Store::open(&dir.path().join("chain.redb"), &chain).expect("a store"),
    );
    let mempool = Arc::new(keel_mempool::Mempool::new(&chain, 30_000_000));
    let context =
        keel_rpc::RpcContext::new(chain, store, mempool, "keel/fuzz".into()).expect("a context");
    (dir, context)
}

/// keel's JSON-RPC server over a fresh dev-chain store, on a loopback port: every body goes
/// through HTTP, jsonrpsee's batch handling and keel's concurrent-batch middleware.
pub struct JsonRpcServer {
    runtime: tokio::runtime::Runtime,
    url: String,
    http: reqwest::Client,
    _handle: keel_rpc::ServerHandle,
    _dir: tempfile::TempDir,
}

impl JsonRpcServer {
    /// A server over a new dev-chain store.
    pub fn new() -> Self {
        let (dir, context) = dev_rpc_context();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let (address, handle) = runtime
            .block_on(keel_rpc::start(
                Arc::new(context),
                "127.0.0.1:0".parse().expect("an address"),
            ))
            .expect("the server starts");
        Self {
            runtime,
            url: format!("http://{address}"),
            http: reqwest::Client::new(),
            _handle: handle,
            _dir: dir,
        }
    }

    /// One request body: any HTTP answer is fine, and a 200 carries JSON; a panic in the
    /// server, a dropped connection or a hang is not.
    pub fn call(&self, data: &[u8]) {
        let answer = self.runtime.block_on(async {
            let sent = self
                .http
                .post(&self.url)
                .header("content-type", "application/json")
                .body(data.to_vec())
                .timeout(JSON_RPC_CALL_TIMEOUT)
                .send()
                .await?;
            let status = sent.status();
            Ok::<_, reqwest::Error>((status, sent.bytes().await?))
        });
        let (status, body) = match answer {
            Ok(answer) => answer,
            Err(error) => panic!("the server did not answer ({error}): {data:?}"),
        };
        if status.is_success() && !body.is_empty() {
            serde_json::from_slice::<serde_json::Value>(&body)
                .unwrap_or_else(|error| panic!("a 200 that is not JSON ({error}): {body:?}"));
        }
    }
}

impl Default for JsonRpcServer {
    fn default() -> Self {
        Self::new()
    }
}

/// The JSON-RPC module of a dev node over a fresh store, run in process.
pub struct JsonRpc {
    runtime: tokio::runtime::Runtime,
    module: jsonrpsee::RpcModule<keel_rpc::RpcContext>,
    _dir: tempfile::TempDir,
}

/// The most a fuzzed call may take before it counts as a hang.
const JSON_RPC_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl JsonRpc {
    /// A module over a new dev-chain store.
    pub fn new() -> Self {
        let (dir, context) = dev_rpc_context();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        Self {
            runtime,
            module: keel_rpc::module(Arc::new(context)),
            _dir: dir,
        }
    }

    /// One request body: any answer (result or JSON-RPC error) is fine; a panic or a hang is
    /// not.
    pub fn call(&self, data: &[u8]) {
        let Ok(body) = std::str::from_utf8(data) else {
            return; // the server refuses non-UTF-8 bodies before any decoder sees them
        };
        let answer = self.runtime.block_on(async {
            tokio::time::timeout(JSON_RPC_CALL_TIMEOUT, self.module.raw_json_request(body, 1)).await
        });
        match answer {
            Err(_) => panic!("a JSON-RPC call hung: {body:?}"),
            Ok(Ok((response, _))) => {
                serde_json::from_str::<serde_json::Value>(response.get())
                    .expect("every answer is JSON");
            }
            Ok(Err(_)) => {} // not JSON: jsonrpsee answers with a parse error
        }
    }
}

impl Default for JsonRpc {
    fn default() -> Self {
        Self::new()
    }
}
