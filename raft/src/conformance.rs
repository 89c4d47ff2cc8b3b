//! openraft's own storage conformance suite (`openraft::testing::Suite`) run against our log
//! store and state machine, each test on a fresh temporary data dir.

use openraft::testing::{StoreBuilder, Suite};

use crate::log_store::LogStore;
use crate::state_machine::{ImagePublisher, StateMachineStore};
use crate::types::{StorageError, TypeConfig};

struct DiskStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for DiskStoreBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError> {
        let io = |e: std::io::Error| StorageError::from(openraft::StorageIOError::write(&e));
        let dir = tempfile::tempdir().map_err(io)?;
        let log = LogStore::open(&dir.path().join("log")).map_err(io)?;
        let sm = StateMachineStore::open(&dir.path().join("state"), ImagePublisher::new())
            .map_err(io)?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(DiskStoreBuilder) {
        panic!("storage conformance suite failed: {e}");
    }
}
