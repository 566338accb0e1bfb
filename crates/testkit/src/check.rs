//! The history checker: reads a [`History`] and reports every way it breaks keel's promises, in
//! the manner of Jepsen's set-full checker (every acknowledged element must be present in every
//! later read; an element with an unknown outcome may be present or not).
//!
//! | anomaly | invariant | what it means |
//! |---|---|---|
//! | [`Anomaly::ConflictingBlocks`] | I1 | two hashes were exposed at one height (heads, receipts or chains) |
//! | [`Anomaly::BrokenChain`] | I1 | a node's chain does not link parent to child |
//! | [`Anomaly::HeadWentBackwards`] | I1 | a node's head number fell: a client saw a reorg |
//! | [`Anomaly::LostReceipt`] | I2 | a served receipt's block or transaction is missing from a later chain |
//! | [`Anomaly::NotConverged`] | I5 | after the heal, a node's chain stops short of the others' |
//! | [`Anomaly::LivenessGap`] | I5 | no new block for longer than the target, counted from the last block or fault event |
//! | [`Anomaly::AcceptedNotIncluded`] | I2 | a node answered a send with its hash, and no final chain holds it |
//!
//! "Accepted means kept" (docs/cluster.md): a cluster commits what it accepts to a quorum
//! before it answers, so an accepted transaction is in the final chains. A single node's pool
//! does not survive a restart: [`CheckOptions::accepted_must_be_included`] turns the check off
//! for its histories. Transactions whose answer never came (a timeout, a dropped connection)
//! may be in or out, and are only counted.

use crate::history::{History, ReceiptSeen};
use alloy::primitives::B256;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// What the checker is asked to hold the history to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOptions {
    /// The longest time without a new block, counted from the last new block or the last fault
    /// event (a fault starting or healing), whichever is later (I5).
    pub liveness_target_ms: u64,
    /// Whether a transaction answered with its hash must be in the final chains (I2,
    /// [`Anomaly::AcceptedNotIncluded`]).
    #[serde(default = "yes")]
    pub accepted_must_be_included: bool,
}

fn yes() -> bool {
    true
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            liveness_target_ms: 5_000,
            accepted_must_be_included: true,
        }
    }
}

/// One broken promise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Anomaly {
    /// I1: more than one hash was exposed at one height.
    ConflictingBlocks {
        /// The height.
        number: u64,
        /// Every hash seen there, with who exposed it (`head of node 2`, `receipt from node 1`,
        /// `chain of node 3`).
        seen: BTreeMap<B256, BTreeSet<String>>,
    },
    /// I1: a node's chain read does not link: a block's parent is not the block before it, or
    /// the numbers skip.
    BrokenChain {
        /// The node.
        node: u64,
        /// The first block that does not link.
        number: u64,
    },
    /// I1: a node's head number went down between two polls.
    HeadWentBackwards {
        /// The node.
        node: u64,
        /// The head before.
        from: u64,
        /// The head after.
        to: u64,
        /// When the lower head was seen.
        at_ms: u64,
    },
    /// I2: a receipt was served, and a later chain lacks its block or its transaction.
    LostReceipt {
        /// The transaction.
        transaction: B256,
        /// The block the receipt named.
        block_number: u64,
        /// The block hash the receipt named.
        block_hash: B256,
        /// The node whose chain lacks it; none when no node's chain reaches that height.
        node: Option<u64>,
        /// What the chain has instead.
        reason: String,
    },
    /// I5: after the faults healed, a node's chain stops short of the others'.
    NotConverged {
        /// The node.
        node: u64,
        /// Its head in the read-back.
        head: u64,
        /// The highest head read back.
        highest: u64,
    },
    /// I2: a node answered a send with the transaction's hash (accepted), and no chain read
    /// back at the end holds it.
    AcceptedNotIncluded {
        /// The transaction.
        transaction: B256,
        /// The node that answered.
        node: u64,
        /// When it answered.
        at_ms: u64,
    },
    /// I5: no new block for longer than the target.
    LivenessGap {
        /// When the gap started (the last new block, or a later fault event).
        from_ms: u64,
        /// When the next new block was seen (or the run ended).
        to_ms: u64,
    },
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ConflictingBlocks { number, seen } => {
                write!(f, "I1 violated: height {number} has {} hashes:", seen.len())?;
                for (hash, sources) in seen {
                    let sources: Vec<&str> = sources.iter().map(String::as_str).collect();
                    write!(f, " {hash} ({})", sources.join(", "))?;
                }
                Ok(())
            }
            Self::BrokenChain { node, number } => write!(
                f,
                "I1 violated: node {node}'s chain does not link at block {number}"
            ),
            Self::HeadWentBackwards {
                node,
                from,
                to,
                at_ms,
            } => write!(
                f,
                "I1 violated: node {node}'s head went back from {from} to {to} at {at_ms} ms"
            ),
            Self::LostReceipt {
                transaction,
                block_number,
                block_hash,
                node,
                reason,
            } => {
                let whom = node.map_or("every node".to_string(), |node| format!("node {node}"));
                write!(
                    f,
                    "I2 violated: receipt of {transaction} in block {block_number} ({block_hash}) lost on {whom}: {reason}"
                )
            }
            Self::NotConverged {
                node,
                head,
                highest,
            } => write!(
                f,
                "I5 violated: after the heal node {node} stopped at block {head}, others reached {highest}"
            ),
            Self::AcceptedNotIncluded {
                transaction,
                node,
                at_ms,
            } => write!(
                f,
                "I2 violated: {transaction} was accepted by node {node} at {at_ms} ms and is in no final chain"
            ),
            Self::LivenessGap { from_ms, to_ms } => write!(
                f,
                "I5 violated: no new block from {from_ms} ms to {to_ms} ms ({} ms)",
                to_ms - from_ms
            ),
        }
    }
}

