//! Polling filters, as geth serves them to clients that poll over HTTP (web3.py's
//! `w3.eth.filter`, viem's `watchEvent` and `watchBlockNumber` without a WebSocket):
//! `eth_newFilter`, `eth_newBlockFilter`, `eth_newPendingTransactionFilter`,
//! `eth_getFilterChanges`, `eth_getFilterLogs` and `eth_uninstallFilter`.
//!
//! ```text
//!   eth_newBlockFilter / eth_newFilter ─► a BlockStream from the next block (a cursor over
//!                                         the store: no buffer, none missed, none repeated)
//!   eth_newPendingTransactionFilter ────► a bounded buffer, fed by this node's accepted sends
//!   eth_getFilterChanges ───────────────► drains the cursor (at most FILTER_BLOCKS_PER_POLL_MAX
//!                                         blocks a call) or the buffer
//! ```
//!
//! ### Correctness
//! A block or log filter reports each block applied after it was installed exactly once,
//! across any number of calls: its cursor is the store's [`BlockStream`], whose contract is
//! exactly that. When the chain is unwound under it (an L1 reorg replacing unsafe blocks),
//! the filter goes on from the new head: the replacing blocks are reported, the removed ones'
//! logs are not re-sent with `removed: true`. A filter not polled for
//! [`limits::FILTER_IDLE_SECS`] is removed, as geth does.

use alloy::primitives::B256;
use alloy::rpc::types::{BlockNumberOrTag, Filter, FilterBlockOption, Log};
use keel_primitives::limits;
use keel_storage::{BlockStream, ChainEvent, Store};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a filter call failed, before it is put in geth's words.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FilterError {
    /// No filter has this id (never installed, uninstalled, or expired).
    #[error("filter not found")]
    NotFound,
    /// Installing one more would pass a limit.
    #[error("too many filters: {0} are installed, the most this node keeps")]
    TooMany(usize),
    /// Reading the chain failed.
    #[error(transparent)]
    Storage(#[from] keel_storage::StorageError),
}

/// What a filter reports.
enum Kind {
    Blocks(BlockStream),
    Logs {
        filter: Box<Filter>,
        cursor: BlockStream,
    },
    Pending(VecDeque<B256>),
}

struct Installed {
    kind: Kind,
    last_poll: Instant,
}

/// What one `eth_getFilterChanges` call answers.
#[derive(Debug)]
pub(crate) enum Changes {
    /// Block hashes or transaction hashes.
    Hashes(Vec<B256>),
    /// Logs.
    Logs(Vec<Log>),
}

/// The filters installed on one node.
pub(crate) struct Filters {
    installed: Mutex<HashMap<u128, Arc<Mutex<Installed>>>>,
    last_sweep: Mutex<Instant>,
    /// How long a filter lives unpolled ([`limits::FILTER_IDLE_SECS`]; shorter in tests).
    idle: Duration,
}

impl std::fmt::Debug for Filters {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Filters")
            .field("installed", &self.installed.lock().len())
            .finish()
    }
}

impl Default for Filters {
    fn default() -> Self {
        Self {
            installed: Mutex::new(HashMap::new()),
            last_sweep: Mutex::new(Instant::now()),
            idle: Duration::from_secs(limits::FILTER_IDLE_SECS),
        }
    }
}

/// A filter id as geth writes one: `0x` and the hex of 16 random bytes.
pub(crate) fn format_id(id: u128) -> String {
    format!("0x{id:x}")
}

/// Parses a filter id; anything else is an id no filter has.
pub(crate) fn parse_id(text: &str) -> Result<u128, FilterError> {
    let digits = text.strip_prefix("0x").ok_or(FilterError::NotFound)?;
    u128::from_str_radix(digits, 16).map_err(|_| FilterError::NotFound)
}

impl Filters {
    fn install(&self, kind: Kind) -> Result<u128, FilterError> {
        self.sweep();
        let mut installed = self.installed.lock();
        if installed.len() >= limits::FILTERS_MAX {
            return Err(FilterError::TooMany(limits::FILTERS_MAX));
        }
        if matches!(kind, Kind::Pending(_)) {
            let pending = installed
                .values()
                .filter(|filter| matches!(filter.lock().kind, Kind::Pending(_)))
                .count();
            if pending >= limits::PENDING_FILTERS_MAX {
                return Err(FilterError::TooMany(limits::PENDING_FILTERS_MAX));
            }
        }
        let id = loop {
            let id = rand::random::<u128>();
            if id != 0 && !installed.contains_key(&id) {
                break id;
            }
        };
        installed.insert(
            id,
            Arc::new(Mutex::new(Installed {
                kind,
                last_poll: Instant::now(),
            })),
        );
        metrics::gauge!("keel_rpc_filters").set(installed.len() as f64);
        Ok(id)
    }

