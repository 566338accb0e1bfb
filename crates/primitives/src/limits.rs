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
/// Blocks a sender's transactions behind a nonce gap (the future queue) stay without the
/// sender being active (a transaction added, or one included): then they are dropped. geth
/// keeps its queue 3 hours without activity (`txpool.lifetime`); counted in blocks here, so
/// every node of a cluster drops them at the same height: 1 hour at 250 ms blocks.
pub const MEMPOOL_FUTURE_LIFETIME_BLOCKS: u64 = 14_400;
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
/// Transactions a cluster's leader holds on their way into the Raft log (the intake).
pub const INTAKE_QUEUE_MAX: usize = 8_192;
/// Intake entries proposed and not yet applied on the leader at once. One: a group commit,
/// where what arrives while an entry is replicated forms the next one. With 4 the entries
/// carried 2.8 transactions on average at 2,000 transfers a second, and each cost an fsync on
/// every node; with 1 they are half as many, and the intake's p99 fell from 32 to 21 ms
/// (BENCHMARKS.md, "Open-loop send-to-receipt latency").
pub const INTAKE_ENTRIES_IN_FLIGHT_MAX: usize = 1;
/// Open JSON-RPC connections, HTTP and WebSocket together.
pub const RPC_CONNECTIONS_MAX: u32 = 1_024;
/// Subscriptions one WebSocket connection may hold.
pub const RPC_SUBSCRIPTIONS_PER_CONNECTION_MAX: u32 = 128;
/// Blocks one `eth_getLogs` query may span.
pub const LOGS_QUERY_BLOCKS_MAX: u64 = 10_000;
/// Logs one `eth_getLogs` query may return.
pub const LOGS_QUERY_RESULTS_MAX: usize = 20_000;
/// Polling filters (`eth_newFilter`, `eth_newBlockFilter`, `eth_newPendingTransactionFilter`)
/// installed on one node, of every kind.
pub const FILTERS_MAX: usize = 4_096;
/// Pending-transaction filters among them: each buffers hashes, the others buffer nothing (a
/// block or log filter is a cursor over the store).
pub const PENDING_FILTERS_MAX: usize = 256;
/// Transaction hashes one pending-transaction filter buffers between polls; past it the oldest
/// are dropped (256 KiB a filter).
pub const FILTER_PENDING_HASHES_MAX: usize = 8_192;
/// Blocks one `eth_getFilterChanges` call reports; a filter further behind gets the rest on
/// its next calls, none missed or repeated.
pub const FILTER_BLOCKS_PER_POLL_MAX: u64 = LOGS_QUERY_BLOCKS_MAX;
/// Seconds a filter lives without being polled (geth's 5 minutes).
pub const FILTER_IDLE_SECS: u64 = 300;
/// Blocks below the head a walk over the whole state (`eth_getProof`) may reach back: the
/// walk lays every change of those blocks over the head's state.
pub const STATE_WALK_HISTORY_BLOCKS_MAX: u64 = 4_096;
/// Executions one `eth_createAccessList` may run before its list settles (each round adds
/// what the previous list made reachable).
pub const ACCESS_LIST_ROUNDS_MAX: usize = 16;
/// How long a `debug_trace*` call runs when it names no `timeout` (geth's 5 s).
pub const TRACE_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// The longest `timeout` a `debug_trace*` call may ask for.
pub const TRACE_TIMEOUT_MS_MAX: u64 = 30_000;
/// Bytes one trace may record (memory snapshots, call inputs, return data) before it stops.
pub const TRACE_RECORDED_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Storage keys one `eth_getProof` call may ask for.
pub const PROOF_SLOTS_MAX: usize = 1_024;
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
/// The shortest rotation interval (`rotation_interval_ms`): each hand-over costs about a block
/// time, so a leader leads for several blocks between them.
pub const ROTATION_INTERVAL_MS_MIN: u64 = 1_000;
/// Blocks one `eth_simulateV1` request may span, counted from its base block (geth's 256).
pub const SIMULATE_BLOCKS_MAX: u64 = 256;
/// Calls one `eth_simulateV1` request may hold, over all its blocks.
pub const SIMULATE_CALLS_MAX: usize = 1_000;
/// Gas all the calls of one `eth_simulateV1` request may use together (geth's RPC gas cap,
/// shared by the whole simulation as geth shares it).
pub const SIMULATE_GAS_MAX: u64 = CALL_GAS_MAX;
/// Seconds between simulated blocks whose time no override sets (geth's 12).
pub const SIMULATE_BLOCK_TIME_SECS: u64 = 12;
/// Wall time one `eth_simulateV1` request may execute, in milliseconds (geth's RPC EVM
/// timeout).
pub const SIMULATE_TIMEOUT_MS: u64 = 5_000;
/// Recently applied blocks the store keeps decoded in memory, shared by every consumer of the
/// stream of applied blocks and by hot RPC reads; a consumer further behind reads from disk
/// (it never misses a block and never holds a queue of its own).
pub const RECENT_BLOCKS_MAX: usize = 64;
/// Blocks a store that defers its blocks' fsync (`BlockDurability::Deferred`) commits in a row
/// before it fsyncs one: what a crash may make it apply again, and what redb holds unfreed
/// between fsyncs (pages a non-durable commit frees are reusable only after a durable one).
/// Kept below the recent blocks so a store's re-applied blocks are all still in memory.
pub const DEFERRED_BLOCKS_MAX: u64 = 16;
/// Blocks at the head whose state history is not indexed yet: a deferred store indexes its
/// blocks' history in the fsynced write that follows every `DEFERRED_BLOCKS_MAX`-th block, one
/// B-tree leaf per changed account for all of them instead of one per block; a read below the
/// head decodes the change sets of these blocks instead. Twice the batch: a batch may start
/// late by one (a store that changed durability, or restarted with blocks pending); past it a
/// commit indexes inline.
pub const HISTORY_UNINDEXED_BLOCKS_MAX: u64 = 2 * DEFERRED_BLOCKS_MAX;

