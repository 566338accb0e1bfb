//! A harness that runs the real `keel` binary on loopback ports with its own data directory.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runtime code: with no calldata it returns slot 0; with a word it stores it in slot 0 and
/// emits `Stored(uint256)` with the word as data.
pub fn store_runtime() -> Vec<u8> {
    let topic = alloy::primitives::keccak256("Stored(uint256)");
    let mut code = vec![
        0x36, 0x15, 0x60, 0x36, 0x57, 0x60, 0x00, 0x35, 0x80, 0x60, 0x00, 0x55,
    ];
    code.extend([0x60, 0x00, 0x52, 0x7f]);
    code.extend_from_slice(topic.as_slice());
    code.extend([0x60, 0x20, 0x60, 0x00, 0xa1, 0x00]);
    code.extend([
        0x5b, 0x60, 0x00, 0x54, 0x60, 0x00, 0x52, 0x60, 0x20, 0x60, 0x00, 0xf3,
    ]);
    assert_eq!(code[0x36], 0x5b, "the getter's jump destination");
    code
}

/// Init code that deploys `runtime`.
pub fn deploy_code(runtime: &[u8]) -> alloy::primitives::Bytes {
    let length = runtime.len() as u8;
    let mut code = vec![
        0x60, length, 0x60, 0x0c, 0x60, 0x00, 0x39, 0x60, length, 0x60, 0x00, 0xf3,
    ];
    code.extend_from_slice(runtime);
    code.into()
}

/// A running `keel node --dev` process, killed on drop.
pub struct KeelProcess {
    pub child: Child,
    pub rpc_url: String,
    pub ws_url: String,
    pub ops_url: String,
    pub datadir: PathBuf,
    pub rpc_port: u16,
    pub ops_port: u16,
}

/// A loopback port nobody listens on now, outside the ephemeral range (see
/// `keel_testkit::ports`).
pub fn free_port() -> u16 {
    keel_testkit::ports::free_port().expect("a free loopback port")
}

impl KeelProcess {
    /// Starts keel on fresh ports over `datadir` and waits until it answers.
    pub fn start(datadir: &Path, block_time_ms: u64, extra: &[&str]) -> Self {
        Self::start_on(datadir, block_time_ms, extra, free_port(), free_port())
    }

    /// Starts keel on the given ports (a restart reuses them, as an operator would).
    pub fn start_on(
        datadir: &Path,
        block_time_ms: u64,
        extra: &[&str],
        rpc_port: u16,
        ops_port: u16,
    ) -> Self {
        let process = Self::spawn(datadir, block_time_ms, extra, rpc_port, ops_port);
        process.wait_ready(Duration::from_secs(30));
        process
    }

    /// Starts keel without waiting for it (a cluster member is ready only once its peers run).
    pub fn spawn(
        datadir: &Path,
        block_time_ms: u64,
        extra: &[&str],
        rpc_port: u16,
        ops_port: u16,
    ) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(datadir.with_extension("log"))
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_keel"));
        command
            .args(["node", "--dev", "--datadir"])
            .arg(datadir)
            .args(["--rpc-addr", &format!("127.0.0.1:{rpc_port}")])
            .args(["--metrics-addr", &format!("127.0.0.1:{ops_port}")])
            .args(["--block-time-ms", &block_time_ms.to_string()]);
        // A single node runs its own embedded dev L1: on a port of its own, so that tests run
        // side by side (a cluster member ignores it).
        if !extra.contains(&"--dev-l1-addr") {
            command.args(["--dev-l1-addr", &format!("127.0.0.1:{}", free_port())]);
        }
        let child = command
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("keel binary starts");
        Self {
            child,
            rpc_url: format!("http://127.0.0.1:{rpc_port}"),
            ws_url: format!("ws://127.0.0.1:{rpc_port}"),
            ops_url: format!("http://127.0.0.1:{ops_port}"),
            datadir: datadir.to_path_buf(),
            rpc_port,
            ops_port,
        }
    }

    /// Waits until `/ready` answers 200.
    pub fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(200) = http::get_status(&format!("{}/ready", self.ops_url)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("keel did not become ready; log: {}", self.log());
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.datadir.with_extension("log")).unwrap_or_default()
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("reap");
    }
}

impl Drop for KeelProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

mod http {
    /// A tiny blocking GET over std, so the harness needs no async runtime: returns the status.
    pub fn get_status(url: &str) -> std::io::Result<u16> {
        use std::io::{Read, Write};
        let rest = url.strip_prefix("http://").expect("http url");
        let (host, path) = rest
            .split_once('/')
            .map(|(h, p)| (h, format!("/{p}")))
            .unwrap_or((rest, "/".into()));
        let mut stream = std::net::TcpStream::connect(host)?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        Ok(status)
    }
}

/// Posts a raw JSON-RPC body and returns the parsed answer.
pub async fn post(url: &str, body: &str) -> serde_json::Value {
    let response = ::reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request sent");
    response.json().await.expect("JSON answer")
}

/// The error object of a single JSON-RPC answer.
pub fn error_of(answer: &serde_json::Value) -> (i64, String) {
    let error = answer
        .get("error")
        .unwrap_or_else(|| panic!("expected an error, got {answer}"));
    (
        error["code"].as_i64().unwrap(),
        error["message"].as_str().unwrap().to_string(),
    )
}

/// One JSON-RPC call: the result, or the error object as text.
pub async fn call(
    client: &reqwest::Client,
    url: &str,
    method: &str,
    params: serde_json::Value,
) -> Result<serde_json::Value, String> {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let response = client
        .post(url)
        .json(&body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let answer: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
    match answer.get("error") {
        Some(error) => Err(error.to_string()),
        None => Ok(answer["result"].clone()),
    }
}

/// A hex quantity as a number.
pub fn quantity(value: &serde_json::Value) -> u64 {
    u64::from_str_radix(value.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

/// A signed EIP-1559 transfer of 1 wei from `signer` to `to`, as the hex a raw-transaction
/// call takes (`keel_testkit::transfer`).
pub fn raw_transfer(
    signer: &alloy::signers::local::PrivateKeySigner,
    nonce: u64,
    to: alloy::primitives::Address,
) -> String {
    use alloy::eips::eip2718::Encodable2718;
    let signed = keel_testkit::transfer(signer, nonce, to, alloy::primitives::U256::from(1));
    alloy::hex::encode_prefixed(signed.encoded_2718())
}

/// A node's `/metrics` text.
pub async fn metrics_text(ops_url: &str) -> String {
    reqwest::get(format!("{ops_url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The sum over the series named `name` whose line contains `label` (`""`: every series of
/// it), from a node's `/metrics`; 0 when there is none.
pub async fn metric(ops_url: &str, name: &str, label: &str) -> f64 {
    metrics_text(ops_url)
        .await
        .lines()
        .filter(|line| line.split(['{', ' ']).next() == Some(name) && line.contains(label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
