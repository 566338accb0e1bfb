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
    /// Role, leader, term, applied index, pause state, members and their lag.
    Status,
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
}

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
        AdminCommand::Status => client.get(format!("{base}/admin/status")),
        AdminCommand::Pause => client.post(format!("{base}/admin/pause")),
        AdminCommand::Resume => client.post(format!("{base}/admin/resume")),
        AdminCommand::AddLearner { id } => client
            .post(format!("{base}/admin/add-learner"))
            .json(&serde_json::json!({ "id": id })),
        AdminCommand::Promote { id } => client
            .post(format!("{base}/admin/promote"))
            .json(&serde_json::json!({ "id": id })),
        AdminCommand::Remove { id } => client
            .post(format!("{base}/admin/remove"))
            .json(&serde_json::json!({ "id": id })),
        AdminCommand::Transfer { to } => client
            .post(format!("{base}/admin/transfer"))
            .json(&serde_json::json!({ "to": to })),
    };
    let response = request.bearer_auth(token).send().await?;
    let status = response.status();
    let body = response.text().await?;
    if !status.is_success() {
        return Err(format!("{status}: {}", body.trim()).into());
    }
    println!("{}", body.trim());
    Ok(())
}