    /// `eth_newBlockFilter`: the hashes of the blocks applied from now on.
    pub(crate) fn new_blocks(&self, store: &Arc<Store>) -> Result<u128, FilterError> {
        self.install(Kind::Blocks(store.subscribe()))
    }

    /// `eth_newFilter`: the logs `filter` matches in the blocks applied from now on.
    pub(crate) fn new_logs(&self, store: &Arc<Store>, filter: Filter) -> Result<u128, FilterError> {
        self.install(Kind::Logs {
            filter: Box::new(filter),
            cursor: store.subscribe(),
        })
    }

    /// `eth_newPendingTransactionFilter`: the hashes of transactions this node accepts from now on.
    pub(crate) fn new_pending(&self) -> Result<u128, FilterError> {
        self.install(Kind::Pending(VecDeque::new()))
    }

    /// `eth_uninstallFilter`: whether there was such a filter.
    pub(crate) fn uninstall(&self, id: u128) -> bool {
        let mut installed = self.installed.lock();
        let removed = installed.remove(&id).is_some();
        metrics::gauge!("keel_rpc_filters").set(installed.len() as f64);
        removed
    }

    /// A transaction this node accepted (or forwarded to the leader, which accepted it).
    pub(crate) fn on_pending(&self, hash: B256) {
        let filters: Vec<_> = self.installed.lock().values().cloned().collect();
        for filter in filters {
            if let Kind::Pending(hashes) = &mut filter.lock().kind {
                if hashes.len() == limits::FILTER_PENDING_HASHES_MAX {
                    hashes.pop_front();
                    metrics::counter!("keel_rpc_filter_pending_dropped_total").increment(1);
                }
                hashes.push_back(hash);
            }
        }
    }

    fn get(&self, id: u128) -> Result<Arc<Mutex<Installed>>, FilterError> {
        self.sweep();
        self.installed
            .lock()
            .get(&id)
            .cloned()
            .ok_or(FilterError::NotFound)
    }

    /// `eth_getFilterChanges`: what happened since the last call.
    pub(crate) fn changes(&self, id: u128) -> Result<Changes, FilterError> {
        let filter = self.get(id)?;
        let mut filter = filter.lock();
        filter.last_poll = Instant::now();
        match &mut filter.kind {
            Kind::Pending(hashes) => Ok(Changes::Hashes(hashes.drain(..).collect())),
            Kind::Blocks(cursor) => {
                let mut hashes = Vec::new();
                drain(cursor, |block| {
                    hashes.push(block.block.hash);
                    true
                })?;
                Ok(Changes::Hashes(hashes))
            }
            Kind::Logs { filter, cursor } => {
                let mut logs = Vec::new();
                drain(cursor, |block| {
                    if in_range(filter, block.block.number()) {
                        logs.extend(crate::convert::matching_logs(
                            &block.block,
                            &block.receipts,
                            filter,
                        ));
                    }
                    logs.len() < limits::LOGS_QUERY_RESULTS_MAX
                })?;
                Ok(Changes::Logs(logs))
            }
        }
    }

    /// The criteria of a log filter (for `eth_getFilterLogs`); `NotFound` for other kinds, as
    /// geth answers.
    pub(crate) fn criteria(&self, id: u128) -> Result<Filter, FilterError> {
        let filter = self.get(id)?;
        let mut filter = filter.lock();
        filter.last_poll = Instant::now();
        match &filter.kind {
            Kind::Logs { filter, .. } => Ok((**filter).clone()),
            _ => Err(FilterError::NotFound),
        }
    }

    /// Removes the filters not polled for [`limits::FILTER_IDLE_SECS`] (at most once a second).
    fn sweep(&self) {
        {
            let mut last = self.last_sweep.lock();
            if last.elapsed() < Duration::from_secs(1).min(self.idle) {
                return;
            }
            *last = Instant::now();
        }
        let idle = self.idle;
        let mut installed = self.installed.lock();
        installed.retain(|_, filter| {
            filter
                .try_lock()
                .is_none_or(|filter| filter.last_poll.elapsed() < idle)
        });
        metrics::gauge!("keel_rpc_filters").set(installed.len() as f64);
    }
}

