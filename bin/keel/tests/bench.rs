//! `keel bench latency` against a real node: every transfer due on the open-loop schedule gets
//! its receipt, in both ways of waiting, and the percentiles are ordered.

mod common;

use common::KeelProcess;
use std::process::Command;

fn latency(url: &str, mode: &str) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args([
            "bench",
            "latency",
            "--rpc",
            url,
            "--rate",
            "100",
            "--duration-s",
            "3",
        ])
        .args(["--senders", "20", "--mode", mode, "--label", mode, "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("| p50 ms | p99 ms | p99.9 ms | max ms |"),
        "{stdout}"
    );
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

#[test]
fn the_open_loop_latency_bench_gets_every_receipt_in_both_modes() {
    let dir = tempfile::tempdir().unwrap();
    let node = KeelProcess::start(&dir.path().join("node"), 250, &[]);
    for mode in ["sync", "poll"] {
        let report = latency(&node.rpc_url, mode);
        assert_eq!(report["due"], 300, "{report}");
        assert_eq!(report["receipts"], 300, "{report}");
        assert_eq!(report["failed"], 0, "{report}");
        assert_eq!(report["not_sent"], 0, "{report}");
        let figure = |name: &str| report[name].as_f64().unwrap();
        assert!(
            0.0 < figure("p50_ms")
                && figure("p50_ms") <= figure("p99_ms")
                && figure("p99_ms") <= figure("p999_ms")
                && figure("p999_ms") <= figure("max_ms"),
            "{report}"
        );
    }
}
