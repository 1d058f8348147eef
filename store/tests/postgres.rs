//! PostgreSQL-specific behaviour against the real server: out-of-order commits never skipped,
//! lost updates impossible, crash safety, migrations, and bad connection input. Every test
//! makes its own database.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orderlog_store::conformance::event;
use orderlog_store::hash::verify_stream;
use orderlog_store::postgres::testing::{server_url, TestDatabase};
use orderlog_store::postgres::{AppendFault, MIGRATIONS};
use orderlog_store::{
    EventStore, ExpectedVersion, LogCursor, PostgresOptions, PostgresStore, RecordedEvent, StoreError, StreamAppend,
};
use tokio_postgres::NoTls;
use uuid::Uuid;

fn one(stream: &str, expected: ExpectedVersion, events: usize) -> Vec<StreamAppend> {
    vec![StreamAppend {
        stream_id: stream.into(),
        expected,
        events: (0..events).map(|i| event("T", &format!(r#"{{"i":{i}}}"#))).collect(),
    }]
}

async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// Many writers, some of whose transactions stay open after later ones committed and some
/// of which roll back, while several readers tail the log from the start: every reader sees
/// every committed event exactly once, in the same order, and nothing rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_never_skip_an_event_that_commits_late() {
    const WRITERS: usize = 16;
    const APPENDS_PER_WRITER: usize = 60;
    const READERS: usize = 3;
    let db = TestDatabase::create().await;
    let store = Arc::new(PostgresStore::connect_url(&db.url_with("pool_max_size=40")).await.unwrap());
    let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));

    let mut readers = Vec::new();
    for _ in 0..READERS {
        let store = Arc::clone(&store);
        let writing = Arc::clone(&writing);
        readers.push(tokio::spawn(async move {
            let mut cursor = LogCursor::START;
            let mut seen: Vec<RecordedEvent> = Vec::new();
            let mut settled = false;
            let deadline = Instant::now() + Duration::from_secs(120);
            while Instant::now() < deadline {
                let batch = store.read_all(cursor, 97).await.unwrap();
                if let Some(last) = batch.last() {
                    cursor = LogCursor::after(last);
                    seen.extend(batch);
                    continue;
                }
                if !writing.load(std::sync::atomic::Ordering::SeqCst) {
                    // The writers are done: once everything they committed is readable, one
                    // more empty read means the reader has it all.
                    if settled {
                        break;
                    }
                    assert!(store.settle(Duration::from_secs(60)).await.unwrap());
                    settled = true;
                    continue;
                }
                store.wait_for(cursor, Duration::from_millis(100)).await.unwrap();
            }
            seen
        }));
    }

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = Arc::clone(&store);
        writers.push(tokio::spawn(async move {
            let mut committed = Vec::new();
            let mut rolled_back = Vec::new();
            let mut version = 0;
            for i in 0..APPENDS_PER_WRITER {
                let events = 1 + (i % 3);
                let mut append = one(&format!("w{w}"), ExpectedVersion::Exact(version), events);
                if i % 2 == 0 {
                    // Also to a stream other writers append to, as a checkout does: its
                    // versions must still arrive in order.
                    append.extend(one(&format!("shared-{}", (w + i) % 3), ExpectedVersion::Any, 1));
                }
                let ids: Vec<Uuid> = append.iter().flat_map(|a| a.events.iter().map(|e| e.event_id)).collect();
                let fault = AppendFault {
                    hold_before_commit: (i % 5 == w % 5).then(|| Duration::from_millis(20 + 15 * (i % 7) as u64)),
                    roll_back: i % 11 == 3,
                };
                match store.append_with_fault(append, fault).await {
                    Ok(_) => {
                        version += events as u64;
                        committed.extend(ids);
                    }
                    Err(_) if fault.roll_back => rolled_back.extend(ids),
                    Err(e) => panic!("append failed: {e}"),
                }
            }
            (committed, rolled_back)
        }));
    }
    let mut committed = HashSet::new();
    let mut rolled_back = HashSet::new();
    for writer in writers {
        let (c, r) = writer.await.unwrap();
        committed.extend(c);
        rolled_back.extend(r);
    }
    writing.store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(committed.len() > 1_500, "thousands of events: {}", committed.len());
    assert!(!rolled_back.is_empty());

    let mut orders = Vec::new();
    for reader in readers {
        let seen = reader.await.unwrap();
        let ids: Vec<Uuid> = seen.iter().map(|e| e.event_id).collect();
        let unique: HashSet<Uuid> = ids.iter().copied().collect();
        assert_eq!(unique.len(), ids.len(), "no event seen twice");
        let ghosts = unique.intersection(&rolled_back).count();
        assert_eq!(ghosts, 0, "{ghosts} events of rolled-back transactions were seen");
        let missing = committed.difference(&unique).count();
        assert_eq!(missing, 0, "{missing} of {} committed events were never seen", committed.len());
        assert_eq!(unique.len(), committed.len(), "nothing but committed events");
        let mut versions: HashMap<&str, u64> = HashMap::new();
        for e in &seen {
            let v = versions.entry(e.stream_id.as_str()).or_default();
            assert_eq!(e.version, *v + 1, "each stream in version order");
            *v = e.version;
        }
        orders.push(ids);
    }
    assert!(orders.windows(2).all(|w| w[0] == w[1]), "every reader sees the same order");
}