/// The checker's verdict and the run's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Every broken promise; empty means the history is valid.
    pub anomalies: Vec<Anomaly>,
    /// Distinct transactions sent.
    pub transactions_sent: usize,
    /// Transactions a client was served a receipt for (acknowledged).
    pub transactions_acknowledged: usize,
    /// Acknowledged transactions missing from a later chain (I2); must be 0.
    pub transactions_lost: usize,
    /// Transactions in the final chains, acknowledged or not.
    pub transactions_included: usize,
    /// Accepted or with an unknown answer, and in no final chain (the accepted ones are also
    /// anomalies, unless the options say otherwise).
    pub never_included: Vec<B256>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, usize>,
    /// For each fault that hit the leader: the last new block before it to the first after it.
    pub failover_gaps_ms: Vec<u64>,
    /// For each fault that hit the leader, where measured: the terms Raft went through.
    pub failover_terms: Vec<u64>,
    /// The highest term when the safety phase began and when it ended, where read.
    pub terms: Option<[u64; 2]>,
    /// The longest time without a new block, counted as for [`Anomaly::LivenessGap`].
    pub longest_gap_ms: u64,
    /// The highest block seen.
    pub highest_block: u64,
}

impl Report {
    /// Whether every promise held.
    pub fn valid(&self) -> bool {
        self.anomalies.is_empty()
    }

    /// The failover gap at `percent` (nearest rank), if any fault hit a leader.
    pub fn failover_gap_ms(&self, percent: f64) -> Option<u64> {
        nearest_rank(&self.failover_gaps_ms, percent)
    }
}

