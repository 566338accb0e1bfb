//! The L1 client against real L1s: the embedded dev L1 (read in-process and over its own
//! JSON-RPC, which must agree) and anvil. What derivation and the batcher rely on is the
//! trait's correctness contract: canonical reads, reads by hash that fail as a reset once a
//! reorg removed the block, refusals in geth's words.

use alloy::primitives::{Address, B256, Bytes};
use keel_l1::{
    EmbeddedL1, FeeCaps, L1Client, L1Error, L1Head, L1Tracker, NonceAt, Rejection, RpcL1,
    sign_calldata,
};
use keel_node::{DevL1, DevL1Config};
use keel_primitives::{ErrorKind, dev_accounts};
use keel_testkit::anvil::Anvil;
use std::time::Duration;

const INBOX: Address = Address::repeat_byte(0xb0);

async fn dev_l1(dir: &std::path::Path, block_time_ms: u64) -> DevL1 {
    let mut config = DevL1Config::new(dir.to_path_buf(), "127.0.0.1:0".parse().unwrap());
    config.block_time_ms = block_time_ms;
    config.safe_depth = 2;
    config.finalized_depth = 4;
    tokio::task::spawn_blocking(move || DevL1::start(config))
        .await
        .unwrap()
        .expect("the dev L1 starts")
}