/// 20 concurrent appends with the same expected version: exactly one wins, every other gets a
/// version conflict, and the stream holds exactly one new event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_cannot_lose_an_update() {
    let db = TestDatabase::create().await;
    let store = Arc::new(PostgresStore::connect_url(&db.url_with("pool_max_size=24")).await.unwrap());
    store.append(one("order-1", ExpectedVersion::NoStream, 1)).await.unwrap();
    for round in 0..5u64 {
        let barrier = Arc::new(tokio::sync::Barrier::new(20));
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let store = Arc::clone(&store);
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.append(one("order-1", ExpectedVersion::Exact(1 + round), 1)).await
                })
            })
            .collect();
        let mut wins = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => wins += 1,
                Err(e) => assert!(e.is_conflict(), "a loser gets a version conflict, not {e}"),
            }
        }
        assert_eq!(wins, 1, "round {round}: exactly one append wins");
        assert_eq!(store.stream_version("order-1").await.unwrap(), 2 + round);
    }
    let events = store.read_stream("order-1", 1, 100).await.unwrap();
    assert_eq!(events.len(), 6);
    assert!(verify_stream(&events).is_ok());
}

/// Concurrent creators of one new stream: one wins, the others conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creators_of_a_stream_conflict() {
    let db = TestDatabase::create().await;
    let store = Arc::new(PostgresStore::connect_url(&db.url_with("pool_max_size=24")).await.unwrap());
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.append(one("cart-new", ExpectedVersion::NoStream, 2)).await })
        })
        .collect();
    let mut wins = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => wins += 1,
            Err(e) => assert!(e.is_conflict(), "{e}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(store.stream_version("cart-new").await.unwrap(), 2);
}

/// An append whose connection is killed before it commits leaves nothing; appends that
/// returned `Ok` are there after every connection to the database is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_appends_leave_nothing_and_acknowledged_ones_survive() {
    let db = TestDatabase::create().await;
    let store = Arc::new(PostgresStore::connect_url(&db.url).await.unwrap());
    store.append(one("stock-a@x", ExpectedVersion::NoStream, 3)).await.unwrap();

    let held = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let fault = AppendFault { hold_before_commit: Some(Duration::from_secs(30)), roll_back: false };
            store.append_with_fault(one("stock-b@x", ExpectedVersion::NoStream, 2), fault).await
        })
    };
    let admin = admin(&server_url()).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let killed = admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE datname = $1 AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()",
                &[&db.name],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        if killed > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the held append never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = held.await.unwrap().unwrap_err();
    assert!(!err.is_conflict(), "{err}");

    // Every connection of the database goes, as in a server restart.
    admin
        .execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", &[&db.name])
        .await
        .unwrap();
    drop(store);
    let store = PostgresStore::connect_url(&db.url).await.unwrap();
    assert_eq!(store.stream_version("stock-b@x").await.unwrap(), 0, "nothing of the killed append");
    assert!(store.read_stream("stock-b@x", 1, 10).await.unwrap().is_empty());
    let kept = store.read_stream("stock-a@x", 1, 10).await.unwrap();
    assert_eq!(kept.len(), 3, "the acknowledged append is there");
    assert!(verify_stream(&kept).is_ok());
    store.append(one("stock-b@x", ExpectedVersion::NoStream, 1)).await.unwrap();
}

