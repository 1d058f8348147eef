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

mod postgres {
    use orderlog_store::postgres::testing::TestDatabase;

    async fn make() -> (orderlog_store::PostgresStore, TestDatabase) {
        let db = TestDatabase::create().await;
        let store = orderlog_store::PostgresStore::connect_url(&db.url_with("pool_max_size=24")).await.unwrap();
        (store, db)
    }
    orderlog_store::conformance_suite!(make);
}
