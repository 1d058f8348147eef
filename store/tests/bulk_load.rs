//! Bulk loads (what `orderlog import` uses for an empty store) on SQLite and PostgreSQL:
//! the stores drop their indexes around the load and build them again, so after a load —
//! and after a refused one — the schema must be exactly what the migrations made, the
//! uniqueness rules must hold again, commit records must cover every event, and appends
//! must carry on after the loaded positions.

use chrono::{TimeZone, Utc};
use orderlog_store::hash::{commit_digest, event_hash, GENESIS};
use orderlog_store::postgres::testing::TestDatabase;
use orderlog_store::{
    AppendOutcome, BulkLoad, EventStore, ExpectedVersion, LoadChunk, LoadEvent, LogCursor, Metadata, NewEvent,
    PostgresStore, RecordedEvent, SqliteStore, StoreError, StreamAppend, BULK_RECORD_EVENTS,
};
use uuid::Uuid;

/// `count` events over 97 streams, hashed as a log would hold them (times in whole
/// microseconds, as PostgreSQL keeps them).
fn events(count: u64) -> Vec<RecordedEvent> {
    let mut heads: std::collections::HashMap<String, (u64, String)> = Default::default();
    (1..=count)
        .map(|i| {
            let stream_id = format!("stock-s{}", i % 97);
            let (version, prev) = heads.get(&stream_id).cloned().unwrap_or((0, GENESIS.to_string()));
            let mut event = RecordedEvent {
                position: i,
                commit: i,
                stream_id: stream_id.clone(),
                version: version + 1,
                event_id: Uuid::from_u128(0xb01c_0000_0000_0000_0000_0000_0000_0000 + u128::from(i)),
                event_type: "StockAdjusted".into(),
                schema_version: 1,
                payload: format!(r#"{{"delta":{i}}}"#),
                metadata: Metadata {
                    actor: "loader".into(),
                    command_id: format!("c{}", i / 3),
                    command_hash: None,
                    correlation_id: format!("c{}", i / 3),
                    causation_id: None,
                },
                recorded_at: Utc.timestamp_opt(1_780_000_000 + i as i64, 123_456_000).unwrap(),
                hash: String::new(),
            };
            event.hash = event_hash(&prev, &event);
            heads.insert(stream_id, (event.version, event.hash.clone()));
            event
        })
        .collect()
}

/// The events as a bulk load's input, in chunks of 1 000; `fail_at`: an error instead of
/// the event at that index (as a file that fails its check part-way).
fn input(events: Vec<RecordedEvent>, fail_at: Option<usize>) -> orderlog_store::BulkEvents {
    let mut chunks: Vec<Result<Vec<LoadEvent>, orderlog_store::StoreError>> = Vec::new();
    let mut chunk = Vec::new();
    for (i, event) in events.into_iter().enumerate() {
        if Some(i) == fail_at {
            chunks.push(Ok(std::mem::take(&mut chunk)));
            chunks.push(Err(orderlog_store::StoreError::LoadRefused(format!("line {}: altered", i + 1))));
            break;
        }
        chunk.push(LoadEvent::new(event));
        if chunk.len() == 1_000 {
            chunks.push(Ok(std::mem::take(&mut chunk)));
        }
    }
    if !chunk.is_empty() {
        chunks.push(Ok(chunk));
    }
    Box::new(chunks.into_iter().map(|chunk| chunk.map(LoadChunk::from)))
}

async fn whole_log(store: &dyn EventStore) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    let mut cursor = LogCursor::START;
    loop {
        let batch = store.read_all(cursor, 5_000).await.unwrap();
        let Some(last) = batch.last() else { return all };
        cursor = LogCursor::after(last);
        all.extend(batch);
    }
}

fn append_one(stream_id: &str, expected: u64, event_id: Uuid) -> Vec<StreamAppend> {
    vec![StreamAppend {
        stream_id: stream_id.into(),
        expected: ExpectedVersion::Exact(expected),
        events: vec![NewEvent {
            event_id,
            event_type: "StockAdjusted".into(),
            schema_version: 1,
            payload: r#"{"delta":1}"#.into(),
            metadata: Metadata {
                actor: "clerk".into(),
                command_id: "after-the-load".into(),
                command_hash: None,
                correlation_id: "after-the-load".into(),
                causation_id: None,
            },
            recorded_at: Utc::now(),
        }],
    }]
}