/// The L1's block time when nothing says otherwise: Ethereum's 12 s slot. The embedded dev L1
/// seals at this pace too unless told otherwise.
pub const L1_BLOCK_TIME_MS_DEFAULT: u64 = 12_000;
/// How long one call to the L1 may take before it counts as failed (and is retried).
pub const L1_REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Bytes of one answer from the L1's JSON-RPC: an L1 block with its transactions is at most
/// a few MB on Ethereum (calldata is 16 gas a byte: 36 Mgas buys 2.25 MB).
pub const L1_RESPONSE_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Inbox transactions read from one L1 block. Ethereum fits about 1,700 plain transactions in
/// a block; an L1 answering more is refused rather than buffered.
pub const L1_INBOX_TRANSACTIONS_PER_BLOCK_MAX: usize = 8_192;
/// Blobs one beacon API answer may hold: more than any fork allows in one L1 block (21
/// since BPO2).
pub const BEACON_BLOBS_PER_ANSWER_MAX: usize = 48;
/// Bytes of one beacon API answer: that many blobs in hex (`0x` and two characters a byte,
/// quoted), and room for the JSON around them.
pub const BEACON_ANSWER_BYTES_MAX: usize = BEACON_BLOBS_PER_ANSWER_MAX * (2 * 131_072 + 4) + 4_096;
/// Blocks the embedded dev L1's `safe` head trails its `latest` (anvil's: one 32-slot epoch).
pub const DEV_L1_SAFE_DEPTH_DEFAULT: u64 = 32;
/// Blocks the embedded dev L1's `finalized` head trails its `latest` (anvil's: two epochs).
pub const DEV_L1_FINALIZED_DEPTH_DEFAULT: u64 = 64;
/// How often the node's L1 watcher asks for the L1's heads, at most (it asks at least once an
/// L1 block time, and never more often than this).
pub const L1_POLL_MS_MIN: u64 = 100;

// The rollup protocol's constants (docs/protocol.md, "Constants", says why each).

