//! Forwarding of `eth_sendRawTransaction` from a follower to the leader, in batches.
//!
//! A follower answers each forwarded transaction with the leader's answer. Sending each as its
//! own HTTP request costs a round trip and a request's overhead per transaction, which caps a
//! follower at a fraction of the leader's rate. Instead, transactions waiting to be forwarded
//! are queued, and one sender drains the queue into JSON-RPC batches: whatever arrived while
//! the previous batch was in flight goes in the next one, so under load batches grow and at
//! rest a transaction waits for nothing. A batch holds at most `FORWARD_BATCH_CALLS_MAX` calls
//! and half the leader's request limit in bytes; at most `FORWARD_BATCHES_IN_FLIGHT_MAX` are in
//! flight at once.

use crate::error;
use jsonrpsee::types::ErrorObjectOwned;
use keel_primitives::{ErrorKind, limits};
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Why a forwarded call got no answer from the leader. Each is [`ErrorKind::Retry`] for the
/// client: the transaction may or may not have reached the leader's pool, and sending it again
/// is safe (a second copy is "already known").
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The request did not complete: no connection, a reset, or no answer within
    /// `FORWARD_TIMEOUT_MS_MAX`.
    #[error("the leader is unreachable: {0}")]
    Unreachable(String),
    /// The leader answered with an HTTP error instead of JSON-RPC (429 when its connection
    /// limit is reached): its status and the start of its text.
    #[error("the leader refused it: HTTP {status}: {text}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The start of the body (at most `FORWARD_REFUSAL_TEXT_MAX` bytes).
        text: String,
    },
    /// The leader's body was not a JSON-RPC answer (a batch answer, for a batch).
    #[error("the leader's answer is not JSON-RPC: {0}")]
    NotJsonRpc(#[from] serde_json::Error),
}

impl ForwardError {
    /// What the caller does: retry, always (see the type's docs).
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Retry
    }

    /// The error for a non-success HTTP answer with `body`.
    pub(crate) fn refused(status: reqwest::StatusCode, body: &[u8]) -> Self {
        let text = String::from_utf8_lossy(&body[..body.len().min(FORWARD_REFUSAL_TEXT_MAX)]);
        Self::Refused {
            status: status.as_u16(),
            text: text.trim().to_string(),
        }
    }
}

/// Bytes of a refusing leader's body quoted in [`ForwardError::Refused`].
const FORWARD_REFUSAL_TEXT_MAX: usize = 200;

type Reply = oneshot::Sender<Result<serde_json::Value, ErrorObjectOwned>>;

struct Queued {
    url: String,
    params: serde_json::Value,
    reply: Reply,
}

/// The queue of transactions on their way to the leader, and its sender task.
#[derive(Debug)]
pub(crate) struct Forwarder {
    queue: std::sync::OnceLock<mpsc::Sender<Queued>>,
    http: reqwest::Client,
}

impl Forwarder {
    pub(crate) fn new(http: reqwest::Client) -> Self {
        Self {
            queue: std::sync::OnceLock::new(),
            http,
        }
    }

    /// Forwards one `eth_sendRawTransaction` (its `params`) to the leader at `url`, and returns
    /// the leader's answer.
    pub(crate) async fn send_raw_transaction(
        &self,
        url: String,
        params: serde_json::Value,
    ) -> Result<serde_json::Value, ErrorObjectOwned> {
        let queue = self.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(limits::FORWARD_QUEUE_MAX);
            tokio::spawn(drain(receiver, self.http.clone()));
            sender
        });
        let (reply, answer) = oneshot::channel();
        queue
            .send(Queued { url, params, reply })
            .await
            .map_err(|_| error::server("forwarding to the leader stopped"))?;
        answer
            .await
            .map_err(|_| error::server("forwarding to the leader stopped"))?
    }
}

