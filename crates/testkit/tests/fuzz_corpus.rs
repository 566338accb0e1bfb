//! Replays the fuzz targets' inputs on the stable build: hand-made inputs (valid and broken, of
//! each decoder), the seed corpus kept in the repository (`fuzz/seeds/<target>/`, valid inputs
//! the fuzzer starts from, written by `write_fuzz_seeds`), every crash a fuzz run ever found
//! (`fuzz/regressions/<target>/`, kept for good) and the local corpus if a fuzz run made one
//! (`fuzz/corpus/<target>/`). Bad input must give an error, never a panic (docs/design.md:
//! house style).

use alloy::eips::eip2718::Encodable2718;
use alloy::primitives::{Address, U256};
use keel_primitives::dev_accounts;
use keel_testkit::fuzz;
use std::path::PathBuf;

fn files(target: &str) -> Vec<Vec<u8>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut inputs = Vec::new();
    for kind in ["seeds", "regressions", "corpus"] {
        let Ok(entries) = std::fs::read_dir(root.join(kind).join(target)) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            inputs.push(std::fs::read(entry.path()).unwrap());
        }
    }
    inputs
}

fn signed_transfer() -> Vec<u8> {
    keel_testkit::transfer(
        &dev_accounts()[0],
        0,
        Address::repeat_byte(1),
        U256::from(1),
    )
    .encoded_2718()
}

/// Every prefix and every single-byte flip of `valid`, plus `valid` itself.
fn mutations(valid: &[u8]) -> Vec<Vec<u8>> {
    let mut inputs = vec![valid.to_vec()];
    for end in 0..valid.len() {
        inputs.push(valid[..end].to_vec());
    }
    for index in 0..valid.len() {
        let mut flipped = valid.to_vec();
        flipped[index] ^= 0xff;
        inputs.push(flipped);
    }
    inputs
}

#[test]
fn raw_transactions_decode_or_fail_cleanly() {
    let valid = signed_transfer();
    let mut inputs = mutations(&valid);
    inputs.extend([
        vec![],
        vec![0x02],
        vec![0xff; 64],
        vec![0xc0],
        vec![0x7f; 3],
    ]);
    inputs.extend(files("raw_transaction"));
    for input in &inputs {
        fuzz::raw_transaction(input);
    }
}

#[test]
fn raft_messages_decode_or_fail_cleanly() {
    let vote = openraft::raft::VoteRequest::<keel_cluster::NodeId>::new(
        openraft::Vote::new(3, 1),
        Some(openraft::LogId::new(
            openraft::CommittedLeaderId::new(2, 1),
            7,
        )),
    );
    let valid = keel_cluster::codec::encode(&vote).unwrap();
    let mut inputs = mutations(&valid);
    inputs.extend(mutations(&intake_entry()));
    inputs.extend([
        vec![],
        vec![1],
        vec![1, 0xff, 0xff, 0xff, 0xff, 0x0f],
        vec![0; 1024],
    ]);
    inputs.extend(files("raft_message"));
    for input in &inputs {
        fuzz::raft_message(input);
    }
}

