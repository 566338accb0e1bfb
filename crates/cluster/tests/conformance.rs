//! openraft's storage conformance suite against keel's log store and state machine: the
//! storage contract every Raft guarantee (I2, I3) rests on.

use keel_cluster::{LogStore, NodeId, StateMachine, TypeConfig};
use keel_primitives::ChainSpec;
use keel_storage::Store;
use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use std::sync::Arc;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = LogStore::open(&dir.path().join("raft.redb")).expect("log store opens");
        let chain = ChainSpec::dev();
        let store = Store::open(&dir.path().join("chain.redb"), &chain).expect("chain store opens");
        let state_machine = StateMachine::new(chain, Arc::new(store));
        Ok((dir, log, state_machine))
    }
}

#[test]
fn openraft_storage_conformance_suite_passes() {
    Suite::test_all(Builder).expect("keel's storage meets openraft's contract");
}
