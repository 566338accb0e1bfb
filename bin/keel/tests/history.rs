//! State history through real clients against the real `keel` binary: Foundry's cast reading
//! balances, nonces and contract calls at blocks hundreds of blocks old, `cast run` replaying a
//! mined transaction, anvil forking keel at an old block and transacting on the fork while
//! keel seals on; then a window (`--state-history-blocks`) that prunes, refuses below its floor
//! in geth's words, and stays consistent across a SIGKILL while pruning.
//!
//! cast and anvil come from npm (`npm ci` at the repository root, as `scripts/test.sh` does).

mod common;

use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::{Address, B256, U256, address};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use common::{KeelProcess, deploy_code, free_port, post, store_runtime};
use keel_primitives::dev_accounts;
use keel_testkit::anvil::npm_binary;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

/// The first dev account's key, as anvil prints it.
const KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const RECIPIENT: Address = address!("000000000000000000000000000000000000cafe");

/// cast's answer, or its error text.
fn cast_result(args: &[&str]) -> Result<String, String> {
    let output = Command::new(npm_binary("cast"))
        .args(args)
        .output()
        .expect("cast runs (npm ci installs it)");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).to_string())
    }
}

/// cast's answer; a failure fails the test.
fn cast(args: &[&str]) -> String {
    cast_result(args).unwrap_or_else(|error| panic!("cast {args:?}: {error}"))
}

async fn head(url: &str) -> u64 {
    let answer = post(
        url,
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#,
    )
    .await;
    u64::from_str_radix(
        answer["result"].as_str().unwrap().trim_start_matches("0x"),
        16,
    )
    .unwrap()
}

