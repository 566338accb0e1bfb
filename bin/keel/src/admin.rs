//! `keel admin`: the admin API of a cluster node from the command line.

use clap::{Args, Subcommand};
use std::path::PathBuf;

/// Talk to a cluster node's admin API.
#[derive(Debug, Args)]
pub(crate) struct AdminArgs {
    /// The node's admin API.
    #[arg(long, env = "KEEL_ADMIN_URL", default_value = "http://127.0.0.1:9546")]
    url: String,
    /// File holding the admin token (KEEL_ADMIN_TOKEN takes precedence).
    #[arg(long, env = "KEEL_ADMIN_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Role, leader, term, applied index, pause state, members and their lag, as a table.
    Status {
        /// Print the node's JSON answer instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Stop building blocks on this node until resumed.
    Pause,
    /// Build blocks again on this node when it leads.
    Resume,
    /// Replicate to a member of the cluster file that does not vote yet (ask the leader).
    AddLearner {
        /// The member's id.
        #[arg(long)]
        id: u64,
    },
    /// Make a caught-up learner a voter (ask the leader).
    Promote {
        /// The member's id.
        #[arg(long)]
        id: u64,
    },
    /// Take a member out of the cluster (ask the leader).
    Remove {
        /// The member's id.
        #[arg(long)]
        id: u64,
    },
    /// Hand leadership to a healthy, caught-up voter (ask the leader); waits until it leads.
    Transfer {
        /// The voter to lead; without it, the best ready one.
        #[arg(long)]
        to: Option<u64>,
    },
    /// Write a consistent copy of this node's chain into a new directory on the node's disk,
    /// while it runs (any member; a follower spares the leader). `keel restore` reads it.
    Backup {
        /// The directory to create, as an absolute path on the node's machine.
        #[arg(long, value_name = "PATH")]
        dir: std::path::PathBuf,
    },
}

/// How often a long admin call reports that it is still running.
const PROGRESS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs one admin command and prints the node's answer.
pub(crate) async fn run(args: AdminArgs) -> Result<(), Box<dyn std::error::Error>> {
    let token = match std::env::var("KEEL_ADMIN_TOKEN") {
        Ok(token) => token,
        Err(_) => {
            let path = args
                .token_file
                .ok_or("no admin token: pass --token-file or set KEEL_ADMIN_TOKEN")?;
            std::fs::read_to_string(&path)
                .map_err(|error| format!("reading {}: {error}", path.display()))?
                .trim()
                .to_string()
        }
    };
    let client = reqwest::Client::new();
    let base = args.url.trim_end_matches('/');
    let request = match args.command {
        AdminCommand::Status { .. } => client.get(format!("{base}/admin/status")),
        AdminCommand::Pause => client.post(format!("{base}/admin/pause")),
        AdminCommand::Resume => client.post(format!("{base}/admin/resume")),
        AdminCommand::AddLearner { id } => client
            .post(format!("{base}/admin/add-learner"))
            .json(&keel_node::MemberRequest { id }),
        AdminCommand::Promote { id } => client
            .post(format!("{base}/admin/promote"))
            .json(&keel_node::MemberRequest { id }),
        AdminCommand::Remove { id } => client
            .post(format!("{base}/admin/remove"))
            .json(&keel_node::MemberRequest { id }),
        AdminCommand::Transfer { to } => client
            .post(format!("{base}/admin/transfer"))
            .json(&keel_node::TransferRequest { to }),
        AdminCommand::Backup { ref dir } => {
            // The node resolves the path on its own machine, where the operator's working
            // directory means nothing.
            let dir = if dir.is_absolute() {
                dir.clone()
            } else {
                std::env::current_dir()?.join(dir)
            };
            eprintln!("backing up {base}'s chain into {} …", dir.display());
            client
                .post(format!("{base}/admin/backup"))
                .json(&keel_node::BackupRequest { dir })
        }
    };
    let backup = matches!(args.command, AdminCommand::Backup { .. });
    let table = matches!(args.command, AdminCommand::Status { json: false });
    let started = std::time::Instant::now();
    let send = request.bearer_auth(token).send();
    tokio::pin!(send);
    // A long call (a backup) says it is still at work, so nobody mistakes it for a hang.
    let response = loop {
        tokio::select! {
            response = &mut send => break response,
            _ = tokio::time::sleep(PROGRESS_INTERVAL) => {
                eprintln!("  … still running, {} s", started.elapsed().as_secs());
            }
        }
    };
    let response = response.map_err(|error| {
        format!(
            "cannot reach the admin API at {base} ({error}): is the node running, started with \
             --admin-addr at that address?"
        )
    })?;
    let status = response.status();
    let body = response.text().await?;
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return Err(format!(
            "the node refused the token: pass the file its --admin-token-file names \
             (--token-file), or set KEEL_ADMIN_TOKEN ({})",
            body.trim()
        )
        .into());
    }
    if !status.is_success() {
        return Err(format!("{status}: {}", body.trim()).into());
    }
    if table {
        let value: serde_json::Value = serde_json::from_str(&body)
            .map_err(|error| format!("the node's status is not JSON ({error}): {body}"))?;
        print!("{}", status_table(&value));
    } else if backup {
        let manifest: serde_json::Value = serde_json::from_str(&body)
            .map_err(|error| format!("the node's answer is not JSON ({error}): {body}"))?;
        eprintln!(
            "backup of block {} ({}) written: {:.1} MB in {:.1} s. Restore it on a new member \
             with: keel restore --from DIR --datadir NEW_DATADIR",
            manifest["head"],
            manifest["hash"].as_str().unwrap_or("?"),
            manifest["bytes"].as_f64().unwrap_or(0.0) / 1e6,
            manifest["took_ms"].as_f64().unwrap_or(0.0) / 1e3,
        );
        println!("{}", body.trim());
    } else {
        println!("{}", body.trim());
    }
    Ok(())
}

