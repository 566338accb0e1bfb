//! Every metric keel exports, in one table: its name, type, labels and meaning.
//!
//! The table gives each metric its Prometheus `# HELP` line, makes the unlabelled counters and
//! the gauges whose zero is true at start (nothing halted, nothing diverged) appear from the
//! first scrape instead of after their first change, and is what docs/metrics.md lists. A test
//! holds the three together: every metric the code records is in the table, and docs/metrics.md
//! lists the table as it is (`cargo test -p keel-node catalog`).

/// A metric's Prometheus type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution (exported as a Prometheus summary).
    Histogram,
}

impl Kind {
    /// The name in docs/metrics.md.
    pub fn name(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// One metric.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// Its name.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Its labels (empty: none).
    pub labels: &'static [&'static str],
    /// What it means (its `# HELP` line).
    pub help: &'static str,
    /// For a gauge: exported as 0 from the start, because 0 is true then (`false` for gauges
    /// whose zero would be a false reading, such as "the L1 is unreachable").
    pub zero_at_start: bool,
    /// For a counter with one label: the label's values exported at 0 from the start, so that
    /// alerts and dashboards see the series before the first event.
    pub initial: &'static [&'static str],
}

const fn counter(
    name: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
) -> Metric {
    Metric {
        name,
        kind: Kind::Counter,
        labels,
        help,
        zero_at_start: labels.is_empty(),
        initial: &[],
    }
}

const fn gauge(name: &'static str, labels: &'static [&'static str], help: &'static str) -> Metric {
    Metric {
        name,
        kind: Kind::Gauge,
        labels,
        help,
        zero_at_start: false,
        initial: &[],
    }
}

/// A gauge whose 0 is true before its first reading (a flag that is off, a count of nothing).
const fn flag(name: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        kind: Kind::Gauge,
        labels: &[],
        help,
        zero_at_start: true,
        initial: &[],
    }
}

const fn histogram(
    name: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
) -> Metric {
    Metric {
        name,
        kind: Kind::Histogram,
        labels,
        help,
        zero_at_start: false,
        initial: &[],
    }
}

/// A counter with one label whose `values` are exported at 0 from the start.
const fn counter_of(
    name: &'static str,
    label: &'static [&'static str],
    values: &'static [&'static str],
    help: &'static str,
) -> Metric {
    Metric {
        name,
        kind: Kind::Counter,
        labels: label,
        help,
        zero_at_start: false,
        initial: values,
    }
}

