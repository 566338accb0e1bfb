//! The operator's files checked by the real tools and against live nodes: Prometheus' own
//! `promtool` checks the scrape config and the alert rules and runs the rules' unit tests;
//! every alert has a unit test and a runbook entry; and every metric the rules and the
//! Grafana dashboard name is exported by live `keel` processes (a dev node with its L1, and a
//! three-node cluster), so no alert or panel watches a name that does not exist.

mod common;

use common::{KeelProcess, free_port};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repository().join(path))
        .unwrap_or_else(|error| panic!("{path}: {error}"))
}

fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(repository().join("ops/prometheus"))
        .output()
        .unwrap_or_else(|error| {
            panic!("promtool does not run ({error}): scripts/test.sh installs Debian's prometheus package")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn promtool_checks_the_config_and_every_alert_passes_its_unit_tests() {
    let checked = promtool(&["check", "config", "prometheus.yml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules", "alerts_test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// The alert names in alerts.yml.
fn alerts() -> Vec<String> {
    read("ops/prometheus/alerts.yml")
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_alert_has_a_unit_test_and_a_runbook_entry() {
    let alerts = alerts();
    assert!(alerts.len() >= 15, "{alerts:?}");
    let tests = read("ops/prometheus/alerts_test.yml");
    let runbook = read("docs/operations.md");
    let rules = read("ops/prometheus/alerts.yml");
    for alert in &alerts {
        assert!(
            tests.contains(&format!("alertname: {alert}\n")),
            "{alert} has no unit test in alerts_test.yml"
        );
        assert!(
            runbook.contains(&format!("### {alert}\n")),
            "{alert} has no section in docs/operations.md"
        );
    }
    // Every runbook link points at a section that exists.
    for anchor in rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("runbook: docs/operations.md#"))
    {
        assert!(
            alerts.iter().any(|alert| alert.to_lowercase() == anchor),
            "runbook link #{anchor} names no alert section"
        );
    }
}

/// Every `keel_…` name in `text`.
/// Every test the runbook says runs its commands exists: a renamed or deleted test cannot leave
/// a procedure that nothing runs any more.
#[test]
fn every_test_the_runbook_names_exists() {
    let runbook = read("docs/operations.md");
    let named: BTreeSet<&str> = runbook
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|word| {
            word.matches('_').count() >= 4
                && !word.starts_with("keel_")
                && word
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .collect();
    assert!(named.len() >= 4, "{named:?}");
    let mut sources = String::new();
    for dir in ["bin/keel/tests", "crates/testkit/src", "bin/keel/src"] {
        for entry in std::fs::read_dir(repository().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|ext| ext == "rs") {
                sources.push_str(&std::fs::read_to_string(path).unwrap());
            }
        }
    }
    for test in named {
        assert!(
            sources.contains(&format!("fn {test}(")),
            "docs/operations.md names {test}, which no test defines"
        );
    }
}

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (start, _) in text.match_indices("keel_") {
        if start > 0 && text.as_bytes()[start - 1].is_ascii_alphanumeric() {
            continue;
        }
        let name: String = text[start..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        names.insert(name);
    }
    names
}

/// The metric names the rules and the dashboard's queries name.
fn watched() -> BTreeSet<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("ops/grafana/keel.json")).expect("the dashboard is JSON");
    let mut names = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            names.extend(metric_names(target["expr"].as_str().expect("expr")));
        }
    }
    for line in read("ops/prometheus/alerts.yml")
        .lines()
        .filter_map(|line| line.trim().strip_prefix("expr: "))
    {
        names.extend(metric_names(line));
    }
    names
}

/// The metric names a node's `/metrics` exports (summaries under their own name).
async fn exported(ops_url: &str) -> BTreeSet<String> {
    let Ok(response) = reqwest::get(format!("{ops_url}/metrics")).await else {
        return BTreeSet::new();
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(|name| {
            name.trim_end_matches("_sum")
                .trim_end_matches("_count")
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_rules_and_the_dashboard_watch_is_exported_by_live_nodes() {
    let watched = watched();
    let catalog: BTreeSet<String> = keel_node::catalog::METRICS
        .iter()
        .map(|metric| metric.name.to_string())
        .collect();
    let unknown: Vec<_> = watched.difference(&catalog).collect();
    assert!(
        unknown.is_empty(),
        "not in the metrics catalog: {unknown:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    // A dev node with its embedded L1: the batcher, derivation and forced-inclusion metrics.
    let single = KeelProcess::start(
        &dir.path().join("single"),
        250,
        &["--dev-l1-block-time-ms", "500"],
    );
    let cluster = start_cluster(dir.path());
    // One transfer through the single node, for the send-to-receipt latency.
    let signer = keel_primitives::dev_accounts().remove(1);
    let raw = common::raw_transfer(&signer, 0, alloy::primitives::Address::repeat_byte(0xca));
    common::call(
        &reqwest::Client::new(),
        &single.rpc_url,
        "eth_sendRawTransactionSync",
        serde_json::json!([raw, 10_000]),
    )
    .await
    .expect("a transfer is included");
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        // One JSON-RPC call on each, for the request metrics.
        for url in std::iter::once(&single.rpc_url).chain(cluster.iter().map(|p| &p.rpc_url)) {
            let _ = reqwest::Client::new()
                .post(url)
                .header("content-type", "application/json")
                .body(r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#)
                .send()
                .await;
        }
        for process in std::iter::once(&single).chain(cluster.iter()) {
            seen.extend(exported(&process.ops_url).await);
        }
        let missing: Vec<_> = watched.difference(&seen).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "named by the rules or the dashboard, exported by no live node: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Three cluster members on fresh loopback ports.
fn start_cluster(dir: &Path) -> Vec<KeelProcess> {
    std::fs::write(dir.join("secret"), "an-ops-test-cluster-secret\n").unwrap();
    let ports: Vec<(u16, u16, u16)> = (0..3)
        .map(|_| (free_port(), free_port(), free_port()))
        .collect();
    let mut file = String::from("secret_file = \"secret\"\nrotation_interval_ms = 5000\n");
    for (index, (raft, rpc, _)) in ports.iter().enumerate() {
        file.push_str(&format!(
            "[[members]]\nid = {}\nraft_addr = \"127.0.0.1:{raft}\"\nrpc_addr = \"127.0.0.1:{rpc}\"\n",
            index + 1
        ));
    }
    let path = dir.join("cluster.toml");
    std::fs::write(&path, file).unwrap();
    ports
        .iter()
        .enumerate()
        .map(|(index, (_, rpc, ops))| {
            KeelProcess::spawn(
                &dir.join(format!("member{}", index + 1)),
                250,
                &[
                    "--cluster",
                    path.to_str().unwrap(),
                    "--node-id",
                    &(index + 1).to_string(),
                ],
                *rpc,
                *ops,
            )
        })
        .collect()
}

/// The systemd unit of docs/operations.md, checked by systemd's own verifier (with the binary
/// path pointed at this build's `keel`, since /usr/local/bin/keel is not installed here).
#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let unit =
        read("ops/systemd/keel.service").replace("/usr/local/bin/keel", env!("CARGO_BIN_EXE_keel"));
    let path = dir.path().join("keel.service");
    std::fs::write(&path, unit).unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap_or_else(|error| {
            panic!("systemd-analyze does not run ({error}): scripts/test.sh installs systemd")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // A warning (an unknown key, a missing binary) fails the check too.
    assert!(output.status.success() && text.trim().is_empty(), "{text}");
}

/// Every variable the example environment file sets is one `keel node` reads, and the example
/// files parse as keel's own configuration.
#[test]
fn the_example_deployment_files_are_what_keel_reads() {
    let help = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["node", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    for line in read("ops/keel/keel.env").lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, _) = line.split_once('=').expect("KEY=value");
        assert!(
            help.contains(&format!("[env: {key}=")),
            "keel node reads no variable {key}"
        );
    }
    // The node file and the cluster file, through keel's own parser: a node started with them
    // gets as far as its L1 or its peers, never to a configuration error.
    let dir = tempfile::tempdir().unwrap();
    for name in ["node.toml", "cluster.toml"] {
        std::fs::write(dir.path().join(name), read(&format!("ops/keel/{name}"))).unwrap();
    }
    std::fs::write(dir.path().join("node.toml"), {
        // Loopback addresses and a scratch data directory, so the check can bind them.
        read("ops/keel/node.toml")
            .replace("/var/lib/keel", dir.path().join("data").to_str().unwrap())
            .replace("0.0.0.0:8545", &format!("127.0.0.1:{}", free_port()))
            .replace("0.0.0.0:9545", &format!("127.0.0.1:{}", free_port()))
    })
    .unwrap();
    std::fs::write(dir.path().join("secret"), "an-example-files-test-secret\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["node", "--dev", "--config"])
        .arg(dir.path().join("node.toml"))
        .arg("--cluster")
        .arg(dir.path().join("cluster.toml"))
        .args(["--node-id", "1", "--check-config"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success(), "{text}");
}