#[tokio::test]
async fn migrating_twice_is_a_no_op() {
    let db = TestDatabase::create().await;
    let first = PostgresStore::connect_url(&db.url).await.unwrap();
    assert_eq!(first.applied_migrations().len(), MIGRATIONS.len());
    first.append(one("s", ExpectedVersion::NoStream, 1)).await.unwrap();
    let second = PostgresStore::connect_url(&db.url).await.unwrap();
    assert!(second.applied_migrations().is_empty());
    assert_eq!(second.stream_version("s").await.unwrap(), 1);
}

/// The append function runs with its plans fixed: no JIT, no sequential scans, and generic
/// plans (planned once per connection, not on every call).
#[tokio::test]
async fn the_append_function_keeps_its_plan_settings() {
    let db = TestDatabase::create().await;
    let _store = PostgresStore::connect_url(&db.url).await.unwrap();
    let client = admin(&db.url).await;
    let row = client.query_one("SELECT proconfig FROM pg_proc WHERE proname = 'orderlog_append'", &[]).await.unwrap();
    let mut config: Vec<String> = row.get(0);
    config.sort();
    assert_eq!(config, ["enable_seqscan=off", "jit=off", "plan_cache_mode=force_generic_plan"]);
}

#[tokio::test]
async fn concurrent_migrators_apply_each_migration_once() {
    let db = TestDatabase::create().await;
    let stores = futures_all((0..6).map(|_| {
        let url = db.url.clone();
        async move { PostgresStore::connect_url(&url).await }
    }))
    .await;
    let applied: usize = stores.iter().map(|s| s.as_ref().unwrap().applied_migrations().len()).sum();
    assert_eq!(applied, MIGRATIONS.len());
}

async fn futures_all<F: std::future::Future + Send + 'static>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_changed_migration_and_a_newer_schema_are_refused() {
    let db = TestDatabase::create().await;
    drop(PostgresStore::connect_url(&db.url).await.unwrap());
    let client = admin(&db.url).await;
    client.execute("UPDATE orderlog_migrations SET checksum = 'edited' WHERE version = 1", &[]).await.unwrap();
    let err = PostgresStore::connect_url(&db.url).await.err().unwrap();
    assert!(matches!(err, StoreError::MigrationChanged { version: 1, .. }), "{err}");
    client
        .execute("UPDATE orderlog_migrations SET checksum = $1 WHERE version = 1", &[&MIGRATIONS[0].checksum()])
        .await
        .unwrap();
    client
        .execute("INSERT INTO orderlog_migrations (version, name, checksum) VALUES (99, 'future', 'x')", &[])
        .await
        .unwrap();
    let err = PostgresStore::connect_url(&db.url).await.err().unwrap();
    assert!(matches!(err, StoreError::SchemaTooNew { found: 99, .. }), "{err}");
    assert!(err.to_string().contains("newer"), "{err}");
}

