//! `keel bench batch`: what the batcher's compression buys on real batches (signed transfers
//! from many senders), zstd against brotli, and the L1 cost per L2 transfer it gives, as
//! calldata and as blobs.

use alloy::primitives::{Address, U256};
use clap::Args;
use keel_l1::{Batch, BatchBlock, Compression, calldata_gas};
use std::time::Instant;

/// `keel bench batch`.
#[derive(Debug, Args)]
pub(crate) struct BatchArgs {
    /// L2 blocks in the measured channel.
    #[arg(long, default_value_t = 40)]
    blocks: usize,
    /// Transfers in each block.
    #[arg(long, default_value_t = 500)]
    transfers_per_block: usize,
    /// Distinct senders (and as many recipients).
    #[arg(long, default_value_t = 500)]
    senders: usize,
    /// Runs per setting; the median time is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

/// Bytes of one blob (EIP-4844), each costing one blob gas.
const BLOB_BYTES: usize = 131_072;
const _: () = assert!(BLOB_BYTES == alloy::eips::eip4844::BYTES_PER_BLOB);

pub(crate) fn run(args: BatchArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let senders: Vec<_> = (0..args.senders)
        .map(|index| {
            let key = alloy::primitives::keccak256((index as u64 + 1).to_be_bytes());
            alloy::signers::local::PrivateKeySigner::from_bytes(&key).expect("a valid key")
        })
        .collect();
    let mut nonces = vec![0u64; args.senders];
    let mut blocks = Vec::with_capacity(args.blocks);
    let mut transfer_index = 0usize;
    for number in 0..args.blocks {
        let mut transactions = Vec::with_capacity(args.transfers_per_block);
        for _ in 0..args.transfers_per_block {
            let sender = transfer_index % args.senders;
            let recipient = Address::from_word(alloy::primitives::keccak256(
                (transfer_index as u64 * 7 + 3).to_be_bytes(),
            ));
            let value = U256::from(1_000_000_000_000_000u64 + transfer_index as u64 * 1_000);
            transactions.push(keel_testkit::transfer(
                &senders[sender],
                nonces[sender],
                recipient,
                value,
            ));
            nonces[sender] += 1;
            transfer_index += 1;
        }
        blocks.push(BatchBlock {
            timestamp: 1_760_000_000 + number as u64,
            origin_number: 1_000 + number as u64 / 12,
            transactions,
        });
    }
    let batch = Batch {
        parent_hash: alloy::primitives::B256::repeat_byte(1),
        first_number: 1,
        beneficiary: Address::ZERO,
        gas_limit: 30_000_000,
        extra_data: Default::default(),
        blocks,
    };
    let payload = keel_l1::encode_batches(std::slice::from_ref(&batch));
    let transfers = args.blocks * args.transfers_per_block;
    println!(
        "{transfers} signed transfers from {} senders in {} blocks: {} bytes of batch RLP, {:.1} bytes a transfer",
        args.senders,
        args.blocks,
        payload.len(),
        payload.len() as f64 / transfers as f64
    );
    println!(
        "| compression | bytes a transfer | ratio | compress ms/MB (median) | decompress ms/MB | calldata L1 gas a transfer | blob gas a transfer | blob transactions' L1 gas a transfer |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    type Compressor = Box<dyn Fn(&[u8]) -> Vec<u8>>;
    let settings: Vec<(String, Compressor)> = vec![
        ("none".into(), Box::new(|data: &[u8]| data.to_vec())),
        ("zstd 1".into(), Box::new(|data: &[u8]| zstd_at(data, 1))),
        (
            format!("zstd {} (keel's)", keel_l1::ZSTD_LEVEL),
            Box::new(|data: &[u8]| keel_l1::compress(Compression::Zstd, data)),
        ),
        ("zstd 9".into(), Box::new(|data: &[u8]| zstd_at(data, 9))),
        ("zstd 19".into(), Box::new(|data: &[u8]| zstd_at(data, 19))),
        (
            "brotli 5".into(),
            Box::new(|data: &[u8]| brotli_at(data, 5)),
        ),
        (
            format!("brotli {} (the OP batcher's)", keel_l1::BROTLI_QUALITY),
            Box::new(|data: &[u8]| keel_l1::compress(Compression::Brotli, data)),
        ),
        (
            "brotli 11".into(),
            Box::new(|data: &[u8]| brotli_at(data, 11)),
        ),
    ];
    let megabytes = payload.len() as f64 / 1_000_000.0;
    for (name, compress) in &settings {
        let mut times = Vec::with_capacity(args.runs);
        let mut compressed = Vec::new();
        for _ in 0..args.runs.max(1) {
            let started = Instant::now();
            compressed = compress(&payload);
            times.push(started.elapsed().as_secs_f64() * 1_000.0);
        }
        times.sort_by(f64::total_cmp);
        let decompress_ms = if name == "none" {
            0.0
        } else {
            let started = Instant::now();
            let back = keel_l1::decompress(&compressed)?;
            assert_eq!(back, payload, "{name} round-trips");
            started.elapsed().as_secs_f64() * 1_000.0
        };
        // Calldata: one transaction a frame of at most BATCHER_TX_DATA_BYTES_MAX.
        let frame_bytes = keel_l1::batcher::BATCHER_TX_DATA_BYTES_MAX;
        let mut gas = 0u64;
        for piece in compressed.chunks(frame_bytes) {
            let mut data = vec![0u8; 1 + keel_l1::FRAME_OVERHEAD_BYTES];
            data.extend_from_slice(piece);
            gas += calldata_gas(&data);
        }
        // Blobs: keel's layout, one frame a blob, one blob a transaction of 21,000 gas.
        let blob_frame_bytes =
            keel_l1::blob::BLOB_DATA_BYTES_MAX - 1 - keel_l1::FRAME_OVERHEAD_BYTES;
        let blobs = compressed.len().div_ceil(blob_frame_bytes);
        println!(
            "| {name} | {:.1} | {:.2} | {:.1} | {:.1} | {:.0} | {:.0} | {:.1} |",
            compressed.len() as f64 / transfers as f64,
            payload.len() as f64 / compressed.len() as f64,
            times[times.len() / 2] / megabytes,
            decompress_ms / megabytes,
            gas as f64 / transfers as f64,
            (blobs * BLOB_BYTES) as f64 / transfers as f64,
            (blobs as u64 * keel_l1::BLOB_TRANSACTION_GAS) as f64 / transfers as f64,
        );
    }
    Ok(())
}

fn zstd_at(data: &[u8], level: i32) -> Vec<u8> {
    let mut out = vec![Compression::Zstd.byte()];
    out.extend(zstd::bulk::compress(data, level).expect("zstd compresses any bytes"));
    out
}

fn brotli_at(data: &[u8], quality: u32) -> Vec<u8> {
    let mut out = vec![Compression::Brotli.byte()];
    let mut writer = brotli::CompressorWriter::new(&mut out, 4096, quality, 22);
    std::io::Write::write_all(&mut writer, data).expect("writes to a Vec");
    drop(writer);
    out
}
