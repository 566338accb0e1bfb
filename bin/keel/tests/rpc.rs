//! The real `keel` binary driven by alloy's provider and raw JSON-RPC: every transaction type,
//! contracts, calls, logs, receipts, errors in geth's words, batches, and subscriptions.

mod common;

use alloy::consensus::{TxEip1559, TxLegacy};
use alloy::eips::eip2718::Encodable2718;
use alloy::eips::eip2930::{AccessList, AccessListItem};
use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::{Address, B256, Bytes, TxKind, U256, address, keccak256};
use alloy::providers::{Provider, ProviderBuilder, WsConnect};
use alloy::rpc::types::{BlockId, BlockNumberOrTag, Filter, TransactionRequest};
use common::{KeelProcess, deploy_code, error_of, post, store_runtime};
use futures::StreamExt;
use keel_primitives::{DEV_CHAIN_ID, dev_accounts, limits, sign_transaction};
use std::time::Duration;

fn start() -> (tempfile::TempDir, KeelProcess) {
    let dir = tempfile::tempdir().unwrap();
    let keel = KeelProcess::start(&dir.path().join("node"), 200, &[]);
    (dir, keel)
}

/// I2 on one node: every receipt a client is given belongs to a block the node serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_contracts_calls_logs_and_receipts() {
    let (_dir, keel) = start();
    let signer = dev_accounts().remove(0);
    let provider = ProviderBuilder::new()
        .wallet(EthereumWallet::from(signer.clone()))
        .connect_http(keel.rpc_url.parse().unwrap());
    assert_eq!(provider.get_chain_id().await.unwrap(), DEV_CHAIN_ID);
    let recipient = address!("00000000000000000000000000000000000b0b00");
    let gas_price = provider.get_gas_price().await.unwrap();

    // The three transaction types.
    let legacy = TransactionRequest::default()
        .with_to(recipient)
        .with_value(U256::from(1))
        .with_gas_price(gas_price * 2);
    let eip2930 = TransactionRequest::default()
        .with_to(recipient)
        .with_value(U256::from(2))
        .with_gas_price(gas_price * 2)
        .with_access_list(AccessList(vec![AccessListItem {
            address: recipient,
            storage_keys: vec![B256::ZERO],
        }]));
    let eip1559 = TransactionRequest::default()
        .with_to(recipient)
        .with_value(U256::from(3));
    let mut types = Vec::new();
    let mut last_block = 0;
    for request in [legacy, eip2930, eip1559] {
        let receipt = provider
            .send_transaction(request)
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        assert!(receipt.status());
        types.push(receipt.inner.tx_type() as u8);
        last_block = receipt.block_number.unwrap();
        // The receipt's block is served, with the same hash, and holds the transaction.
        let block = provider
            .get_block_by_number(BlockNumberOrTag::Number(receipt.block_number.unwrap()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(block.header.hash, receipt.block_hash.unwrap());
        assert!(
            block
                .transactions
                .hashes()
                .any(|hash| hash == receipt.transaction_hash)
        );
    }
    assert_eq!(types, vec![0, 1, 2]);
    // The by-hash and by-number forms of the block methods agree (on a block holding a
    // transaction: the head may be an empty block by now).
    let latest = provider
        .get_block_by_number(BlockNumberOrTag::Number(last_block))
        .await
        .unwrap()
        .unwrap();
    let by_hash = provider
        .get_block_by_hash(latest.header.hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_hash.header, latest.header);
    let url = &keel.rpc_url;
    let number = format!("0x{:x}", latest.header.number);
    let hash = latest.header.hash.to_string();
    for (method, id) in [
        ("eth_getBlockTransactionCountByNumber", &number),
        ("eth_getBlockTransactionCountByHash", &hash),
    ] {
        let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":["{id}"]}}"#);
        let count = post(url, &body).await["result"].clone();
        assert_eq!(
            count,
            format!("0x{:x}", latest.transactions.len()),
            "{method}"
        );
    }
    for (method, id) in [
        ("eth_getTransactionByBlockNumberAndIndex", &number),
        ("eth_getTransactionByBlockHashAndIndex", &hash),
    ] {
        let body =
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":["{id}","0x0"]}}"#);
        let found = post(url, &body).await["result"].clone();
        assert_eq!(found["blockHash"], hash.as_str(), "{method}");
        let body =
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":["{id}","0x99"]}}"#);
        assert!(
            post(url, &body).await["result"].is_null(),
            "{method} past the end"
        );
    }
    assert_eq!(
        provider.get_balance(recipient).await.unwrap(),
        U256::from(6)
    );

    // A contract: deploy, write through a transaction, read by call, storage and logs.
    let deploy = TransactionRequest::default().with_deploy_code(deploy_code(&store_runtime()));
    let receipt = provider
        .send_transaction(deploy)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let contract = receipt
        .contract_address
        .expect("a create has a contract address");
    assert_eq!(
        provider.get_code_at(contract).await.unwrap(),
        Bytes::from(store_runtime())
    );
    let word = B256::from(U256::from(0xbeef));
    let store = TransactionRequest::default()
        .with_to(contract)
        .with_input(word.to_vec());
    let receipt = provider
        .send_transaction(store)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    assert!(receipt.status());
    assert_eq!(receipt.inner.logs().len(), 1);
    let read = provider
        .call(TransactionRequest::default().with_to(contract))
        .await
        .unwrap();
    assert_eq!(read.as_ref(), word.as_slice());
    assert_eq!(
        provider.get_storage_at(contract, U256::ZERO).await.unwrap(),
        U256::from(0xbeef)
    );
    let estimate = provider
        .estimate_gas(
            TransactionRequest::default()
                .with_from(signer.address())
                .with_to(contract)
                .with_input(word.to_vec()),
        )
        .await
        .unwrap();
    assert!((21_000..100_000).contains(&estimate), "estimate {estimate}");
    let logs = provider
        .get_logs(
            &Filter::new()
                .address(contract)
                .event_signature(keccak256("Stored(uint256)"))
                .from_block(0),
        )
        .await
        .unwrap();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].transaction_hash, Some(receipt.transaction_hash));
    assert_eq!(logs[0].inner.data.data.as_ref(), word.as_slice());
    let none = provider
        .get_logs(&Filter::new().address(Address::repeat_byte(9)).from_block(0))
        .await
        .unwrap();
    assert!(none.is_empty());
    let receipts = provider
        .get_block_receipts(BlockId::number(receipt.block_number.unwrap()))
        .await
        .unwrap()
        .unwrap();
    assert!(
        receipts
            .iter()
            .any(|r| r.transaction_hash == receipt.transaction_hash)
    );

    // eth_sendRawTransactionSync answers with the receipt of a durable block.
    let nonce = provider
        .get_transaction_count(signer.address())
        .pending()
        .await
        .unwrap();
    let raw = sign_transaction(
        &signer,
        TxEip1559 {
            chain_id: DEV_CHAIN_ID,
            nonce,
            gas_limit: 21_000,
            max_fee_per_gas: gas_price * 2,
            max_priority_fee_per_gas: 1,
            to: TxKind::Call(recipient),
            value: U256::from(4),
            ..Default::default()
        }
        .into(),
    )
    .encoded_2718();
    let receipt = provider.send_raw_transaction_sync(&raw).await.unwrap();
    assert!(receipt.status());
    let served = provider
        .get_transaction_receipt(receipt.transaction_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(served.block_hash, receipt.block_hash);

    // Fee history and the pending nonce.
    let history = provider
        .get_fee_history(4, BlockNumberOrTag::Latest, &[50.0])
        .await
        .unwrap();
    assert_eq!(history.base_fee_per_gas.len(), 5);
    assert_eq!(history.reward.unwrap().len(), 4);
    assert_eq!(
        provider
            .get_transaction_count(signer.address())
            .await
            .unwrap(),
        nonce + 1
    );
}