async fn drain(mut receiver: mpsc::Receiver<Queued>, http: reqwest::Client) {
    let in_flight = Arc::new(Semaphore::new(limits::FORWARD_BATCHES_IN_FLIGHT_MAX));
    let mut held: Option<Queued> = None;
    loop {
        let first = match held.take() {
            Some(first) => first,
            None => match receiver.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        // Everything already waiting for the same leader joins this batch.
        let mut bytes = size(&first);
        let (batch, next) = keel_primitives::coalesce(
            first,
            limits::FORWARD_BATCH_CALLS_MAX,
            || receiver.try_recv().ok(),
            |batch, next| {
                bytes += size(next);
                next.url == batch[0].url && bytes <= limits::RPC_REQUEST_BYTES_MAX as usize / 2
            },
        );
        held = next;
        let http = http.clone();
        tokio::spawn(async move {
            send_batch(&http, batch).await;
            drop(permit);
        });
    }
}

/// Bytes a queued call adds to a batch body, about: its raw transaction in hex.
fn size(queued: &Queued) -> usize {
    queued.params[0].as_str().map_or(0, str::len) + 64
}

async fn send_batch(http: &reqwest::Client, batch: Vec<Queued>) {
    let params: Vec<serde_json::Value> = batch.iter().map(|queued| queued.params.clone()).collect();
    metrics::histogram!("keel_rpc_forward_batch_transactions").record(batch.len() as f64);
    match send_raw_transactions(http, &batch[0].url, &params).await {
        Ok(answers) => {
            for (queued, answer) in batch.into_iter().zip(answers) {
                let _ = queued.reply.send(answer);
            }
        }
        Err(failure) => {
            for queued in batch {
                let message = format!("forwarding to the leader failed: {failure}");
                let _ = queued.reply.send(Err(error::server(message)));
            }
        }
    }
}

/// Sends one `eth_sendRawTransaction` per entry of `params` (each the call's params) to `url`
/// as one JSON-RPC batch, and returns the answers in the same order. The caller keeps the batch
/// within the server's limits (`RPC_BATCH_CALLS_MAX` calls, `RPC_REQUEST_BYTES_MAX` bytes).
async fn send_raw_transactions(
    http: &reqwest::Client,
    url: &str,
    params: &[serde_json::Value],
) -> Result<Vec<Result<serde_json::Value, ErrorObjectOwned>>, ForwardError> {
    let calls: Vec<serde_json::Value> = params
        .iter()
        .enumerate()
        .map(|(id, params)| {
            serde_json::json!({
                "jsonrpc": "2.0",
                "id": id,
                "method": "eth_sendRawTransaction",
                "params": params,
            })
        })
        .collect();
    let timeout = std::time::Duration::from_millis(limits::FORWARD_TIMEOUT_MS_MAX);
    let body = post(http, url, &calls, timeout).await?;
    read_forwarded_answers(&body, params.len())
}

/// Posts `body` as JSON to the leader at `url` and returns its answer's body, or why there is
/// none worth reading: no answer within `timeout`, or an HTTP error status.
pub(crate) async fn post(
    http: &reqwest::Client,
    url: &str,
    body: &impl serde::Serialize,
    timeout: std::time::Duration,
) -> Result<hyper::body::Bytes, ForwardError> {
    let unreachable = |failure: reqwest::Error| ForwardError::Unreachable(failure.to_string());
    let response = http
        .post(url)
        .json(body)
        .timeout(timeout)
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status();
    let body = response.bytes().await.map_err(unreachable)?;
    if !status.is_success() {
        return Err(ForwardError::refused(status, &body));
    }
    Ok(body)
}

/// The leader's answer to a forwarded batch of `calls` calls (ids `0..calls`), call by call in
/// the batch's order: its result, its error, or an error for a call it did not answer. The
/// body comes from another node: anything that is not a JSON array is an error for the whole
/// batch, never a panic (the fuzz target `forward_reply` holds it to that).
pub fn read_forwarded_answers(
    body: &[u8],
    calls: usize,
) -> Result<Vec<Result<serde_json::Value, ErrorObjectOwned>>, ForwardError> {
    let answers = match serde_json::from_slice::<serde_json::Value>(body)? {
        serde_json::Value::Array(answers) => answers,
        // One error for the whole batch (the leader refused it as a batch: too many calls,
        // too large): every call gets it.
        refusal @ serde_json::Value::Object(_) if refusal.get("error").is_some() => {
            return Ok((0..calls)
                .map(|_| crate::forwarded_answer(refusal.clone()))
                .collect());
        }
        other => {
            return Err(ForwardError::NotJsonRpc(serde::de::Error::custom(format!(
                "a JSON {} where a batch answer was expected",
                match other {
                    serde_json::Value::Object(_) => "object without an error",
                    serde_json::Value::String(_) => "string",
                    serde_json::Value::Number(_) => "number",
                    serde_json::Value::Bool(_) => "boolean",
                    _ => "null",
                }
            ))));
        }
    };
    let mut by_id: std::collections::HashMap<u64, serde_json::Value> = answers
        .into_iter()
        .filter_map(|answer| Some((answer["id"].as_u64()?, answer)))
        .collect();
    Ok((0..calls as u64)
        .map(|id| match by_id.remove(&id) {
            Some(answer) => crate::forwarded_answer(answer),
            None => Err(error::server(
                "forwarding to the leader failed: no answer for the call",
            )),
        })
        .collect())
}