/// Every metric, grouped by the part of keel that records it.
pub const METRICS: &[Metric] = &[
    // Blocks and the producer.
    gauge(
        "keel_head_number",
        &[],
        "Number of the last block this node applied (its unsafe head).",
    ),
    gauge(
        "keel_head_applied_timestamp_seconds",
        &[],
        "Wall-clock time (Unix seconds) at which this node applied its head.",
    ),
    gauge("keel_block_time_seconds", &[], "The configured block time."),
    gauge(
        "keel_disk_available_bytes",
        &[],
        "Bytes available to keel on the data directory's filesystem.",
    ),
    gauge(
        "keel_disk_total_bytes",
        &[],
        "Size of the data directory's filesystem.",
    ),
    histogram(
        "keel_block_seal_seconds",
        &[],
        "Time to seal one block (build and validate).",
    ),
    histogram(
        "keel_block_commit_seconds",
        &[],
        "Time to write one block durably (one fsynced redb transaction).",
    ),
    histogram(
        "keel_block_validation_seconds",
        &[],
        "Time to re-execute a committed block before applying it (a cluster's followers; the leader validates its own before proposing it).",
    ),
    histogram(
        "keel_send_to_receipt_seconds",
        &[],
        "Time from this node's pool taking a transaction to its receipt being served (the block \
         carrying it applied here); recorded by the node whose pool took it, the leader.",
    ),
    histogram(
        "keel_block_transactions",
        &[],
        "Transactions per applied block.",
    ),
    gauge(
        "keel_gas_per_second",
        &[],
        "Gas of the last applied block divided by the block time.",
    ),
    counter(
        "keel_gas_used_total",
        &[],
        "Gas used by every applied block.",
    ),
    counter(
        "keel_transactions_included_total",
        &[],
        "Transactions in applied blocks.",
    ),
    counter(
        "keel_transactions_accepted_total",
        &[],
        "Transactions the pool accepted.",
    ),
    counter(
        "keel_block_slots_missed_total",
        &[],
        "Block slots the single-node producer started late enough to skip.",
    ),
    counter(
        "keel_block_slots_skipped_total",
        &["kind"],
        "Block slots with no block because sealing had to wait (for the L1), by error class.",
    ),
    counter(
        "keel_block_validation_failures_total",
        &[],
        "Blocks that failed validation on this node (I4 alarms).",
    ),
    flag(
        "keel_halted",
        "1 once this node stopped applying or sealing after a failure it cannot retry.",
    ),
    gauge(
        "keel_state_history_floor",
        &[],
        "First block whose state this node serves (--state-history-blocks).",
    ),
    // The pool.
    gauge(
        "keel_mempool_transactions",
        &[],
        "Transactions in the pool.",
    ),
    gauge(
        "keel_mempool_bytes",
        &[],
        "Bytes of transactions in the pool.",
    ),
    counter(
        "keel_mempool_evicted_total",
        &[],
        "Transactions evicted from the full pool (the cheapest first).",
    ),
    counter(
        "keel_mempool_expired_total",
        &[],
        "Transactions behind a nonce gap dropped after their sender was idle for MEMPOOL_FUTURE_LIFETIME_BLOCKS.",
    ),
    histogram(
        "keel_intake_entry_transactions",
        &[],
        "Transactions per intake entry a cluster's leader proposes.",
    ),
    histogram(
        "keel_intake_commit_seconds",
        &[],
        "From proposing an intake entry to its apply on the leader (quorum fsync included).",
    ),
    counter_of(
        "keel_intake_refused_total",
        &["reason"],
        &["queue_full"],
        "Transactions the leader's intake refused before proposing them, by reason.",
    ),
    // JSON-RPC.
    histogram(
        "keel_rpc_request_seconds",
        &["method"],
        "JSON-RPC request latency, by method.",
    ),
    counter(
        "keel_rpc_errors_total",
        &["method"],
        "JSON-RPC requests answered with an error, by method.",
    ),
    gauge("keel_rpc_filters", &[], "Polling filters installed."),
    counter(
        "keel_rpc_filter_pending_dropped_total",
        &[],
        "Pending-transaction hashes dropped from a full filter buffer.",
    ),
    histogram(
        "keel_rpc_forward_batch_transactions",
        &[],
        "Transactions per batch a follower forwards to the leader.",
    ),
    // The cluster.
    gauge(
        "keel_raft_role",
        &[],
        "Raft role: 0 follower, 1 candidate, 2 leader, 3 learner, 4 shut down.",
    ),
    gauge("keel_raft_term", &[], "Current Raft term."),
    gauge(
        "keel_raft_last_log_index",
        &[],
        "Index of the last entry in this node's Raft log.",
    ),
    gauge(
        "keel_raft_applied_index",
        &[],
        "Index of the last Raft entry this node applied.",
    ),
    gauge(
        "keel_raft_commit_index",
        &[],
        "Index of the last Raft entry this node knows committed.",
    ),
    gauge(
        "keel_raft_replication_lag_entries",
        &["peer"],
        "On the leader: entries each peer is behind its log.",
    ),
    flag("keel_raft_leaderless", "1 while this node knows no leader."),
    counter(
        "keel_raft_leader_changes_total",
        &[],
        "Times this node saw the leader change.",
    ),
    histogram(
        "keel_raft_failover_seconds",
        &[],
        "Time from losing a leader to knowing the next one.",
    ),
    histogram(
        "keel_leader_first_block_seconds",
        &[],
        "From winning an election to this node's first block committed as leader.",
    ),
    histogram(
        "keel_leader_turn_seconds",
        &["step"],
        "Each block the leader proposed: from its slot's turn starting to reaching `step` (linearizable: leading on the committed head confirmed; sealed: built and validated; committed: committed on a quorum and applied here).",
    ),
    counter(
        "keel_raft_dead_leader_found_total",
        &[],
        "Times this node found its leader's process dead (watch broken, probe refused).",
    ),
    counter(
        "keel_raft_dead_leader_campaigns_total",
        &[],
        "Times this node campaigned as a dead leader's agreed successor.",
    ),
    counter(
        "keel_raft_own_blocks_applied_total",
        &[],
        "Blocks this node built as leader and applied from its own validation before proposing, without a third execution (followers re-execute every block).",
    ),
    counter(
        "keel_raft_snapshots_installed_total",
        &[],
        "Raft snapshots this node installed to catch up.",
    ),
    counter_of(
        "keel_raft_entries_refused_total",
        &["reason"],
        &[
            "height_taken",
            "gap",
            "other_parent",
            "replacement_off_chain",
        ],
        "Raft entries applied as no-ops by compare-and-append: a leader proposed on a head that is not the chain's (a stale leader racing the real one), by reason.",
    ),
    counter(
        "keel_blocks_proposed_total",
        &[],
        "Blocks this node proposed as leader.",
    ),
    counter(
        "keel_block_proposals_failed_total",
        &[],
        "Block proposals that did not commit.",
    ),
    counter(
        "keel_leader_seals_dropped_total",
        &[],
        "Blocks the leader sealed during its leadership check on a head that moved meanwhile, and sealed again.",
    ),
    counter(
        "keel_leadership_transfers_total",
        &[],
        "Leadership hand-overs this node completed as leader.",
    ),
    counter(
        "keel_leadership_transfers_failed_total",
        &[],
        "Hand-overs tried whose target did not lead in time.",
    ),
    counter(
        "keel_leadership_transfers_skipped_total",
        &[],
        "Hand-overs of an unhealthy leader skipped because no voter was ready.",
    ),
    histogram(
        "keel_leadership_transfer_seconds",
        &[],
        "Time from the start of a hand-over until the target led.",
    ),
    counter(
        "keel_leadership_rotations_total",
        &[],
        "Rotations (rotation_interval_ms) this node completed as leader.",
    ),
    counter(
        "keel_leadership_rotations_skipped_total",
        &[],
        "Rotations skipped because no other voter was ready.",
    ),
    counter(
        "keel_leadership_rotations_failed_total",
        &[],
        "Rotations tried whose target did not lead in time.",
    ),
    counter(
        "keel_peer_requests_refused_total",
        &[],
        "Peer requests refused for a missing or wrong secret.",
    ),
    counter(
        "keel_admin_requests_refused_total",
        &[],
        "Admin API requests refused for a missing or wrong token.",
    ),
    // The L1.
    gauge(
        "keel_l1_reachable",
        &[],
        "1 while the L1 answers, 0 while it does not.",
    ),
    gauge(
        "keel_l1_block_number",
        &["head"],
        "The L1's latest, safe and finalized block numbers, as this node last read them.",
    ),
    counter(
        "keel_l1_errors_total",
        &["kind"],
        "Failed L1 requests, by error class.",
    ),
    // Derivation.
    gauge(
        "keel_safe_head",
        &[],
        "The safe head: the last block derived from the L1 that equals the applied one.",
    ),
    gauge(
        "keel_finalized_head",
        &[],
        "The finalized head: the last block derived from finalized L1 blocks.",
    ),
    gauge(
        "keel_derived_head",
        &[],
        "The last block derivation produced.",
    ),
    gauge(
        "keel_derivation_l1_block",
        &[],
        "The L1 block derivation has read up to.",
    ),
    counter(
        "keel_derived_blocks_total",
        &["from"],
        "Blocks derived, from a batch or from forced transactions alone.",
    ),
    counter(
        "keel_derivation_dropped_total",
        &["reason"],
        "Batches, frames or forced payloads derivation dropped, by reason.",
    ),
    counter(
        "keel_derivation_resets_total",
        &[],
        "Derivation resets (an L1 reorg, a replaced origin).",
    ),
    counter(
        "keel_derivation_errors_total",
        &["kind"],
        "Derivation errors, by class.",
    ),
    flag(
        "keel_derivation_divergence",
        "1 while the derived chain differs from the applied one (I7).",
    ),
    flag(
        "keel_derivation_halted",
        "1 once derivation stopped on an error it cannot retry.",
    ),
    counter(
        "keel_unsafe_blocks_replaced_total",
        &[],
        "Unsafe blocks replaced by derived ones (0 in normal operation, I7).",
    ),
    flag(
        "keel_forced_pending",
        "Forced transactions seen on the L1 and not yet in a safe block.",
    ),
    flag(
        "keel_forced_oldest_age_l1_blocks",
        "L1 blocks the oldest pending forced transaction has waited.",
    ),
    // The batcher.
    flag(
        "keel_batcher_backlog_blocks",
        "Applied blocks not yet posted to the L1.",
    ),
    flag(
        "keel_batcher_backlog_age_seconds",
        "Age of the oldest block not yet posted.",
    ),
    flag(
        "keel_batcher_in_flight",
        "Batch transactions sent and not yet confirmed.",
    ),
    counter(
        "keel_batcher_transactions_total",
        &["result"],
        "Batch transactions, by outcome.",
    ),
    counter(
        "keel_batcher_l1_fees_wei_total",
        &[],
        "L1 fees the batcher paid, in wei.",
    ),
    histogram(
        "keel_batcher_channel_ratio",
        &[],
        "Compressed to uncompressed size of each channel.",
    ),
    counter(
        "keel_batcher_reposts_total",
        &[],
        "Batch transactions posted again (replaced or dropped by the L1).",
    ),
    counter(
        "keel_batcher_errors_total",
        &["kind"],
        "Batcher errors, by class.",
    ),
    counter(
        "keel_batcher_refused_total",
        &["reason"],
        "Postings the batcher refused to make, by reason.",
    ),
];

