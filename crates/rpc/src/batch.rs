//! Runs the calls of a JSON-RPC batch concurrently.
//!
//! jsonrpsee answers a batch by awaiting its calls one after another. For local reads that costs
//! little, but a follower forwards each `eth_sendRawTransaction` of a batch to the leader over
//! HTTP, so a batch of 100 would take 100 round trips in a row. This middleware runs at most
//! `limits::RPC_BATCH_CALLS_CONCURRENT_MAX` calls of a batch at once, and answers in the
//! batch's order, as JSON-RPC requires.

use futures::StreamExt;
use jsonrpsee::core::middleware::{Batch, BatchEntry, BatchEntryErr, Notification, RpcServiceT};
use jsonrpsee::core::server::{BatchResponseBuilder, MethodResponse};
use jsonrpsee::types::Request;
use keel_primitives::limits;

/// One entry of a batch: a call's answer, or `None` for a notification.
async fn answer<'a, S>(
    service: S,
    entry: Result<BatchEntry<'a>, BatchEntryErr<'a>>,
) -> Option<MethodResponse>
where
    S: RpcServiceT<MethodResponse = MethodResponse, NotificationResponse = MethodResponse>,
{
    match entry {
        Ok(BatchEntry::Call(request)) => Some(service.call(request).await),
        Ok(BatchEntry::Notification(notification)) => {
            service.notification(notification).await;
            None
        }
        Err(error) => {
            let (error, id) = error.into_parts();
            Some(MethodResponse::error(id, error))
        }
    }
}

/// The middleware around the server's RPC service.
#[derive(Debug, Clone)]
pub(crate) struct ConcurrentBatch<S> {
    pub(crate) service: S,
}

impl<S> RpcServiceT for ConcurrentBatch<S>
where
    S: RpcServiceT<
            MethodResponse = MethodResponse,
            NotificationResponse = MethodResponse,
            BatchResponse = MethodResponse,
        > + Clone
        + Send
        + Sync
        + 'static,
{
    type MethodResponse = MethodResponse;
    type NotificationResponse = MethodResponse;
    type BatchResponse = MethodResponse;

    fn call<'a>(
        &self,
        request: Request<'a>,
    ) -> impl Future<Output = Self::MethodResponse> + Send + 'a {
        self.service.call(request)
    }

    fn batch<'a>(&self, batch: Batch<'a>) -> impl Future<Output = Self::BatchResponse> + Send + 'a {
        let service = self.service.clone();
        async move {
            let calls: Vec<_> = batch
                .into_iter()
                .map(|entry| answer(service.clone(), entry))
                .collect();
            let answers: Vec<Option<MethodResponse>> = futures::stream::iter(calls)
                .buffered(limits::RPC_BATCH_CALLS_CONCURRENT_MAX)
                .collect()
                .await;
            let notified = answers.iter().any(Option::is_none);
            let mut built =
                BatchResponseBuilder::new_with_limit(limits::RPC_RESPONSE_BYTES_MAX as usize);
            for answer in answers.into_iter().flatten() {
                if let Err(too_large) = built.append(answer) {
                    return too_large;
                }
            }
            if built.is_empty() && notified {
                MethodResponse::notification()
            } else {
                MethodResponse::from_batch(built.finish())
            }
        }
    }

    fn notification<'a>(
        &self,
        notification: Notification<'a>,
    ) -> impl Future<Output = Self::NotificationResponse> + Send + 'a {
        self.service.notification(notification)
    }
}