#[test]
fn json_rpc_bodies_answer_or_fail_cleanly() {
    let rpc = fuzz::JsonRpc::new();
    let raw = alloy::hex::encode_prefixed(signed_transfer());
    let bodies = [
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#.to_string(),
        format!(r#"{{"jsonrpc":"2.0","id":2,"method":"eth_sendRawTransaction","params":["{raw}"]}}"#),
        r#"{"jsonrpc":"2.0","id":3,"method":"eth_getBlockByNumber","params":["0xffffffffffffffffff",true]}"#.into(),
        r#"{"jsonrpc":"2.0","id":4,"method":"eth_call","params":[{"to":"0x01","data":"0xzz"},"latest"]}"#.into(),
        r#"{"jsonrpc":"2.0","id":5,"method":"eth_getLogs","params":[{"fromBlock":"0x0","toBlock":"0xffffffffffffffff"}]}"#.into(),
        r#"[{"jsonrpc":"2.0","id":1,"method":"eth_chainId"},{"jsonrpc":"2.0","id":2}]"#.into(),
        r#"{"jsonrpc":"2.0","id":6,"method":"eth_getBalance","params":[null,{"blockHash":"0x00"}]}"#.into(),
        "[]".into(),
        "{".into(),
        "null".into(),
    ];
    for body in &bodies {
        for input in mutations(body.as_bytes()).iter().step_by(7) {
            rpc.call(input);
        }
    }
    for input in files("json_rpc") {
        rpc.call(&input);
    }
}

/// A channel of real batches in one transaction (the batcher's format), its mutations, and
/// hostile data: a decompression bomb, a channel split over frames out of order.
#[test]
fn batch_data_decodes_or_fails_cleanly() {
    use keel_l1::{Batch, BatchBlock, Compression, Frame};
    let signed = keel_testkit::transfer(
        &dev_accounts()[0],
        0,
        Address::repeat_byte(1),
        U256::from(1),
    );
    let batch = Batch {
        parent_hash: alloy::primitives::B256::repeat_byte(3),
        first_number: 1,
        beneficiary: Address::ZERO,
        gas_limit: 30_000_000,
        extra_data: Default::default(),
        blocks: vec![
            BatchBlock {
                timestamp: 1_700_000_000,
                origin_number: 2,
                transactions: vec![signed],
            },
            BatchBlock {
                timestamp: 1_700_000_001,
                origin_number: 2,
                transactions: vec![],
            },
        ],
    };
    let channel = keel_l1::compress(
        Compression::Zstd,
        &keel_l1::encode_batches(std::slice::from_ref(&batch)),
    );
    let frame = |number: u16, data: &[u8], is_last: bool| Frame {
        channel_id: [5; 16],
        number,
        data: data.to_vec().into(),
        is_last,
    };
    let valid = Frame::encode_all(&[frame(0, &channel, true)]).to_vec();
    assert_eq!(
        keel_l1::decode_batch_transaction(&valid).unwrap(),
        vec![batch]
    );
    let (head, tail) = channel.split_at(channel.len() / 2);
    let split = Frame::encode_all(&[frame(0, head, false), frame(1, tail, true)]).to_vec();
    let swapped = Frame::encode_all(&[frame(1, tail, true), frame(0, head, false)]).to_vec();
    let bomb = keel_l1::compress(
        Compression::Zstd,
        &vec![0u8; keel_primitives::limits::CHANNEL_DECOMPRESSED_BYTES_MAX + 1],
    );
    let mut inputs = mutations(&valid);
    inputs.extend([
        split,
        swapped,
        Frame::encode_all(&[frame(0, &bomb, true)]).to_vec(),
        Frame::encode_all(&[frame(0, &[2, 0xff, 0xff], true)]).to_vec(),
        vec![],
        vec![0],
    ]);
    inputs.extend(files("batch_data"));
    for input in &inputs {
        fuzz::batch_data(input);
    }
    assert!(
        keel_l1::decode_batch_transaction(&inputs[inputs.len() - 4]).is_err(),
        "the bomb"
    );
}

/// Blobs in keel's layout holding a real batch transaction's data, their mutations (every
/// prefix, and a flip of each byte of the header and the first field elements), and blobs
/// that break the layout.
#[test]
fn blobs_decode_or_fail_cleanly() {
    let data = b"\x00frames of a channel";
    let valid = keel_l1::blob::encode_blob(data).unwrap();
    let head = &valid[..256];
    let mut inputs = mutations(head);
    inputs.push(valid.to_vec());
    let mut long = valid.to_vec();
    long[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
    inputs.push(long);
    let mut trailing = valid.to_vec();
    trailing[131_071] = 1;
    inputs.push(trailing);
    inputs.push(vec![0xff; 131_072]);
    inputs.extend(files("blob"));
    for input in &inputs {
        fuzz::blob(input);
    }
    assert_eq!(
        keel_l1::blob::decode_blob(valid.as_slice()).unwrap(),
        data.to_vec()
    );
}

/// A forced payload, its mutations, and payloads of another chain or type.
#[test]
fn forced_payloads_decode_or_fail_cleanly() {
    let mut inputs = mutations(&signed_transfer());
    inputs.extend([vec![], vec![0x02], vec![0xf8; 200]]);
    inputs.extend(files("forced_payload"));
    for input in &inputs {
        fuzz::forced_payload(input);
    }
}

/// A state image of the dev genesis (ten funded accounts), as a snapshot carries it.
fn state_image() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let store = keel_storage::Store::open(
        &dir.path().join("chain.redb"),
        &keel_primitives::ChainSpec::dev(),
    )
    .unwrap();
    store.snapshot().unwrap().export().unwrap()
}

/// A Raft snapshot's data as a leader sends it: the image with one pending transfer.
fn snapshot_data() -> Vec<u8> {
    let pending = [keel_cluster::IntakeTransaction {
        raw: signed_transfer().into(),
        sender: dev_accounts()[0].address(),
    }];
    keel_cluster::snapshot_data::encode_snapshot(&state_image(), &pending).unwrap()
}

/// Valid answers of a peer, as the network reads them.
fn peer_answers() -> Vec<Vec<u8>> {
    use keel_cluster::{NodeId, codec};
    use openraft::error::{Fatal, InstallSnapshotError, RaftError, SnapshotMismatch};
    use openraft::raft::{AppendEntriesResponse, InstallSnapshotResponse, VoteResponse};
    let vote = openraft::Vote::new_committed(4, 2);
    let log_id = openraft::LogId::new(openraft::CommittedLeaderId::new(4, 2), 91);
    vec![
        codec::encode(&Ok::<_, RaftError<NodeId>>(
            AppendEntriesResponse::<NodeId>::Success,
        ))
        .unwrap(),
        codec::encode(&Ok::<_, RaftError<NodeId>>(
            AppendEntriesResponse::<NodeId>::Conflict,
        ))
        .unwrap(),
        codec::encode(&Ok::<_, RaftError<NodeId>>(
            AppendEntriesResponse::<NodeId>::HigherVote(vote),
        ))
        .unwrap(),
        codec::encode(&Ok::<_, RaftError<NodeId>>(VoteResponse::new(
            vote,
            Some(log_id),
            true,
        )))
        .unwrap(),
        codec::encode(&Err::<VoteResponse<NodeId>, _>(RaftError::<NodeId>::Fatal(
            Fatal::Stopped,
        )))
        .unwrap(),
        codec::encode(&Ok::<_, RaftError<NodeId, InstallSnapshotError>>(
            InstallSnapshotResponse { vote },
        ))
        .unwrap(),
        codec::encode(&Err::<InstallSnapshotResponse<NodeId>, _>(RaftError::<
            NodeId,
            InstallSnapshotError,
        >::APIError(
            InstallSnapshotError::SnapshotMismatch(SnapshotMismatch {
                expect: openraft::SnapshotSegmentId {
                    id: "4-2-91".into(),
                    offset: 0,
                },
                got: openraft::SnapshotSegmentId {
                    id: "4-2-91".into(),
                    offset: 3_145_728,
                },
            }),
        )))
        .unwrap(),
    ]
}

fn peer_bodies() -> Vec<Vec<u8>> {
    vec![
        br#"{"from":1,"term":7,"deadline_ms":5000}"#.to_vec(),
        br#"{"unhealthy":null}"#.to_vec(),
        br#"{"unhealthy":"unsafe head is 9000 ms old"}"#.to_vec(),
        br#"{"leader":2,"term":41}"#.to_vec(),
        br#"{"forgot":true,"last_log":{"leader_id":{"term":41,"node_id":2},"index":90210},"healthy":true}"#.to_vec(),
    ]
}

fn admin_bodies() -> Vec<Vec<u8>> {
    vec![
        br#"{"id":4}"#.to_vec(),
        br#"{"to":null}"#.to_vec(),
        br#"{"to":2}"#.to_vec(),
        br#"{"dir":"/var/backups/keel/2026-12-06"}"#.to_vec(),
    ]
}

fn forward_replies() -> Vec<Vec<u8>> {
    vec![
        br#"[{"jsonrpc":"2.0","id":0,"result":"0x5c504ed432cb51138bcf09aa5e8a410dd4a1e204ef84bfed1be16dfba1b22060"},{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"nonce too low: next nonce 3, tx nonce 1"}},{"jsonrpc":"2.0","id":2,"error":{"code":-32003,"message":"insufficient funds","data":"0x"}}]"#.to_vec(),
        br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid request"}}"#.to_vec(),
    ]
}

fn server_bodies() -> Vec<Vec<u8>> {
    let raw = alloy::hex::encode_prefixed(signed_transfer());
    vec![
        br#"[{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]},{"jsonrpc":"2.0","id":2,"method":"eth_blockNumber","params":[]}]"#.to_vec(),
        format!(r#"[{{"jsonrpc":"2.0","id":1,"method":"eth_sendRawTransaction","params":["{raw}"]}},{{"jsonrpc":"2.0","method":"eth_chainId"}}]"#).into_bytes(),
        br#"{"jsonrpc":"2.0","id":"a","method":"eth_getBlockByNumber","params":["latest",false]}"#.to_vec(),
        br#"[1,{"jsonrpc":"2.0"},[]]"#.to_vec(),
    ]
}

/// Replays every mutation of each valid input, and the files of `target`, through `body`.
fn replay(target: &str, valid: &[Vec<u8>], body: impl Fn(&[u8])) {
    for input in valid {
        for mutated in mutations(input) {
            body(&mutated);
        }
    }
    for input in [
        vec![],
        vec![0],
        vec![0xff; 64],
        b"null".to_vec(),
        b"[]".to_vec(),
    ] {
        body(&input);
    }
    for input in files(target) {
        body(&input);
    }
}

/// A real state image, its prefixes and flips, and the seed files: a snapshot from a peer
/// decodes or fails, never panics.
#[test]
fn state_images_read_or_fail_cleanly() {
    let valid = state_image();
    assert_eq!(
        keel_storage::read_state_image(&valid).unwrap().counts.0,
        10,
        "the dev genesis's accounts"
    );
    // Every prefix and every flip of the head part, and flips spread over the accounts.
    let head = &valid[..valid.len().min(1_024)];
    let mut inputs = mutations(head);
    for index in (0..valid.len()).step_by(97) {
        let mut flipped = valid.clone();
        flipped[index] ^= 0xff;
        inputs.push(flipped);
    }
    inputs.push(valid);
    // The snapshot's envelope: its frame and pending part cut and flipped (the image inside
    // is covered above).
    let envelope = snapshot_data();
    let image_bytes = state_image().len();
    inputs.extend(mutations(&envelope[..16]));
    inputs.extend(
        mutations(&envelope[16 + image_bytes..])
            .into_iter()
            .map(|tail| {
                let mut input = envelope[..16 + image_bytes].to_vec();
                input.extend(tail);
                input
            }),
    );
    inputs.push(envelope);
    for input in &inputs {
        fuzz::state_image(input);
    }
    for input in files("state_image") {
        fuzz::state_image(&input);
    }
}

#[test]
fn peer_answers_decode_or_fail_cleanly() {
    replay("peer_answer", &peer_answers(), fuzz::peer_answer);
}

#[test]
fn peer_and_admin_bodies_decode_or_fail_cleanly() {
    replay("peer_json", &peer_bodies(), fuzz::peer_json);
    replay("admin_body", &admin_bodies(), fuzz::admin_body);
}

#[test]
fn forwarded_replies_read_or_fail_cleanly() {
    let replies = forward_replies();
    let answers = keel_rpc::read_forwarded_answers(&replies[0], 4).unwrap();
    assert!(answers[0].is_ok() && answers[1].is_err() && answers[3].is_err());
    // A refusal of the whole batch reaches every call in the leader's words.
    let refused = keel_rpc::read_forwarded_answers(&replies[1], 2).unwrap();
    assert!(
        refused
            .iter()
            .all(|answer| answer.as_ref().unwrap_err().message() == "Invalid request"),
        "{refused:?}"
    );
    // Anything else that is not a batch answer is one typed error for the batch.
    let failure = keel_rpc::read_forwarded_answers(b"Too many connections.", 2).unwrap_err();
    assert_eq!(failure.kind(), keel_primitives::ErrorKind::Retry);
    assert!(
        keel_rpc::read_forwarded_answers(br#"{"jsonrpc":"2.0","id":0,"result":"0x1"}"#, 1).is_err()
    );
    replay("forward_reply", &replies, fuzz::forward_reply);
}

/// Bodies through the real HTTP server: batches reach keel's batch middleware.
#[test]
fn json_rpc_server_bodies_answer_or_fail_cleanly() {
    let server = fuzz::JsonRpcServer::new();
    for body in server_bodies() {
        for input in mutations(&body).iter().step_by(5) {
            server.call(input);
        }
    }
    for input in files("json_rpc_server") {
        server.call(&input);
    }
}

/// Every target in fuzz/Cargo.toml has a seed corpus in the repository, and the seeds are what
/// `write_fuzz_seeds` writes today.
#[test]
fn every_fuzz_target_has_its_seeds() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let targets: Vec<&str> = manifest
        .lines()
        .filter_map(|line| line.strip_prefix("name = \""))
        .filter_map(|rest| rest.strip_suffix('"'))
        .filter(|name| *name != "keel-fuzz")
        .collect();
    assert!(targets.len() >= 12, "{targets:?}");
    let seeds = seeds();
    for target in targets {
        let expected = seeds
            .iter()
            .find(|(name, _)| *name == target)
            .unwrap_or_else(|| panic!("{target} has no seeds in write_fuzz_seeds"));
        for (index, seed) in expected.1.iter().enumerate() {
            let path = root
                .join("seeds")
                .join(target)
                .join(format!("seed-{index}"));
            assert_eq!(
                std::fs::read(&path).ok().as_ref(),
                Some(seed),
                "{} is missing or stale: run `cargo test -p keel-testkit --test fuzz_corpus \
                 write_fuzz_seeds -- --ignored`",
                path.display()
            );
        }
    }
}

/// A log entry carrying an intake (transactions on their way into every pool).
fn intake_entry() -> Vec<u8> {
    let entry = openraft::Entry::<keel_cluster::TypeConfig> {
        log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(2, 1), 9),
        payload: openraft::EntryPayload::Normal(keel_cluster::Proposal::Intake(vec![
            keel_cluster::IntakeTransaction {
                raw: signed_transfer().into(),
                sender: alloy::primitives::Address::repeat_byte(7),
            },
        ])),
    };
    keel_cluster::codec::encode(&entry).unwrap()
}

/// Each target's seeds: valid inputs of its decoder.
fn seeds() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let raw = signed_transfer();
    let vote = openraft::raft::VoteRequest::<keel_cluster::NodeId>::new(
        openraft::Vote::new(3, 1),
        Some(openraft::LogId::new(
            openraft::CommittedLeaderId::new(2, 1),
            7,
        )),
    );
    vec![
        ("raw_transaction", vec![raw.clone()]),
        (
            "json_rpc",
            vec![br#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#.to_vec()],
        ),
        ("json_rpc_server", server_bodies()),
        (
            "raft_message",
            vec![keel_cluster::codec::encode(&vote).unwrap(), intake_entry()],
        ),
        (
            "batch_data",
            vec![{
                let channel = keel_l1::compress(keel_l1::Compression::Zstd, b"");
                keel_l1::Frame::encode_all(&[keel_l1::Frame {
                    channel_id: [5; 16],
                    number: 0,
                    data: channel.into(),
                    is_last: true,
                }])
                .to_vec()
            }],
        ),
        ("forced_payload", vec![raw]),
        (
            "blob",
            vec![keel_l1::blob::encode_blob(b"\x00frames").unwrap()[..256].to_vec()],
        ),
        ("state_image", vec![state_image(), snapshot_data()]),
        ("peer_answer", peer_answers()),
        ("peer_json", peer_bodies()),
        ("admin_body", admin_bodies()),
        ("forward_reply", forward_replies()),
    ]
}

/// Writes `fuzz/seeds/<target>/seed-N` for every target (run after changing an encoding).
#[test]
#[ignore = "writes the seed corpus into the repository"]
fn write_fuzz_seeds() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds");
    for (target, seeds) in seeds() {
        let dir = root.join(target);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (index, seed) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{index}")), seed).unwrap();
        }
    }
}
