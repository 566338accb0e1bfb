//! The admin API of a cluster node, on its own port, for operators and `keel admin`.
//!
//! Every request carries `Authorization: Bearer <token>` (the token file given to the node);
//! any other request is refused with 401 and counted (`keel_admin_requests_refused_total`).
//!
//! | method and path | what it does |
//! |---|---|
//! | `GET /admin/status` | role, leader, term, applied index, paused, members with their lag |
//! | `POST /admin/pause` | this node builds no block until resumed |
//! | `POST /admin/resume` | this node builds again when it leads |
//! | `POST /admin/add-learner` `{"id": N}` | the leader replicates to member N, which does not vote |
//! | `POST /admin/promote` `{"id": N}` | N votes, once within `CAUGHT_UP_ENTRIES_MAX` entries (R1) |
//! | `POST /admin/remove` `{"id": N}` | N leaves the cluster |
//! | `POST /admin/transfer` `{"to": N}` or `{}` | hands leadership to N, or to the best ready voter |
//! | `POST /admin/backup` `{"dir": "/abs/path"}` | writes a consistent copy of the chain store into a new directory on this node's disk, while the node runs |
//!
//! A transfer goes only to a healthy voter at most `CAUGHT_UP_ENTRIES_MAX` entries behind
//! (R1); it answers when the new leader leads, or 409 with why not (keel_cluster::transfer).

use crate::cluster::Member;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use keel_cluster::{
    CAUGHT_UP_ENTRIES_MAX, ClusterSecret, LeaderControl, NodeId, PeerNetwork, PeerTransport,
    TransferError, TypeConfig, transfer_leadership,
};
use openraft::Raft;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Clone)]
pub(crate) struct Admin<T: PeerTransport> {
    pub(crate) node_id: NodeId,
    pub(crate) raft: Raft<TypeConfig>,
    pub(crate) members: BTreeMap<NodeId, Member>,
    pub(crate) control: Arc<LeaderControl>,
    pub(crate) network: PeerNetwork<T>,
    pub(crate) addresses: BTreeMap<NodeId, String>,
    pub(crate) token: ClusterSecret,
    /// The chain store a backup copies.
    pub(crate) store: Arc<keel_storage::Store>,
    pub(crate) chain_id: u64,
    /// Set while a backup runs: one at a time (`BACKUPS_AT_ONCE_MAX`).
    pub(crate) backing_up: Arc<std::sync::atomic::AtomicBool>,
}

/// Backups one node writes at once: each holds a reader on the store and writes a whole copy,
/// so a second would only halve the disk bandwidth of both.
pub(crate) const BACKUPS_AT_ONCE_MAX: usize = 1;
const _: () = assert!(BACKUPS_AT_ONCE_MAX == 1, "backing_up is one flag");

/// The manifest a backup directory holds beside its `chain.redb`, read by `keel restore`.
pub const BACKUP_MANIFEST: &str = "backup.json";

fn refuse() -> Response {
    metrics::counter!("keel_admin_requests_refused_total").increment(1);
    (StatusCode::UNAUTHORIZED, "missing or wrong admin token\n").into_response()
}

fn authorized<T: PeerTransport>(admin: &Admin<T>, headers: &HeaderMap) -> bool {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    admin.token.admits(header)
}

impl<T: PeerTransport> Admin<T> {
    /// Each voter's log lag behind this leader, from the leader's replication view.
    fn lags(&self) -> Option<BTreeMap<NodeId, u64>> {
        let metrics = self.raft.metrics().borrow().clone();
        let replication = metrics.replication.as_ref()?;
        let last = metrics.last_log_index.unwrap_or(0);
        Some(
            replication
                .keys()
                .map(|id| {
                    let matched = keel_cluster::matched_index(&metrics, *id).unwrap_or(0);
                    (*id, last.saturating_sub(matched))
                })
                .collect(),
        )
    }

    fn status(&self) -> serde_json::Value {
        let metrics = self.raft.metrics().borrow().clone();
        let lags = self.lags();
        let voters: Vec<NodeId> = metrics.membership_config.membership().voter_ids().collect();
        let members: Vec<serde_json::Value> = self
            .members
            .iter()
            .map(|(id, member)| {
                json!({
                    "id": id,
                    "raft_addr": member.raft_addr.to_string(),
                    "rpc_addr": member.rpc_addr.to_string(),
                    "voter": voters.contains(id),
                    "lag_entries": lags.as_ref().and_then(|lags| lags.get(id)),
                })
            })
            .collect();
        let mut status = crate::cluster::status(&self.raft, self.node_id);
        status["paused"] = json!(self.control.paused());
        status["handing_over"] = json!(self.control.handing_over());
        status["members"] = json!(members);
        status
    }
}

/// The body of `add-learner`, `promote` and `remove`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberRequest {
    /// The member's id.
    pub id: NodeId,
}

