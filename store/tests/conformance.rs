//! Every backend passes the same conformance suite.

mod memory {
    async fn make() -> (orderlog_store::MemoryStore, ()) {
        (orderlog_store::MemoryStore::new(), ())
    }
    orderlog_store::conformance_suite!(make);
}

mod sqlite {
    async fn make() -> (orderlog_store::SqliteStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = orderlog_store::SqliteStore::open(dir.path().join("orderlog.db")).unwrap();
        (store, dir)
    }
    orderlog_store::conformance_suite!(make);
}