/// Bad input gets geth's codes and words, never a panic; the node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_geths_errors() {
    let (_dir, keel) = start();
    let url = &keel.rpc_url;
    let table = [
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber""#,
            -32700,
        ),
        (r#"{"jsonrpc":"2.0","id":1}"#, -32600),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"eth_noSuchMethod","params":[]}"#,
            -32601,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["0x12"]}"#,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"eth_sendRawTransaction","params":["0x02c0"]}"#,
            -32602,
        ),
    ];
    for (body, code) in table {
        let answer = post(url, body).await;
        assert_eq!(error_of(&answer).0, code, "{body} -> {answer}");
    }

    let signer = dev_accounts().remove(1);
    let base_fee = 2_000_000_000u128;
    let transfer = |nonce: u64, change: &dyn Fn(&mut TxEip1559)| {
        let mut tx = TxEip1559 {
            chain_id: DEV_CHAIN_ID,
            nonce,
            gas_limit: 21_000,
            max_fee_per_gas: base_fee,
            max_priority_fee_per_gas: 1_000,
            to: TxKind::Call(Address::repeat_byte(7)),
            value: U256::from(1),
            ..Default::default()
        };
        change(&mut tx);
        alloy::hex::encode_prefixed(sign_transaction(&signer, tx.into()).encoded_2718())
    };
    let send = |raw: String| {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"eth_sendRawTransaction","params":["{raw}"]}}"#
        )
    };
    // Accepted once; the same bytes again are already known; a cheap replacement is refused.
    // The duplicate and the replacement target a queued transaction (nonce 3, after a gap), so
    // that no block can include it between the two sends.
    let first = transfer(0, &|_| {});
    assert!(post(url, &send(first)).await.get("result").is_some());
    let queued = transfer(3, &|_| {});
    assert!(
        post(url, &send(queued.clone()))
            .await
            .get("result")
            .is_some()
    );
    let table: Vec<(String, &str)> = vec![
        (queued, "already known"),
        (
            transfer(3, &|tx| tx.max_fee_per_gas += 1),
            "replacement transaction underpriced",
        ),
        (
            transfer(1, &|tx| tx.value = U256::from(10u128.pow(30))),
            "insufficient funds for gas * price + value",
        ),
        (
            transfer(1, &|tx| {
                tx.max_fee_per_gas = 7;
                tx.max_priority_fee_per_gas = 0;
            }),
            "max fee per gas less than block base fee",
        ),
        (
            transfer(1, &|tx| tx.gas_limit = 100_000_000),
            "exceeds block gas limit",
        ),
        (
            transfer(1, &|tx| tx.gas_limit = 20_000),
            "intrinsic gas too low",
        ),
        (transfer(1, &|tx| tx.chain_id = 1), "invalid chain id"),
        (
            transfer(1, &|tx| tx.input = vec![1u8; limits::TX_BYTES_MAX].into()),
            "oversized data",
        ),
    ];
    for (raw, expected) in table {
        let answer = post(url, &send(raw)).await;
        let (code, message) = error_of(&answer);
        assert_eq!(code, -32000, "{expected}: {answer}");
        assert!(
            message.starts_with(expected),
            "expected {expected:?}, got {message:?}"
        );
    }
    // Once the first transfer is in a block, its nonce is too low.
    let provider = ProviderBuilder::new().connect_http(url.parse().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while provider
        .get_transaction_count(signer.address())
        .await
        .unwrap()
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the transfer was never included"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer = post(url, &send(transfer(0, &|tx| tx.value = U256::from(2)))).await;
    assert!(error_of(&answer).1.starts_with("nonce too low"), "{answer}");
    // Unprotected legacy transactions are refused over RPC, as geth does by default.
    let legacy = sign_transaction(
        &signer,
        TxLegacy {
            nonce: 1,
            gas_price: base_fee,
            gas_limit: 21_000,
            to: TxKind::Call(Address::ZERO),
            ..Default::default()
        }
        .into(),
    );
    let answer = post(
        url,
        &send(alloy::hex::encode_prefixed(legacy.encoded_2718())),
    )
    .await;
    assert!(error_of(&answer).1.contains("EIP-155"), "{answer}");

    // A call that reverts: code 3 with the revert data, as geth answers.
    let answer = post(
        url,
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_call","params":[{"data":"0x5f5ffd"},"latest"]}"#,
    )
    .await;
    // Creation code that reverts, run as a call with no recipient.
    let (code, message) = error_of(&answer);
    assert_eq!(
        (code, message.as_str()),
        (3, "execution reverted"),
        "{answer}"
    );

    // Batches answer every call; an over-long batch is refused as a whole.
    let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]},{"jsonrpc":"2.0","id":2,"method":"eth_nope","params":[]}]"#;
    let answer = post(url, batch).await;
    let answers = answer.as_array().expect("a batch answer");
    assert_eq!(answers.len(), 2);
    assert_eq!(
        answers.iter().find(|a| a["id"] == 1).unwrap()["result"],
        "0x7a69"
    );
    // Calls of a batch run concurrently, and the answers keep the batch's order; a
    // notification (no id) gets no answer.
    let mut calls: Vec<String> = (0..200)
        .map(|id| {
            let method = if id % 2 == 0 {
                "eth_chainId"
            } else {
                "eth_blockNumber"
            };
            format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":[]}}"#)
        })
        .collect();
    calls.insert(
        50,
        r#"{"jsonrpc":"2.0","method":"eth_chainId","params":[]}"#.into(),
    );
    let answer = post(url, &format!("[{}]", calls.join(","))).await;
    let ids: Vec<u64> = answer
        .as_array()
        .expect("a batch answer")
        .iter()
        .map(|answer| answer["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, (0..200).collect::<Vec<u64>>());
    let too_many = format!(
        "[{}]",
        vec![
            r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}"#;
            limits::RPC_BATCH_CALLS_MAX as usize + 1
        ]
        .join(",")
    );
    let answer = post(url, &too_many).await;
    assert!(
        answer.get("error").is_some(),
        "an over-long batch is refused"
    );

    // A body over the request limit is refused before it is parsed.
    let oversized = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":["{}"]}}"#,
        "a".repeat(limits::RPC_REQUEST_BYTES_MAX as usize)
    );
    // The server answers 413 and closes; a client still writing may see the close first.
    let refused = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(oversized)
        .send()
        .await;
    match refused {
        Ok(response) => assert_eq!(response.status(), 413, "an oversized request is refused"),
        Err(error) => assert!(error.is_request(), "refused by closing: {error}"),
    }

    // State of an older block is served from the history (an archive by default); a block
    // the chain does not have yet is geth's "header not found".
    let answer = post(
        url,
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266","0x0"]}"#,
    )
    .await;
    assert_eq!(answer["result"], "0x21e19e0c9bab2400000", "{answer}");
    let answer = post(
        url,
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266","0xffffffff"]}"#,
    )
    .await;
    assert_eq!(error_of(&answer).1, "header not found", "{answer}");
    assert!(
        post(
            url,
            r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#
        )
        .await["result"]
            .is_string()
    );
}

