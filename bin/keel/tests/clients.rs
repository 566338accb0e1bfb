//! viem and web3.py, unmodified, against the real `keel` binary: each client's own script
//! sends, waits for a receipt, reads blocks, balances and fees, and sees geth's errors.
//!
//! viem comes from npm and web3.py from PyPI (into `.venv`); `scripts/test.sh` installs both.

mod common;

use common::KeelProcess;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run_client(program: &Path, script: &str, installed: &Path) {
    assert!(
        installed.exists(),
        "{} is missing: run scripts/test.sh, which installs the test clients",
        installed.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let keel = KeelProcess::start(&dir.path().join("node"), 200, &[]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(script);
    let output = Command::new(program)
        .arg(&script)
        .arg(&keel.rpc_url)
        .output()
        .expect("client runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{} failed:\n{text}",
        script.display()
    );
}

#[test]
fn viem_works_unmodified() {
    let viem = repository().join("node_modules/viem/package.json");
    run_client(Path::new("node"), "viem-check.mjs", &viem);
}

#[test]
fn web3_py_works_unmodified() {
    let python = repository().join(".venv/bin/python");
    run_client(&python, "web3_check.py", &python);
}

/// eth_getProof, checked by py-trie (an independent Merkle-Patricia implementation) against
/// each block's stateRoot, at the head and at older blocks.
#[test]
fn proofs_verify_with_an_independent_trie() {
    let python = repository().join(".venv/bin/python");
    run_client(&python, "proof_check.py", &python);
}