/// `keel admin status` as a person reads it.
fn status_table(status: &serde_json::Value) -> String {
    let number = |value: &serde_json::Value| {
        value
            .as_u64()
            .map_or_else(|| "—".to_string(), |number| number.to_string())
    };
    let me = status["node_id"].as_u64().unwrap_or(0);
    let leader = status["leader"].as_u64();
    let mut out = format!(
        "node {me}: {}, term {}, log {}, applied {}{}{}\n",
        status["role"].as_str().unwrap_or("?"),
        number(&status["term"]),
        number(&status["last_log_index"]),
        number(&status["last_applied_index"]),
        if status["paused"] == true {
            ", PAUSED (keel admin resume)"
        } else {
            ""
        },
        if status["handing_over"] == true {
            ", handing over"
        } else {
            ""
        },
    );
    out.push_str(&match leader {
        Some(leader) => format!("leader: node {leader}\n"),
        None => "leader: none known (an election is under way, or no quorum)\n".to_string(),
    });
    out.push_str(&format!(
        "{:>4}  {:<7}  {:<5}  {:>11}  {:<21}  {}\n",
        "id", "role", "voter", "lag entries", "rpc", "raft"
    ));
    for member in status["members"].as_array().into_iter().flatten() {
        let id = member["id"].as_u64().unwrap_or(0);
        let role = if Some(id) == leader {
            "leader"
        } else if member["voter"] == true {
            "voter"
        } else {
            "learner"
        };
        let marker = if id == me { " (this node)" } else { "" };
        out.push_str(&format!(
            "{:>4}  {:<7}  {:<5}  {:>11}  {:<21}  {}{marker}\n",
            id,
            role,
            if member["voter"] == true { "yes" } else { "no" },
            number(&member["lag_entries"]),
            member["rpc_addr"].as_str().unwrap_or("?"),
            member["raft_addr"].as_str().unwrap_or("?"),
        ));
    }
    if status["role"] != "leader" {
        out.push_str("(lag is known on the leader only: ask its admin API)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_table_names_the_leader_roles_and_lags() {
        let status = serde_json::json!({
            "node_id": 2, "role": "leader", "leader": 2, "term": 7,
            "last_log_index": 120, "last_applied_index": 120, "paused": false,
            "handing_over": false,
            "members": [
                {"id": 1, "raft_addr": "127.0.0.1:7101", "rpc_addr": "127.0.0.1:8645", "voter": true, "lag_entries": 3},
                {"id": 2, "raft_addr": "127.0.0.1:7102", "rpc_addr": "127.0.0.1:8646", "voter": true, "lag_entries": 0},
                {"id": 4, "raft_addr": "127.0.0.1:7104", "rpc_addr": "127.0.0.1:8648", "voter": false, "lag_entries": null}
            ]
        });
        let table = status_table(&status);
        assert!(
            table.starts_with("node 2: leader, term 7, log 120, applied 120\nleader: node 2\n"),
            "{table}"
        );
        assert!(
            table.contains("   1  voter    yes              3  127.0.0.1:8645"),
            "{table}"
        );
        assert!(table.contains("   2  leader   yes              0  127.0.0.1:8646         127.0.0.1:7102 (this node)"), "{table}");
        assert!(
            table.contains("   4  learner  no               —  127.0.0.1:8648"),
            "{table}"
        );
    }
}
