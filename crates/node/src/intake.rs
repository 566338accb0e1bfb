//! The intake: transactions a cluster's leader accepts go through the Raft log into every
//! node's pool before their hash is answered ("accepted means kept", docs/cluster.md).
//!
//! ```text
//!  eth_sendRawTransaction on the leader (or forwarded by a follower)
//!    decode, recover the sender, Mempool::check against the head and the pool
//!    RaftIntake::take ─► queue (INTAKE_QUEUE_MAX) ─► drain: whatever waits, up to
//!    INTAKE_TRANSACTIONS_MAX / INTAKE_BYTES_MAX, becomes one Proposal::Intake
//!    (INTAKE_ENTRIES_IN_FLIGHT_MAX in flight) ─► Raft: appended and fsynced on a quorum
//!                                                    │ committed
//!  every node: StateMachine::apply ─► PoolIntake::admit ─► Mempool::add, in log order
//!  the leader's apply outcome ─► each client: its hash, or the pool's refusal in geth's words
//! ```
//!
//! Under load an entry carries what arrived while the previous ones were in flight, so the
//! cost of the quorum's fsync is shared; at rest a transaction waits for nothing but its own
//! round.

use alloy::consensus::TxEnvelope;
use alloy::eips::eip2718::Encodable2718;
use alloy::primitives::{Address, B256};
use futures::future::BoxFuture;
use keel_cluster::{
    ApplyOutcome, INTAKE_BYTES_MAX, INTAKE_TRANSACTIONS_MAX, IntakeRefusal, IntakeSink,
    IntakeTransaction, LeaderControl, TypeConfig,
};
use keel_mempool::Mempool;
use keel_primitives::{ChainSpec, limits};
use keel_rpc::ErrorObjectOwned;
use openraft::Raft;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Every node's side: an applied intake entry's transactions into the pool.
#[derive(Debug)]
pub(crate) struct PoolIntake {
    pub(crate) chain: ChainSpec,
    pub(crate) mempool: Arc<Mempool>,
}

impl IntakeSink for PoolIntake {
    fn admit(
        &self,
        transactions: &[IntakeTransaction],
        head: &keel_storage::Snapshot,
    ) -> Vec<IntakeRefusal> {
        let next_base_fee = match head.header(head.head().0) {
            Ok(Some(header)) => self.chain.next_base_fee(&header),
            Ok(None) => return refuse_all(transactions, "the head's header is missing"),
            Err(error) => return refuse_all(transactions, &error.to_string()),
        };
        let mut refused = Vec::new();
        for (index, transaction) in transactions.iter().enumerate() {
            let admitted = keel_mempool::decode(&transaction.raw).and_then(|envelope| {
                self.mempool
                    .add(envelope, transaction.sender, head, next_base_fee)
            });
            if let Err(error) = admitted {
                refused.push(refusal(index, keel_rpc::error::pool(error)));
            }
        }
        refused
    }

    fn pending(&self, bytes_max: u64) -> Vec<IntakeTransaction> {
        let mut bytes = 0u64;
        self.mempool
            .all()
            .into_iter()
            .take_while(|transaction| {
                bytes += transaction.size as u64;
                bytes <= bytes_max
            })
            .map(|transaction| IntakeTransaction {
                raw: transaction.envelope.encoded_2718().into(),
                sender: transaction.sender,
            })
            .collect()
    }
}

fn refusal(index: usize, error: ErrorObjectOwned) -> IntakeRefusal {
    IntakeRefusal {
        index: index as u32,
        code: error.code(),
        message: error.message().to_string(),
    }
}

fn refuse_all(transactions: &[IntakeTransaction], why: &str) -> Vec<IntakeRefusal> {
    (0..transactions.len())
        .map(|index| refusal(index, keel_rpc::error::internal(why)))
        .collect()
}

struct Queued {
    transaction: IntakeTransaction,
    hash: B256,
    reply: oneshot::Sender<Result<B256, ErrorObjectOwned>>,
}

/// The leader's side: admitted transactions into Raft intake entries.
pub(crate) struct RaftIntake {
    queue: mpsc::Sender<Queued>,
}

impl std::fmt::Debug for RaftIntake {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("RaftIntake").finish_non_exhaustive()
    }
}