/// Ethereum's slot, in seconds; the windows below are counted in L1 blocks.
pub const L1_BLOCK_TIME_S: u64 = 12;
/// Recent L1 blocks a node holds in its view of the L1 (the sequencer picks its origin among
/// them; a reorg deeper than this is refetched whole).
pub const L1_RECENT_BLOCKS_MAX: usize = 128;
/// L1 blocks the sequencer's L1 origin trails the L1 head, so that an ordinary L1 reorg (1-2
/// blocks) never removes an origin (op-node's sequencer uses 4).
pub const SEQUENCER_CONFIRMATION_DEPTH: u64 = 4;
/// How far (s) an L2 timestamp may run ahead of its origin's.
pub const MAX_SEQUENCER_DRIFT_S: u64 = 300;
/// The largest drift a rollup config may set (the OP Stack's since Fjord).
pub const MAX_SEQUENCER_DRIFT_S_MAX: u64 = 1_800;
/// How late (L1 blocks after its origin) a batch may land when nothing is forced: 12 h.
pub const SEQUENCING_WINDOW_BLOCKS: u64 = 3_600;
/// The largest sequencing window a rollup config may set (a week of L1 blocks).
pub const SEQUENCING_WINDOW_BLOCKS_MAX: u64 = 50_400;
/// How late (L1 blocks after the L1 block that forced it) a forced transaction may be in the
/// safe chain: 10 minutes. Also the largest a rollup config may set.
pub const FORCE_INCLUSION_WINDOW_BLOCKS: u64 = 50;
/// The smallest forced-inclusion window a rollup config may set.
pub const FORCE_INCLUSION_WINDOW_BLOCKS_MIN: u64 = 10;
/// L1 blocks a channel's frames may span (Granite's value).
pub const CHANNEL_TIMEOUT_BLOCKS: u64 = 50;
/// Bytes of one frame's data (the OP Stack's bound).
pub const FRAME_BYTES_MAX: usize = 1_000_000;
/// Compressed bytes of one channel.
pub const CHANNEL_BYTES_MAX: usize = 10_000_000;
/// Decompressed bytes of one channel: a decompression bomb stops here.
pub const CHANNEL_DECOMPRESSED_BYTES_MAX: usize = 100_000_000;
/// Frames of one channel (`CHANNEL_BYTES_MAX` in the smallest useful frames would be more;
/// a channel of more frames is dropped).
pub const CHANNEL_FRAMES_MAX: usize = 4_096;
/// L2 blocks in one batch.
pub const BATCH_BLOCKS_MAX: usize = 8_192;
/// Batches in one channel.
pub const CHANNEL_BATCHES_MAX: usize = 8_192;
/// Bytes of one force-inbox payload: one signed L2 transaction, bounded as over JSON-RPC.
pub const FORCED_PAYLOAD_BYTES_MAX: usize = TX_BYTES_MAX;
/// Forced transactions one L2 block takes; more wait for the next block.
pub const FORCED_TRANSACTIONS_PER_BLOCK_MAX: usize = 256;
/// Forced transactions derivation holds that are not in the safe chain yet; the L1 cannot
/// carry more within one forced-inclusion window (50 blocks of 36 Mgas at 21,000 gas each is
/// about 86,000), and the excess is refused loudly rather than buffered.
pub const FORCED_QUEUE_MAX: usize = 131_072;

/// Old blocks whose state history the pruner removes for each block applied
/// (`--state-history-blocks N`): more than one, so a pruner behind (a window just shrunk, an
/// archive turned into a window) catches up, and few, so one prune stays a short transaction
/// beside the block writer's.
pub const HISTORY_PRUNE_BLOCKS_PER_BLOCK: u64 = 8;

