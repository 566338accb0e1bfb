//! keel's testkit: what the fault tests share.
//!
//! - [`anvil`]: anvil as the real L1 of integration tests;
//! - [`history`]: what a workload saw, as data (JSON on disk);
//! - [`check`]: the history checker, Jepsen-style: I1, I2 and I5 against a history;
//! - [`ports`]: loopback ports outside the ephemeral range, for the processes tests start;
//! - [`proxy`]: a fault-injecting TCP proxy for peer traffic (partitions, one-way included);
//! - [`chaos`]: real `keel` processes under a seeded nemesis (SIGKILL, SIGSTOP/SIGCONT,
//!   partitions, full restarts) with a workload through the real RPC, judged by the checker;
//! - [`fuzz`]: the bodies of the cargo-fuzz targets (raw transactions, JSON-RPC, Raft messages);
//! - [`disk`]: the simulation's disk, a redb backend that loses un-fsynced writes on a crash;
//! - [`sim`]: deterministic simulation of the cluster code on turmoil, seed by seed;
//! - [`sim_l1`]: the simulation's L1 (keel's engine as a second chain, sealed on simulated
//!   time, with reorgs, outages and a batcher out of funds).
//!
//! ```text
//! workload ──eth_sendRawTransaction / receipts──► nodes ◄── nemesis (signals, proxy faults)
//!     │                                            │
//!     └────── sends, answers, receipts ──► History ◄── head polls, final chain reads
//!                                             │
//!                                       check() ──► Report (anomalies, gaps, counts)
//! ```

pub mod anvil;
pub mod chaos;
pub mod check;
pub mod disk;
pub mod fuzz;
pub mod history;
pub mod ports;
pub mod proxy;
pub mod sim;
pub mod sim_l1;

pub use check::{Anomaly, CheckOptions, Report, check};
pub use history::History;

/// A signed EIP-1559 transfer of `value` wei from `signer` at `nonce` to `to`, on the dev chain
/// (gas 21,000, fee cap 10 gwei, tip 1 wei): the transaction every workload and test here sends.
pub fn transfer(
    signer: &alloy::signers::local::PrivateKeySigner,
    nonce: u64,
    to: alloy::primitives::Address,
    value: alloy::primitives::U256,
) -> alloy::consensus::TxEnvelope {
    let transfer = alloy::consensus::TxEip1559 {
        chain_id: keel_primitives::DEV_CHAIN_ID,
        nonce,
        gas_limit: 21_000,
        max_fee_per_gas: 10_000_000_000,
        max_priority_fee_per_gas: 1,
        to: alloy::primitives::TxKind::Call(to),
        value,
        ..Default::default()
    };
    keel_primitives::sign_transaction(signer, transfer.into())
}

/// The workload's transaction, in chaos and simulation alike: 1 wei from `signer` at `nonce`.
/// The same nonce always signs the same bytes, so a client that resends after an unknown
/// answer can never spend twice.
pub(crate) fn workload_transfer(
    signer: &alloy::signers::local::PrivateKeySigner,
    nonce: u64,
) -> alloy::consensus::TxEnvelope {
    let to = alloy::primitives::Address::repeat_byte(0x5e);
    transfer(signer, nonce, to, alloy::primitives::U256::from(1))
}
