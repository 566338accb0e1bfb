//! keel's testkit: what the fault tests share.
//!
//! - [`history`]: what a workload saw, as data (JSON on disk);
//! - [`check`]: the history checker, Jepsen-style: I1, I2 and I5 against a history;
//! - [`proxy`]: a fault-injecting TCP proxy for peer traffic (partitions, one-way included);
//! - [`chaos`]: real `keel` processes under a seeded nemesis (SIGKILL, SIGSTOP/SIGCONT,
//!   partitions, full restarts) with a workload through the real RPC, judged by the checker;
//! - [`fuzz`]: the bodies of the cargo-fuzz targets (raw transactions, JSON-RPC, Raft messages);
//! - [`sim`]: deterministic simulation of the cluster code on turmoil, seed by seed.
//!
//! ```text
//! workload ──eth_sendRawTransaction / receipts──► nodes ◄── nemesis (signals, proxy faults)
//!     │                                            │
//!     └────── sends, answers, receipts ──► History ◄── head polls, final chain reads
//!                                             │
//!                                       check() ──► Report (anomalies, gaps, counts)
//! ```

pub mod chaos;
pub mod check;
pub mod fuzz;
pub mod history;
pub mod proxy;
pub mod sim;

pub use check::{Anomaly, CheckOptions, Report, check};
pub use history::History;