const _: () = assert!(HISTORY_PRUNE_BLOCKS_PER_BLOCK > 1);
const _: () = assert!(PENDING_FILTERS_MAX <= FILTERS_MAX);
const _: () = assert!(TRACE_TIMEOUT_MS_DEFAULT <= TRACE_TIMEOUT_MS_MAX);
const _: () = assert!(SIMULATE_GAS_MAX >= TX_GAS_LIMIT_MAX);
const _: () = assert!(ROTATION_INTERVAL_MS_MIN >= 4 * BLOCK_TIME_MS_MIN);
const _: () = assert!(SIMULATE_CALLS_MAX as u64 >= SIMULATE_BLOCKS_MAX);
const _: () = assert!(TX_BYTES_MAX < BLOCK_RLP_BYTES_MAX);
const _: () = assert!(DEV_L1_SAFE_DEPTH_DEFAULT <= DEV_L1_FINALIZED_DEPTH_DEFAULT);
const _: () = assert!(L1_POLL_MS_MIN >= BLOCK_TIME_MS_MIN);
const _: () = assert!(L1_BLOCK_TIME_MS_DEFAULT <= BLOCK_TIME_MS_MAX);
const _: () = assert!(TX_BYTES_MAX < L1_RESPONSE_BYTES_MAX);
const _: () = assert!(TX_BYTES_MAX < RPC_REQUEST_BYTES_MAX as usize);
const _: () = assert!(MEMPOOL_TXS_PER_SENDER_MAX <= MEMPOOL_TXS_MAX);
const _: () = assert!(MEMPOOL_NONCE_GAP_MAX as usize <= MEMPOOL_TXS_PER_SENDER_MAX);
const _: () = assert!(MEMPOOL_FUTURE_LIFETIME_BLOCKS > 0);
const _: () = assert!(TX_BYTES_MAX * 64 <= MEMPOOL_BYTES_MAX);
const _: () = assert!(BLOCK_TIME_MS_MIN < BLOCK_TIME_MS_MAX);
const _: () = assert!(DEFERRED_BLOCKS_MAX >= 1 && DEFERRED_BLOCKS_MAX < RECENT_BLOCKS_MAX as u64);
const _: () = assert!(HISTORY_UNINDEXED_BLOCKS_MAX >= DEFERRED_BLOCKS_MAX);
const _: () = assert!(HISTORY_UNINDEXED_BLOCKS_MAX <= STATE_WALK_HISTORY_BLOCKS_MAX);
const _: () = assert!(SEND_SYNC_TIMEOUT_MS_DEFAULT <= SEND_SYNC_TIMEOUT_MS_MAX);
const _: () = assert!(BLOCK_GAS_LIMIT_MIN < TX_GAS_LIMIT_MAX);
const _: () = assert!(FORCE_INCLUSION_WINDOW_BLOCKS < SEQUENCING_WINDOW_BLOCKS);
const _: () = assert!(FORCE_INCLUSION_WINDOW_BLOCKS_MIN <= FORCE_INCLUSION_WINDOW_BLOCKS);
const _: () = assert!(SEQUENCER_CONFIRMATION_DEPTH < FORCE_INCLUSION_WINDOW_BLOCKS_MIN);
const _: () = assert!(MAX_SEQUENCER_DRIFT_S < FORCE_INCLUSION_WINDOW_BLOCKS * L1_BLOCK_TIME_S);
const _: () = assert!(MAX_SEQUENCER_DRIFT_S <= MAX_SEQUENCER_DRIFT_S_MAX);
const _: () = assert!(SEQUENCING_WINDOW_BLOCKS <= SEQUENCING_WINDOW_BLOCKS_MAX);
const _: () = assert!(CHANNEL_TIMEOUT_BLOCKS <= SEQUENCING_WINDOW_BLOCKS);
const _: () = assert!(FRAME_BYTES_MAX <= CHANNEL_BYTES_MAX);
const _: () = assert!(CHANNEL_BYTES_MAX <= CHANNEL_DECOMPRESSED_BYTES_MAX);
const _: () = assert!(FORCED_PAYLOAD_BYTES_MAX <= FRAME_BYTES_MAX);
const _: () = assert!(FORCED_TRANSACTIONS_PER_BLOCK_MAX <= FORCED_QUEUE_MAX);
const _: () = assert!(SEQUENCER_CONFIRMATION_DEPTH < L1_RECENT_BLOCKS_MAX as u64);