/// Takes the blocks the cursor has, at most [`limits::FILTER_BLOCKS_PER_POLL_MAX`], handing
/// each applied or installed block to `take` until it says stop (after a whole block).
fn drain(
    cursor: &mut BlockStream,
    mut take: impl FnMut(&keel_primitives::BlockWithReceipts) -> bool,
) -> Result<(), FilterError> {
    for _ in 0..limits::FILTER_BLOCKS_PER_POLL_MAX {
        let Some(event) = cursor.try_next() else {
            break;
        };
        match event? {
            ChainEvent::Applied(block) | ChainEvent::Installed(block) => {
                if !take(&block) {
                    break;
                }
            }
            // The blocks above it are gone; the next events are the new chain's.
            ChainEvent::Unwound(_) => {}
        }
    }
    Ok(())
}

/// Whether a log filter's block range admits block `number` (numbers only; tags such as
/// `latest` follow the chain).
fn in_range(filter: &Filter, number: u64) -> bool {
    match filter.block_option {
        FilterBlockOption::AtBlockHash(_) => false,
        FilterBlockOption::Range {
            from_block,
            to_block,
        } => {
            let from_ok = match from_block {
                Some(BlockNumberOrTag::Number(from)) => number >= from,
                _ => true,
            };
            let to_ok = match to_block {
                Some(BlockNumberOrTag::Number(to)) => number <= to,
                _ => true,
            };
            from_ok && to_ok
        }
    }
}

impl From<FilterError> for jsonrpsee::types::ErrorObjectOwned {
    fn from(error: FilterError) -> Self {
        match error {
            FilterError::NotFound => crate::error::server(error),
            FilterError::TooMany(_) => {
                Self::owned(crate::error::LIMIT_EXCEEDED, error.to_string(), None::<()>)
            }
            FilterError::Storage(error) => crate::error::storage(error),
        }
    }
}