/// Subscriptions over WebSocket on the same port: newHeads link parent to child (I1), and logs
/// arrive for matching transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_subscriptions() {
    let (_dir, keel) = start();
    let signer = dev_accounts().remove(2);
    let ws = ProviderBuilder::new()
        .wallet(EthereumWallet::from(signer))
        .connect_ws(WsConnect::new(keel.ws_url.clone()))
        .await
        .unwrap();
    let mut heads = ws.subscribe_blocks().await.unwrap().into_stream();
    let first = tokio::time::timeout(Duration::from_secs(5), heads.next())
        .await
        .unwrap()
        .unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), heads.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.number, first.number + 1);
    assert_eq!(second.parent_hash, first.hash);

    let deploy = TransactionRequest::default().with_deploy_code(deploy_code(&store_runtime()));
    let contract = ws
        .send_transaction(deploy)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap()
        .contract_address
        .unwrap();
    let mut logs = ws
        .subscribe_logs(&Filter::new().address(contract))
        .await
        .unwrap()
        .into_stream();
    let word = B256::from(U256::from(42));
    let receipt = ws
        .send_transaction(
            TransactionRequest::default()
                .with_to(contract)
                .with_input(word.to_vec()),
        )
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let log = tokio::time::timeout(Duration::from_secs(5), logs.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(log.transaction_hash, Some(receipt.transaction_hash));
    assert_eq!(log.inner.data.data.as_ref(), word.as_slice());
}

