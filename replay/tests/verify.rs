//! Tampering with the rows directly — in SQLite and in PostgreSQL, one way at a time — is
//! found and named: an event changed, deleted (the last one too), inserted, or moved.

use chrono::Utc;
use orderlog_replay::verify_chains;
use orderlog_store::{EventStore, ExpectedVersion, Metadata, NewEvent, SqliteStore, StreamAppend};

fn event(n: u32) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::new_v4(),
        event_type: "StockReceived".into(),
        schema_version: 1,
        payload: format!(r#"{{"quantity":{n}}}"#),
        metadata: Metadata {
            actor: "t".into(),
            command_id: format!("c{n}"),
            correlation_id: "t".into(),
            ..Metadata::default()
        },
        recorded_at: Utc::now(),
    }
}

/// A log of two streams, three events each, interleaved; returns the file's path.
async fn log(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let path = dir.path().join("orderlog.db");
    let store = SqliteStore::open(&path).unwrap();
    for n in 0..6 {
        let stream = if n % 2 == 0 { "stock-a@x" } else { "stock-b@x" };
        store
            .append(vec![StreamAppend {
                stream_id: stream.into(),
                expected: ExpectedVersion::Any,
                events: vec![event(n + 1)],
            }])
            .await
            .unwrap();
    }
    path
}

async fn verify(path: &std::path::Path) -> orderlog_replay::VerifyReport {
    verify_chains(&SqliteStore::open(path).unwrap()).await.unwrap()
}

fn tamper(path: &std::path::Path, sql: &str) {
    rusqlite::Connection::open(path).unwrap().execute_batch(sql).unwrap();
}

#[tokio::test]
async fn an_untouched_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = log(&dir).await;
    let report = verify(&path).await;
    assert_eq!((report.events, report.streams, report.first_broken), (6, 2, None));
}

#[tokio::test]
async fn a_changed_payload_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = log(&dir).await;
    tamper(&path, r#"UPDATE events SET payload = '{"quantity":999}' WHERE position = 3"#);
    let broken = verify(&path).await.first_broken.unwrap();
    assert_eq!((broken.position, broken.stream_id.as_str(), broken.version), (3, "stock-a@x", 2));
    assert!(broken.reason.contains("hash"), "{}", broken.reason);
}

#[tokio::test]
async fn a_changed_actor_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = log(&dir).await;
    tamper(
        &path,
        r#"UPDATE events SET metadata = replace(metadata, '"actor":"t"', '"actor":"mallory"') WHERE position = 2"#,
    );
    assert_eq!(verify(&path).await.first_broken.unwrap().position, 2);
}

#[tokio::test]
async fn an_event_removed_from_a_stream_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = log(&dir).await;
    tamper(&path, "DELETE FROM events WHERE position = 3");
    let broken = verify(&path).await.first_broken.unwrap();
    assert_eq!(broken.position, 3);
    assert!(broken.reason.contains("deleted"), "{}", broken.reason);
}

#[tokio::test]
async fn swapped_events_of_a_stream_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = log(&dir).await;
    tamper(
        &path,
        "UPDATE events SET payload = CASE position WHEN 1 THEN (SELECT payload FROM events WHERE position = 3)
                                                  WHEN 3 THEN (SELECT payload FROM events WHERE position = 1) END
         WHERE position IN (1, 3)",
    );
    assert_eq!(verify(&path).await.first_broken.unwrap().position, 1);
}

/// An event that belongs to no commit, with a hash that follows its stream — as a forger
/// who knows the hash function would write it.
fn forged(stream_id: &str, version: u64, prev_hash: &str, position: u64) -> orderlog_store::RecordedEvent {
    let mut e = orderlog_store::RecordedEvent {
        position,
        commit: position,
        stream_id: stream_id.into(),
        version,
        event_id: uuid::Uuid::new_v4(),
        event_type: "StockReceived".into(),
        schema_version: 1,
        payload: r#"{"quantity":500}"#.into(),
        metadata: Metadata {
            actor: "t".into(),
            command_id: "forged".into(),
            correlation_id: "t".into(),
            ..Metadata::default()
        },
        recorded_at: chrono::DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z").unwrap().with_timezone(&Utc),
        hash: String::new(),
    };
    e.hash = orderlog_store::hash::event_hash(prev_hash, &e);
    e
}