/// The value at `percent` of `values` (nearest rank), if there are any.
fn nearest_rank(values: &[u64], percent: f64) -> Option<u64> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let last = sorted.len().checked_sub(1)?;
    let rank = (last as f64 * percent / 100.0).round() as usize;
    sorted.get(rank.min(last)).copied()
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.valid() { "valid" } else { "INVALID" };
        writeln!(f, "verdict: {verdict} ({} anomalies)", self.anomalies.len())?;
        for anomaly in &self.anomalies {
            writeln!(f, "  {anomaly}")?;
        }
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(kind, count)| format!("{kind} {count}"))
            .collect();
        let total: usize = self.faults.values().sum();
        writeln!(f, "faults injected: {total} ({})", faults.join(", "))?;
        writeln!(
            f,
            "transactions: {} sent, {} acknowledged, {} lost, {} included, {} accepted or unanswered but never included",
            self.transactions_sent,
            self.transactions_acknowledged,
            self.transactions_lost,
            self.transactions_included,
            self.never_included.len()
        )?;
        match (
            self.failover_gap_ms(50.0),
            self.failover_gap_ms(99.0),
            self.failover_gap_ms(100.0),
        ) {
            (Some(p50), Some(p99), Some(max)) => writeln!(
                f,
                "failover gaps ({} leader faults): p50 {p50} ms, p99 {p99} ms, max {max} ms",
                self.failover_gaps_ms.len()
            )?,
            _ => writeln!(f, "failover gaps: no fault hit a leader")?,
        }
        if let Some([first, last]) = self.terms {
            writeln!(
                f,
                "raft terms: {first} when the faults began, {last} when they ended ({} changes)",
                last.saturating_sub(first)
            )?;
        }
        if let (Some(p50), Some(max)) = (
            nearest_rank(&self.failover_terms, 50.0),
            nearest_rank(&self.failover_terms, 100.0),
        ) {
            writeln!(
                f,
                "term increments per leader fault: p50 {p50}, max {max} ({} measured)",
                self.failover_terms.len()
            )?;
        }
        write!(
            f,
            "blocks: up to {}, longest gap after a fault event {} ms",
            self.highest_block, self.longest_gap_ms
        )
    }
}

/// Checks `history` against keel's invariants.
pub fn check(history: &History, options: &CheckOptions) -> Report {
    let mut report = Report::default();
    check_one_hash_per_height(history, &mut report);
    check_chains_link(history, &mut report);
    check_heads_monotonic(history, &mut report);
    check_receipts_kept(history, &mut report);
    check_liveness(history, options, &mut report);
    check_converged(history, &mut report);
    count(history, options, &mut report);
    report
}

fn check_one_hash_per_height(history: &History, report: &mut Report) {
    let mut seen: BTreeMap<u64, BTreeMap<B256, BTreeSet<String>>> = BTreeMap::new();
    let mut note = |number: u64, hash: B256, source: String| {
        seen.entry(number)
            .or_default()
            .entry(hash)
            .or_default()
            .insert(source);
    };
    for head in &history.heads {
        note(
            head.number,
            head.hash,
            format!("head of node {}", head.node),
        );
    }
    for receipt in &history.receipts {
        let source = format!("receipt from node {}", receipt.node);
        note(receipt.block_number, receipt.block_hash, source);
    }
    for chain in &history.chains {
        for block in &chain.blocks {
            note(
                block.number,
                block.hash,
                format!("chain of node {}", chain.node),
            );
        }
    }
    for (number, seen) in seen {
        if seen.len() > 1 {
            report
                .anomalies
                .push(Anomaly::ConflictingBlocks { number, seen });
        }
    }
}

fn check_chains_link(history: &History, report: &mut Report) {
    for chain in &history.chains {
        for pair in chain.blocks.windows(2) {
            let (parent, child) = (&pair[0], &pair[1]);
            if child.number != parent.number + 1 || child.parent_hash != parent.hash {
                report.anomalies.push(Anomaly::BrokenChain {
                    node: chain.node,
                    number: child.number,
                });
                break;
            }
        }
    }
}

fn check_heads_monotonic(history: &History, report: &mut Report) {
    let mut last: BTreeMap<u64, u64> = BTreeMap::new();
    let mut heads: Vec<_> = history.heads.iter().collect();
    heads.sort_by_key(|head| head.at_ms); // stable: polls of one node keep their order
    for head in heads {
        if let Some(previous) = last.insert(head.node, head.number)
            && head.number < previous
        {
            report.anomalies.push(Anomaly::HeadWentBackwards {
                node: head.node,
                from: previous,
                to: head.number,
                at_ms: head.at_ms,
            });
        }
    }
}

fn check_receipts_kept(history: &History, report: &mut Report) {
    let mut lost = BTreeSet::new();
    for receipt in &history.receipts {
        let ReceiptSeen {
            transaction,
            block_number,
            block_hash,
            ..
        } = *receipt;
        let mut reached = false;
        for chain in &history.chains {
            let Some(block) = chain.blocks.iter().find(|b| b.number == block_number) else {
                continue; // this node stopped short of the height: the liveness check's concern
            };
            reached = true;
            let reason = if block.hash != block_hash {
                format!("its block {block_number} is {}", block.hash)
            } else if !block.transactions.contains(&transaction) {
                "the block does not hold the transaction".to_string()
            } else {
                continue;
            };
            lost.insert(transaction);
            report.anomalies.push(Anomaly::LostReceipt {
                transaction,
                block_number,
                block_hash,
                node: Some(chain.node),
                reason,
            });
        }
        if !reached {
            lost.insert(transaction);
            report.anomalies.push(Anomaly::LostReceipt {
                transaction,
                block_number,
                block_hash,
                node: None,
                reason: format!("no chain read back reaches block {block_number}"),
            });
        }
    }
    report.transactions_lost = lost.len();
}