impl RaftIntake {
    /// An intake proposing through `raft`, holding back while `control` hands leadership
    /// over; its drain runs until the last handle is dropped.
    pub(crate) fn start(
        raft: Raft<TypeConfig>,
        control: Arc<LeaderControl>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, receiver) = mpsc::channel(limits::INTAKE_QUEUE_MAX);
        (Self { queue }, tokio::spawn(drain(receiver, raft, control)))
    }
}

impl keel_rpc::Intake for RaftIntake {
    fn take(
        &self,
        transaction: TxEnvelope,
        sender: Address,
    ) -> BoxFuture<'static, Result<B256, ErrorObjectOwned>> {
        let hash = *transaction.tx_hash();
        let (reply, answer) = oneshot::channel();
        let queued = Queued {
            transaction: IntakeTransaction {
                raw: transaction.encoded_2718().into(),
                sender,
            },
            hash,
            reply,
        };
        // Full: refuse now rather than queue without bound (the client retries).
        let sent = self.queue.try_send(queued);
        Box::pin(async move {
            if sent.is_err() {
                metrics::counter!("keel_intake_refused_total", "reason" => "queue_full")
                    .increment(1);
                return Err(keel_rpc::error::server(
                    "the leader's intake is full; retry shortly",
                ));
            }
            answer.await.unwrap_or_else(|_| {
                Err(keel_rpc::error::server(
                    "the intake stopped (the node is shutting down); retry on another node",
                ))
            })
        })
    }
}

async fn drain(
    mut receiver: mpsc::Receiver<Queued>,
    raft: Raft<TypeConfig>,
    control: Arc<LeaderControl>,
) {
    let in_flight = Arc::new(Semaphore::new(limits::INTAKE_ENTRIES_IN_FLIGHT_MAX));
    let mut held: Option<Queued> = None;
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let first = match held.take() {
            Some(first) => first,
            None => match receiver.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        // No entry while a hand-over holds the log still (LeaderControl::intake_turn; taken
        // only with a transaction in hand, so an idle intake never holds a transfer up): what
        // arrives meanwhile waits in the queue, and is proposed afterwards, here, where it is
        // refused with "send it again" if this node no longer leads.
        let turn = control.intake_turn().await;
        // Everything already waiting joins this entry, within its limits.
        let mut bytes = first.transaction.raw.len();
        let (batch, next) = keel_primitives::coalesce(
            first,
            INTAKE_TRANSACTIONS_MAX,
            || receiver.try_recv().ok(),
            |_, next| {
                bytes += next.transaction.raw.len();
                bytes <= INTAKE_BYTES_MAX
            },
        );
        held = next;
        let raft = raft.clone();
        tokio::spawn(async move {
            propose(&raft, batch).await;
            drop((permit, turn));
        });
    }
}

/// Proposes one intake entry and answers its transactions from the leader's apply outcome.
async fn propose(raft: &Raft<TypeConfig>, batch: Vec<Queued>) {
    metrics::histogram!("keel_intake_entry_transactions").record(batch.len() as f64);
    let transactions = batch
        .iter()
        .map(|queued| queued.transaction.clone())
        .collect();
    let started = std::time::Instant::now();
    let written = raft
        .client_write(keel_cluster::Proposal::Intake(transactions))
        .await;
    metrics::histogram!("keel_intake_commit_seconds").record(started.elapsed().as_secs_f64());
    let refused = match written {
        Ok(response) => match response.data {
            ApplyOutcome::Intake { refused } => refused,
            other => {
                let error =
                    keel_rpc::error::internal(format!("an intake entry applied as {other:?}"));
                for queued in batch {
                    let _ = queued.reply.send(Err(error.clone()));
                }
                return;
            }
        },
        Err(error) => {
            // Not the leader any more, before or after appending: the entry may still
            // commit under the next leader, or may not. The client resends; a kept copy
            // answers "already known".
            tracing::debug!(%error, "intake entry not committed here");
            let error = keel_rpc::error::server(format!(
                "leadership changed while the transaction was replicated ({error}); it may or \
                 may not be kept: send it again (a kept one answers \"already known\")"
            ));
            for queued in batch {
                let _ = queued.reply.send(Err(error.clone()));
            }
            return;
        }
    };
    let mut refused = refused.into_iter().peekable();
    for (index, queued) in batch.into_iter().enumerate() {
        let answer = match refused.next_if(|refusal| refusal.index as usize == index) {
            Some(refusal) => Err(ErrorObjectOwned::owned(
                refusal.code,
                refusal.message,
                None::<()>,
            )),
            None => Ok(queued.hash),
        };
        let _ = queued.reply.send(answer);
    }
}