/// The operations endpoint: health, readiness and Prometheus metrics with the named series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics() {
    let (_dir, keel) = start();
    let client = reqwest::Client::new();
    for path in ["/health", "/ready"] {
        let response = client
            .get(format!("{}{path}", keel.ops_url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let _ = post(
        &keel.rpc_url,
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}"#,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = client
        .get(format!("{}/metrics", keel.ops_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        "keel_head_number",
        "keel_block_seal_seconds",
        "keel_block_transactions",
        "keel_gas_per_second",
        "keel_mempool_transactions",
        "keel_rpc_request_seconds{method=\"eth_chainId\"",
    ] {
        assert!(metrics.contains(series), "missing {series} in\n{metrics}");
    }
}

/// One JSON-RPC call's result (panics on an error).
async fn result(url: &str, method: &str, params: serde_json::Value) -> serde_json::Value {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let answer = post(url, &body.to_string()).await;
    assert!(answer.get("error").is_none(), "{method}: {answer}");
    answer["result"].clone()
}

/// The raw encodings decode to the very block, receipts and transaction the node serves; the
/// pool is shown split as geth splits it; the proof-of-work and module methods answer as geth
/// does on a post-merge chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_encodings_the_pool_view_and_legacy_methods_answer_as_geth() {
    use alloy::consensus::{Block, ReceiptEnvelope, TxEnvelope};
    use alloy::eips::eip2718::Decodable2718;
    use alloy::rlp::Decodable;
    use serde_json::json;
    let (_dir, keel) = start();
    let url = keel.rpc_url.as_str();
    let signer = dev_accounts().remove(4);
    let transfer = |nonce: u64| {
        sign_transaction(
            &signer,
            TxEip1559 {
                chain_id: DEV_CHAIN_ID,
                nonce,
                gas_limit: 21_000,
                max_fee_per_gas: 10_000_000_000,
                max_priority_fee_per_gas: 1_000,
                to: TxKind::Call(Address::repeat_byte(7)),
                value: U256::from(1),
                ..Default::default()
            }
            .into(),
        )
    };
    let sent = transfer(0);
    let raw = Bytes::from(sent.encoded_2718());
    let receipt = result(url, "eth_sendRawTransactionSync", json!([raw])).await;
    let number = receipt["blockNumber"].clone();
    let block = result(url, "eth_getBlockByNumber", json!([number, false])).await;

    let raw_block: Bytes =
        serde_json::from_value(result(url, "debug_getRawBlock", json!([number])).await).unwrap();
    let decoded = Block::<TxEnvelope>::decode(&mut raw_block.as_ref()).unwrap();
    assert_eq!(
        decoded.header.hash_slow().to_string(),
        block["hash"].as_str().unwrap(),
        "the raw block's header hashes to the block's hash"
    );
    assert_eq!(decoded.body.transactions, vec![sent.clone()]);
    let raw_header: Bytes =
        serde_json::from_value(result(url, "debug_getRawHeader", json!([number])).await).unwrap();
    assert_eq!(
        keccak256(&raw_header).to_string(),
        block["hash"].as_str().unwrap()
    );
    let raw_receipts: Vec<Bytes> =
        serde_json::from_value(result(url, "debug_getRawReceipts", json!([number])).await).unwrap();
    let receipts: Vec<ReceiptEnvelope> = raw_receipts
        .iter()
        .map(|bytes| ReceiptEnvelope::decode_2718(&mut bytes.as_ref()).unwrap())
        .collect();
    assert_eq!(receipts.len(), 1);
    assert!(receipts[0].is_success());
    for method in ["debug_getRawTransaction", "eth_getRawTransactionByHash"] {
        let answer = result(url, method, json!([sent.tx_hash()])).await;
        assert_eq!(answer, json!(raw), "{method}");
        assert!(result(url, method, json!([B256::ZERO])).await.is_null());
    }
    let error = post(
        url,
        r#"{"jsonrpc":"2.0","id":1,"method":"debug_getRawBlock","params":["0xffffff"]}"#,
    )
    .await;
    assert_eq!(error_of(&error).1, "block not found");

    // The pool: nonce 1 runs on from the account's nonce (pending); nonce 3 waits on a gap.
    for nonce in [1, 3] {
        let raw = Bytes::from(transfer(nonce).encoded_2718());
        result(url, "eth_sendRawTransaction", json!([raw])).await;
    }
    // Sealing may take nonce 1 meanwhile; nonce 3 stays queued behind the gap.
    let status = result(url, "txpool_status", json!([])).await;
    assert_eq!(status["queued"], "0x1", "{status}");
    let sender = signer.address().to_checksum(None);
    let content = result(url, "txpool_content", json!([])).await;
    let queued = &content["queued"][&sender]["3"];
    assert_eq!(queued["nonce"], "0x3", "{content}");
    assert_eq!(
        queued["from"].as_str().unwrap().to_lowercase(),
        sender.to_lowercase()
    );
    let inspect = result(url, "txpool_inspect", json!([])).await;
    assert_eq!(
        inspect["queued"][&sender]["3"],
        format!(
            "{}: 1 wei + 21000 gas × 10000000000 wei",
            Address::repeat_byte(7).to_checksum(None)
        ),
        "{inspect}"
    );

    // Post-merge answers, and the modules served.
    assert_eq!(result(url, "eth_mining", json!([])).await, json!(false));
    assert_eq!(result(url, "eth_hashrate", json!([])).await, "0x0");
    assert_eq!(result(url, "eth_protocolVersion", json!([])).await, "0x44");
    assert_eq!(
        result(url, "eth_coinbase", json!([])).await,
        json!(Address::ZERO)
    );
    assert_eq!(result(url, "eth_blobBaseFee", json!([])).await, "0x1");
    assert_eq!(
        result(url, "eth_getUncleCountByBlockNumber", json!([number])).await,
        "0x0"
    );
    assert_eq!(
        result(url, "eth_getUncleCountByBlockHash", json!([block["hash"]])).await,
        "0x0"
    );
    assert!(
        result(url, "eth_getUncleCountByBlockNumber", json!(["0xffffff"]))
            .await
            .is_null()
    );
    assert!(
        result(
            url,
            "eth_getUncleByBlockNumberAndIndex",
            json!([number, "0x0"])
        )
        .await
        .is_null()
    );
    let modules = result(url, "rpc_modules", json!([])).await;
    for module in ["eth", "net", "web3", "debug", "txpool"] {
        assert_eq!(modules[module], "1.0", "{modules}");
    }
}

/// geth's state overrides on eth_call and eth_estimateGas (balance, code, state, stateDiff),
/// refused in geth's words when contradictory; eth_createAccessList finds the slots a call
/// touches and the gas it uses with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_overrides_and_access_lists_answer_as_geth() {
    use serde_json::json;
    let (_dir, keel) = start();
    let url = keel.rpc_url.as_str();
    let provider = ProviderBuilder::new()
        .wallet(EthereumWallet::from(dev_accounts().remove(5)))
        .connect_http(url.parse().unwrap());
    let deploy = TransactionRequest::default().with_deploy_code(deploy_code(&store_runtime()));
    let contract = provider
        .send_transaction(deploy)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap()
        .contract_address
        .unwrap();
    let set = TransactionRequest::default()
        .with_to(contract)
        .with_input(B256::from(U256::from(3)).to_vec());
    provider
        .send_transaction(set)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let word = |value: u64| json!(B256::from(U256::from(value)));
    let call = |overrides: serde_json::Value| {
        json!({"jsonrpc": "2.0", "id": 1, "method": "eth_call",
               "params": [{"to": contract}, "latest", overrides]})
        .to_string()
    };
    assert_eq!(post(url, &call(json!({}))).await["result"], word(3));
    let diff = json!({ contract.to_string(): {"stateDiff": {"0x0000000000000000000000000000000000000000000000000000000000000000": word(5)}} });
    assert_eq!(post(url, &call(diff)).await["result"], word(5), "stateDiff");
    let cleared = json!({ contract.to_string(): {"state": {}} });
    assert_eq!(
        post(url, &call(cleared)).await["result"],
        word(0),
        "state replaces all"
    );
    let both = json!({ contract.to_string(): {"state": {}, "stateDiff": {}} });
    let answer = post(url, &call(both)).await;
    assert_eq!(
        error_of(&answer),
        (
            -32000,
            format!("account {contract} has both 'state' and 'stateDiff'")
        )
    );
    // Code and balance on an address that has neither.
    let empty = Address::repeat_byte(0x5e);
    let forty_two = "0x602a60005260206000f3";
    let answer = post(
        url,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "eth_call",
                "params": [{"to": empty}, "latest", { empty.to_string(): {"code": forty_two} }]})
        .to_string(),
    )
    .await;
    assert_eq!(answer["result"], word(42), "{answer}");
    let poor = Address::repeat_byte(0x70);
    let pay = json!({"from": poor, "to": empty, "value": "0xde0b6b3a7640000"});
    let refused = post(
        url,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "eth_estimateGas", "params": [pay, "latest"]})
            .to_string(),
    )
    .await;
    assert!(refused.get("error").is_some(), "{refused}");
    let rich = json!({ poor.to_string(): {"balance": "0x56bc75e2d63100000"} });
    let estimated = post(
        url,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "eth_estimateGas", "params": [pay, "latest", rich]})
            .to_string(),
    )
    .await;
    let gas = u64::from_str_radix(
        estimated["result"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
        16,
    )
    .unwrap();
    assert!(
        (21_000..=21_000 * 1016 / 1000).contains(&gas),
        "{estimated}"
    );

    // The access list of a store: the contract's slot 0, and less gas with it than without.
    let store = json!({"from": dev_accounts()[5].address(), "to": contract, "data": word(9)});
    let answer = post(
        url,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "eth_createAccessList", "params": [store, "latest"]})
            .to_string(),
    )
    .await;
    let result = &answer["result"];
    assert_eq!(
        result["accessList"],
        json!([{"address": contract, "storageKeys": [word(0)]}]),
        "{answer}"
    );
    assert!(result.get("error").is_none(), "{answer}");
    let with_list: u64 = u64::from_str_radix(
        result["gasUsed"].as_str().unwrap().trim_start_matches("0x"),
        16,
    )
    .unwrap();
    let plain = post(
        url,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "eth_estimateGas", "params": [store, "latest"]})
            .to_string(),
    )
    .await;
    let plain: u64 = u64::from_str_radix(
        plain["result"].as_str().unwrap().trim_start_matches("0x"),
        16,
    )
    .unwrap();
    assert!(
        with_list > 21_000 && with_list <= plain + 2_400,
        "{with_list} vs {plain}"
    );
}