#[tokio::test]
async fn the_last_event_deleted_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = log(&dir).await;
    tamper(&path, "DELETE FROM events WHERE position = 6");
    let broken = verify(&path).await.first_broken.unwrap();
    assert_eq!(broken.position, 6);
    assert!(broken.reason.contains("the log ends before") && broken.reason.contains("deleted"), "{}", broken.reason);
}

#[tokio::test]
async fn an_inserted_event_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = log(&dir).await;
    let e = forged("stock-c@x", 1, orderlog_store::hash::GENESIS, 7);
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "INSERT INTO events (position, stream_id, version, event_id, event_type, schema_version, payload, metadata,
                                 command_id, recorded_at, hash)
             VALUES (7, ?1, 1, ?2, 'StockReceived', 1, ?3, ?4, 'forged', ?5, ?6)",
            rusqlite::params![
                e.stream_id,
                e.event_id.to_string(),
                e.payload,
                serde_json::to_string(&e.metadata).unwrap(),
                orderlog_store::hash::format_time(&e.recorded_at),
                e.hash
            ],
        )
        .unwrap();
    let broken = verify(&path).await.first_broken.unwrap();
    assert_eq!(broken.position, 7);
    assert!(broken.reason.contains("inserted"), "{}", broken.reason);
}

#[tokio::test]
async fn events_moved_across_streams_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = log(&dir).await;
    // Position 2 is stock-b v1, position 3 stock-a v2: swapped, every stream's chain holds.
    tamper(
        &path,
        "UPDATE events SET position = -position WHERE position IN (2, 3);
         UPDATE events SET position = CASE position WHEN -2 THEN 3 ELSE 2 END WHERE position IN (-2, -3);",
    );
    let broken = verify(&path).await.first_broken.unwrap();
    assert_eq!(broken.position, 2);
    assert!(broken.reason.contains("moved"), "{}", broken.reason);
}

mod postgres {
    use super::*;
    use orderlog_store::postgres::testing::TestDatabase;
    use orderlog_store::PostgresStore;

    async fn pg_log() -> TestDatabase {
        let db = TestDatabase::create().await;
        let store = PostgresStore::connect_url(&db.url).await.unwrap();
        for n in 0..6 {
            let stream = if n % 2 == 0 { "stock-a@x" } else { "stock-b@x" };
            let append =
                StreamAppend { stream_id: stream.into(), expected: ExpectedVersion::Any, events: vec![event(n + 1)] };
            store.append(vec![append]).await.unwrap();
        }
        db
    }

    async fn tamper(db: &TestDatabase, sql: &str) {
        let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client.batch_execute(sql).await.unwrap();
    }

    async fn verify(db: &TestDatabase) -> orderlog_replay::VerifyReport {
        let store = PostgresStore::connect_url(&db.url).await.unwrap();
        assert!(store.settle(std::time::Duration::from_secs(30)).await.unwrap());
        verify_chains(&store).await.unwrap()
    }

