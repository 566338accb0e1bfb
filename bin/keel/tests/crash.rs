//! Crash safety on one node (I1, I2): SIGKILL the real binary at seeded random instants while
//! transactions flow, restart it on the same data directory, and check that every receipt a
//! client got is still served with the same block, every block hash a client saw is still the
//! hash at its height, the heads link, and sealing goes on.
//!
//! A failure prints its seed; `KEEL_SEED=<seed>` replays the same kill schedule.

mod common;

use alloy::primitives::{Address, B256};
use common::{KeelProcess, call, free_port, quantity, raw_transfer};
use keel_primitives::dev_accounts;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A small deterministic generator (splitmix64), so the schedule replays from the seed.
struct Schedule(u64);

impl Schedule {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// What clients were shown: receipts (tx → block number, block hash) and block hashes.
#[derive(Default, Clone)]
struct Observed {
    receipts: BTreeMap<B256, (u64, B256)>,
    blocks: BTreeMap<u64, B256>,
}

/// Sends transfers from one sender with eth_sendRawTransactionSync and records every receipt.
async fn writer(
    url: String,
    who: usize,
    observed: Arc<Mutex<Observed>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let client = reqwest::Client::new();
    let signer = dev_accounts().remove(who);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let Ok(nonce) = call(
            &client,
            &url,
            "eth_getTransactionCount",
            json!([signer.address(), "pending"]),
        )
        .await
        else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let raw = raw_transfer(
            &signer,
            quantity(&nonce),
            Address::with_last_byte(who as u8),
        );
        match call(
            &client,
            &url,
            "eth_sendRawTransactionSync",
            json!([raw, 2000]),
        )
        .await
        {
            Ok(receipt) => {
                let hash: B256 = receipt["transactionHash"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                let block_hash: B256 = receipt["blockHash"].as_str().unwrap().parse().unwrap();
                let number = quantity(&receipt["blockNumber"]);
                observed
                    .lock()
                    .unwrap()
                    .receipts
                    .insert(hash, (number, block_hash));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Records every block hash a client sees.
async fn watcher(
    url: String,
    observed: Arc<Mutex<Observed>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let client = reqwest::Client::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if let Ok(block) = call(
            &client,
            &url,
            "eth_getBlockByNumber",
            json!(["latest", false]),
        )
        .await
        {
            let number = quantity(&block["number"]);
            let hash: B256 = block["hash"].as_str().unwrap().parse().unwrap();
            let mut observed = observed.lock().unwrap();
            if let Some(previous) = observed.blocks.insert(number, hash) {
                assert_eq!(previous, hash, "I1: two hashes shown at height {number}");
            }
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
}

async fn check(url: &str, observed: &Observed, seed: u64) -> u64 {
    let client = reqwest::Client::new();
    for (hash, (number, block_hash)) in &observed.receipts {
        let receipt = call(&client, url, "eth_getTransactionReceipt", json!([hash]))
            .await
            .unwrap();
        assert!(
            !receipt.is_null(),
            "seed {seed}: I2: receipt of {hash} lost after the crash"
        );
        assert_eq!(
            quantity(&receipt["blockNumber"]),
            *number,
            "seed {seed}: I2: {hash} moved"
        );
        let served: B256 = receipt["blockHash"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            served, *block_hash,
            "seed {seed}: I1: {hash}'s block was replaced"
        );
    }
    for (number, hash) in &observed.blocks {
        let block = call(
            &client,
            url,
            "eth_getBlockByNumber",
            json!([format!("0x{number:x}"), false]),
        )
        .await
        .unwrap();
        let served: B256 = block["hash"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            served, *hash,
            "seed {seed}: I1: block {number} was replaced"
        );
    }
    let head = quantity(
        &call(&client, url, "eth_blockNumber", json!([]))
            .await
            .unwrap(),
    );
    let mut parent = None;
    for number in 0..=head {
        let block = call(
            &client,
            url,
            "eth_getBlockByNumber",
            json!([format!("0x{number:x}"), false]),
        )
        .await
        .unwrap();
        let hash: B256 = block["hash"].as_str().unwrap().parse().unwrap();
        if let Some(parent) = parent {
            let parent_hash: B256 = block["parentHash"].as_str().unwrap().parse().unwrap();
            assert_eq!(
                parent_hash, parent,
                "seed {seed}: heads do not link at {number}"
            );
        }
        parent = Some(hash);
    }
    head
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_block() {
    let seed: u64 = std::env::var("KEEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("crash test seed: {seed} (replay with KEEL_SEED={seed})");
    let mut schedule = Schedule(seed);
    let dir = tempfile::tempdir().unwrap();
    let datadir = dir.path().join("node");
    let (rpc_port, ops_port) = (free_port(), free_port());
    let observed = Arc::new(Mutex::new(Observed::default()));
    let mut last_head = 0;
    for round in 0..4 {
        let mut keel = KeelProcess::start_on(&datadir, 100, &[], rpc_port, ops_port);
        if round > 0 {
            let seen = observed.lock().unwrap().clone();
            let head = check(&keel.rpc_url, &seen, seed).await;
            assert!(
                head >= last_head,
                "seed {seed}: the head went back from {last_head} to {head}"
            );
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = vec![tokio::spawn(watcher(
            keel.rpc_url.clone(),
            observed.clone(),
            stop.clone(),
        ))];
        for who in 0..4 {
            tasks.push(tokio::spawn(writer(
                keel.rpc_url.clone(),
                who,
                observed.clone(),
                stop.clone(),
            )));
        }
        let run_ms = 600 + schedule.next() % 1_200;
        tokio::time::sleep(Duration::from_millis(run_ms)).await;
        keel.kill9();
        let killed_at = Instant::now();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for task in tasks {
            task.await.unwrap();
        }
        let observed = observed.lock().unwrap();
        last_head = observed.blocks.keys().next_back().copied().unwrap_or(0);
        println!(
            "round {round}: killed after {run_ms} ms; {} receipts and {} heights observed ({:?} ago)",
            observed.receipts.len(),
            observed.blocks.len(),
            killed_at.elapsed()
        );
    }
    // After the last kill: everything acknowledged is there, and sealing goes on.
    let keel = KeelProcess::start_on(&datadir, 100, &[], rpc_port, ops_port);
    let observed = observed.lock().unwrap().clone();
    assert!(
        observed.receipts.len() > 10,
        "seed {seed}: the load produced too few receipts to test"
    );
    let head = check(&keel.rpc_url, &observed, seed).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = reqwest::Client::new();
    let later = quantity(
        &call(&client, &keel.rpc_url, "eth_blockNumber", json!([]))
            .await
            .unwrap(),
    );
    assert!(
        later > head,
        "seed {seed}: sealing did not resume after the restart"
    );
}

/// A graceful stop (SIGTERM) finishes the block in hand, exits cleanly, and a restart resumes
/// on the same head (I1): the orderly path and the crash path end in the same place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_restart_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let datadir = dir.path().join("node");
    let (rpc_port, ops_port) = (free_port(), free_port());
    let mut keel = KeelProcess::start_on(&datadir, 100, &[], rpc_port, ops_port);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = reqwest::Client::new();
    let block = call(
        &client,
        &keel.rpc_url,
        "eth_getBlockByNumber",
        json!(["latest", false]),
    )
    .await
    .unwrap();
    let (number, hash) = (
        quantity(&block["number"]),
        block["hash"].as_str().unwrap().to_string(),
    );
    let pid = keel.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = keel.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "keel did not stop within 10 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "keel exited with {status}");
    let keel = KeelProcess::start_on(&datadir, 100, &[], rpc_port, ops_port);
    let served = call(
        &client,
        &keel.rpc_url,
        "eth_getBlockByNumber",
        json!([format!("0x{number:x}"), false]),
    )
    .await
    .unwrap();
    assert_eq!(
        served["hash"].as_str().unwrap(),
        hash,
        "I1: block {number} changed across a restart"
    );
}