impl<T: PeerTransport> Admin<T> {
    /// Runs a membership change on the leader, answering what happened.
    async fn change(&self, id: NodeId, change: &str) -> Response {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.current_leader != Some(self.node_id) {
            return self.not_leader(metrics.current_leader, change);
        }
        let Some(member) = self.members.get(&id) else {
            return (
                StatusCode::CONFLICT,
                format!("node {id} is not in the cluster file\n"),
            )
                .into_response();
        };
        let ids = std::collections::BTreeSet::from([id]);
        let result = match change {
            "add-learner" => {
                let node = openraft::BasicNode::new(member.raft_addr.to_string());
                self.raft.add_learner(id, node, false).await
            }
            "promote" => {
                // R1: a node votes only once it has caught up.
                let lag = self.lags().and_then(|lags| lags.get(&id).copied());
                if lag.is_none_or(|lag| lag > CAUGHT_UP_ENTRIES_MAX) {
                    let message = match lag {
                        Some(lag) => format!(
                            "node {id} is {lag} entries behind (a voter may be at most \
                             {CAUGHT_UP_ENTRIES_MAX}): wait for it to catch up (`keel admin \
                             status` shows its lag), then promote it again\n"
                        ),
                        None => format!(
                            "node {id} is not a learner this leader replicates to: add it first \
                             with `keel admin add-learner --id {id}`, and start it\n"
                        ),
                    };
                    return (StatusCode::CONFLICT, message).into_response();
                }
                self.raft
                    .change_membership(openraft::ChangeMembers::AddVoterIds(ids), false)
                    .await
            }
            "remove" => {
                if id == self.node_id {
                    let message =
                        "a leader does not remove itself; remove it from another leader\n";
                    return (StatusCode::CONFLICT, message).into_response();
                }
                self.raft
                    .change_membership(openraft::ChangeMembers::RemoveVoters(ids), false)
                    .await
            }
            other => unreachable!("unknown membership change {other}"),
        };
        match result {
            Ok(_) => {
                tracing::warn!(id, change, "membership changed by an operator");
                axum::Json(self.status()).into_response()
            }
            Err(error) => (StatusCode::CONFLICT, format!("{error}\n")).into_response(),
        }
    }
}

/// The body of `backup`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// A directory to create on this node's disk (absolute: the node's working directory is
    /// not the operator's).
    pub dir: std::path::PathBuf,
}

impl<T: PeerTransport> Admin<T> {
    /// Writes a backup into `dir` (a new directory): `chain.redb`, then `backup.json`.
    async fn backup(&self, dir: std::path::PathBuf) -> Response {
        use std::sync::atomic::Ordering;
        if !dir.is_absolute() {
            let message = format!(
                "{} is not an absolute path: name the directory as the node's machine sees it\n",
                dir.display()
            );
            return (StatusCode::BAD_REQUEST, message).into_response();
        }
        if self.backing_up.swap(true, Ordering::AcqRel) {
            let message = "a backup is running on this node already: wait for it to finish\n";
            return (StatusCode::CONFLICT, message).into_response();
        }
        let store = self.store.clone();
        let (node_id, chain_id) = (self.node_id, self.chain_id);
        let applied = self.raft.metrics().borrow().last_applied.map(|id| id.index);
        let written = tokio::task::spawn_blocking(move || {
            write_backup(&store, &dir, node_id, chain_id, applied)
        })
        .await;
        self.backing_up.store(false, Ordering::Release);
        match written {
            Ok(Ok(manifest)) => axum::Json(manifest).into_response(),
            Ok(Err((status, message))) => (status, format!("{message}\n")).into_response(),
            Err(error) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the backup task failed: {error}\n"),
            )
                .into_response(),
        }
    }
}

/// The blocking part of a backup: the directory, the copy, the manifest (written last: a
/// directory without one is an unfinished backup).
fn write_backup(
    store: &keel_storage::Store,
    dir: &std::path::Path,
    node_id: NodeId,
    chain_id: u64,
    applied: Option<u64>,
) -> Result<serde_json::Value, (StatusCode, String)> {
    let started = std::time::Instant::now();
    std::fs::create_dir(dir).map_err(|error| {
        let fix = match error.kind() {
            std::io::ErrorKind::AlreadyExists => "name a new directory",
            std::io::ErrorKind::NotFound => "create its parent first",
            _ => "check the path and its permissions on the node's machine",
        };
        (
            StatusCode::CONFLICT,
            format!("creating {}: {error}: {fix}", dir.display()),
        )
    })?;
    tracing::info!(dir = %dir.display(), "backup started");
    let backup = store
        .backup(&dir.join("chain.redb"), &mut |progress| {
            tracing::info!(
                table = progress.table,
                rows = progress.rows,
                "backup: table {} of {} copied",
                progress.done,
                progress.tables
            );
        })
        .map_err(|error| (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()))?;
    let manifest = json!({
        "node_id": node_id,
        "chain_id": chain_id,
        "head": backup.head,
        "hash": backup.hash,
        "raft_applied_index_at_request": applied,
        "bytes": backup.bytes,
        "rows": backup.rows,
        "took_ms": started.elapsed().as_millis() as u64,
        "created_unix_s": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs()),
        "files": ["chain.redb"],
        "keel_version": env!("CARGO_PKG_VERSION"),
    });
    let text = serde_json::to_string_pretty(&manifest).expect("a manifest serializes");
    let path = dir.join(BACKUP_MANIFEST);
    std::fs::write(&path, text + "\n")
        .and_then(|()| std::fs::File::open(&path)?.sync_all())
        .and_then(|()| std::fs::File::open(dir)?.sync_all())
        .map_err(|error| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("writing {}: {error}", path.display()),
            )
        })?;
    tracing::info!(dir = %dir.display(), head = backup.head, bytes = backup.bytes, "backup written");
    Ok(manifest)
}