/// Gives every metric its help line, and exports from the start the counters and the gauges
/// whose zero is true then. Called once the recorder is installed.
pub fn describe() {
    for metric in METRICS {
        match metric.kind {
            Kind::Counter => {
                metrics::describe_counter!(metric.name, metric.help);
                if metric.zero_at_start {
                    metrics::counter!(metric.name).increment(0);
                }
                for value in metric.initial {
                    metrics::counter!(metric.name, metric.labels[0] => *value).increment(0);
                }
            }
            Kind::Gauge => {
                metrics::describe_gauge!(metric.name, metric.help);
                if metric.zero_at_start {
                    metrics::gauge!(metric.name).set(0.0);
                }
            }
            Kind::Histogram => metrics::describe_histogram!(metric.name, metric.help),
        }
    }
}

/// docs/metrics.md's table, as the catalog gives it.
pub fn markdown_table() -> String {
    let mut out = String::from("| metric | type | labels | meaning |\n|---|---|---|---|\n");
    for metric in METRICS {
        let labels = if metric.labels.is_empty() {
            "—".to_string()
        } else {
            metric
                .labels
                .iter()
                .map(|label| format!("`{label}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            metric.name,
            metric.kind.name(),
            labels,
            metric.help
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    fn repository() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// Every counter, gauge and histogram macro call with a literal name in the sources.
    fn recorded(dir: &Path, out: &mut BTreeSet<(String, &'static str)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                recorded(&path, out);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for (macro_name, kind) in [
                    ("counter!(", "counter"),
                    ("gauge!(", "gauge"),
                    ("histogram!(", "histogram"),
                ] {
                    for piece in text.split(&format!("metrics::{macro_name}")).skip(1) {
                        let piece = piece.trim_start();
                        if let Some(rest) = piece.strip_prefix('"') {
                            let name = rest.split('"').next().unwrap();
                            out.insert((name.to_string(), kind));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn catalog_names_every_metric_the_code_records_with_its_type() {
        let mut found = BTreeSet::new();
        for dir in ["crates", "bin"] {
            recorded(&repository().join(dir), &mut found);
        }
        let listed: BTreeSet<(String, &'static str)> = METRICS
            .iter()
            .map(|metric| (metric.name.to_string(), metric.kind.name()))
            .collect();
        let missing: Vec<_> = found.difference(&listed).collect();
        assert!(
            missing.is_empty(),
            "recorded but not in the catalog: {missing:?}"
        );
        let unused: Vec<_> = listed.difference(&found).collect();
        assert!(
            unused.is_empty(),
            "in the catalog but never recorded: {unused:?}"
        );
        let names: BTreeSet<&str> = METRICS.iter().map(|metric| metric.name).collect();
        assert_eq!(names.len(), METRICS.len(), "a metric is listed twice");
        for metric in METRICS {
            assert!(
                metric.initial.is_empty() || metric.labels.len() == 1,
                "{}: initial label values need exactly one label",
                metric.name
            );
        }
    }

    #[test]
    fn catalog_is_what_docs_metrics_md_lists() {
        let doc = std::fs::read_to_string(repository().join("docs/metrics.md")).unwrap();
        assert!(
            doc.contains(&markdown_table()),
            "docs/metrics.md's table differs from the catalog; paste in the output of \
             `cargo test -p keel-node catalog_table -- --nocapture --ignored`"
        );
    }

    /// Prints the table for docs/metrics.md.
    #[test]
    #[ignore = "prints docs/metrics.md's table"]
    fn catalog_table() {
        print!("{}", markdown_table());
    }
}
