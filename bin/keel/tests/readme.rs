//! The README's commands, walked as a newcomer runs them, in order, from a fresh directory
//! holding what a clone holds: every ```sh block, line by line, through bash.
//!
//! Two things stand in for what a newcomer has: `cargo run --release -p keel -- ARGS` and
//! `target/release/keel` run the keel this suite built (a debug build: the release build would
//! cost CI a second full build), and `npm ci` finds node_modules installed (scripts/test.sh ran
//! it). Commands that run until stopped (the devnet, nodes, anvil) start in the background, in
//! their own process group, as in their own terminal; the walk waits until each answers, runs
//! the commands that follow against it, and stops it with Ctrl-C (SIGINT to its group, as a
//! terminal sends it), checking that nothing of it is left. The soak commands run long enough
//! to print their first progress line. Only `scripts/test.sh` (this suite) and `scripts/fuzz.sh`
//! (nightly) and a path the README elides (`…`) are not run; each is named.
//!
//! The walk uses the README's own ports (8545-8547, 8550, 8645-8647, 9545, 9601-9603,
//! 9701-9703, 7101-7103): nothing else on the machine may hold them while it runs. The other
//! tests take theirs from 20000 up (keel_testkit::ports).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The README's ```sh blocks, in order.
fn sh_blocks(readme: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// A block's commands: continuation lines joined, comments kept (bash drops them).
fn commands(block: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        if let Some(head) = line.strip_suffix('\\') {
            current.push_str(head);
            continue;
        }
        current.push_str(line);
        if !current.trim().is_empty() {
            commands.push(std::mem::take(&mut current));
        }
        current.clear();
    }
    commands
}

/// A command that runs until stopped, in its own process group.
struct Server {
    name: String,
    child: Child,
    log: PathBuf,
}

struct Walk {
    sandbox: tempfile::TempDir,
    path: String,
    servers: Vec<Server>,
}

impl Drop for Walk {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", server.child.id())])
                .status();
            let _ = server.child.wait();
        }
    }
}