/// The body of `transfer`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// The voter to lead; `None`: the best ready one.
    pub to: Option<NodeId>,
}

impl<T: PeerTransport> Admin<T> {
    /// 409 for what only the leader does, naming the leader and where to ask it.
    fn not_leader(&self, leader: Option<NodeId>, command: &str) -> Response {
        let error = TransferError::NotLeader(leader);
        let fix = match leader {
            Some(leader) => match self
                .members
                .get(&leader)
                .and_then(|member| member.admin_addr)
            {
                Some(address) => format!(
                    "; ask its admin API: keel admin --url http://{address} --token-file FILE \
                     {command}"
                ),
                None => format!(
                    "; ask node {leader}'s admin API (with admin_addr in the cluster file, the \
                     nodes name it)"
                ),
            },
            None => "; retry once a leader is elected".to_string(),
        };
        (StatusCode::CONFLICT, format!("{error}{fix}\n")).into_response()
    }

    /// Hands leadership over from this node; answers once the new leader leads.
    async fn transfer(&self, to: Option<NodeId>) -> Response {
        tracing::warn!(?to, "leadership transfer requested by an operator");
        match transfer_leadership(
            &self.raft,
            &self.control,
            &self.network,
            &self.addresses,
            to,
        )
        .await
        {
            Ok(done) => axum::Json(json!({
                "leader": done.to,
                "took_ms": done.took.as_millis() as u64,
            }))
            .into_response(),
            Err(TransferError::NotLeader(leader)) => self.not_leader(leader, "transfer"),
            Err(error @ TransferError::NotAVoter(_)) => {
                (StatusCode::CONFLICT, format!("{error}\n")).into_response()
            }
            // The transfer was tried and did not happen: the cluster is not ready for it.
            Err(error) => (StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n")).into_response(),
        }
    }
}

fn membership_route<T: PeerTransport>(
    change: &'static str,
) -> axum::routing::MethodRouter<Admin<T>> {
    post(
        move |State(admin): State<Admin<T>>, headers: HeaderMap, body: axum::body::Bytes| async move {
            if !authorized(&admin, &headers) {
                return refuse();
            }
            match serde_json::from_slice::<MemberRequest>(&body) {
                Ok(request) => admin.change(request.id, change).await,
                Err(error) => (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response(),
            }
        },
    )
}

/// The admin router.
pub(crate) fn router<T: PeerTransport>(admin: Admin<T>) -> Router {
    Router::new()
        .route(
            "/admin/status",
            get(
                |State(admin): State<Admin<T>>, headers: HeaderMap| async move {
                    if !authorized(&admin, &headers) {
                        return refuse();
                    }
                    axum::Json(admin.status()).into_response()
                },
            ),
        )
        .route(
            "/admin/pause",
            post(
                |State(admin): State<Admin<T>>, headers: HeaderMap| async move {
                    if !authorized(&admin, &headers) {
                        return refuse();
                    }
                    admin.control.set_paused(true);
                    tracing::warn!("sequencing paused by an operator");
                    axum::Json(json!({ "paused": true })).into_response()
                },
            ),
        )
        .route(
            "/admin/resume",
            post(
                |State(admin): State<Admin<T>>, headers: HeaderMap| async move {
                    if !authorized(&admin, &headers) {
                        return refuse();
                    }
                    admin.control.set_paused(false);
                    tracing::info!("sequencing resumed by an operator");
                    axum::Json(json!({ "paused": false })).into_response()
                },
            ),
        )
        .route("/admin/add-learner", membership_route("add-learner"))
        .route("/admin/promote", membership_route("promote"))
        .route("/admin/remove", membership_route("remove"))
        .route(
            "/admin/transfer",
            post(
                |State(admin): State<Admin<T>>, headers: HeaderMap, body: axum::body::Bytes| async move {
                    if !authorized(&admin, &headers) {
                        return refuse();
                    }
                    let body = if body.is_empty() { &b"{}"[..] } else { &body[..] };
                    match serde_json::from_slice::<TransferRequest>(body) {
                        Ok(request) => admin.transfer(request.to).await,
                        Err(error) => (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response(),
                    }
                },
            ),
        )
        .route(
            "/admin/backup",
            post(
                |State(admin): State<Admin<T>>, headers: HeaderMap, body: axum::body::Bytes| async move {
                    if !authorized(&admin, &headers) {
                        return refuse();
                    }
                    match serde_json::from_slice::<BackupRequest>(&body) {
                        Ok(request) => admin.backup(request.dir).await,
                        Err(error) => (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response(),
                    }
                },
            ),
        )
        .with_state(admin)
}
