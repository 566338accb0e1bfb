//! geth's tracers on the real `keel` binary, compared with anvil's answers (anvil runs the
//! same revm-inspectors tracers) for the very same signed transactions on the same state:
//! a contract that calls another, which reverts with a reason, while the outer call succeeds
//! and logs. Also: the struct logger, prestateTracer, 4byteTracer, noopTracer,
//! `debug_traceCall`, the block variants, and the errors for what keel does not serve.

mod common;

use alloy::consensus::TxEip1559;
use alloy::eips::eip2718::Encodable2718;
use alloy::primitives::{Address, Bytes, TxKind, U256};
use common::{KeelProcess, post};
use keel_primitives::{DEV_CHAIN_ID, dev_accounts, sign_transaction};
use keel_testkit::anvil::Anvil;
use serde_json::{Value, json};
use std::time::Duration;

/// Runtime that reverts with `Error("no")`.
fn reverter() -> Vec<u8> {
    let mut data = vec![0x08, 0xc3, 0x79, 0xa0];
    data.extend_from_slice(&U256::from(32).to_be_bytes::<32>());
    data.extend_from_slice(&U256::from(2).to_be_bytes::<32>());
    let mut reason = [0u8; 32];
    reason[..2].copy_from_slice(b"no");
    data.extend_from_slice(&reason);
    let mut code = vec![
        0x60, 100, 0x60, 0x0c, 0x60, 0x00, 0x39, 0x60, 100, 0x60, 0x00, 0xfd,
    ];
    code.extend(data);
    code
}

/// Runtime that calls `inner` (ignoring its failure), stores the call's success flag in slot 0
/// and emits an empty log.
fn caller(inner: Address) -> Vec<u8> {
    let mut code = vec![0x60, 0, 0x60, 0, 0x60, 0, 0x60, 0, 0x60, 0, 0x73];
    code.extend_from_slice(inner.as_slice());
    code.extend([
        0x5a, 0xf1, 0x60, 0x00, 0x55, 0x60, 0x00, 0x60, 0x00, 0xa0, 0x00,
    ]);
    code
}

fn deploy_code(runtime: &[u8]) -> Vec<u8> {
    let length = runtime.len() as u8;
    let mut code = vec![
        0x60, length, 0x60, 0x0c, 0x60, 0x00, 0x39, 0x60, length, 0x60, 0x00, 0xf3,
    ];
    code.extend_from_slice(runtime);
    code
}

async fn rpc(url: &str, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    post(url, &body.to_string()).await
}

async fn result(url: &str, method: &str, params: Value) -> Value {
    let answer = rpc(url, method, params).await;
    assert!(answer.get("error").is_none(), "{method} on {url}: {answer}");
    answer["result"].clone()
}

/// Sends the same signed transactions to keel and to anvil, waiting for each receipt.
async fn send_both(urls: [&str; 2], raw: &Bytes) -> Value {
    let mut receipt = Value::Null;
    for url in urls {
        let hash = result(url, "eth_sendRawTransaction", json!([raw])).await;
        receipt = Value::Null;
        for _ in 0..200 {
            receipt = result(url, "eth_getTransactionReceipt", json!([hash])).await;
            if !receipt.is_null() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!receipt.is_null(), "no receipt on {url}");
    }
    receipt
}

