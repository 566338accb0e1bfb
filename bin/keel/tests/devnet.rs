//! `keel devnet` as a newcomer runs it: one command starts a three-node cluster, the dev L1
//! and a front JSON-RPC; cast sends through the front; the leader is SIGKILLed and the front
//! keeps answering with every receipt kept (I2); Ctrl-C leaves no process behind; a second
//! start resumes the same chain.

mod common;

use common::free_port;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn cast_path() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../node_modules/.bin/cast");
    assert!(
        path.exists(),
        "{} is missing: run scripts/test.sh, which installs cast",
        path.display()
    );
    path
}

fn cast(args: &[&str]) -> Result<String, String> {
    let output = Command::new(cast_path()).args(args).output().unwrap();
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}

/// What the devnet printed: each process's pid and each node's operations URL.
struct Banner {
    pids: BTreeMap<String, u32>,
    ops: BTreeMap<u64, String>,
    admin: BTreeMap<u64, String>,
}

struct Devnet {
    child: Child,
    banner: Banner,
}

impl Drop for Devnet {
    /// A test that fails midway leaves no devnet behind: Ctrl-C, then SIGKILL.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-INT", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The last lines of every log the devnet wrote, for a failure's message.
fn logs(data: &Path) -> String {
    let mut out = String::new();
    for name in ["node1.log", "node2.log", "node3.log", "l1.log"] {
        let text = std::fs::read_to_string(data.join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        out.push_str(&format!("--- {name}\n"));
        for line in &lines[lines.len().saturating_sub(15)..] {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The devnets run one at a time: two clusters at once on two cores would measure the machine.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn start(dir: &Path, rpc: u16, l1: u16) -> Devnet {
    start_with(dir, rpc, l1, free_port(), "0")
}

fn start_with(dir: &Path, rpc: u16, l1: u16, dashboard: u16, restart_after_ms: &str) -> Devnet {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.with_extension("log"))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("devnet")
        .arg("--dir")
        .arg(dir)
        .args(["--rpc-addr", &format!("127.0.0.1:{rpc}")])
        .args(["--l1-addr", &format!("127.0.0.1:{l1}")])
        .args(["--block-time-ms", "250", "--l1-block-time-ms", "1000"])
        .args(["--dashboard-addr", &format!("127.0.0.1:{dashboard}")])
        .args([
            "--rotation-interval-ms",
            "0",
            "--restart-after-ms",
            restart_after_ms,
        ])
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut banner = Banner {
        pids: BTreeMap::new(),
        ops: BTreeMap::new(),
        admin: BTreeMap::new(),
    };
    let stdout = BufReader::new(child.stdout.take().unwrap());
    for line in stdout.lines() {
        let line = line.unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["node", id, "rpc", _, "ops", ops, "admin", admin] => {
                banner.ops.insert(id.parse().unwrap(), ops.to_string());
                banner.admin.insert(id.parse().unwrap(), admin.to_string());
            }
            [name @ .., "pid", pid] => {
                banner.pids.insert(name.join(" "), pid.parse().unwrap());
            }
            _ => {}
        }
        if line.starts_with("Ctrl-C stops everything") {
            break;
        }
    }
    assert_eq!(banner.ops.len(), 3, "the banner names three nodes");
    assert_eq!(banner.pids.len(), 4, "the banner names four processes");
    Devnet { child, banner }
}

fn block_number(url: &str) -> Option<u64> {
    cast(&["block-number", "--rpc-url", url])
        .ok()
        .and_then(|text| text.parse().ok())
}

fn wait_for<T>(
    what: &str,
    within: Duration,
    data: &Path,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {within:?}\n{}",
            logs(data)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn alive(pid: u32) -> bool {
    // Gone, or a zombie (exited, not yet reaped), is not alive.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.split_whitespace()
            .nth(2)
            .is_some_and(|state| state != "Z")
    })
}

fn leader(banner: &Banner) -> Option<u64> {
    banner.ops.iter().find_map(|(id, ops)| {
        let answer = Command::new("curl")
            .args(["-s", "--max-time", "1", &format!("{ops}/cluster")])
            .output()
            .ok()?;
        let status: serde_json::Value = serde_json::from_slice(&answer.stdout).ok()?;
        (status["role"] == "leader").then_some(*id)
    })
}

fn stop(mut devnet: Devnet) {
    Command::new("kill")
        .args(["-INT", &devnet.child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while devnet.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the devnet did not stop on Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for (name, pid) in &devnet.banner.pids {
        assert!(!alive(*pid), "{name} (pid {pid}) outlived the devnet");
    }
}

#[test]
fn one_command_devnet_survives_a_leader_kill_and_resumes() {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("devnet");
    let (rpc, l1) = (free_port(), free_port());
    let front = format!("http://127.0.0.1:{rpc}");
    let key = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
    let payee = "0x000000000000000000000000000000000000cafe";

    let devnet = start(&data, rpc, l1);
    wait_for(
        "blocks through the front",
        Duration::from_secs(60),
        &data,
        || block_number(&front).filter(|number| *number >= 2),
    );
    assert_eq!(cast(&["chain-id", "--rpc-url", &front]).unwrap(), "31337");
    assert_eq!(
        cast(&["chain-id", "--rpc-url", &format!("http://127.0.0.1:{l1}")]).unwrap(),
        "1337"
    );
    let send = || {
        cast(&[
            "send",
            "--rpc-url",
            &front,
            "--private-key",
            key,
            payee,
            "--value",
            "1",
            "--json",
        ])
        .and_then(|json| {
            let receipt: serde_json::Value = serde_json::from_str(&json)
                .map_err(|error| format!("cast send printed {json:?}: {error}"))?;
            Ok(receipt["transactionHash"].as_str().unwrap().to_string())
        })
    };
    // `keel admin status`, as the banner says to run it: a table naming the leader.
    let table = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["admin", "--url", &devnet.banner.admin[&1], "--token-file"])
        .arg(data.join("admin-token"))
        .arg("status")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(
        table.starts_with("node 1: ")
            && table.contains("leader: node ")
            && table.lines().count() >= 6,
        "{table}"
    );
    let mut sent: Vec<String> = (0..3)
        .map(|_| send().unwrap_or_else(|error| panic!("{error}")))
        .collect();

    // The leader dies: the front routes around it, and every receipt stays.
    let leading = wait_for("a leader", Duration::from_secs(20), &data, || {
        leader(&devnet.banner)
    });
    let pid = devnet.banner.pids[&format!("node {leading}")];
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    let after = wait_for(
        "a transfer through the front after the kill",
        Duration::from_secs(60),
        &data,
        || {
            send()
                .map_err(|error| eprintln!("send after the kill: {error}"))
                .ok()
        },
    );
    sent.push(after);
    for hash in &sent {
        let receipt = cast(&["receipt", "--rpc-url", &front, hash, "status"]).unwrap();
        assert!(
            receipt == "true" || receipt.starts_with('1'),
            "{hash}: {receipt}"
        );
    }
    let head = block_number(&front).unwrap();
    stop(devnet);

    // Run again: the same chain, from its data.
    let devnet = start(&data, rpc, l1);
    let resumed = wait_for("the resumed chain", Duration::from_secs(60), &data, || {
        block_number(&front).filter(|number| *number > head)
    });
    assert!(resumed > head);
    for hash in &sent {
        let receipt = cast(&["receipt", "--rpc-url", &front, hash, "status"]).unwrap();
        assert!(
            receipt == "true" || receipt.starts_with('1'),
            "{hash} after the restart: {receipt}"
        );
    }
    stop(devnet);
}

/// The dashboard in a real browser (headless Chromium driven by Playwright): the leader and
/// the heads are shown and move; an action without the admin token is refused; a transfer
/// clicked on the page moves the leader; a leader killed from the page shows on the timeline
/// as a failover with its gap; a surviving node's own dashboard (its operations port) shows
/// every member, the killed one down, the send-to-receipt latency, and no kill button.
/// Screenshots go to `target/dashboard-screenshots/`.
#[test]
fn the_dashboard_drives_a_transfer_and_shows_a_failover_in_a_real_browser() {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let repository = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    assert!(
        repository.join("node_modules/playwright-core").exists(),
        "playwright-core is missing: run scripts/test.sh, which installs it"
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("devnet");
    let (dashboard, rpc) = (free_port(), free_port());
    let devnet = start_with(&data, rpc, free_port(), dashboard, "5000");
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    // A few transfers, so that the send-to-receipt latency has figures.
    let front = format!("http://127.0.0.1:{rpc}");
    wait_for(
        "blocks through the front",
        Duration::from_secs(60),
        &data,
        || block_number(&front).filter(|number| *number >= 2),
    );
    for _ in 0..3 {
        cast(&[
            "send",
            "--rpc-url",
            &front,
            "--private-key",
            "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
            "0x000000000000000000000000000000000000cafe",
            "--value",
            "1",
        ])
        .unwrap_or_else(|error| panic!("{error}\n{}", logs(&data)));
    }
    // Every node serves the dashboard on its operations port too.
    let nodes: Vec<String> = devnet
        .banner
        .ops
        .values()
        .map(|ops| format!("{ops}/dashboard"))
        .collect();
    let shots = repository.join("target/dashboard-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let output = Command::new("node")
        .arg(repository.join("bin/keel/tests/clients/dashboard-check.mjs"))
        .arg(format!("http://127.0.0.1:{dashboard}"))
        .arg(token.trim())
        .arg(&shots)
        .arg(nodes.join(","))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    stop(devnet);
    assert!(
        output.status.success(),
        "the dashboard check failed:\n{text}"
    );
    for shot in [
        "1-live.png",
        "2-transferred.png",
        "3-failover.png",
        "4-node-dashboard.png",
    ] {
        assert!(shots.join(shot).exists(), "no screenshot {shot}");
    }
    println!("{text}");
}