/// Registers the six filter methods.
pub(crate) fn register(
    module: &mut jsonrpsee::RpcModule<crate::RpcContext>,
) -> Result<(), jsonrpsee::core::RegisterMethodError> {
    type Answer<T> = Result<T, jsonrpsee::types::ErrorObjectOwned>;
    module.register_method("eth_newBlockFilter", |_, context, _| -> Answer<String> {
        Ok(format_id(context.filters.new_blocks(&context.store)?))
    })?;
    module.register_method(
        "eth_newPendingTransactionFilter",
        |_, context, _| -> Answer<String> { Ok(format_id(context.filters.new_pending()?)) },
    )?;
    module.register_method("eth_newFilter", |params, context, _| -> Answer<String> {
        let filter: Filter = params.one()?;
        Ok(format_id(context.filters.new_logs(&context.store, filter)?))
    })?;
    module.register_method(
        "eth_uninstallFilter",
        |params, context, _| -> Answer<bool> {
            let id: String = params.one()?;
            Ok(parse_id(&id).is_ok_and(|id| context.filters.uninstall(id)))
        },
    )?;
    module.register_blocking_method("eth_getFilterChanges", |params, context, _| {
        let id: String = params.one()?;
        let answer = match context.filters.changes(parse_id(&id)?)? {
            Changes::Hashes(hashes) => serde_json::json!(hashes),
            Changes::Logs(logs) => serde_json::json!(logs),
        };
        Answer::Ok(answer)
    })?;
    module.register_blocking_method("eth_getFilterLogs", |params, context, _| {
        let id: String = params.one()?;
        let filter = context.filters.criteria(parse_id(&id)?)?;
        crate::eth::get_logs(&context, &filter)
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_primitives::{BlockWithReceipts, ChainSpec, SealedBlock};
    use keel_storage::StateChanges;

    fn store() -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("chain.redb"), &ChainSpec::dev()).unwrap();
        (dir, Arc::new(store))
    }

    /// Seals `count` empty blocks on the head; `salt` tells branches apart.
    fn grow(store: &Store, count: u64, salt: u8) -> Vec<B256> {
        let mut hashes = Vec::new();
        for _ in 0..count {
            let snapshot = store.snapshot().unwrap();
            let parent = snapshot.block(snapshot.head().0).unwrap().unwrap();
            let mut header = parent.header.clone();
            header.parent_hash = parent.hash;
            header.number += 1;
            header.extra_data = vec![salt].into();
            let block = SealedBlock::new(header, Vec::new(), Vec::new());
            hashes.push(block.hash);
            store
                .commit_block(
                    Arc::new(BlockWithReceipts::new(block, Vec::new())),
                    &StateChanges::default(),
                )
                .unwrap();
        }
        hashes
    }

    fn hashes(changes: Changes) -> Vec<B256> {
        match changes {
            Changes::Hashes(hashes) => hashes,
            Changes::Logs(_) => panic!("hashes expected"),
        }
    }

    /// Filters: a block filter reports every block once across polls, and after an unwind the
    /// blocks of the new branch; an unpolled filter expires; the limits hold.
    #[test]
    fn block_filters_report_each_block_once_expire_and_are_bounded() {
        let (_dir, store) = store();
        let filters = Filters::default();
        let id = filters.new_blocks(&store).unwrap();
        assert!(hashes(filters.changes(id).unwrap()).is_empty());
        let first = grow(&store, 3, 0);
        assert_eq!(hashes(filters.changes(id).unwrap()), first);
        assert!(
            hashes(filters.changes(id).unwrap()).is_empty(),
            "none repeated"
        );
        let more = grow(&store, 2, 0);
        store.unwind_to(4, &[]).unwrap();
        let branch = grow(&store, 2, 1);
        assert_eq!(
            hashes(filters.changes(id).unwrap()),
            [more[0], branch[0], branch[1]],
            "the new branch from the unwind point on"
        );
        // Pending filters see accepted hashes once.
        let pending = filters.new_pending().unwrap();
        filters.on_pending(B256::repeat_byte(1));
        assert_eq!(
            hashes(filters.changes(pending).unwrap()),
            [B256::repeat_byte(1)]
        );
        assert!(hashes(filters.changes(pending).unwrap()).is_empty());
        assert!(matches!(
            filters.criteria(pending),
            Err(FilterError::NotFound)
        ));
        assert!(filters.uninstall(pending));
        assert!(!filters.uninstall(pending));
        assert!(matches!(
            filters.changes(pending),
            Err(FilterError::NotFound)
        ));

        // Expiry: a filter not polled for the idle time is gone.
        let short = Filters {
            idle: Duration::from_millis(50),
            ..Filters::default()
        };
        let expiring = short.new_blocks(&store).unwrap();
        let polled = short.new_blocks(&store).unwrap();
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(20));
            short.changes(polled).unwrap();
        }
        assert!(matches!(
            short.changes(expiring),
            Err(FilterError::NotFound)
        ));
        assert!(short.changes(polled).is_ok());

        // Limits.
        let full = Filters::default();
        for _ in 0..limits::PENDING_FILTERS_MAX {
            full.new_pending().unwrap();
        }
        assert!(matches!(full.new_pending(), Err(FilterError::TooMany(_))));
        while full.installed.lock().len() < limits::FILTERS_MAX {
            full.new_blocks(&store).unwrap();
        }
        assert!(matches!(
            full.new_blocks(&store),
            Err(FilterError::TooMany(_))
        ));
        let hashes_max = full.new_pending();
        assert!(hashes_max.is_err());
        let bounded = filters.new_pending().unwrap();
        for index in 0..limits::FILTER_PENDING_HASHES_MAX + 3 {
            filters.on_pending(B256::from(alloy::primitives::U256::from(index)));
        }
        let kept = hashes(filters.changes(bounded).unwrap());
        assert_eq!(kept.len(), limits::FILTER_PENDING_HASHES_MAX);
        assert_eq!(
            kept[0],
            B256::from(alloy::primitives::U256::from(3)),
            "the oldest dropped"
        );
    }

    #[test]
    fn ids_round_trip_and_junk_is_not_found() {
        let id = 0x0abc_u128 << 100;
        assert_eq!(parse_id(&format_id(id)).unwrap(), id);
        for junk in [
            "",
            "0x",
            "abc",
            "0xzz",
            "0x1ffffffffffffffffffffffffffffffff0",
        ] {
            assert!(
                matches!(parse_id(junk), Err(FilterError::NotFound)),
                "{junk}"
            );
        }
    }
}
