//! The rollup end to end, with the real binary on real L1s (anvil, and keel's embedded dev
//! L1): the sequencer posts batches, `keel verify` derives the same chain from the L1 alone,
//! `safe` advances, forced transactions get in, and bad L1 input is skipped and counted.

mod common;

use alloy::eips::eip2718::Encodable2718;
use alloy::primitives::{Address, Bytes, U256};
use common::{KeelProcess, free_port, metric};
use keel_l1::{FeeCaps, L1Client, NonceAt, RpcL1, sign_calldata};
use keel_primitives::dev_accounts;
use keel_primitives::rollup::{DEV_BATCH_INBOX, DEV_BATCHER_INDEX, DEV_FORCE_INBOX};
use keel_testkit::anvil::Anvil;
use serde_json::json;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `keel verify`, killed on drop.
struct Verifier {
    child: Child,
    rpc_url: String,
    ops_url: String,
    log: std::path::PathBuf,
}

impl Verifier {
    fn start(datadir: &Path, l1_url: &str, l1_block_time_ms: u64, extra: &[&str]) -> Self {
        let (rpc_port, ops_port) = (free_port(), free_port());
        let log = datadir.with_extension("log");
        let child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(["verify", "--dev", "--l1-rpc", l1_url, "--datadir"])
            .arg(datadir)
            .args(["--rpc-addr", &format!("127.0.0.1:{rpc_port}")])
            .args(["--metrics-addr", &format!("127.0.0.1:{ops_port}")])
            .args(["--l1-block-time-ms", &l1_block_time_ms.to_string()])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("keel verify starts");
        Self {
            child,
            rpc_url: format!("http://127.0.0.1:{rpc_port}"),
            ops_url: format!("http://127.0.0.1:{ops_port}"),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn rpc(url: &str, method: &str, params: serde_json::Value) -> Option<serde_json::Value> {
    common::call(&reqwest::Client::new(), url, method, params)
        .await
        .ok()
}

async fn head(url: &str) -> u64 {
    match rpc(url, "eth_blockNumber", json!([])).await {
        Some(number) => common::quantity(&number),
        None => 0,
    }
}

/// The number the tag (`safe`, `finalized`) names on the node at `url`.
async fn tagged(url: &str, tag: &str) -> u64 {
    match rpc(url, "eth_getBlockByNumber", json!([tag, false])).await {
        Some(block) if !block.is_null() => common::quantity(&block["number"]),
        _ => 0,
    }
}

async fn block_hash(url: &str, number: u64) -> Option<String> {
    let block = rpc(
        url,
        "eth_getBlockByNumber",
        json!([format!("{number:#x}"), false]),
    )
    .await?;
    block["hash"].as_str().map(str::to_string)
}

/// Waits until `check` holds, or fails with `what` and the logs.
async fn wait_for<F, Fut>(what: &str, timeout: Duration, logs: &dyn Fn() -> String, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let logs = logs();
    let interesting: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("WARN") || line.contains("ERROR"))
        .collect();
    let tail = interesting.len().saturating_sub(40);
    panic!(
        "timed out waiting for {what}\n{}",
        interesting[tail..].join("\n")
    );
}

/// Sends `count` transfers from dev account `index` and returns the block of each receipt
/// (I2: a receipt is served for a durable block).
async fn transfers(url: &str, index: usize, count: u64) -> Vec<(String, u64)> {
    let signer = &dev_accounts()[index];
    let mut included = Vec::new();
    for nonce in 0..count {
        let raw = common::raw_transfer(signer, nonce, Address::repeat_byte(0x42));
        let receipt = rpc(url, "eth_sendRawTransactionSync", json!([raw, 10_000]))
            .await
            .expect("the transfer is included");
        included.push((
            receipt["blockHash"].as_str().unwrap().to_string(),
            common::quantity(&receipt["blockNumber"]),
        ));
    }
    included
}

/// Sends `data` to `to` on the L1 from `signer`, and waits for its inclusion.
async fn send_l1(
    l1: &RpcL1,
    signer: &alloy::signers::local::PrivateKeySigner,
    to: Address,
    data: Bytes,
) {
    send_and_wait(l1, signer, |chain_id, nonce, fees| {
        sign_calldata(
            signer,
            chain_id,
            nonce,
            to,
            data.clone(),
            FeeCaps::for_fees(fees),
        )
        .1
    })
    .await;
}

/// Sends `sidecar`'s blob to `to` on the L1 from `signer`, and waits for its inclusion.
async fn send_blob(
    l1: &RpcL1,
    signer: &alloy::signers::local::PrivateKeySigner,
    to: Address,
    sidecar: &alloy::eips::eip7594::BlobTransactionSidecarEip7594,
) {
    send_and_wait(l1, signer, |chain_id, nonce, fees| {
        assert!(fees.blob_base_fee.is_some(), "the L1 takes blobs");
        keel_l1::sign_blob(
            signer,
            chain_id,
            nonce,
            to,
            sidecar,
            FeeCaps::for_fees(fees),
        )
        .1
    })
    .await;
}

/// Signs with `sign` (chain id, nonce, fees) at `signer`'s pending nonce and sends it, again
/// at a fresh nonce while the L1 refuses it (a test sending from the batcher's key races the
/// batcher for its next nonce), then waits for its inclusion.
async fn send_and_wait(
    l1: &RpcL1,
    signer: &alloy::signers::local::PrivateKeySigner,
    sign: impl Fn(u64, u64, &keel_l1::L1Fees) -> Bytes,
) {
    let chain_id = l1.chain_id().await.unwrap();
    let mut refusals = Vec::new();
    let hash = loop {
        let nonce = l1.nonce(signer.address(), NonceAt::Pending).await.unwrap();
        let fees = l1.fees().await.unwrap();
        match l1.send_raw_transaction(sign(chain_id, nonce, &fees)).await {
            Ok(hash) => break hash,
            Err(error) if error.rejection().is_some() && refusals.len() < 20 => {
                refusals.push(error.to_string());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("the L1 refused the transaction: {error} (before: {refusals:?})"),
        }
    };
    for _ in 0..300 {
        if l1.receipt(hash).await.unwrap().is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("L1 transaction {hash} never included");
}

/// The batcher's rule, read off what landed: every block posted once, in order, from block 1,
/// none skipped.
/// On failure it shows what the batcher and derivation logged, which says why.
fn assert_posted_once_in_order(numbers: &[u64], log: &str) {
    let said = || -> String {
        log.lines()
            .filter(|line| {
                [
                    "batch",
                    "derivation",
                    "dropped",
                    "posting",
                    "replaced",
                    "WARN",
                    "ERROR",
                ]
                .iter()
                .any(|word| line.contains(word))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(numbers.first(), Some(&1), "{}", said());
    assert!(
        numbers.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "posted blocks: {numbers:?}\nthe sequencer logged:\n{}",
        said()
    );
}

/// The value of one counter (summed over its labels that match `label`) on `/metrics`.
/// Every batch transaction the batcher landed on the L1 so far, in L1 order.
async fn batch_transactions(l1: &RpcL1) -> Vec<keel_l1::InboxTransaction> {
    use keel_l1::L1Head;
    let head = l1.head(L1Head::Latest).await.unwrap().number;
    let batcher = dev_accounts()[DEV_BATCHER_INDEX].address();
    let mut found = Vec::new();
    for number in 1..=head {
        let block = l1.block_by_number(number).await.unwrap().unwrap();
        for transaction in l1
            .inbox_transactions(&block, &[DEV_BATCH_INBOX])
            .await
            .unwrap()
        {
            if transaction.from == batcher && transaction.succeeded {
                found.push(transaction);
            }
        }
    }
    found
}

/// Checks the verifier's chain against the sequencer's, block by block, up to `to` (I1, I7),
/// and that every receipt the sequencer served is in it (I2).
async fn same_chain(sequencer: &str, verifier: &str, to: u64, receipts: &[(String, u64)]) {
    for number in 1..=to {
        let ours = block_hash(verifier, number).await;
        assert!(ours.is_some(), "the verifier lacks block {number}");
        assert_eq!(
            ours,
            block_hash(sequencer, number).await,
            "block {number} differs between the sequencer and the L1-derived chain"
        );
    }
    for (hash, number) in receipts.iter().filter(|(_, number)| *number <= to) {
        assert_eq!(block_hash(verifier, *number).await.as_ref(), Some(hash));
    }
}

/// I7, I1, I2 on anvil: the sequencer's batches, read back from the L1 alone by `keel
/// verify`, give the identical chain (every block hash), and `safe` advances on the sequencer.
/// Bad L1 input in between (a batch from another key, garbage from the batcher's key, which
/// also takes the batcher's nonce from under it, a forced payload that does not decode) is
/// skipped and counted, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_derives_the_identical_chain_from_anvil_and_skips_bad_input() {
    let anvil = Anvil::start(1, &[]).expect("anvil runs: scripts/test.sh installs it");
    let dir = tempfile::tempdir().unwrap();
    let node = KeelProcess::start(
        &dir.path().join("sequencer"),
        250,
        &["--l1-rpc", &anvil.url, "--l1-block-time-ms", "1000"],
    );
    let logs = || node.log();
    let mut receipts = transfers(&node.rpc_url, 0, 10).await;
    let l1 = RpcL1::new(&anvil.url).unwrap();
    let accounts = dev_accounts();
    send_l1(
        &l1,
        &accounts[3],
        DEV_BATCH_INBOX,
        Bytes::from_static(b"\x00not frames"),
    )
    .await;
    send_l1(
        &l1,
        &accounts[DEV_BATCHER_INDEX],
        DEV_BATCH_INBOX,
        Bytes::from_static(&[0, 1, 2]),
    )
    .await;
    send_l1(
        &l1,
        &accounts[4],
        DEV_FORCE_INBOX,
        Bytes::from_static(b"not a transaction"),
    )
    .await;
    receipts.extend(transfers(&node.rpc_url, 1, 10).await);
    let last = receipts.iter().map(|(_, number)| *number).max().unwrap();
    wait_for(
        "the sequencer's safe head to pass its last receipt",
        Duration::from_secs(90),
        &logs,
        || async { tagged(&node.rpc_url, "safe").await >= last },
    )
    .await;
    let verifier = Verifier::start(&dir.path().join("verifier"), &anvil.url, 1_000, &[]);
    let verifier_logs = || verifier.log();
    wait_for(
        "the verifier to derive the chain",
        Duration::from_secs(90),
        &verifier_logs,
        || async { head(&verifier.rpc_url).await >= last },
    )
    .await;
    same_chain(&node.rpc_url, &verifier.rpc_url, last, &receipts).await;
    // The verifier's own safe head is what it derived.
    assert!(tagged(&verifier.rpc_url, "safe").await >= last);
    // A second batcher with the same key (a deposed leader in a split brain) posts an old
    // batch again: strict order skips it, and the chain does not change.
    let posted = batch_transactions(&l1).await;
    assert!(!posted.is_empty());
    let mut numbers = Vec::new();
    // (The garbage this test sent from the batcher's key decodes to nothing.)
    for transaction in &posted {
        for batch in keel_l1::decode_batch_transaction(&transaction.input).unwrap_or_default() {
            numbers.extend(batch.first_number..=batch.last_number());
        }
    }
    // Every block posted once, in order, none skipped.
    assert_posted_once_in_order(&numbers, &node.log());
    send_l1(
        &l1,
        &accounts[DEV_BATCHER_INDEX],
        DEV_BATCH_INBOX,
        posted[0].input.clone(),
    )
    .await;
    wait_for(
        "the replayed batch to be skipped",
        Duration::from_secs(30),
        &verifier_logs,
        || async {
            metric(
                &verifier.ops_url,
                "keel_derivation_dropped_total",
                "batch_past",
            )
            .await
                >= 1.0
        },
    )
    .await;
    same_chain(&node.rpc_url, &verifier.rpc_url, last, &receipts).await;
    // Each bad input was dropped and counted by derivation.
    for (reason, at_least) in [
        ("not_batcher", 1.0),
        ("bad_frame", 1.0),
        ("bad_forced_payload", 1.0),
    ] {
        let counted = metric(&verifier.ops_url, "keel_derivation_dropped_total", reason).await;
        assert!(
            counted >= at_least,
            "{reason}: {counted}\n{}",
            verifier.log()
        );
    }
    assert_eq!(
        metric(&node.ops_url, "keel_derivation_divergence", "").await,
        0.0
    );
}

/// I7, I1, I2 with blobs on anvil (its beacon API serves the blobs): the batcher posts its
/// frames in EIP-4844 blobs, `keel verify` reads them back through the beacon API and derives
/// the identical chain, and `safe` advances. A blob from another key, and one from the
/// batcher's key that breaks the blob layout, are skipped and counted. A verifier with no
/// beacon endpoint stops and says why, instead of deriving a different chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_batches_derive_the_identical_chain_from_anvil() {
    let anvil = Anvil::start(1, &[]).expect("anvil runs: scripts/test.sh installs it");
    let dir = tempfile::tempdir().unwrap();
    let l1 = RpcL1::new(&anvil.url).unwrap().with_beacon(&anvil.url);
    let accounts = dev_accounts();
    // A blob from the batcher's key whose first field element has its top byte set (a valid
    // blob, not keel's layout), sent before the sequencer starts: derivation reads it from the
    // L1's start and skips it, and it takes no nonce from under a running batcher.
    let mut bad = alloy::eips::eip4844::Blob::ZERO;
    bad[0] = 1;
    let bad =
        alloy::eips::eip7594::BlobTransactionSidecarEip7594::try_from_blobs(vec![bad]).unwrap();
    send_blob(&l1, &accounts[DEV_BATCHER_INDEX], DEV_BATCH_INBOX, &bad).await;
    let node = KeelProcess::start(
        &dir.path().join("sequencer"),
        250,
        &[
            "--l1-rpc",
            &anvil.url,
            "--l1-beacon",
            &anvil.url,
            "--batcher-da",
            "blobs",
            "--l1-block-time-ms",
            "1000",
        ],
    );
    let logs = || node.log();
    let mut receipts = transfers(&node.rpc_url, 0, 10).await;
    // A blob from another key, while the batcher runs.
    let frames = keel_l1::blob::sidecar(b"\x00not frames").unwrap();
    send_blob(&l1, &accounts[3], DEV_BATCH_INBOX, &frames).await;
    receipts.extend(transfers(&node.rpc_url, 1, 10).await);
    let last = receipts.iter().map(|(_, number)| *number).max().unwrap();
    wait_for(
        "the sequencer's safe head to pass its last receipt",
        Duration::from_secs(90),
        &logs,
        || async { tagged(&node.rpc_url, "safe").await >= last },
    )
    .await;
    // What landed is blobs: every block posted once, in order, none skipped.
    let posted = batch_transactions(&l1).await;
    let mut numbers = Vec::new();
    for transaction in &posted {
        assert!(
            !transaction.blob_hashes.is_empty(),
            "a batch in calldata: {transaction:?}"
        );
        let block = l1
            .block_by_number(
                l1.receipt(transaction.hash)
                    .await
                    .unwrap()
                    .unwrap()
                    .block_number,
            )
            .await
            .unwrap()
            .unwrap();
        for blob in l1.blobs(&block, &transaction.blob_hashes).await.unwrap() {
            let Ok(data) = keel_l1::blob::decode_blob(blob.as_slice()) else {
                continue; // the one this test broke
            };
            for batch in keel_l1::decode_batch_transaction(&data).unwrap() {
                numbers.extend(batch.first_number..=batch.last_number());
            }
        }
    }
    assert_posted_once_in_order(&numbers, &node.log());
    let verifier = Verifier::start(
        &dir.path().join("verifier"),
        &anvil.url,
        1_000,
        &["--l1-beacon", &anvil.url],
    );
    let verifier_logs = || verifier.log();
    wait_for(
        "the verifier to derive the chain from blobs",
        Duration::from_secs(90),
        &verifier_logs,
        || async { head(&verifier.rpc_url).await >= last },
    )
    .await;
    same_chain(&node.rpc_url, &verifier.rpc_url, last, &receipts).await;
    for reason in ["not_batcher", "bad_blob"] {
        let counted = metric(&verifier.ops_url, "keel_derivation_dropped_total", reason).await;
        assert!(counted >= 1.0, "{reason}: {counted}\n{}", verifier.log());
    }
    // Without a beacon endpoint a verifier cannot read the batches: it halts, saying so.
    let blind = Verifier::start(&dir.path().join("blind"), &anvil.url, 1_000, &[]);
    let blind_logs = || blind.log();
    wait_for(
        "the verifier without a beacon endpoint to say why it stopped",
        Duration::from_secs(60),
        &blind_logs,
        || async { blind.log().contains("--l1-beacon") },
    )
    .await;
    assert_eq!(
        head(&blind.rpc_url).await,
        0,
        "it derived nothing from calldata alone"
    );
    // `/health` says why, for the operator and the load balancer alike.
    let answer = reqwest::get(format!("{}/health", blind.ops_url))
        .await
        .unwrap();
    assert_eq!(answer.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let body = answer.text().await.unwrap();
    assert!(
        body.contains("derivation halted") && body.contains("--l1-beacon"),
        "{body}"
    );
}

/// I6 with a live sequencer, on the embedded dev L1, with nothing but cast: a signed L2
/// transaction sent to the force inbox (`cast send FORCE_INBOX $(cast mktx ...)`) is included
/// in the L2 chain, first in the first block whose origin reaches its L1 block, well within
/// the window; and the chain with it is derived identically by `keel verify`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_transaction_is_included_by_a_live_sequencer() {
    let dir = tempfile::tempdir().unwrap();
    let l1_port = free_port();
    let l1_url = format!("http://127.0.0.1:{l1_port}");
    let node = KeelProcess::start(
        &dir.path().join("sequencer"),
        250,
        &[
            "--dev-l1-addr",
            &format!("127.0.0.1:{l1_port}"),
            "--dev-l1-block-time-ms",
            "500",
        ],
    );
    let logs = || node.log();
    let cast = keel_testkit::anvil::npm_binary("cast");
    // The L2 transaction, signed for the L2 by cast (its nonce and fees read from the L2).
    let forcing = &dev_accounts()[6];
    let key = alloy::hex::encode_prefixed(forcing.to_bytes());
    let mktx = Command::new(&cast)
        .args(["mktx", "--rpc-url", &node.rpc_url, "--private-key", &key])
        .args(["0x000000000000000000000000000000000000f0ce", "--value", "7"])
        .output()
        .expect("cast runs");
    assert!(
        mktx.status.success(),
        "{}",
        String::from_utf8_lossy(&mktx.stderr)
    );
    let raw = String::from_utf8(mktx.stdout).unwrap().trim().to_string();
    let hash = alloy::primitives::keccak256(alloy::hex::decode(&raw).unwrap());
    // Forced through the L1 by another account, with cast alone.
    let l1_key = alloy::hex::encode_prefixed(dev_accounts()[7].to_bytes());
    let sent = Command::new(&cast)
        .args([
            "send",
            "--rpc-url",
            &l1_url,
            "--private-key",
            &l1_key,
            "--json",
        ])
        .arg(DEV_FORCE_INBOX.to_string())
        .arg(&raw)
        .output()
        .expect("cast runs");
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let l1_receipt: serde_json::Value = serde_json::from_slice(&sent.stdout).unwrap();
    let forced_at = common::quantity(&l1_receipt["blockNumber"]);
    wait_for(
        "the forced transaction on the L2",
        Duration::from_secs(60),
        &logs,
        || async {
            matches!(
                rpc(&node.rpc_url, "eth_getTransactionReceipt", json!([hash])).await,
                Some(value) if !value.is_null()
            )
        },
    )
    .await;
    let receipt = rpc(&node.rpc_url, "eth_getTransactionReceipt", json!([hash]))
        .await
        .unwrap();
    assert_eq!(receipt["status"], "0x1");
    assert_eq!(
        receipt["transactionIndex"], "0x0",
        "forced transactions come first"
    );
    let number = common::quantity(&receipt["blockNumber"]);
    let block = rpc(
        &node.rpc_url,
        "eth_getBlockByNumber",
        json!([format!("{number:#x}"), false]),
    )
    .await
    .unwrap();
    // The origin (the header's nonce) reached the forcing L1 block, within the window.
    let origin = u64::from_str_radix(
        block["nonce"].as_str().unwrap().trim_start_matches("0x"),
        16,
    )
    .unwrap();
    assert!(
        origin >= forced_at && origin <= forced_at + 50,
        "origin {origin}, forced at {forced_at}"
    );
    let balance = rpc(
        &node.rpc_url,
        "eth_getBalance",
        json!(["0x000000000000000000000000000000000000f0ce", "latest"]),
    )
    .await
    .unwrap();
    assert_eq!(balance, "0x7");
    // Derived from the L1 alone, the same block holds it.
    wait_for(
        "the forced block to be safe",
        Duration::from_secs(60),
        &logs,
        || async { tagged(&node.rpc_url, "safe").await >= number },
    )
    .await;
    // A restart right after a forced inclusion (nitro#2375): the node, and the L1 it runs,
    // come back and go on sealing and posting on top of it.
    let (rpc_port, ops_port) = (node.rpc_port, node.ops_port);
    let mut node = node;
    node.kill9();
    let node = KeelProcess::start_on(
        &dir.path().join("sequencer"),
        250,
        &[
            "--dev-l1-addr",
            &format!("127.0.0.1:{l1_port}"),
            "--dev-l1-block-time-ms",
            "500",
        ],
        rpc_port,
        ops_port,
    );
    let logs = || node.log();
    let more = transfers(&node.rpc_url, 2, 3).await;
    let last = more.iter().map(|(_, number)| *number).max().unwrap();
    assert!(last > number);
    wait_for(
        "blocks after the restart to be safe",
        Duration::from_secs(60),
        &logs,
        || async { tagged(&node.rpc_url, "safe").await >= last },
    )
    .await;
    let verifier = Verifier::start(&dir.path().join("verifier"), &l1_url, 500, &[]);
    let verifier_logs = || verifier.log();
    wait_for(
        "the verifier to derive past the restart",
        Duration::from_secs(60),
        &verifier_logs,
        || async { head(&verifier.rpc_url).await >= last },
    )
    .await;
    same_chain(&node.rpc_url, &verifier.rpc_url, last, &more).await;
    assert_eq!(
        block_hash(&verifier.rpc_url, number).await,
        block_hash(&node.rpc_url, number).await,
        "the forced block"
    );
    assert_eq!(
        metric(&node.ops_url, "keel_unsafe_blocks_replaced_total", "").await,
        0.0
    );
}

/// An L1 reorg that removes a forced transaction (R4, I6): it never reaches the L2 from the
/// removed block, and the sequencer and the L1-derived chain stay one chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_l1_reorg_that_removes_a_forced_transaction_converges() {
    let anvil = Anvil::start(1, &[]).expect("anvil runs: scripts/test.sh installs it");
    let l1 = RpcL1::new(&anvil.url).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let node = KeelProcess::start(
        &dir.path().join("sequencer"),
        250,
        &["--l1-rpc", &anvil.url, "--l1-block-time-ms", "1000"],
    );
    let logs = || node.log();
    let verifier = Verifier::start(&dir.path().join("verifier"), &anvil.url, 1_000, &[]);
    transfers(&node.rpc_url, 0, 2).await;
    let signed = keel_testkit::transfer(
        &dev_accounts()[6],
        0,
        Address::repeat_byte(0xf1),
        U256::from(5),
    );
    // Forced with `keel force`, which checks the payload and waits for the L1's receipt.
    let key = alloy::hex::encode_prefixed(dev_accounts()[7].to_bytes());
    let forced = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["force", "--l1-rpc", &anvil.url])
        .arg(alloy::hex::encode_prefixed(signed.encoded_2718()))
        .env("KEEL_L1_KEY", &key)
        .output()
        .expect("keel force runs");
    let said = String::from_utf8_lossy(&forced.stdout);
    assert!(
        forced.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert!(said.contains("in L1 block"), "{said}");
    // A payload derivation would skip is refused before it costs anything.
    let refused = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["force", "--l1-rpc", &anvil.url, "0x02f0"])
        .env("KEEL_L1_KEY", &key)
        .output()
        .expect("keel force runs");
    assert!(!refused.status.success());
    // Gone at once, before the sequencer's origin (4 blocks behind) reaches it.
    anvil.call("anvil_reorg", json!([2, []])).await.unwrap();
    let receipts = transfers(&node.rpc_url, 1, 3).await;
    let last = receipts.iter().map(|(_, number)| *number).max().unwrap();
    wait_for(
        "both chains past the reorg",
        Duration::from_secs(60),
        &logs,
        || async {
            tagged(&node.rpc_url, "safe").await >= last && head(&verifier.rpc_url).await >= last
        },
    )
    .await;
    same_chain(&node.rpc_url, &verifier.rpc_url, last, &receipts).await;
    let hash = format!("{:#x}", signed.tx_hash());
    let on_l1 = l1.receipt(*signed.tx_hash()).await.unwrap();
    let on_l2 = rpc(&node.rpc_url, "eth_getTransactionReceipt", json!([hash])).await;
    // Only if the L1 holds it again (a pool that re-adds reorged transactions) may the L2.
    if on_l1.is_none() {
        assert!(
            matches!(on_l2, Some(ref receipt) if receipt.is_null()),
            "{on_l2:?}"
        );
    }
    assert_eq!(
        metric(&node.ops_url, "keel_derivation_divergence", "").await,
        0.0
    );
}

/// I6 with every sequencer down, on anvil, with a 10-block forced-inclusion window: the
/// sequencer is SIGKILLed, a transaction is forced through the L1, and `keel verify` derives
/// it into the chain by itself once the window passes, on top of every batched block, which
/// stays as it was. The restarted sequencer adopts the derived chain before it builds again
/// (no spiral of dropped batches: optimism#11228), and its next batches extend it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_sequencer_down_a_forced_transaction_lands_once_the_window_passes() {
    let anvil = Anvil::start(1, &[]).expect("anvil runs: scripts/test.sh installs it");
    let l1 = RpcL1::new(&anvil.url).unwrap();
    let genesis = l1.block_by_number(0).await.unwrap().unwrap();
    let mut rollup = keel_primitives::RollupConfig::dev(
        l1.chain_id().await.unwrap(),
        keel_primitives::L1Origin {
            number: 0,
            hash: genesis.hash,
        },
    );
    rollup.force_inclusion_window_blocks = 10;
    let dir = tempfile::tempdir().unwrap();
    let rollup_file = dir.path().join("rollup.json");
    std::fs::write(&rollup_file, serde_json::to_string_pretty(&rollup).unwrap()).unwrap();
    let rollup_path = rollup_file.to_str().unwrap();
    let mut node = KeelProcess::start(
        &dir.path().join("sequencer"),
        250,
        &[
            "--l1-rpc",
            &anvil.url,
            "--l1-block-time-ms",
            "1000",
            "--rollup",
            rollup_path,
        ],
    );
    let logs = || node.log();
    let receipts = transfers(&node.rpc_url, 0, 5).await;
    let last = receipts.iter().map(|(_, number)| *number).max().unwrap();
    wait_for(
        "the transfers to be safe",
        Duration::from_secs(60),
        &logs,
        || async { tagged(&node.rpc_url, "safe").await >= last },
    )
    .await;
    let batched = tagged(&node.rpc_url, "safe").await;
    let mut batched_hashes = Vec::new();
    for number in 1..=batched {
        batched_hashes.push(block_hash(&node.rpc_url, number).await.unwrap());
    }
    node.kill9();
    // Forced while no sequencer runs.
    let forcing = &dev_accounts()[6];
    let signed = keel_testkit::transfer(forcing, 0, Address::repeat_byte(0xf0), U256::from(9));
    send_l1(
        &l1,
        &dev_accounts()[7],
        DEV_FORCE_INBOX,
        signed.encoded_2718().into(),
    )
    .await;
    let verifier = Verifier::start(
        &dir.path().join("verifier"),
        &anvil.url,
        1_000,
        &["--rollup", rollup_path],
    );
    let verifier_logs = || verifier.log();
    let hash = format!("{:#x}", signed.tx_hash());
    wait_for(
        "the forced transaction in the derived chain",
        Duration::from_secs(60),
        &verifier_logs,
        || async {
            matches!(
                rpc(&verifier.rpc_url, "eth_getTransactionReceipt", json!([hash])).await,
                Some(receipt) if !receipt.is_null()
            )
        },
    )
    .await;
    // Every batched block stands; the forced block comes after them.
    for (index, expected) in batched_hashes.iter().enumerate() {
        let number = index as u64 + 1;
        assert_eq!(
            block_hash(&verifier.rpc_url, number).await.as_ref(),
            Some(expected),
            "batched block {number}"
        );
    }
    let receipt = rpc(
        &verifier.rpc_url,
        "eth_getTransactionReceipt",
        json!([hash]),
    )
    .await
    .unwrap();
    assert_eq!(receipt["status"], "0x1");
    assert!(common::quantity(&receipt["blockNumber"]) > batched);
    assert!(metric(&verifier.ops_url, "keel_derived_blocks_total", "forced").await >= 1.0);
}

/// An L1 reorg that removes a batch (anvil_reorg) is an ordinary input (R4): the verifier's
/// derivation resets below it, the batcher posts the blocks again, and both chains converge
/// on the sequencer's blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_l1_reorg_that_removes_a_batch_converges() {
    let anvil = Anvil::start(1, &[]).expect("anvil runs: scripts/test.sh installs it");
    let dir = tempfile::tempdir().unwrap();
    let node = KeelProcess::start(
        &dir.path().join("sequencer"),
        250,
        &["--l1-rpc", &anvil.url, "--l1-block-time-ms", "1000"],
    );
    let logs = || node.log();
    let verifier = Verifier::start(&dir.path().join("verifier"), &anvil.url, 1_000, &[]);
    let receipts = transfers(&node.rpc_url, 0, 5).await;
    let last = receipts.iter().map(|(_, number)| *number).max().unwrap();
    wait_for(
        "the verifier to derive the transfers",
        Duration::from_secs(60),
        &logs,
        || async { head(&verifier.rpc_url).await >= last },
    )
    .await;
    // Remove the last 3 L1 blocks, with the batches they hold (the origins trail by 4).
    anvil.call("anvil_reorg", json!([3, []])).await.unwrap();
    let more = transfers(&node.rpc_url, 1, 5).await;
    let last = more.iter().map(|(_, number)| *number).max().unwrap();
    wait_for(
        "the chains to converge after the reorg",
        Duration::from_secs(90),
        &logs,
        || async {
            head(&verifier.rpc_url).await >= last && tagged(&node.rpc_url, "safe").await >= last
        },
    )
    .await;
    let mut all = receipts;
    all.extend(more);
    same_chain(&node.rpc_url, &verifier.rpc_url, last, &all).await;
    assert_eq!(
        metric(&node.ops_url, "keel_derivation_divergence", "").await,
        0.0
    );
}

/// A three-node cluster on anvil (I1, I2, I7): the leader's batcher posts, every node derives
/// and moves `safe`; the leader is SIGKILLed with a batch transaction in flight, and the new
/// leader's batcher carries on from what the L1 holds: every block posted exactly once, none
/// skipped, and `keel verify` derives the cluster's chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_fails_its_batcher_over_with_a_batch_in_flight() {
    let anvil = Anvil::start(1, &[]).expect("anvil runs: scripts/test.sh installs it");
    let l1 = RpcL1::new(&anvil.url).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<(u16, u16, u16)> = (0..3)
        .map(|_| (free_port(), free_port(), free_port()))
        .collect();
    std::fs::write(dir.path().join("secret"), "a-rollup-cluster-test-secret\n").unwrap();
    let mut file =
        String::from("secret_file = \"secret\"\nheartbeat_ms = 100\nelection_timeout_ms = 500\n");
    for (index, (rpc, _, raft)) in ports.iter().enumerate() {
        file.push_str(&format!(
            "[[members]]\nid = {}\nraft_addr = \"127.0.0.1:{raft}\"\nrpc_addr = \"127.0.0.1:{rpc}\"\n",
            index + 1
        ));
    }
    let cluster_file = dir.path().join("cluster.toml");
    std::fs::write(&cluster_file, file).unwrap();
    let cluster_path = cluster_file.to_str().unwrap().to_string();
    let mut nodes: Vec<Option<KeelProcess>> = ports
        .iter()
        .enumerate()
        .map(|(index, (rpc, ops, _))| {
            let id = (index + 1).to_string();
            Some(KeelProcess::spawn(
                &dir.path().join(format!("node{id}")),
                250,
                &[
                    "--cluster",
                    &cluster_path,
                    "--node-id",
                    &id,
                    "--l1-rpc",
                    &anvil.url,
                    "--l1-block-time-ms",
                    "1000",
                ],
                *rpc,
                *ops,
            ))
        })
        .collect();
    let leader_of = |nodes: &Vec<Option<KeelProcess>>| {
        let nodes: Vec<(usize, String)> = nodes
            .iter()
            .enumerate()
            .filter_map(|(index, node)| node.as_ref().map(|node| (index, node.ops_url.clone())))
            .collect();
        async move {
            for _ in 0..200 {
                for (index, ops) in &nodes {
                    if let Ok(answer) = reqwest::get(format!("{ops}/cluster")).await
                        && let Ok(status) = answer.json::<serde_json::Value>().await
                        && status["role"] == "leader"
                    {
                        return *index;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("no leader");
        }
    };
    let first = leader_of(&nodes).await;
    let leader_url = nodes[first].as_ref().unwrap().rpc_url.clone();
    let logs = || nodes[first].as_ref().unwrap().log();
    let mut receipts = transfers(&leader_url, 0, 8).await;
    let last = receipts.iter().map(|(_, number)| *number).max().unwrap();
    for node in nodes.iter().flatten() {
        wait_for(
            "every node's safe head past the transfers",
            Duration::from_secs(90),
            &logs,
            || async { tagged(&node.rpc_url, "safe").await >= last },
        )
        .await;
    }
    // Kill the leader the moment its batcher has a transaction in flight.
    let ops = nodes[first].as_ref().unwrap().ops_url.clone();
    wait_for(
        "a batch transaction in flight",
        Duration::from_secs(30),
        &logs,
        || async { metric(&ops, "keel_batcher_in_flight", "").await >= 1.0 },
    )
    .await;
    nodes[first].as_mut().unwrap().kill9();
    nodes[first] = None;
    let second = leader_of(&nodes).await;
    assert_ne!(second, first);
    let survivor = nodes[second].as_ref().unwrap();
    let logs = || survivor.log();
    let more = transfers(&survivor.rpc_url, 1, 8).await;
    let last = more.iter().map(|(_, number)| *number).max().unwrap();
    receipts.extend(more);
    for node in nodes.iter().flatten() {
        wait_for(
            "every survivor's safe head past the new transfers",
            Duration::from_secs(90),
            &logs,
            || async { tagged(&node.rpc_url, "safe").await >= last },
        )
        .await;
    }
    // Every block the L1 holds was posted once, in order, none skipped, across the failover.
    let mut numbers = Vec::new();
    for transaction in batch_transactions(&l1).await {
        for batch in keel_l1::decode_batch_transaction(&transaction.input).unwrap() {
            numbers.extend(batch.first_number..=batch.last_number());
        }
    }
    assert_posted_once_in_order(&numbers, &logs());
    assert!(*numbers.last().unwrap() >= last);
    let verifier = Verifier::start(&dir.path().join("verifier"), &anvil.url, 1_000, &[]);
    let verifier_logs = || verifier.log();
    wait_for(
        "the verifier to derive the cluster's chain",
        Duration::from_secs(90),
        &verifier_logs,
        || async { head(&verifier.rpc_url).await >= last },
    )
    .await;
    same_chain(&survivor.rpc_url, &verifier.rpc_url, last, &receipts).await;
    for node in nodes.iter().flatten() {
        assert_eq!(
            metric(&node.ops_url, "keel_derivation_divergence", "").await,
            0.0
        );
    }
}