fn check_converged(history: &History, report: &mut Report) {
    let head = |chain: &crate::history::ChainRead| chain.blocks.last().map_or(0, |b| b.number);
    let highest = history.chains.iter().map(head).max().unwrap_or(0);
    for chain in &history.chains {
        if head(chain) < highest {
            report.anomalies.push(Anomaly::NotConverged {
                node: chain.node,
                head: head(chain),
                highest,
            });
        }
    }
}

/// The times at which a new highest block was first seen, with its number. Heads later
/// replaced count (they were made in time); a replacement lowers the mark to the height it
/// unwound to, so the derived blocks after it count as new.
fn new_block_times(history: &History) -> Vec<(u64, u64)> {
    enum Seen {
        Head(u64),
        Unwound(u64),
    }
    let mut seen: Vec<(u64, Seen)> = history
        .heads
        .iter()
        .chain(
            history
                .replacements
                .iter()
                .flat_map(|replacement| &replacement.heads),
        )
        .map(|head| (head.at_ms, Seen::Head(head.number)))
        .chain(
            history
                .replacements
                .iter()
                .map(|replacement| (replacement.at_ms, Seen::Unwound(replacement.to))),
        )
        .collect();
    seen.sort_by_key(|(at_ms, _)| *at_ms);
    let mut times = Vec::new();
    let mut highest = None;
    for (at_ms, seen) in seen {
        match seen {
            Seen::Head(number) => {
                if highest.is_none_or(|highest| number > highest) {
                    highest = Some(number);
                    times.push((at_ms, number));
                }
            }
            Seen::Unwound(to) => highest = highest.map(|highest: u64| highest.min(to)),
        }
    }
    times
}

fn check_liveness(history: &History, options: &CheckOptions, report: &mut Report) {
    let blocks = new_block_times(history);
    report.highest_block = blocks.last().map_or(0, |(_, number)| *number);
    let mut events: Vec<u64> = history
        .faults
        .iter()
        .flat_map(|fault| std::iter::once(fault.started_ms).chain(fault.healed_ms))
        .collect();
    events.sort_unstable();
    let ends = blocks
        .iter()
        .skip(1)
        .map(|(at, _)| *at)
        .chain(std::iter::once(history.ended_ms));
    for ((last, _), next) in blocks.iter().zip(ends) {
        // The clock restarts at any fault event before the next block: a fault may legitimately
        // stop blocks until it heals, and the target runs from there.
        let event = events.iter().rev().find(|event| **event <= next).copied();
        let from = event.map_or(*last, |event| event.max(*last));
        let gap = next.saturating_sub(from);
        report.longest_gap_ms = report.longest_gap_ms.max(gap);
        if gap > options.liveness_target_ms {
            report.anomalies.push(Anomaly::LivenessGap {
                from_ms: from,
                to_ms: next,
            });
        }
    }
    report.terms = history.terms;
    report.failover_terms = history
        .faults
        .iter()
        .filter(|fault| fault.leader)
        .filter_map(|fault| fault.term_increments)
        .collect();
    for fault in history.faults.iter().filter(|fault| fault.leader) {
        let before = blocks.iter().rev().find(|(at, _)| *at <= fault.started_ms);
        let after = blocks.iter().find(|(at, _)| *at > fault.started_ms);
        if let (Some((before, _)), Some((after, _))) = (before, after) {
            report.failover_gaps_ms.push(after - before);
        }
    }
}