    #[tokio::test]
    async fn each_way_of_tampering_is_found() {
        let untouched = pg_log().await;
        assert_eq!(verify(&untouched).await.first_broken, None);
        let e = forged("stock-c@x", 1, orderlog_store::hash::GENESIS, 7);
        let insert = format!(
            "INSERT INTO orderlog_events (position, stream_id, version, event_id, event_type, schema_version, payload,
                                          metadata, command_id, recorded_at, hash)
             VALUES (7, '{}', 1, '{}', 'StockReceived', 1, '{}', '{}', 'forged', '{}', '{}')",
            e.stream_id,
            e.event_id,
            e.payload,
            serde_json::to_string(&e.metadata).unwrap(),
            orderlog_store::hash::format_time(&e.recorded_at),
            e.hash
        );
        let cases: Vec<(String, u64, &str)> = vec![
            (r#"UPDATE orderlog_events SET payload = '{"quantity":999}' WHERE position = 3"#.into(), 3, "hash"),
            ("DELETE FROM orderlog_events WHERE position = 3".into(), 3, "deleted"),
            ("DELETE FROM orderlog_events WHERE position = 6".into(), 6, "deleted"),
            (insert, 7, "inserted"),
            (
                "UPDATE orderlog_events SET position = -position WHERE position IN (2, 3);
                 UPDATE orderlog_events SET position = CASE position WHEN -2 THEN 3 ELSE 2 END WHERE position IN (-2, -3);"
                    .into(),
                2,
                "moved",
            ),
        ];
        let extra = r#"UPDATE orderlog_events SET metadata = metadata || '{"admin": true}' WHERE position = 2"#;
        let command = "UPDATE orderlog_events SET command_id = 'someone-else' WHERE position = 4";
        let cases: Vec<(String, u64, &str)> = cases
            .into_iter()
            .chain([(extra.to_string(), 2, "metadata"), (command.to_string(), 4, "command id")])
            .collect();
        for (sql, position, says) in cases {
            let db = pg_log().await;
            tamper(&db, &sql).await;
            let broken = verify(&db).await.first_broken.unwrap_or_else(|| panic!("not found: {sql}"));
            assert_eq!(broken.position, position, "{sql}: {}", broken.reason);
            assert!(broken.reason.contains(says), "{sql}: {}", broken.reason);
        }
    }
}

#[tokio::test]
async fn verifying_from_a_position_checks_the_rest_and_finds_what_is_broken_there() {
    let dir = tempfile::tempdir().unwrap();
    let path = log(&dir).await;
    let store = SqliteStore::open(&path).unwrap();
    let quiet = &mut orderlog_replay::progress::Progress::quiet();
    let from4 = orderlog_replay::verify_log(&store, Some(4), quiet).await.unwrap();
    assert_eq!((from4.events, from4.first_broken), (3, None), "positions 4, 5 and 6");
    drop(store);
    tamper(&path, "DELETE FROM events WHERE position = 6");
    let store = SqliteStore::open(&path).unwrap();
    let broken = orderlog_replay::verify_log(&store, Some(5), quiet).await.unwrap().first_broken.unwrap();
    assert_eq!(broken.position, 6);
    let error = orderlog_replay::verify_log(&store, Some(60), quiet).await.unwrap_err();
    assert!(error.to_string().contains("--from: no recorded event at position 60"), "{error}");
}

/// Edits the hash does not see were passed by verify: an extra metadata field, a
/// re-encoded time, an upper-case event id, an indexed command id that is not the hashed
/// one, and a stream head moved past its last event (after which every append to the
/// stream failed with "gave up after 16 retries").
#[tokio::test]
async fn bytes_the_hash_does_not_cover_and_stale_heads_are_found() {
    let cases = [
        (
            r#"UPDATE events SET metadata = substr(metadata, 1, length(metadata) - 1) || ',"admin":true}' WHERE position = 2"#,
            2,
            "metadata",
        ),
        ("UPDATE events SET recorded_at = replace(recorded_at, 'Z', '+00:00') WHERE position = 3", 3, "time"),
        ("UPDATE events SET event_id = upper(event_id) WHERE position = 4", 4, "event id"),
        ("UPDATE events SET command_id = 'someone-else' WHERE position = 5", 5, "command id"),
    ];
    for (sql, position, says) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = log(&dir).await;
        tamper(&path, sql);
        let broken = verify(&path).await.first_broken.unwrap_or_else(|| panic!("not found: {sql}"));
        assert_eq!(broken.position, position, "{sql}: {}", broken.reason);
        assert!(broken.reason.contains(says), "{sql}: {}", broken.reason);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = log(&dir).await;
    tamper(&path, "UPDATE streams SET version = version + 1 WHERE stream_id = 'stock-b@x'");
    let broken = verify(&path).await.first_broken.expect("a stale head is found");
    assert_eq!(broken.stream_id, "stock-b@x");
    assert!(broken.reason.contains("recorded head is version 4 but its last event is version 3"), "{}", broken.reason);
    let dir = tempfile::tempdir().unwrap();
    let path = log(&dir).await;
    tamper(&path, "DELETE FROM streams WHERE stream_id = 'stock-a@x'");
    let broken = verify(&path).await.first_broken.expect("a missing head is found");
    assert!(broken.reason.contains("no recorded head"), "{}", broken.reason);
}