async fn wait_for_head(url: &str, number: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while head(url).await < number {
        assert!(Instant::now() < deadline, "head did not reach {number}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads that pin a block work for blocks hundreds of blocks old, through cast (every read
/// method at an old block), `cast run` (a replay, which forks at the parent block) and an anvil
/// fork at an old block that deploys, transacts and calls while keel seals on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cast_and_an_anvil_fork_read_state_hundreds_of_blocks_old() {
    let dir = tempfile::tempdir().unwrap();
    // 50 ms blocks: hundreds of blocks pass in seconds.
    let keel = KeelProcess::start(&dir.path().join("node"), 50, &["--no-l1"]);
    let rpc = keel.rpc_url.as_str();
    let provider = ProviderBuilder::new()
        .wallet(EthereumWallet::from(dev_accounts().remove(0)))
        .connect_http(rpc.parse().unwrap());
    let deploy = TransactionRequest::default().with_deploy_code(deploy_code(&store_runtime()));
    let receipt = provider
        .send_transaction(deploy)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let contract = receipt.contract_address.unwrap();
    let deployed_at = receipt.block_number.unwrap();
    // Each step: the slot takes a new value and the recipient a new balance, in their blocks.
    let mut steps = Vec::new();
    for value in 1..=3u64 {
        let set = TransactionRequest::default()
            .with_to(contract)
            .with_input(B256::from(U256::from(value)).to_vec());
        let set = provider
            .send_transaction(set)
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        let pay = TransactionRequest::default()
            .with_to(RECIPIENT)
            .with_value(U256::from(value * 1_000));
        let paid = provider
            .send_transaction(pay)
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        steps.push((
            value,
            set.transaction_hash,
            set.block_number.unwrap(),
            paid.block_number.unwrap(),
        ));
        // Blocks in between, so that each value is old by the time it is read.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let last = steps.last().unwrap().3;
    wait_for_head(rpc, last + 300).await;

    let contract = contract.to_string();
    let recipient = RECIPIENT.to_string();
    let word = |value: u64| format!("0x{value:064x}");
    assert_eq!(
        cast(&[
            "call",
            "--rpc-url",
            rpc,
            "--block",
            &deployed_at.to_string(),
            &contract
        ]),
        word(0)
    );
    let mut paid = 0u64;
    for (value, _, set_at, paid_at) in &steps {
        let (set_at, paid_at) = (set_at.to_string(), paid_at.to_string());
        let before = (set_at.parse::<u64>().unwrap() - 1).to_string();
        assert_eq!(
            cast(&["call", "--rpc-url", rpc, "--block", &before, &contract]),
            word(value - 1),
            "the slot before block {set_at}"
        );
        assert_eq!(
            cast(&["call", "--rpc-url", rpc, "--block", &set_at, &contract]),
            word(*value),
            "the slot at block {set_at}"
        );
        assert_eq!(
            cast(&[
                "storage",
                "--rpc-url",
                rpc,
                "--block",
                &set_at,
                &contract,
                "0"
            ]),
            word(*value)
        );
        assert_eq!(
            cast(&["balance", "--rpc-url", rpc, "--block", &paid_at, &recipient]),
            (paid + value * 1_000).to_string(),
            "the balance at block {paid_at}"
        );
        paid += value * 1_000;
    }
    assert_eq!(
        cast(&[
            "code",
            "--rpc-url",
            rpc,
            "--block",
            &(deployed_at - 1).to_string(),
            &contract
        ]),
        "0x",
        "no code before the deploy"
    );
    assert_eq!(
        cast(&[
            "nonce",
            "--rpc-url",
            rpc,
            "--block",
            &deployed_at.to_string(),
            &dev_accounts()[0].address().to_string()
        ]),
        "1"
    );

    // `cast run` replays a mined transaction on a fork at its parent block.
    let (_, replayed, _, _) = steps[1];
    let replay = cast(&["run", "--rpc-url", rpc, &replayed.to_string()]);
    assert!(
        replay.contains("Transaction successfully executed"),
        "{replay}"
    );

    // anvil forks keel at a block hundreds of blocks old and transacts on the fork.
    let fork_at = last;
    let port = free_port();
    let mut anvil = Command::new(npm_binary("anvil"))
        .args([
            "--fork-url",
            rpc,
            "--fork-block-number",
            &fork_at.to_string(),
        ])
        .args(["--port", &port.to_string(), "--silent"])
        .spawn()
        .expect("anvil starts");
    let fork = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while cast_result(&["chain-id", "--rpc-url", &fork]).is_err() {
        assert!(Instant::now() < deadline, "anvil did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The fork sees keel's state at the fork block.
    assert_eq!(cast(&["call", "--rpc-url", &fork, &contract]), word(3));
    assert_eq!(
        cast(&["balance", "--rpc-url", &fork, &recipient]),
        paid.to_string()
    );
    // A transfer, a deploy and calls on the fork, while keel seals on.
    let sent = cast(&[
        "send",
        "--rpc-url",
        &fork,
        "--private-key",
        KEY,
        &recipient,
        "--value",
        "5",
    ]);
    assert!(sent.contains("1 (success)"), "{sent}");
    assert_eq!(
        cast(&["balance", "--rpc-url", &fork, &recipient]),
        (paid + 5).to_string()
    );
    let deployed = cast(&[
        "send",
        "--rpc-url",
        &fork,
        "--private-key",
        KEY,
        "--create",
        &deploy_code(&store_runtime()).to_string(),
        "--json",
    ]);
    let deployed: serde_json::Value = serde_json::from_str(&deployed).unwrap();
    let on_fork = deployed["contractAddress"].as_str().unwrap().to_string();
    // Stores a word on the fork, through a contract deployed there and through keel's.
    for (target, value) in [(&on_fork, 42), (&contract, 7)] {
        let set = cast(&[
            "send",
            "--rpc-url",
            &fork,
            "--private-key",
            KEY,
            target,
            &word(value),
        ]);
        assert!(set.contains("1 (success)"), "{set}");
        assert_eq!(cast(&["call", "--rpc-url", &fork, target]), word(value));
    }
    // keel itself is untouched by the fork and sealed on meanwhile.
    assert_eq!(cast(&["call", "--rpc-url", rpc, &contract]), word(3));
    assert!(head(rpc).await > fork_at + 20, "keel sealed on");
    let _ = anvil.kill();
    let _ = anvil.wait();
}

/// `--state-history-blocks`: reads inside the window are served, below its floor refused with
/// geth's "missing trie node"; the pruner catches up in bounded steps when a window replaces
/// an archive, and a SIGKILL in the middle of it leaves every read of the window exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_prunes_refuses_below_its_floor_and_survives_a_kill_while_pruning() {
    let dir = tempfile::tempdir().unwrap();
    let datadir = dir.path().join("node");
    let mut keel = KeelProcess::start(&datadir, 50, &["--no-l1"]);
    let rpc = keel.rpc_url.clone();
    // A block in every few with a transfer, so that balances differ from block to block.
    let provider = ProviderBuilder::new()
        .wallet(EthereumWallet::from(dev_accounts().remove(1)))
        .connect_http(rpc.parse().unwrap());
    for value in 1..=40u64 {
        let pay = TransactionRequest::default()
            .with_to(RECIPIENT)
            .with_value(U256::from(value));
        provider
            .send_transaction(pay)
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
    }
    let archived = head(&rpc).await;
    wait_for_head(&rpc, archived.max(400)).await;
    let balance_at = |url: String, number: u64| async move {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["{RECIPIENT}","0x{number:x}"]}}"#
        );
        post(&url, &body).await
    };
    let mut expected = BTreeMap::new();
    let top = head(&rpc).await;
    for number in 0..=top {
        let answer = balance_at(rpc.clone(), number).await;
        expected.insert(number, answer["result"].as_str().unwrap().to_string());
    }
    assert_ne!(expected[&0], expected[&top], "the balance moved");

    // Restarted with a window of 100 blocks, the pruner has hundreds of blocks to remove, a
    // few per block; it is killed in the middle of it.
    keel.kill9();
    let rpc_port = keel.rpc_port;
    let ops_port = keel.ops_port;
    drop(keel);
    let window = ["--no-l1", "--state-history-blocks", "100"];
    let keel = KeelProcess::start_on(&datadir, 50, &window, rpc_port, ops_port);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut keel = keel;
    keel.kill9();
    drop(keel);
    let keel = KeelProcess::start_on(&datadir, 50, &window, rpc_port, ops_port);
    let rpc = keel.rpc_url.clone();
    // Once the pruner caught up, the floor is the window's edge.
    let deadline = Instant::now() + Duration::from_secs(60);
    let floor = loop {
        let now = head(&rpc).await;
        let answer = balance_at(rpc.clone(), now - 101).await;
        if answer.get("error").is_some() {
            break now - 100;
        }
        assert!(Instant::now() < deadline, "the pruner never caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Every block of the window that was read before the kill reads the same after it.
    for number in floor..=top {
        let answer = balance_at(rpc.clone(), number).await;
        if answer.get("error").is_some() {
            // The window moved past it while reading.
            assert!(head(&rpc).await - 100 > number, "{number}: {answer}");
            continue;
        }
        assert_eq!(
            answer["result"].as_str().unwrap(),
            expected[&number],
            "block {number}"
        );
    }
    let refused = balance_at(rpc.clone(), 5).await;
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("missing trie node") && message.contains("not of block 5"),
        "{refused}"
    );
    assert_eq!(refused["error"]["code"], -32000);
    // cast reads inside the window and gets geth's words below it.
    let inside = (head(&rpc).await - 50).to_string();
    cast(&[
        "balance",
        "--rpc-url",
        &rpc,
        "--block",
        &inside,
        &RECIPIENT.to_string(),
    ]);
    let below = cast_result(&[
        "balance",
        "--rpc-url",
        &rpc,
        "--block",
        "5",
        &RECIPIENT.to_string(),
    ]);
    assert!(below.unwrap_err().contains("missing trie node"));
}
