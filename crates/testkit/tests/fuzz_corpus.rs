//! Replays the fuzz targets' inputs on the stable build: hand-made seeds (valid and broken
//! inputs of each decoder), every crash a fuzz run ever found (`fuzz/regressions/<target>/`,
//! kept for good) and the local corpus if a fuzz run made one (`fuzz/corpus/<target>/`). Bad
//! input must give an error, never a panic (docs/design.md: house style).

use alloy::eips::eip2718::Encodable2718;
use alloy::primitives::{Address, U256};
use keel_primitives::dev_accounts;
use keel_testkit::fuzz;
use std::path::PathBuf;

fn files(target: &str) -> Vec<Vec<u8>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut inputs = Vec::new();
    for kind in ["regressions", "corpus"] {
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