#[tokio::test]
async fn a_database_of_another_application_is_refused_unchanged() {
    let db = TestDatabase::create().await;
    let client = admin(&db.url).await;
    client.batch_execute("CREATE TABLE customers (name TEXT); INSERT INTO customers VALUES ('ann')").await.unwrap();
    let err = PostgresStore::connect_url(&db.url).await.err().unwrap();
    assert!(matches!(err, StoreError::NotOrderlog { .. }), "{err}");
    assert!(err.to_string().contains("public.customers"), "{err}");
    let tables: i64 = client
        .query_one("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 1, "nothing was created");
}

#[tokio::test]
async fn unreachable_servers_and_bad_credentials_are_named() {
    let err =
        PostgresStore::connect_url("postgres://postgres@127.0.0.1:1/orderlog?connect_timeout=2").await.err().unwrap();
    let message = err.to_string();
    assert!(matches!(err, StoreError::Connect { .. }), "{message}");
    assert!(message.contains("127.0.0.1:1") && message.to_lowercase().contains("refused"), "{message}");

    let err = PostgresStore::connect_url("postgres://no_such_user_orderlog:secret@127.0.0.1:5432/postgres")
        .await
        .err()
        .unwrap();
    let message = err.to_string();
    assert!(message.contains("no_such_user_orderlog"), "{message}");
    assert!(!message.contains("secret"), "the password is never shown: {message}");

    let err =
        PostgresStore::connect_url("postgres://postgres@127.0.0.1:5432/no_such_database_orderlog").await.err().unwrap();
    assert!(err.to_string().contains("no_such_database_orderlog"), "{err}");

    let err = PostgresOptions::from_url("postgres://postgres@127.0.0.1/x?pool_max_size=lots").err().unwrap();
    assert!(err.to_string().contains("pool_max_size"), "{err}");
}

/// Transaction ids are compared as numbers, never as text ("10000" sorts before "9999").
#[tokio::test]
async fn the_log_is_read_in_numeric_commit_order() {
    let db = TestDatabase::create().await;
    let store = PostgresStore::connect_url(&db.url).await.unwrap();
    let client = admin(&db.url).await;
    // Ids below the server's oldest running transaction (a reader sees nothing newer) that
    // cross a digit boundary: 9 999 < 10 000 < 10 001, but "10000" < "10001" < "9999".
    let xmin: i64 =
        client.query_one("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint", &[]).await.unwrap().get(0);
    let boundary = 10i64.pow((xmin - 2).max(10).ilog10());
    let ids = [boundary, boundary - 1, boundary + 1].map(|id| id.to_string());
    for (tx_id, stream) in [(ids[0].as_str(), "b"), (ids[1].as_str(), "a"), (ids[2].as_str(), "c")] {
        client
            .execute(
                "INSERT INTO orderlog_events (tx_id, stream_id, version, event_id, event_type, schema_version, payload,
                                              metadata, command_id, recorded_at, hash)
                 VALUES ($1::text::xid8, $2, 1, gen_random_uuid(), 'T', 1, '{}',
                         '{\"actor\":\"x\",\"command_id\":\"c\",\"correlation_id\":\"x\"}', 'c', now(), 'h')",
                &[&tx_id, &stream],
            )
            .await
            .unwrap();
    }
    let all = store.read_all(LogCursor::START, 10).await.unwrap();
    let commits: Vec<u64> = all.iter().map(|e| e.commit).collect();
    let boundary = boundary as u64;
    assert_eq!(commits, [boundary - 1, boundary, boundary + 1]);
    let mut cursor = LogCursor::START;
    let mut paged = Vec::new();
    while let Some(event) = store.read_all(cursor, 1).await.unwrap().pop() {
        cursor = LogCursor::after(&event);
        paged.push(event.stream_id);
    }
    assert_eq!(paged, ["a", "b", "c"], "page by page, nothing skipped");

    // The commit records too (`orderlog verify` reads them beside the log; a log written
    // while the server's transaction ids crossed 100 000 was reported broken at its first
    // event when they were sorted as text).
    for (tx_id, position) in [(&ids[0], 20i64), (&ids[1], 10), (&ids[2], 30)] {
        client
            .execute(
                "INSERT INTO orderlog_commits (commit_order, first_position, events, digest)
                 VALUES ($1::text::xid8, $2, 1, 'd')",
                &[tx_id, &position],
            )
            .await
            .unwrap();
    }
    let records = store.read_commits(LogCursor::START, 10).await.unwrap();
    assert_eq!(records.iter().map(|c| c.commit).collect::<Vec<_>>(), [boundary - 1, boundary, boundary + 1]);
    let mut cursor = LogCursor::START;
    let mut paged = Vec::new();
    while let Some(record) = store.read_commits(cursor, 1).await.unwrap().pop() {
        cursor = LogCursor { commit: record.commit, position: record.first_position };
        paged.push(record.first_position);
    }
    assert_eq!(paged, [10, 20, 30], "page by page, nothing skipped");
}