impl Walk {
    /// A directory holding what a clone holds, with the stand-ins on PATH.
    fn new() -> Self {
        let sandbox = tempfile::tempdir().unwrap();
        let root = sandbox.path();
        let repository = repository().canonicalize().unwrap();
        let copy = Command::new("cp")
            .arg("-r")
            .arg(repository.join("examples"))
            .arg(root)
            .status()
            .unwrap();
        assert!(copy.success());
        for link in ["scripts", "node_modules", "bin", "crates", "docs", "ops"] {
            std::os::unix::fs::symlink(repository.join(link), root.join(link)).unwrap();
        }
        std::fs::create_dir_all(root.join("target/release")).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_keel"), root.join("target/release/keel"))
            .unwrap();
        let shims = root.join(".walk-shims");
        std::fs::create_dir_all(&shims).unwrap();
        let cargo = "#!/bin/sh\n\
            # The walk's cargo: the README's `cargo run --release -p keel -- ARGS` runs the keel\n\
            # this suite built; `cargo build --release -p keel` has nothing left to build.\n\
            if [ \"$1 $2 $3 $4 $5\" = \"run --release -p keel --\" ]; then shift 5; exec \"$KEEL_BIN\" \"$@\"; fi\n\
            if [ \"$*\" = \"build --release -p keel\" ]; then exit 0; fi\n\
            echo \"the walk's cargo does not know: cargo $*\" >&2; exit 2\n";
        let npm = "#!/bin/sh\n\
            if [ \"$1\" = ci ] && [ -x node_modules/.bin/cast ]; then echo 'npm ci: installed already (scripts/test.sh)'; exit 0; fi\n\
            echo \"the walk's npm does not know: npm $*\" >&2; exit 2\n";
        for (name, text) in [("cargo", cargo), ("npm", npm)] {
            std::fs::write(shims.join(name), text).unwrap();
            let status = Command::new("chmod")
                .arg("+x")
                .arg(shims.join(name))
                .status()
                .unwrap();
            assert!(status.success());
        }
        // The README's `export PATH=$PWD/node_modules/.bin:$PATH` holds for the rest of the
        // reader's session: the walk keeps it from the start.
        let path = format!(
            "{}:{}:{}",
            shims.display(),
            root.join("node_modules/.bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Self {
            sandbox,
            path,
            servers: Vec::new(),
        }
    }

    fn root(&self) -> &Path {
        self.sandbox.path()
    }

    fn bash(&self, script: &str) -> Command {
        let mut command = Command::new("bash");
        command
            .args(["-euo", "pipefail", "-c", script])
            .current_dir(self.root())
            .env("PATH", &self.path)
            .env("KEEL_BIN", env!("CARGO_BIN_EXE_keel"))
            .env_remove("ETH_RPC_URL")
            .env("RUST_LOG", "info");
        command
    }

    /// Runs `script` to its end within `limit`; its output, or a failure naming the command.
    fn run(&self, script: &str, limit: Duration) -> String {
        let out = self.root().join(".walk-out");
        let file = std::fs::File::create(&out).unwrap();
        let mut child = self
            .bash(script)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .process_group(0)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", child.id())])
                    .status();
                let _ = child.wait();
                panic!(
                    "README command did not finish in {limit:?}:\n{script}\n{}\n{}",
                    std::fs::read_to_string(&out).unwrap_or_default(),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        assert!(
            status.success(),
            "README command failed ({status}):\n{script}\n{text}\n{}",
            self.logs()
        );
        text
    }

    /// Starts `command` in the background, in its own process group.
    fn start(&mut self, name: &str, command: &str) {
        let command = command.trim().trim_end_matches('&').trim();
        let file_name: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let log = self
            .root()
            .join(format!(".walk-{}-{file_name:.60}.log", self.servers.len()));
        let file = std::fs::File::create(&log).unwrap();
        let child = self
            .bash(&format!("exec {command}"))
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .process_group(0)
            .spawn()
            .unwrap();
        self.servers.push(Server {
            name: name.to_string(),
            child,
            log,
        });
    }

    /// The last lines of every background command's output.
    fn logs(&self) -> String {
        let mut out = String::new();
        for server in &self.servers {
            let text = std::fs::read_to_string(&server.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {}\n", server.name));
            for line in &lines[lines.len().saturating_sub(20)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Waits until `check` passes, or fails with the logs.
    fn wait(&self, what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !check() {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {limit:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The block number JSON-RPC at `port` answers, if it answers.
    fn block_number(&self, port: u16) -> Option<u64> {
        let output = Command::new(self.root().join("node_modules/.bin/cast"))
            .args([
                "block-number",
                "--rpc-url",
                &format!("http://127.0.0.1:{port}"),
            ])
            .output()
            .ok()?;
        String::from_utf8_lossy(&output.stdout).trim().parse().ok()
    }

    /// Waits until JSON-RPC at `port` answers with a block past `above`.
    fn wait_rpc(&self, what: &str, port: u16, above: u64, limit: Duration) {
        self.wait(&format!("{what} answering on {port}"), limit, || {
            self.block_number(port).is_some_and(|number| number > above)
        });
    }

    /// Ctrl-C to `name`'s process group; it and everything it started must be gone within 30 s.
    fn stop(&mut self, name: &str) {
        let index = self
            .servers
            .iter()
            .position(|server| server.name == name)
            .unwrap();
        let mut server = self.servers.remove(index);
        let group = format!("-{}", server.child.id());
        let _ = Command::new("kill").args(["-INT", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let _ = server.child.try_wait();
            let alive = Command::new("kill")
                .args(["-0", "--", &group])
                .stderr(Stdio::null())
                .status()
                .unwrap()
                .success();
            if !alive {
                break;
            }
            if Instant::now() > deadline {
                let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
                panic!(
                    "{name}: processes left 30 s after Ctrl-C\n{}",
                    std::fs::read_to_string(&server.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = server.child.wait();
    }

    /// What `name` has printed so far.
    fn output(&self, name: &str) -> String {
        let server = self.servers.iter().find(|s| s.name == name).unwrap();
        std::fs::read_to_string(&server.log).unwrap_or_default()
    }
}

/// The README's first command, its quick start, the force path, the verifier, the blob setup,
/// the three-node cluster with its admin commands, and the testing commands, as written.
#[test]
fn the_readme_walks_as_written() {
    let readme = std::fs::read_to_string(repository().join("README.md")).unwrap();
    let blocks = sh_blocks(&readme);
    let starts: Vec<&str> = blocks
        .iter()
        .map(|block| block.lines().next().unwrap_or_default())
        .collect();
    assert_eq!(
        blocks.len(),
        9,
        "the README's sh blocks changed: walk the new ones here too\n{starts:#?}"
    );
    let mut walk = Walk::new();
    let minute = Duration::from_secs(60);

    // The first two lines: run keel, run the tests.
    let first = commands(&blocks[0]);
    assert!(
        first[0].starts_with("cargo run --release -p keel -- devnet"),
        "{first:?}"
    );
    assert!(first[1].starts_with("bash scripts/test.sh"), "{first:?}");
    assert!(walk.root().join("scripts/test.sh").exists());
    walk.start("devnet", &first[0]);
    walk.wait("the devnet's banner", minute, || {
        walk.output("devnet").contains("Ctrl-C stops everything")
    });
    walk.wait_rpc("the devnet's front", 8545, 1, minute);

    // The quick start's cast commands.
    assert!(blocks[1].contains("cast send"), "{}", blocks[1]);
    let said = walk.run(&blocks[1], minute);
    assert!(said.contains("1000000000000000000"), "{said}");

    // A transaction forced through the L1's inbox appears on the L2.
    assert!(blocks[2].starts_with("RAW=$(cast mktx"), "{}", blocks[2]);
    let said = walk.run(&blocks[2], Duration::from_secs(180));
    assert!(said.contains("1 (success)"), "{said}");

    // The verifier follows the L1 alone and serves the derived chain.
    assert!(blocks[3].contains("-- verify"), "{}", blocks[3]);
    walk.start("verify", &commands(&blocks[3])[0]);
    walk.wait_rpc("the verifier", 8547, 0, Duration::from_secs(120));
    walk.stop("verify");
    walk.stop("devnet");

    // Batches in blobs, on anvil.
    let blobs = commands(&blocks[4]);
    assert!(blobs[0].starts_with("anvil --port 8546"), "{blobs:?}");
    walk.start("anvil", &blobs[0]);
    walk.wait("anvil answering on 8546", minute, || {
        walk.block_number(8546).is_some()
    });
    walk.start("blob node", &blobs[1]);
    walk.wait_rpc("the node posting blobs", 8545, 1, minute);
    walk.start("blob verifier", &blobs[2]);
    walk.wait("the blob verifier answering on 8547", minute, || {
        walk.block_number(8547).is_some()
    });
    walk.stop("blob verifier");
    walk.stop("blob node");
    walk.stop("anvil");

    // The three-node cluster: its files, its nodes, the commands the text names, a hand-over.
    assert!(
        blocks[5].contains("examples/cluster/secret"),
        "{}",
        blocks[5]
    );
    walk.run(&blocks[5], minute);
    let nodes = commands(&blocks[6]);
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    for (index, node) in nodes.iter().enumerate() {
        walk.start(&format!("node {}", index + 1), node);
    }
    for port in [8645, 8646, 8647] {
        walk.wait_rpc("a cluster node", port, 1, minute);
    }
    let cluster = walk.run("curl 127.0.0.1:9601/cluster", minute);
    assert!(cluster.contains("\"role\""), "{cluster}");
    let status = readme
        .lines()
        .find_map(|line| {
            line.strip_prefix('`')?.strip_suffix('`').filter(|command| {
                command.starts_with("target/release/keel admin") && command.ends_with(" status")
            })
        })
        .expect("the README names the status command");
    let table = walk.run(status, minute);
    assert!(table.contains("leader: node "), "{table}");
    // The hand-over is asked of node 1, which founded the cluster and leads it first.
    walk.wait("node 1 leading", minute, || {
        walk.run("curl -s 127.0.0.1:9601/cluster", minute)
            .contains("\"role\":\"leader\"")
    });
    let moved = walk.run(&blocks[7], minute);
    assert!(moved.contains("\"leader\":"), "{moved}");
    for node in ["node 1", "node 2", "node 3"] {
        walk.stop(node);
    }

    // Testing: the soaks start and report their progress; one seed replays to its end.
    for command in commands(&blocks[8]) {
        let command = command.split('#').next().unwrap().trim().to_string();
        if command.contains('…') || command.starts_with("scripts/fuzz.sh") {
            eprintln!("not run (a path the README elides, or nightly fuzzing): {command}");
            continue;
        }
        if command.contains("--seed 1234") {
            let trace = walk.run(&command, Duration::from_secs(300));
            assert!(trace.contains("seed 1234"), "{trace}");
            continue;
        }
        let name = command.clone();
        walk.start(&name, &command);
        let progress = if command.contains(" sim ") {
            "sim: "
        } else {
            "chaos seed "
        };
        walk.wait(
            &format!("a progress line from {command}"),
            Duration::from_secs(90),
            || walk.output(&name).contains(progress),
        );
        assert!(
            !walk.output(&name).contains("error:"),
            "{}",
            walk.output(&name)
        );
        walk.stop(&name);
    }
}
