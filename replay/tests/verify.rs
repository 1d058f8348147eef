//! Tampering with SQLite rows directly is found and named.

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
    assert_eq!(broken.position, 5);
    assert!(broken.reason.contains("version 3 follows version 1"), "{}", broken.reason);
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
