//! anvil (Foundry) as the real L1 of integration tests: started on a free loopback port,
//! killed when dropped. `scripts/test.sh` installs it from npm (`@foundry-rs/anvil`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running anvil.
#[derive(Debug)]
pub struct Anvil {
    child: Child,
    /// Its JSON-RPC URL.
    pub url: String,
    /// Its port.
    pub port: u16,
}

/// Where `npm ci` puts a package binary of the workspace: the platform package's native
/// binary when there is one (`@foundry-rs/anvil-linux-amd64/bin/anvil`), since the
/// `node_modules/.bin` entry is a node script that spawns it, and killing the script would
/// leave the real process running; else the `.bin` entry.
pub fn npm_binary(name: &str) -> PathBuf {
    let modules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../node_modules");
    let platform = match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => Some("linux-amd64"),
        ("linux", "aarch64") => Some("linux-arm64"),
        ("macos", "x86_64") => Some("darwin-amd64"),
        ("macos", "aarch64") => Some("darwin-arm64"),
        _ => None,
    };
    if let Some(platform) = platform {
        let native = modules
            .join("@foundry-rs")
            .join(format!("{name}-{platform}"))
            .join("bin")
            .join(name);
        if native.exists() {
            return native;
        }
    }
    modules.join(".bin").join(name)
}

/// Why anvil could not be started.
#[derive(Debug, thiserror::Error)]
pub enum AnvilError {
    /// The binary is not installed: run `npm ci` (scripts/test.sh does).
    #[error("anvil not found at {0}: run `npm ci` (scripts/test.sh does)")]
    Missing(PathBuf),
    /// It did not start or answer.
    #[error("anvil: {0}")]
    Start(String),
}

impl Anvil {
    /// Starts anvil sealing a block every `block_time_s` seconds (0: only when told to, with
    /// `evm_mine` / `anvil_mine`), with `extra` arguments, and waits until it answers.
    pub fn start(block_time_s: u64, extra: &[&str]) -> Result<Self, AnvilError> {
        let binary = npm_binary("anvil");
        if !binary.exists() {
            return Err(AnvilError::Missing(binary));
        }
        let port = free_port();
        let mut command = Command::new(&binary);
        command
            .args([
                "--port",
                &port.to_string(),
                "--host",
                "127.0.0.1",
                "--silent",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if block_time_s > 0 {
            command.args(["--block-time", &block_time_s.to_string()]);
        }
        let child = command
            .spawn()
            .map_err(|error| AnvilError::Start(error.to_string()))?;
        let anvil = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(AnvilError::Start(format!("no answer on port {port}")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(anvil)
    }

    /// Calls one of anvil's JSON-RPC methods (`anvil_reorg`, `evm_mine`, ...).
    pub async fn call(
        &self,
        method: &str,
        params: serde_json::Value,
    ) -> Result<serde_json::Value, AnvilError> {
        let body =
            serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let answer: serde_json::Value = reqwest::Client::new()
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|error| AnvilError::Start(error.to_string()))?
            .json()
            .await
            .map_err(|error| AnvilError::Start(error.to_string()))?;
        if let Some(error) = answer.get("error") {
            return Err(AnvilError::Start(format!("{method}: {error}")));
        }
        Ok(answer["result"].clone())
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on now (see [`crate::ports`]).
pub fn free_port() -> u16 {
    crate::ports::free_port().expect("a free loopback port")
}