/// Loads 2.5 commit records' worth of events and checks the log, its commit records and
/// the rules that hold again afterwards.
async fn loads_and_carries_on(store: &dyn BulkLoad) {
    let count = BULK_RECORD_EVENTS * 5 / 2;
    let source = events(count);
    assert_eq!(store.bulk_load(input(source.clone(), None)).await.unwrap(), count);
    // On PostgreSQL a reader sees nothing newer than the oldest transaction running on the
    // server — here possibly the other test's load, waiting for its lock for 10 s.
    assert!(store.settle(std::time::Duration::from_secs(60)).await.unwrap());

    let log = whole_log(store).await;
    assert_eq!(log.len() as u64, count);
    for (loaded, original) in log.iter().zip(&source) {
        assert_eq!(loaded.position, original.position, "positions are the load's, from 1");
        assert_eq!(
            (&loaded.stream_id, loaded.version, loaded.event_id, &loaded.hash, &loaded.metadata, loaded.recorded_at),
            (
                &original.stream_id,
                original.version,
                original.event_id,
                &original.hash,
                &original.metadata,
                original.recorded_at
            )
        );
    }
    let commits = store.read_commits(LogCursor::START, 100).await.unwrap();
    assert_eq!(commits.iter().map(|c| c.events).collect::<Vec<_>>(), vec![10_000, 10_000, 5_000]);
    for c in &commits {
        let covered = &log[(c.first_position - 1) as usize..(c.first_position - 1 + c.events) as usize];
        assert_eq!(c.digest, commit_digest(covered.iter().map(|e| (e.position, e.hash.as_str()))));
    }
    assert_eq!(store.read_command("c7").await.unwrap().len(), 3, "the command index is there");
    assert_eq!(
        store.stream_version("stock-s5").await.unwrap(),
        source.iter().filter(|e| e.stream_id == "stock-s5").count() as u64
    );

    // The uniqueness rules hold again: a loaded event id, or a loaded stream version.
    let version = store.stream_version("stock-s5").await.unwrap();
    let repeated = append_one("stock-fresh", 0, source[10].event_id);
    assert!(matches!(store.append(repeated).await, Err(StoreError::DuplicateEvent { .. })));
    let stale = append_one("stock-s5", version - 1, Uuid::new_v4());
    assert!(store.append(stale).await.unwrap_err().is_conflict());
    // And appends number on after the loaded positions.
    let outcome: AppendOutcome = store.append(append_one("stock-s5", version, Uuid::new_v4())).await.unwrap();
    let position = outcome.last_position.unwrap();
    assert!(position > count, "{position} after {count}");
    assert_eq!(store.head().await.unwrap(), position);
    assert_eq!(store.stream_version("stock-s5").await.unwrap(), version + 1);

    // A second load into a store that is no longer empty is refused.
    let again = store.bulk_load(input(events(3), None)).await.unwrap_err();
    assert!(matches!(again, StoreError::LoadRefused(ref why) if why.contains("not empty")), "{again}");
}

/// A load whose input fails part-way leaves the store empty and usable.
async fn a_refused_load_leaves_nothing(store: &dyn BulkLoad) {
    let refused = store.bulk_load(input(events(12_000), Some(11_500))).await.unwrap_err();
    assert!(matches!(refused, StoreError::LoadRefused(ref why) if why == "line 11501: altered"), "{refused}");
    assert_eq!(store.head().await.unwrap(), 0);
    assert!(store.read_commits(LogCursor::START, 10).await.unwrap().is_empty());
    // A repeated event id inside the input: refused when the index is built, nothing kept.
    let mut repeating = events(300);
    repeating[200].event_id = repeating[100].event_id;
    let refused = store.bulk_load(input(repeating, None)).await.unwrap_err();
    assert!(matches!(refused, StoreError::LoadRefused(_)), "{refused}");
    assert_eq!(store.head().await.unwrap(), 0);
}

fn sqlite_schema(path: &std::path::Path) -> Vec<(String, String, Option<String>)> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
}

fn journal_mode(path: &std::path::Path) -> String {
    rusqlite::Connection::open(path).unwrap().query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap()
}

/// Bytes in the file's write-ahead log (none when there is no WAL file).
fn wal_bytes(path: &std::path::Path) -> u64 {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(wal).map_or(0, |m| m.len())
}