fn count(history: &History, options: &CheckOptions, report: &mut Report) {
    let sent: BTreeSet<B256> = history.sends.iter().map(|send| send.transaction).collect();
    let acknowledged: BTreeSet<B256> = history.receipts.iter().map(|r| r.transaction).collect();
    let included: BTreeSet<B256> = history
        .chains
        .iter()
        .flat_map(|chain| &chain.blocks)
        .flat_map(|block| block.transactions.iter().copied())
        .collect();
    let answered: BTreeSet<B256> = history
        .sends
        .iter()
        .filter(|send| !matches!(send.answer, crate::history::Answer::Rejected { .. }))
        .map(|send| send.transaction)
        .collect();
    report.transactions_sent = sent.len();
    report.transactions_acknowledged = acknowledged.len();
    report.transactions_included = included.intersection(&sent).count();
    report.never_included = answered.difference(&included).copied().collect();
    if options.accepted_must_be_included {
        let mut reported = BTreeSet::new();
        for send in &history.sends {
            if matches!(send.answer, crate::history::Answer::Accepted)
                && !included.contains(&send.transaction)
                && reported.insert(send.transaction)
            {
                report.anomalies.push(Anomaly::AcceptedNotIncluded {
                    transaction: send.transaction,
                    node: send.node,
                    at_ms: send.at_ms,
                });
            }
        }
    }
    for fault in &history.faults {
        *report.faults.entry(fault.kind.clone()).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    //! Hand-made histories, one per anomaly: each must be caught, and a clean one must pass.
    use super::*;
    use crate::history::{Answer, BlockRead, ChainRead, Fault, HeadSeen, Replacement, Send};

    fn hash(byte: u8) -> B256 {
        B256::repeat_byte(byte)
    }

    fn transaction(n: u8) -> B256 {
        let mut bytes = [0xee; 32];
        bytes[0] = n;
        B256::from(bytes)
    }

    /// A chain of `length` blocks after genesis; block `n` has hash `n + 1` (genesis `1`) and
    /// block 2 holds transaction 1.
    fn chain(node: u64, length: u64) -> ChainRead {
        let blocks = (0..=length)
            .map(|number| BlockRead {
                number,
                hash: hash(number as u8 + 1),
                parent_hash: if number == 0 {
                    B256::ZERO
                } else {
                    hash(number as u8)
                },
                transactions: if number == 2 {
                    vec![transaction(1)]
                } else {
                    vec![]
                },
            })
            .collect();
        ChainRead { node, blocks }
    }

    /// A valid run: three nodes, blocks every 100 ms, one transaction acknowledged in block 2,
    /// one leader kill with a 300 ms failover gap.
    fn clean() -> History {
        let mut heads = Vec::new();
        for number in 0..=8u64 {
            let at_ms = number * 100 + if number >= 5 { 200 } else { 0 };
            for node in 1..=3 {
                heads.push(HeadSeen {
                    node,
                    at_ms: at_ms + node,
                    number,
                    hash: hash(number as u8 + 1),
                });
            }
        }
        History {
            sends: vec![
                Send {
                    transaction: transaction(1),
                    node: 2,
                    at_ms: 150,
                    answer: Answer::Accepted,
                },
                Send {
                    transaction: transaction(2),
                    node: 1,
                    at_ms: 390,
                    answer: Answer::Unknown {
                        message: "connection reset".into(),
                    },
                },
            ],
            receipts: vec![ReceiptSeen {
                transaction: transaction(1),
                node: 3,
                at_ms: 260,
                block_number: 2,
                block_hash: hash(3),
            }],
            heads,
            faults: vec![Fault {
                kind: "kill".into(),
                nodes: vec![1],
                leader: true,
                started_ms: 420,
                healed_ms: Some(900),
                term_increments: None,
            }],
            chains: (1..=3).map(|node| chain(node, 8)).collect(),
            ended_ms: 1_100,
            replacements: Vec::new(),
            rotations: BTreeMap::new(),
            terms: None,
        }
    }

    fn options() -> CheckOptions {
        CheckOptions {
            liveness_target_ms: 500,
            accepted_must_be_included: true,
        }
    }

    /// I5 with the L1: unsafe blocks that were shown and then replaced by derived ones still
    /// count as blocks made in time, and the derived blocks after the replacement count as
    /// new, though lower than the replaced head.
    #[test]
    fn replaced_heads_count_for_liveness_and_are_not_conflicts() {
        let mut history = clean();
        // Node 1 showed 9 to 14 (one every 100 ms from 1,100 ms), then unwound to 8 at
        // 1,650 ms; the derived 9 and 10 follow.
        let shown: Vec<HeadSeen> = (9..=14u64)
            .map(|number| HeadSeen {
                node: 1,
                at_ms: 1_100 + (number - 9) * 100,
                number,
                hash: hash(0x40 + number as u8),
            })
            .collect();
        history.replacements.push(Replacement {
            node: 1,
            at_ms: 1_650,
            to: 8,
            heads: shown,
        });
        for (number, at_ms) in [(9u64, 1_700u64), (10, 1_800)] {
            history.heads.push(HeadSeen {
                node: 1,
                at_ms,
                number,
                hash: hash(0x60 + number as u8),
            });
        }
        history.ended_ms = 1_900;
        let report = check(&history, &options());
        assert!(report.valid(), "{report}");
        assert_eq!(report.highest_block, 10);
        // Without the replaced heads, 1,003 to 1,700 ms is a gap past the 500 ms target.
        history.replacements[0].heads.clear();
        let report = check(&history, &options());
        assert!(
            report
                .anomalies
                .iter()
                .any(|anomaly| matches!(anomaly, Anomaly::LivenessGap { .. })),
            "{report}"
        );
    }

    #[test]
    fn a_clean_history_is_valid_and_counted() {
        let report = check(&clean(), &options());
        assert!(report.valid(), "{report}");
        assert_eq!(report.transactions_sent, 2);
        assert_eq!(report.transactions_acknowledged, 1);
        assert_eq!(report.transactions_lost, 0);
        assert_eq!(report.transactions_included, 1);
        // Transaction 2's answer is unknown and it is in no chain: reported, not failed.
        assert_eq!(report.never_included, vec![transaction(2)]);
        assert_eq!(report.faults["kill"], 1);
        // Block 4 seen at 401 ms, block 5 at 701 ms: the leader kill at 420 ms cost 300 ms.
        assert_eq!(report.failover_gaps_ms, vec![300]);
        assert_eq!(report.highest_block, 8);
        let text = report.to_string();
        assert!(text.starts_with("verdict: valid"), "{text}");
    }

    #[test]
    fn i1_two_hashes_at_one_height_are_caught_wherever_they_were_exposed() {
        // A head poll saw another block 3.
        let mut history = clean();
        history.heads[10].hash = hash(0xaa);
        let report = check(&history, &options());
        assert!(matches!(
            report.anomalies.as_slice(),
            [Anomaly::ConflictingBlocks { number: 3, seen }] if seen.len() == 2
        ));
        // A final chain has another block 8 (a fork at the tip).
        let mut history = clean();
        history.chains[2].blocks[8].hash = hash(0xbb);
        let report = check(&history, &options());
        assert!(
            report
                .anomalies
                .iter()
                .any(|a| matches!(a, Anomaly::ConflictingBlocks { number: 8, .. })),
            "{report}"
        );
        assert!(
            report
                .to_string()
                .contains("I1 violated: height 8 has 2 hashes")
        );
    }

    /// I2, "accepted means kept": a send answered with the hash whose transaction no final
    /// chain holds is an anomaly (an unanswered one is only counted), unless turned off.
    #[test]
    fn i2_an_accepted_transaction_in_no_final_chain_is_caught() {
        let mut history = clean();
        history.sends.push(Send {
            transaction: transaction(3),
            node: 2,
            at_ms: 640,
            answer: Answer::Accepted,
        });
        let report = check(&history, &options());
        assert_eq!(
            report.anomalies,
            vec![Anomaly::AcceptedNotIncluded {
                transaction: transaction(3),
                node: 2,
                at_ms: 640,
            }]
        );
        assert!(report.to_string().contains("I2 violated"), "{report}");
        let relaxed = CheckOptions {
            accepted_must_be_included: false,
            ..options()
        };
        assert!(check(&history, &relaxed).valid());
    }

    #[test]
    fn i1_a_chain_that_does_not_link_is_caught() {
        let mut history = clean();
        history.chains[1].blocks[5].parent_hash = hash(0xcc);
        let report = check(&history, &options());
        assert_eq!(
            report.anomalies,
            vec![Anomaly::BrokenChain { node: 2, number: 5 }]
        );
    }

    #[test]
    fn i1_a_head_that_goes_backwards_is_caught() {
        let mut history = clean();
        history.heads.push(HeadSeen {
            node: 2,
            at_ms: 1_050,
            number: 6,
            hash: hash(7),
        });
        let report = check(&history, &options());
        assert_eq!(
            report.anomalies,
            vec![Anomaly::HeadWentBackwards {
                node: 2,
                from: 8,
                to: 6,
                at_ms: 1_050
            }]
        );
    }

    #[test]
    fn i2_a_receipt_whose_transaction_is_gone_is_caught() {
        // Node 3's block 2 is the same block, yet lacks the transaction (a lost write).
        let mut history = clean();
        history.chains[2].blocks[2].transactions.clear();
        let report = check(&history, &options());
        assert_eq!(report.transactions_lost, 1);
        assert!(matches!(
            report.anomalies.as_slice(),
            [Anomaly::LostReceipt { node: Some(3), .. }]
        ));
    }

    #[test]
    fn i2_a_receipt_for_a_block_no_chain_reaches_is_caught() {
        // The receipt named block 2, but every node came back with a chain of one block: the
        // acknowledged block was never committed.
        let mut history = clean();
        history.heads.retain(|head| head.number <= 1);
        history.chains = (1..=3).map(|node| chain(node, 1)).collect();
        let report = check(
            &history,
            &CheckOptions {
                liveness_target_ms: 10_000,
                ..CheckOptions::default()
            },
        );
        assert_eq!(report.transactions_lost, 1);
        // Its send was answered with the hash, so it is also an accepted transaction lost.
        assert!(matches!(
            report.anomalies.as_slice(),
            [
                Anomaly::LostReceipt {
                    node: None,
                    block_number: 2,
                    ..
                },
                Anomaly::AcceptedNotIncluded { .. }
            ]
        ));
        assert!(report.to_string().contains("I2 violated"));
    }

    #[test]
    fn i2_a_receipt_whose_block_was_replaced_is_caught() {
        let mut history = clean();
        history.receipts[0].block_hash = hash(0xdd);
        let report = check(&history, &options());
        // Two exposed hashes at height 2 (I1) and the receipt's block gone on all three (I2).
        assert_eq!(report.transactions_lost, 1);
        let lost = report
            .anomalies
            .iter()
            .filter(|a| matches!(a, Anomaly::LostReceipt { .. }))
            .count();
        assert_eq!(lost, 3, "{report}");
    }

    #[test]
    fn i5_a_gap_longer_than_the_target_is_caught_and_a_fault_restarts_the_clock() {
        // No fault: blocks stop at 801 ms and the run ends at 1,400 ms.
        let mut history = clean();
        history.faults.clear();
        history.ended_ms = 1_400;
        let report = check(&history, &options());
        assert!(
            report.valid(),
            "399 ms after block 8 is within the target: {report}"
        );
        history.ended_ms = 1_600;
        let report = check(&history, &options());
        assert_eq!(
            report.anomalies,
            vec![Anomaly::LivenessGap {
                from_ms: 1_001,
                to_ms: 1_600
            }]
        );
        assert!(report.to_string().contains("I5 violated"));
        // A full restart healed at 1,300 ms: the target runs from the heal.
        history.faults.push(Fault {
            kind: "restart-all".into(),
            nodes: vec![1, 2, 3],
            leader: true,
            started_ms: 1_050,
            healed_ms: Some(1_300),
            term_increments: None,
        });
        let report = check(&history, &options());
        assert!(report.valid(), "{report}");
        assert_eq!(report.longest_gap_ms, 300);
    }

    #[test]
    fn i5_a_node_left_behind_after_the_heal_is_caught() {
        let mut history = clean();
        history.chains[0] = chain(1, 6);
        let report = check(&history, &options());
        assert_eq!(
            report.anomalies,
            vec![Anomaly::NotConverged {
                node: 1,
                head: 6,
                highest: 8
            }]
        );
    }

    #[test]
    fn the_history_round_trips_through_json() {
        let history = clean();
        let text = serde_json::to_string(&history).unwrap();
        assert_eq!(serde_json::from_str::<History>(&text).unwrap(), history);
        assert!(text.contains(r#""kind":"unknown""#), "{text}");
    }
}
