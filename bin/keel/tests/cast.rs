//! Foundry's cast, a real client, against the real `keel` binary: send, receipt, balance,
//! call and a refused transaction, with no keel-specific setup.
//!
//! cast comes from npm (`npm ci` at the repository root, as `scripts/test.sh` does).

mod common;

use common::KeelProcess;
use std::path::PathBuf;
use std::process::Command;

fn cast() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../node_modules/.bin/cast");
    assert!(
        path.exists(),
        "cast is not installed: run `npm ci` at the repository root (scripts/test.sh does)"
    );
    path
}

fn run(args: &[&str]) -> (bool, String) {
    let output = Command::new(cast()).args(args).output().expect("cast runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// The first dev account's key, as anvil prints it.
const KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const RECIPIENT: &str = "0x000000000000000000000000000000000000cafe";

#[test]
fn cast_sends_reads_and_gets_geths_errors() {
    let dir = tempfile::tempdir().unwrap();
    let keel = KeelProcess::start(&dir.path().join("node"), 200, &[]);
    let rpc = keel.rpc_url.as_str();
    let (ok, chain) = run(&["chain-id", "--rpc-url", rpc]);
    assert!(ok && chain.trim() == "31337", "{chain}");
    let (ok, receipt) = run(&[
        "send",
        "--rpc-url",
        rpc,
        "--private-key",
        KEY,
        RECIPIENT,
        "--value",
        "1gwei",
    ]);
    assert!(ok, "{receipt}");
    assert!(
        receipt.contains("status") && receipt.contains("1 (success)"),
        "{receipt}"
    );
    let (ok, balance) = run(&["balance", "--rpc-url", rpc, RECIPIENT]);
    assert!(ok && balance.trim() == "1000000000", "{balance}");
    let (ok, legacy) = run(&[
        "send",
        "--legacy",
        "--rpc-url",
        rpc,
        "--private-key",
        KEY,
        RECIPIENT,
        "--value",
        "1",
    ]);
    assert!(ok && legacy.contains("1 (success)"), "{legacy}");
    let (ok, nonce) = run(&[
        "nonce",
        "--rpc-url",
        rpc,
        "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
    ]);
    assert!(ok && nonce.trim() == "2", "{nonce}");
    let (ok, block) = run(&["block", "latest", "--rpc-url", rpc, "--json"]);
    assert!(ok && block.contains("\"stateRoot\""), "{block}");
    // A reused nonce is refused in geth's words.
    // (cast 1.7 exits 0 after printing the server's error, so the words are what is checked.)
    let (_, refused) = run(&[
        "send",
        "--rpc-url",
        rpc,
        "--private-key",
        KEY,
        "--nonce",
        "0",
        "--gas-limit",
        "21000",
        RECIPIENT,
    ]);
    assert!(
        refused.contains("error code -32000: nonce too low"),
        "{refused}"
    );
}
