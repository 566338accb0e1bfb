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
}

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

#[derive(serde::Deserialize)]
struct MemberRequest {
    id: NodeId,
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
                    let message = format!("node {id} is not a caught-up learner (lag {lag:?})\n");
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

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferRequest {
    to: Option<NodeId>,
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
        .with_state(admin)
}