#[tokio::test]
async fn sqlite_bulk_load_keeps_the_schema_and_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let migrated = sqlite_schema(SqliteStore::open(dir.path().join("fresh.db")).unwrap().path());
    assert!(migrated.iter().any(|(_, name, _)| name == "events_by_event_id"), "{migrated:?}");

    let refused = SqliteStore::open(dir.path().join("refused.db")).unwrap();
    a_refused_load_leaves_nothing(&refused).await;
    assert_eq!(sqlite_schema(refused.path()), migrated, "a refused load leaves the schema as it was");
    assert_eq!(journal_mode(refused.path()), "wal", "a refused load leaves the file in WAL mode");

    let loaded = SqliteStore::open(dir.path().join("loaded.db")).unwrap();
    loads_and_carries_on(&loaded).await;
    assert_eq!(sqlite_schema(loaded.path()), migrated, "a load ends with the migrated schema");
    assert_eq!(journal_mode(loaded.path()), "wal", "a load leaves the file in WAL mode");
    // With the file to itself the load wrote its pages straight into the database (about
    // 10 MB here); the WAL holds only the few appends made after it.
    let wal = wal_bytes(loaded.path());
    assert!(wal < 1 << 20, "{wal} bytes in the WAL");
}

/// A reader in another process keeps the file open in WAL mode: the load cannot leave WAL
/// mode, goes through the WAL as any write does, and the reader sees its events.
#[tokio::test]
async fn sqlite_bulk_load_beside_another_reader_goes_through_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("shared.db")).unwrap();
    let other = rusqlite::Connection::open(store.path()).unwrap();
    let count = |c: &rusqlite::Connection| c.query_row("SELECT count(*) FROM events", [], |r| r.get::<_, u64>(0));
    assert_eq!(count(&other).unwrap(), 0);

    assert_eq!(store.bulk_load(input(events(5_000), None)).await.unwrap(), 5_000);
    assert_eq!(count(&other).unwrap(), 5_000, "the other connection reads the loaded events");
    assert_eq!(store.head().await.unwrap(), 5_000);
    assert_eq!(journal_mode(store.path()), "wal");
    let wal = wal_bytes(store.path());
    assert!(wal > 1 << 20, "the load went through the WAL: {wal} bytes in it");
}

async fn postgres_schema(url: &str) -> Vec<(String, String)> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT indexname::text, indexdef FROM pg_indexes WHERE schemaname = current_schema()
             UNION ALL
             SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint
              WHERE connamespace = current_schema()::regnamespace
             ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

#[tokio::test]
async fn postgres_bulk_load_keeps_the_schema_and_the_rules() {
    let fresh = TestDatabase::create().await;
    drop(PostgresStore::connect_url(&fresh.url).await.unwrap());
    let migrated = postgres_schema(&fresh.url).await;
    assert!(migrated.iter().any(|(name, _)| name == "orderlog_events_event_id_key"), "{migrated:?}");

    let db = TestDatabase::create().await;
    let store = PostgresStore::connect_url(&db.url).await.unwrap();
    // Positions a rolled-back append took from the sequence must not matter.
    let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client.query_one("SELECT setval('orderlog_events_position_seq', 7)", &[]).await.unwrap();
    a_refused_load_leaves_nothing(&store).await;
    assert_eq!(postgres_schema(&db.url).await, migrated, "a refused load leaves the schema as it was");
    loads_and_carries_on(&store).await;
    assert_eq!(postgres_schema(&db.url).await, migrated, "a load ends with the migrated schema");
}

#[tokio::test]
async fn postgres_bulk_load_gives_up_on_a_log_held_open_by_another_session() {
    let db = TestDatabase::create().await;
    let store = PostgresStore::connect_url(&db.url).await.unwrap();
    let (mut holder, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let open = holder.transaction().await.unwrap();
    open.query("SELECT count(*) FROM orderlog_events", &[]).await.unwrap();
    let started = std::time::Instant::now();
    let refused = store.bulk_load(input(events(10), None)).await.unwrap_err();
    assert!(
        matches!(refused, StoreError::LoadRefused(ref why) if why.contains("the event log is in use")),
        "{refused}"
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(orderlog_store::postgres::BULK_LOCK_TIMEOUT_MS));
    open.rollback().await.unwrap();
    // Once that session is gone, the load goes through.
    assert_eq!(store.bulk_load(input(events(10), None)).await.unwrap(), 10);
}