/// `eth_simulateV1` through alloy's provider: blocks chained on one state (a store in one block
/// is read in the next), gaps filled with empty blocks, BLOCKHASH answering the simulated
/// blocks' own hashes, ERC-7528 transfer logs, reverts and halts as results; geth's codes for
/// every refusal; and nothing written to the chain. Block overrides on `eth_call` too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_v1_and_block_overrides_answer_as_geth() {
    use alloy::rpc::types::simulate::{SimBlock, SimulatePayload};
    use alloy::rpc::types::state::{AccountOverride, StateOverride};
    use alloy::rpc::types::{BlockOverrides, BlockTransactions};
    use serde_json::json;
    let (_dir, keel) = start();
    let url = keel.rpc_url.as_str();
    let signer = dev_accounts().remove(6);
    let sender = signer.address();
    let provider = ProviderBuilder::new()
        .wallet(EthereumWallet::from(signer))
        .connect_http(url.parse().unwrap());
    let deploy = TransactionRequest::default().with_deploy_code(deploy_code(&store_runtime()));
    let store = provider
        .send_transaction(deploy)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap()
        .contract_address
        .unwrap();
    let base = provider.get_block_number().await.unwrap();
    let base_header = provider
        .get_block_by_number(BlockNumberOrTag::Number(base))
        .await
        .unwrap()
        .unwrap()
        .header;
    // Runtimes put on addresses by state overrides: the number, and the previous block's hash.
    let number_code = Bytes::from_static(&[0x43, 0x60, 0x00, 0x52, 0x60, 0x20, 0x60, 0x00, 0xf3]);
    let parent_hash_code = Bytes::from_static(&[
        0x60, 0x01, 0x43, 0x03, 0x40, 0x60, 0x00, 0x52, 0x60, 0x20, 0x60, 0x00, 0xf3,
    ]);
    let (numbers, parents) = (Address::repeat_byte(0x43), Address::repeat_byte(0x40));
    let poor = Address::repeat_byte(0x70);
    let payee = Address::repeat_byte(0x71);
    let word = |value: u64| Bytes::from(B256::from(U256::from(value)).to_vec());
    let mut code = StateOverride::default();
    code.insert(
        numbers,
        AccountOverride::default().with_code(number_code.clone()),
    );
    code.insert(
        parents,
        AccountOverride::default().with_code(parent_hash_code),
    );
    code.insert(
        poor,
        AccountOverride::default().with_balance(U256::from(5_000)),
    );
    let payload = SimulatePayload {
        block_state_calls: vec![
            SimBlock::default()
                .with_state_overrides(code)
                .call(
                    TransactionRequest::default()
                        .from(sender)
                        .to(store)
                        .input(word(7).into()),
                )
                .call(
                    TransactionRequest::default()
                        .from(poor)
                        .to(payee)
                        .value(U256::from(1_000)),
                ),
            // Three blocks later: two empty ones fill the gap.
            SimBlock::default()
                .with_block_overrides(BlockOverrides {
                    number: Some(U256::from(base + 4)),
                    ..Default::default()
                })
                .call(TransactionRequest::default().from(sender).to(store))
                .call(TransactionRequest::default().to(numbers))
                .call(TransactionRequest::default().to(parents))
                // An invalid opcode halts (burning its gas: a call without a gas limit gets
                // the rest of the block's); a revert carries its data.
                .call(
                    TransactionRequest::default()
                        .gas_limit(100_000)
                        .input(Bytes::from_static(&[0xfe]).into()),
                )
                .call(
                    TransactionRequest::default()
                        .input(Bytes::from_static(&[0x60, 0x00, 0x60, 0x00, 0xfd]).into()),
                ),
        ],
        trace_transfers: true,
        validation: false,
        return_full_transactions: true,
    };
    // On `base`, not `latest`: the node seals every 200 ms, and a block sealed since `base` was
    // read would shorten the gap the request names (CI saw 3 blocks for 4).
    let blocks = provider
        .simulate(&payload)
        .block_id(BlockId::number(base))
        .await
        .unwrap();
    assert_eq!(
        blocks.len(),
        4,
        "the gap between base+1 and base+4 is filled"
    );
    for (offset, block) in blocks.iter().enumerate() {
        let header = &block.inner.header;
        assert_eq!(header.number, base + 1 + offset as u64);
        assert_eq!(
            header.timestamp,
            base_header.timestamp + 12 * (1 + offset as u64)
        );
        let parent = if offset == 0 {
            base_header.hash
        } else {
            blocks[offset - 1].inner.header.hash
        };
        assert_eq!(header.parent_hash, parent);
        assert_eq!(
            header.base_fee_per_gas,
            Some(0),
            "no validation: no base fee"
        );
    }
    let (first, last) = (&blocks[0], &blocks[3]);
    assert!(blocks[1].calls.is_empty() && blocks[2].calls.is_empty());
    assert!(
        first.calls.iter().all(|call| call.status),
        "{:?}",
        first.calls
    );
    // The store's own event, then the ether transfer as ERC-7528 logs it.
    assert_eq!(first.calls[0].logs.len(), 1);
    let transfer = &first.calls[1].logs[0];
    assert_eq!(
        transfer.address(),
        address!("eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee")
    );
    assert_eq!(
        transfer.topics(),
        &[
            keccak256("Transfer(address,address,uint256)"),
            poor.into_word(),
            payee.into_word()
        ]
    );
    assert_eq!(transfer.data().data, word(1_000));
    assert_eq!(
        transfer.log_index,
        Some(1),
        "indexes count across the block"
    );
    assert_eq!(transfer.block_hash, Some(first.inner.header.hash));
    let BlockTransactions::Full(transactions) = &first.inner.transactions else {
        panic!("returnFullTransactions gives the transactions");
    };
    assert_eq!(transactions.len(), 2);
    assert_eq!(transactions[1].inner.signer(), poor);
    assert_eq!(
        transfer.transaction_hash,
        Some(*transactions[1].inner.tx_hash())
    );
    assert_eq!(
        first.inner.header.gas_used,
        first.calls.iter().map(|c| c.gas_used).sum::<u64>()
    );
    // State, number and block hashes chain from block to block.
    assert_eq!(
        last.calls[0].return_data,
        word(7),
        "the store of block base+1"
    );
    assert_eq!(last.calls[1].return_data, word(base + 4));
    assert_eq!(
        last.calls[2].return_data,
        Bytes::from(blocks[2].inner.header.hash.to_vec()),
        "BLOCKHASH answers the simulated parent's hash"
    );
    let halted = last.calls[3].error.as_ref().unwrap();
    assert_eq!(
        (halted.code, halted.message.as_str()),
        (-32015, "invalid opcode")
    );
    let reverted = last.calls[4].error.as_ref().unwrap();
    assert_eq!(
        (reverted.code, reverted.message.as_str()),
        (-32000, "execution reverted")
    );
    assert!(!last.calls[3].status && !last.calls[4].status);
    // Nothing was written.
    assert_eq!(provider.get_balance(payee).await.unwrap(), U256::ZERO);
    let stored = provider
        .call(TransactionRequest::default().to(store))
        .await
        .unwrap();
    assert_eq!(stored, word(0));

    // I4 for simulations: a real block's transfer, simulated with validation on its parent
    // under the block's own header fields, gives the block's state and receipts roots.
    let real = loop {
        let transfer = TransactionRequest::default()
            .with_to(payee)
            .with_value(U256::from(12_345));
        let receipt = provider
            .send_transaction(transfer)
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        let block = provider
            .get_block_by_number(BlockNumberOrTag::Number(receipt.block_number.unwrap()))
            .full()
            .await
            .unwrap()
            .unwrap();
        let parent = provider
            .get_block_by_hash(block.header.parent_hash)
            .await
            .unwrap()
            .unwrap();
        // geth's simulation wants strictly increasing times; keel's blocks may share a second.
        if block.transactions.len() == 1 && block.header.timestamp > parent.header.timestamp {
            break block;
        }
    };
    let BlockTransactions::Full(sent) = &real.transactions else {
        panic!("full block")
    };
    use alloy::consensus::Transaction as _;
    let sent = &sent[0];
    let header = &real.header;
    let replay = SimulatePayload {
        block_state_calls: vec![
            SimBlock::default()
                .with_block_overrides(BlockOverrides {
                    number: Some(U256::from(header.number)),
                    time: Some(header.timestamp),
                    gas_limit: Some(header.gas_limit),
                    coinbase: Some(header.beneficiary),
                    random: Some(header.mix_hash),
                    base_fee: header.base_fee_per_gas.map(U256::from),
                    ..Default::default()
                })
                .call(
                    TransactionRequest::default()
                        .from(sent.inner.signer())
                        .to(payee)
                        .value(U256::from(12_345))
                        .nonce(sent.inner.nonce())
                        .gas_limit(sent.inner.gas_limit())
                        .max_fee_per_gas(sent.inner.max_fee_per_gas())
                        .max_priority_fee_per_gas(
                            sent.inner.max_priority_fee_per_gas().unwrap_or_default(),
                        ),
                ),
        ],
        trace_transfers: false,
        validation: true,
        return_full_transactions: false,
    };
    let replayed = provider
        .simulate(&replay)
        .block_id(BlockId::number(header.number - 1))
        .await
        .unwrap();
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].inner.header.state_root, header.state_root);
    assert_eq!(replayed[0].inner.header.receipts_root, header.receipts_root);
    assert_eq!(replayed[0].inner.header.gas_used, header.gas_used);

    // Validation: the chain's nonce and base fee rules, in geth's codes (on the block the
    // first simulation started from, now a past one).
    let simulate = |blocks: serde_json::Value, validation: bool| {
        json!({"jsonrpc": "2.0", "id": 1, "method": "eth_simulateV1",
               "params": [{"blockStateCalls": blocks, "validation": validation}, format!("{base:#x}")]})
        .to_string()
    };
    let stale = json!([{"calls": [{"from": sender, "to": payee, "nonce": "0x0", "maxFeePerGas": "0x3b9aca00"}]}]);
    let answer = post(url, &simulate(stale.clone(), false)).await;
    assert_eq!(answer["result"][0]["calls"][0]["status"], "0x1", "{answer}");
    let (code, message) = error_of(&post(url, &simulate(stale, true)).await);
    assert_eq!(code, -38010, "{message}");
    assert!(message.starts_with("err: nonce too low"), "{message}");
    let unpriced = json!([{"calls": [{"from": sender, "to": payee}]}]);
    let (code, message) = error_of(&post(url, &simulate(unpriced, true)).await);
    assert_eq!(code, -38012, "{message}");
    assert!(
        message.contains("max fee per gas less than block base fee"),
        "{message}"
    );
    let priced = json!([{"calls": [{"from": sender, "to": payee, "maxFeePerGas": "0x3b9aca00"}]}]);
    let answer = post(url, &simulate(priced, true)).await;
    let base_fee = &answer["result"][0]["baseFeePerGas"];
    assert_ne!(
        base_fee, "0x0",
        "validation computes the base fee: {answer}"
    );

    // Refusals, each with geth's code and words.
    let refusals = [
        (json!([]), -32602, "empty input".to_string()),
        (
            json!([{"blockOverrides": {"number": format!("{:#x}", base + 2)}},
                   {"blockOverrides": {"number": format!("{:#x}", base + 1)}}]),
            -38020,
            format!(
                "block numbers must be in order: {} <= {}",
                base + 1,
                base + 2
            ),
        ),
        (
            json!([{"blockOverrides": {"time": format!("{:#x}", base_header.timestamp)}}]),
            -38021,
            format!(
                "block timestamps must be in order: {} <= {}",
                base_header.timestamp, base_header.timestamp
            ),
        ),
        (
            json!([{"blockOverrides": {"number": format!("{:#x}", base + 257)}}]),
            -38026,
            "too many blocks".to_string(),
        ),
        (
            json!([{"blockOverrides": {"gasLimit": "0x5208"},
                    "calls": [{"to": payee}, {"to": payee, "gas": "0x5208"}]}]),
            -38015,
            "block gas limit reached: 21000 >= 21000".to_string(),
        ),
    ];
    for (blocks, code, message) in refusals {
        let answer = post(url, &simulate(blocks.clone(), false)).await;
        assert_eq!(error_of(&answer), (code, message), "{blocks}");
    }

    // eth_call's fourth parameter: block number and BLOCKHASH overridden.
    let call = |to: Address, overrides: serde_json::Value| {
        json!({"jsonrpc": "2.0", "id": 1, "method": "eth_call",
               "params": [{"to": to}, "latest", { numbers.to_string(): {"code": number_code}, parents.to_string(): {"code": Bytes::from_static(&[0x60, 0x01, 0x43, 0x03, 0x40, 0x60, 0x00, 0x52, 0x60, 0x20, 0x60, 0x00, 0xf3])} }, overrides]})
        .to_string()
    };
    let answer = post(url, &call(numbers, json!({"number": "0x1234"}))).await;
    assert_eq!(answer["result"], json!(word(0x1234)), "{answer}");
    let pinned = B256::repeat_byte(0xab);
    // geth reads the map's keys as decimal numbers (Go's map[uint64]).
    let answer = post(
        url,
        &call(
            parents,
            json!({"number": "0x1234", "blockHash": {"4659": pinned}}),
        ),
    )
    .await;
    assert_eq!(answer["result"], json!(pinned), "{answer}");
    let answer = post(url, &call(numbers, json!({"beaconRoot": pinned}))).await;
    assert_eq!(
        error_of(&answer),
        (
            -32000,
            "block override \"beaconRoot\" is not supported for this RPC method".to_string()
        )
    );
}
