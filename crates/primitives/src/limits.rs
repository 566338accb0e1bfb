//! Every bound in keel, named in one place.
//!
//! A queue, pool, batch or request without a named maximum is a bug. Relations between limits
//! are checked when this crate compiles.

/// Largest signed transaction accepted, in bytes of its EIP-2718 encoding (geth's `txMaxSize`).
pub const TX_BYTES_MAX: usize = 128 * 1024;
/// Largest gas limit of one transaction (EIP-7825, active from Osaka).
pub const TX_GAS_LIMIT_MAX: u64 = 1 << 24;
/// Largest contract init code, in bytes (EIP-3860).
pub const INITCODE_BYTES_MAX: usize = 2 * 24_576;

/// Transactions held by the mempool, pending and future together.
pub const MEMPOOL_TXS_MAX: usize = 200_000;
/// Transactions held for one sender.
pub const MEMPOOL_TXS_PER_SENDER_MAX: usize = 4_096;
/// Bytes of encoded transactions held by the mempool.
pub const MEMPOOL_BYTES_MAX: usize = 256 * 1024 * 1024;
/// How far ahead of the account nonce a transaction may be to be queued (future queue).
pub const MEMPOOL_NONCE_GAP_MAX: u64 = 1_024;
/// Minimum fee bump, in percent, for a transaction to replace one with the same nonce.
pub const MEMPOOL_REPLACEMENT_BUMP_PERCENT: u128 = 10;

/// Transactions in one block.
pub const BLOCK_TXS_MAX: usize = 100_000;
/// RLP size of one block (EIP-7934: 10 MiB less a 2 MiB margin for the header and beacon wrap).
pub const BLOCK_RLP_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Smallest and largest block time.
pub const BLOCK_TIME_MS_MIN: u64 = 50;
/// Largest block time.
pub const BLOCK_TIME_MS_MAX: u64 = 60_000;
/// Smallest block gas limit (EIP-1559 needs room for at least one transfer).
pub const BLOCK_GAS_LIMIT_MIN: u64 = 5_000;
/// Largest block gas limit keel accepts.
pub const BLOCK_GAS_LIMIT_MAX: u64 = 100_000_000_000;
/// Bytes of a block header's extra data (Ethereum's `MAXIMUM_EXTRA_DATA_SIZE`).
pub const EXTRA_DATA_BYTES_MAX: usize = 32;

/// Bytes of one JSON-RPC request body, batch included (geth's default).
pub const RPC_REQUEST_BYTES_MAX: u32 = 5 * 1024 * 1024;
/// Bytes of one JSON-RPC response.
pub const RPC_RESPONSE_BYTES_MAX: u32 = 32 * 1024 * 1024;
/// Calls in one JSON-RPC batch (geth's `BatchRequestLimit`).
pub const RPC_BATCH_CALLS_MAX: u32 = 1_000;
/// Calls of one batch run at once (a follower forwards writes to the leader concurrently).
pub const RPC_BATCH_CALLS_CONCURRENT_MAX: usize = 64;
/// Transactions a follower holds on their way to the leader.
pub const FORWARD_QUEUE_MAX: usize = 4_096;
/// Transactions in one batch a follower forwards to the leader.
pub const FORWARD_BATCH_CALLS_MAX: usize = 256;
/// Forwarded batches in flight to the leader at once.
pub const FORWARD_BATCHES_IN_FLIGHT_MAX: usize = 4;
/// How long a forwarded batch may take before its callers get an error.
pub const FORWARD_TIMEOUT_MS_MAX: u64 = 10_000;
/// Open JSON-RPC connections, HTTP and WebSocket together.
pub const RPC_CONNECTIONS_MAX: u32 = 1_024;
/// Subscriptions one WebSocket connection may hold.
pub const RPC_SUBSCRIPTIONS_PER_CONNECTION_MAX: u32 = 128;
/// Blocks one `eth_getLogs` query may span.
pub const LOGS_QUERY_BLOCKS_MAX: u64 = 10_000;
/// Logs one `eth_getLogs` query may return.
pub const LOGS_QUERY_RESULTS_MAX: usize = 20_000;
/// Blocks one `eth_feeHistory` query may span (geth's `maxFeeHistory`).
pub const FEE_HISTORY_BLOCKS_MAX: u64 = 1_024;
/// Reward percentiles one `eth_feeHistory` query may ask for.
pub const FEE_HISTORY_PERCENTILES_MAX: usize = 100;
/// Longest `eth_sendRawTransactionSync` wait, in milliseconds.
pub const SEND_SYNC_TIMEOUT_MS_MAX: u64 = 60_000;
/// Default `eth_sendRawTransactionSync` wait, in milliseconds.
pub const SEND_SYNC_TIMEOUT_MS_DEFAULT: u64 = 2_000;
/// Transactions waiting in `eth_sendRawTransactionSync` at once.
pub const SEND_SYNC_WAITERS_MAX: usize = 65_536;
/// Gas an `eth_call` or `eth_estimateGas` may use when the caller names none.
pub const CALL_GAS_MAX: u64 = 50_000_000;
/// Recently applied blocks the store keeps decoded in memory, shared by every consumer of the
/// stream of applied blocks and by hot RPC reads; a consumer further behind reads from disk
/// (it never misses a block and never holds a queue of its own).
pub const RECENT_BLOCKS_MAX: usize = 64;

const _: () = assert!(TX_BYTES_MAX < BLOCK_RLP_BYTES_MAX);
const _: () = assert!(TX_BYTES_MAX < RPC_REQUEST_BYTES_MAX as usize);
const _: () = assert!(MEMPOOL_TXS_PER_SENDER_MAX <= MEMPOOL_TXS_MAX);
const _: () = assert!(MEMPOOL_NONCE_GAP_MAX as usize <= MEMPOOL_TXS_PER_SENDER_MAX);
const _: () = assert!(TX_BYTES_MAX * 64 <= MEMPOOL_BYTES_MAX);
const _: () = assert!(BLOCK_TIME_MS_MIN < BLOCK_TIME_MS_MAX);
const _: () = assert!(SEND_SYNC_TIMEOUT_MS_DEFAULT <= SEND_SYNC_TIMEOUT_MS_MAX);
const _: () = assert!(BLOCK_GAS_LIMIT_MIN < TX_GAS_LIMIT_MAX);
