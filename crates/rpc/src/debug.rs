//! geth's tracing methods: `debug_traceTransaction`, `debug_traceBlockByNumber`,
//! `debug_traceBlockByHash` and `debug_traceCall`, on the RPC's blocking pool (never on the
//! sealing path), over the state history (a block is replayed on its parent's state).

use crate::RpcContext;
use crate::error::{internal, invalid_params, server, storage};
use alloy::primitives::B256;
use alloy::rpc::types::trace::geth::{GethDebugTracingCallOptions, GethDebugTracingOptions};
use alloy::rpc::types::{BlockId, BlockNumberOrTag, TransactionRequest};
use jsonrpsee::RpcModule;
use jsonrpsee::types::ErrorObjectOwned;
use keel_execution::TraceError;

type Answer<T> = Result<T, ErrorObjectOwned>;

fn trace_error(error: TraceError) -> ErrorObjectOwned {
    match error {
        TraceError::Unsupported(_) | TraceError::BadOption(_) => invalid_params(error),
        TraceError::Diverged { .. } | TraceError::State(_) => internal(error),
        TraceError::Timeout | TraceError::TooLarge | TraceError::Invalid(_) => server(error),
    }
}

impl RpcContext {
    /// Traces block `number` (one transaction of it, or all) on its parent's state.
    fn trace_block_at(
        &self,
        number: u64,
        only: Option<usize>,
        options: &GethDebugTracingOptions,
    ) -> Answer<Vec<alloy::rpc::types::trace::geth::TraceResult>> {
        if number == 0 {
            return Err(server("genesis is not traceable"));
        }
        let parent = self.state_view(Some(BlockId::number(number - 1)))?;
        let block = self
            .committed(&parent, number)?
            .ok_or_else(|| server(format!("block #{number} not found")))?;
        keel_execution::trace_block(
            &self.chain,
            &parent,
            &block.block,
            &block.receipts,
            only,
            options,
        )
        .map_err(trace_error)
    }
}

/// Registers the tracing methods.
pub(crate) fn register(
    module: &mut RpcModule<RpcContext>,
) -> Result<(), jsonrpsee::core::RegisterMethodError> {
    module.register_blocking_method("debug_traceTransaction", |params, context, _| {
        let mut params = params.sequence();
        let hash: B256 = params.next()?;
        let options: GethDebugTracingOptions = params.optional_next()?.unwrap_or_default();
        let snapshot = context.store.snapshot().map_err(storage)?;
        let location = snapshot
            .tx_location(&hash)
            .map_err(storage)?
            .ok_or_else(|| server("transaction not found"))?;
        drop(snapshot);
        let mut traces = context.trace_block_at(
            location.block_number,
            Some(location.index as usize),
            &options,
        )?;
        match traces.pop() {
            Some(alloy::rpc::types::trace::geth::TraceResult::Success { result, .. }) => {
                Answer::Ok(result)
            }
            _ => Err(internal("a traced transaction produced no trace")),
        }
    })?;
    for (method, by_hash) in [
        ("debug_traceBlockByNumber", false),
        ("debug_traceBlockByHash", true),
    ] {
        module.register_blocking_method(method, move |params, context, _| {
            let mut params = params.sequence();
            let snapshot = context.store.snapshot().map_err(storage)?;
            let number = if by_hash {
                let hash: B256 = params.next()?;
                snapshot.block_number(&hash).map_err(storage)?
            } else {
                let tag: BlockNumberOrTag = params.next()?;
                context.resolve(&snapshot, tag)
            };
            drop(snapshot);
            let options: GethDebugTracingOptions = params.optional_next()?.unwrap_or_default();
            let number = number.ok_or_else(|| server("block not found"))?;
            context.trace_block_at(number, None, &options)
        })?;
    }
    module.register_blocking_method("debug_traceCall", |params, context, _| {
        let mut params = params.sequence();
        let request: TransactionRequest = params.next()?;
        let block: Option<BlockId> = params.optional_next()?;
        let options: GethDebugTracingCallOptions = params.optional_next()?.unwrap_or_default();
        let overrides = options.state_overrides.unwrap_or_default();
        let view = context.state_view(block)?;
        let env = context.overridden_environment(&view, options.block_overrides.as_ref())?;
        let state =
            keel_execution::CallState::new(&view, &overrides, options.block_overrides.as_ref());
        keel_execution::trace_call(
            &context.chain,
            state,
            &env,
            &request,
            &options.tracing_options,
        )
        .map_err(trace_error)
    })?;
    Ok(())
}