/// I4 and geth conformance: callTracer (with logs, and top call only) on a nested call whose
/// inner call reverts equals anvil's answer field by field; every other tracer answers, and a
/// traced transaction's gas equals its receipt's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracers_answer_as_anvil_does_on_the_same_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let keel = KeelProcess::start(&dir.path().join("node"), 200, &["--no-l1"]);
    // Automine: each transaction in its own block, at once.
    let anvil = Anvil::start(0, &[]).unwrap();
    let urls = [keel.rpc_url.as_str(), anvil.url.as_str()];
    let signer = dev_accounts().remove(6);
    let sign = |nonce: u64, to: TxKind, input: Vec<u8>| {
        Bytes::from(
            sign_transaction(
                &signer,
                TxEip1559 {
                    chain_id: DEV_CHAIN_ID,
                    nonce,
                    gas_limit: 300_000,
                    max_fee_per_gas: 100_000_000_000,
                    max_priority_fee_per_gas: 1_000_000_000,
                    to,
                    input: input.into(),
                    ..Default::default()
                }
                .into(),
            )
            .encoded_2718(),
        )
    };
    let inner = signer.address().create(0);
    let outer = signer.address().create(1);
    send_both(urls, &sign(0, TxKind::Create, deploy_code(&reverter()))).await;
    send_both(urls, &sign(1, TxKind::Create, deploy_code(&caller(inner)))).await;
    let call = sign(2, TxKind::Call(outer), Vec::new());
    let receipt = send_both(urls, &call).await;
    let hash = receipt["transactionHash"].clone();

    for config in [
        json!({"withLog": true}),
        json!({"onlyTopCall": true}),
        json!({}),
    ] {
        let options = json!({"tracer": "callTracer", "tracerConfig": config});
        let ours = result(urls[0], "debug_traceTransaction", json!([hash, options])).await;
        let theirs = result(urls[1], "debug_traceTransaction", json!([hash, options])).await;
        assert_eq!(ours, theirs, "callTracer {config}");
    }
    let options = json!({"tracer": "callTracer", "tracerConfig": {"withLog": true}});
    let frame = result(urls[0], "debug_traceTransaction", json!([hash, options])).await;
    assert_eq!(frame["calls"][0]["error"], "execution reverted", "{frame}");
    assert_eq!(frame["calls"][0]["revertReason"], "no", "{frame}");
    assert_eq!(frame["logs"].as_array().map(Vec::len), Some(1), "{frame}");

    // I4: the traced gas is the receipt's.
    let keel_receipt = result(urls[0], "eth_getTransactionReceipt", json!([hash])).await;
    let logger = result(urls[0], "debug_traceTransaction", json!([hash])).await;
    assert_eq!(
        logger["gas"].as_u64().unwrap(),
        u64::from_str_radix(
            keel_receipt["gasUsed"]
                .as_str()
                .unwrap()
                .trim_start_matches("0x"),
            16
        )
        .unwrap()
    );
    assert_eq!(logger["failed"], false);
    let steps = logger["structLogs"].as_array().unwrap();
    assert!(
        steps.iter().any(|step| step["op"] == "REVERT"),
        "the inner revert is a step"
    );

    let prestate = result(
        urls[0],
        "debug_traceTransaction",
        json!([hash, {"tracer": "prestateTracer"}]),
    )
    .await;
    assert!(
        prestate[outer.to_string().to_lowercase()]["code"].is_string(),
        "{prestate}"
    );
    let diff = result(
        urls[0],
        "debug_traceTransaction",
        json!([hash, {"tracer": "prestateTracer", "tracerConfig": {"diffMode": true}}]),
    )
    .await;
    let sender = signer.address().to_string().to_lowercase();
    assert_eq!(diff["pre"][&sender]["nonce"], 2, "{diff}");
    assert_eq!(diff["post"][&sender]["nonce"], 3, "{diff}");
    assert!(
        diff["post"].get(outer.to_string().to_lowercase()).is_none(),
        "slot 0 stays 0 (the inner call failed): nothing of the caller changed: {diff}"
    );
    let noop = result(
        urls[0],
        "debug_traceTransaction",
        json!([hash, {"tracer": "noopTracer"}]),
    )
    .await;
    assert_eq!(noop, json!({}));
    let four = result(
        urls[0],
        "debug_traceTransaction",
        json!([hash, {"tracer": "4byteTracer"}]),
    )
    .await;
    assert!(four.is_object(), "{four}");

    // The block variants: one trace per transaction, with its hash.
    let number = keel_receipt["blockNumber"].clone();
    let block = result(
        urls[0],
        "debug_traceBlockByNumber",
        json!([number, options]),
    )
    .await;
    assert_eq!(block[0]["txHash"], hash, "{block}");
    assert_eq!(block[0]["result"], frame);
    let by_hash = result(
        urls[0],
        "debug_traceBlockByHash",
        json!([keel_receipt["blockHash"], options]),
    )
    .await;
    assert_eq!(by_hash, block);

    // debug_traceCall on the head's state, with a state override, as anvil answers it.
    let request = json!({"from": signer.address(), "to": outer, "gas": "0x30d40"});
    let ours = result(
        urls[0],
        "debug_traceCall",
        json!([request, "latest", {"tracer": "callTracer"}]),
    )
    .await;
    let theirs = result(
        urls[1],
        "debug_traceCall",
        json!([request, "latest", {"tracer": "callTracer"}]),
    )
    .await;
    assert_eq!(ours, theirs, "debug_traceCall");
    let overridden = result(
        urls[0],
        "debug_traceCall",
        json!([request, "latest", {"tracer": "callTracer", "stateOverrides": {inner.to_string(): {"code": "0x00"}}}]),
    )
    .await;
    assert!(
        overridden["calls"][0].get("error").is_none(),
        "the override removed the revert: {overridden}"
    );

    // What keel does not serve is refused clearly; a short timeout stops the execution.
    let js = rpc(
        urls[0],
        "debug_traceTransaction",
        json!([hash, {"tracer": "{}"}]),
    )
    .await;
    assert!(
        js["error"]["message"]
            .as_str()
            .unwrap()
            .contains("JavaScript"),
        "{js}"
    );
    let missing = rpc(
        urls[0],
        "debug_traceTransaction",
        json!([Bytes::from(vec![0u8; 32])]),
    )
    .await;
    assert_eq!(missing["error"]["message"], "transaction not found");
    let genesis = rpc(urls[0], "debug_traceBlockByNumber", json!(["0x0"])).await;
    assert_eq!(genesis["error"]["message"], "genesis is not traceable");
    // An endless loop, traced as a call, ends at the timeout.
    let spin = json!({"to": Address::repeat_byte(0x99), "gas": "0x1000000"});
    let timed_out = rpc(
        urls[0],
        "debug_traceCall",
        json!([spin, "latest", {"timeout": "100ms", "stateOverrides": {Address::repeat_byte(0x99).to_string(): {"code": "0x5b600056"}}}]),
    )
    .await;
    assert_eq!(
        timed_out["error"]["message"], "execution timeout",
        "{timed_out}"
    );
}