/// Sends calldata to the inbox from dev account `index` and waits for its receipt.
async fn send_to_inbox(client: &dyn L1Client, index: usize, data: &[u8]) -> keel_l1::L1Receipt {
    let signer = &dev_accounts()[index];
    let chain_id = client.chain_id().await.unwrap();
    let nonce = client
        .nonce(signer.address(), NonceAt::Pending)
        .await
        .unwrap();
    let fees = client.fees().await.unwrap();
    let (envelope, raw) = sign_calldata(
        signer,
        chain_id,
        nonce,
        INBOX,
        Bytes::copy_from_slice(data),
        FeeCaps::for_fees(&fees),
    );
    let hash = client.send_raw_transaction(raw.clone()).await.unwrap();
    assert_eq!(hash, *envelope.tx_hash());
    // Idempotent: the same bytes again answer the same hash.
    assert_eq!(client.send_raw_transaction(raw).await.unwrap(), hash);
    for _ in 0..200 {
        if let Some(receipt) = client.receipt(hash).await.unwrap() {
            return receipt;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("transaction {hash} never included");
}

/// Checks the contract of `L1Client` on one L1: heads ordered, canonical reads, inbox reads
/// by hash, `None` above the head, a made-up hash gone.
async fn check_contract(client: &dyn L1Client) -> keel_l1::L1Receipt {
    let receipt = send_to_inbox(client, 1, b"\x00frames").await;
    assert!(receipt.succeeded);
    let block = client
        .block_by_number(receipt.block_number)
        .await
        .unwrap()
        .expect("the receipt's block is canonical");
    assert_eq!(block.hash, receipt.block_hash);
    let parent = client
        .block_by_number(receipt.block_number - 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(block.parent_hash, parent.hash);
    let found = client
        .inbox_transactions(&block, &[INBOX, Address::repeat_byte(0xf0)])
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].hash, receipt.transaction_hash);
    assert_eq!(found[0].from, dev_accounts()[1].address());
    assert_eq!(found[0].to, INBOX);
    assert_eq!(found[0].input.as_ref(), b"\x00frames");
    assert!(found[0].succeeded);
    assert!(
        client
            .inbox_transactions(&block, &[Address::repeat_byte(0xf0)])
            .await
            .unwrap()
            .is_empty()
    );
    let made_up = keel_l1::L1BlockRef {
        hash: B256::repeat_byte(0x77),
        ..block
    };
    let gone = client.inbox_transactions(&made_up, &[INBOX]).await;
    assert!(
        matches!(gone, Err(L1Error::BlockGone { .. })),
        "a block not on the chain is a reset: {gone:?}"
    );
    assert_eq!(gone.unwrap_err().kind(), ErrorKind::Reset);
    let latest = client.head(L1Head::Latest).await.unwrap();
    let safe = client.head(L1Head::Safe).await.unwrap();
    let finalized = client.head(L1Head::Finalized).await.unwrap();
    assert!(finalized.number <= safe.number && safe.number <= latest.number);
    assert_eq!(
        client.block_by_number(latest.number + 1_000).await.unwrap(),
        None
    );
    receipt
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_clients_of_the_embedded_l1_agree_and_keep_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let l1 = dev_l1(dir.path(), 200).await;
    let embedded: &EmbeddedL1 = &l1.client;
    let rpc = RpcL1::new(&format!("http://{}", l1.rpc_addr)).unwrap();
    assert_eq!(embedded.chain_id().await.unwrap(), 1337);
    keel_l1::check_chain_id(&rpc, 1337).await.unwrap();
    let wrong = keel_l1::check_chain_id(&rpc, 1).await.unwrap_err();
    assert_eq!(wrong.kind(), ErrorKind::Halt);

    let receipt = check_contract(embedded).await;
    check_contract(&rpc).await;
    // The same block, read both ways.
    let block = embedded
        .block_by_number(receipt.block_number)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        rpc.block_by_number(receipt.block_number)
            .await
            .unwrap()
            .unwrap(),
        block
    );
    assert_eq!(
        embedded.inbox_transactions(&block, &[INBOX]).await.unwrap(),
        rpc.inbox_transactions(&block, &[INBOX]).await.unwrap()
    );
    let by_rpc = rpc
        .receipt(receipt.transaction_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_rpc, receipt);
    // The dev accounts are funded on the L1 too.
    assert!(
        embedded.balance(dev_accounts()[9].address()).await.unwrap()
            > alloy::primitives::U256::ZERO
    );
    // A refusal in geth's words: the same nonce again at a lower price.
    let signer = &dev_accounts()[2];
    let fees = embedded.fees().await.unwrap();
    let caps = FeeCaps::for_fees(&fees);
    let (_, first) = sign_calldata(signer, 1337, 0, INBOX, Bytes::from_static(b"a"), caps);
    let (_, cheaper) = sign_calldata(
        signer,
        1337,
        0,
        INBOX,
        Bytes::from_static(b"b"),
        FeeCaps {
            max_fee: caps.max_fee,
            tip: caps.tip,
            blob_fee: 0,
        },
    );
    embedded.send_raw_transaction(first).await.unwrap();
    let refused = embedded.send_raw_transaction(cheaper).await.unwrap_err();
    assert_eq!(
        refused.rejection(),
        Some(Rejection::Underpriced),
        "{refused}"
    );
    l1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anvil_keeps_the_contract_and_a_reorg_is_a_reset() {
    let anvil =
        Anvil::start(0, &["--chain-id", "1337"]).expect("anvil runs: scripts/test.sh installs it");
    let rpc = RpcL1::new(&anvil.url).unwrap();
    // anvil mines on each transaction (no block time): check the contract, then reorg.
    let receipt = check_contract(&rpc).await;
    anvil
        .call("anvil_mine", serde_json::json!([3]))
        .await
        .unwrap();
    let tracker = L1Tracker::default();
    let before = tracker.update(&rpc).await.unwrap();
    assert_eq!(
        tracker.block(receipt.block_number).unwrap().hash,
        receipt.block_hash
    );
    let depth = before.number - receipt.block_number + 1;
    anvil
        .call("anvil_reorg", serde_json::json!([depth, []]))
        .await
        .unwrap();
    let block = keel_l1::L1BlockRef {
        number: receipt.block_number,
        hash: receipt.block_hash,
        parent_hash: B256::ZERO,
        timestamp: 0,
    };
    let gone = rpc.inbox_transactions(&block, &[INBOX]).await;
    assert!(matches!(gone, Err(L1Error::BlockGone { .. })), "{gone:?}");
    // The tracker follows the new chain: the reorged blocks are replaced.
    let after = tracker.update(&rpc).await.unwrap();
    assert_eq!(after.number, before.number);
    assert_ne!(after.hash, before.hash);
    let replaced = tracker.block(receipt.block_number).unwrap();
    assert_ne!(replaced.hash, receipt.block_hash);
    assert_eq!(
        rpc.block_by_number(receipt.block_number).await.unwrap(),
        Some(replaced)
    );
    // Refusals in geth's words from a real txpool.
    let signer = &dev_accounts()[3];
    let fees = rpc.fees().await.unwrap();
    let caps = FeeCaps::for_fees(&fees);
    let nonce = rpc.nonce(signer.address(), NonceAt::Latest).await.unwrap();
    anvil
        .call("evm_setAutomine", serde_json::json!([false]))
        .await
        .unwrap();
    let (_, first) = sign_calldata(signer, 1337, nonce, INBOX, Bytes::from_static(b"a"), caps);
    rpc.send_raw_transaction(first).await.unwrap();
    let (_, same_price) = sign_calldata(signer, 1337, nonce, INBOX, Bytes::from_static(b"b"), caps);
    let refused = rpc.send_raw_transaction(same_price).await.unwrap_err();
    assert_eq!(
        refused.rejection(),
        Some(Rejection::Underpriced),
        "{refused}"
    );
    let (_, bumped) = sign_calldata(
        signer,
        1337,
        nonce,
        INBOX,
        Bytes::from_static(b"c"),
        caps.bumped(&fees, 10),
    );
    rpc.send_raw_transaction(bumped).await.unwrap();
    anvil.call("evm_mine", serde_json::json!([])).await.unwrap();
    let (_, stale) = sign_calldata(
        signer,
        1337,
        nonce,
        INBOX,
        Bytes::from_static(b"d"),
        caps.bumped(&fees, 50),
    );
    let refused = rpc.send_raw_transaction(stale).await.unwrap_err();
    assert_eq!(
        refused.rejection(),
        Some(Rejection::NonceTooLow),
        "{refused}"
    );
}
