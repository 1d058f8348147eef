//! SQLite-specific behaviour: what the file must be, migrations, and crash safety.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use orderlog_store::conformance::event;
use orderlog_store::hash::verify_stream;
use orderlog_store::sqlite::MIGRATIONS;
use orderlog_store::{EventStore, ExpectedVersion, SqliteStore, StoreError, StreamAppend};

fn append_one(stream: &str, expected: ExpectedVersion) -> Vec<StreamAppend> {
    vec![StreamAppend { stream_id: stream.into(), expected, events: vec![event("T", "{}")] }]
}

#[test]
fn a_file_that_is_not_a_database_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    let content = b"these are my notes, not a database\n".repeat(10);
    std::fs::write(&path, &content).unwrap();
    let err = SqliteStore::open(&path).err().expect("refused");
    assert!(matches!(err, StoreError::NotOrderlog { .. }), "{err}");
    assert!(err.to_string().contains("not a SQLite database"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), content);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no -wal or -shm files were created");
}

#[test]
fn a_sqlite_database_of_another_application_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE customers (name TEXT); INSERT INTO customers VALUES ('ann');").unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let err = SqliteStore::open(&path).err().expect("refused");
    assert!(err.to_string().contains("another application"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = SqliteStore::open(dir.path()).err().expect("refused");
    assert!(err.to_string().contains("directory"), "{err}");
}

#[tokio::test]
async fn a_newer_schema_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orderlog.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        store.append(append_one("s", ExpectedVersion::NoStream)).await.unwrap();
    }
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute("INSERT INTO orderlog_migrations (version, name, checksum) VALUES (999, 'future', 'x')", [])
            .unwrap();
        conn.pragma_update(None, "wal_checkpoint", "TRUNCATE").unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let err = SqliteStore::open(&path).err().expect("refused");
    assert!(matches!(err, StoreError::SchemaTooNew { found: 999, .. }), "{err}");
    assert!(err.to_string().contains("newer"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[tokio::test]
async fn migrating_twice_is_a_no_op_and_data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orderlog.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.applied_migrations().len(), MIGRATIONS.len());
        store.append(append_one("s", ExpectedVersion::NoStream)).await.unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert!(store.applied_migrations().is_empty());
    assert_eq!(store.head().await.unwrap(), 1);
    store.append(append_one("s", ExpectedVersion::Exact(1))).await.unwrap();
    assert_eq!(store.stream_version("s").await.unwrap(), 2);
}

#[test]
fn a_changed_applied_migration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orderlog.db");
    drop(SqliteStore::open(&path).unwrap());
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute("UPDATE orderlog_migrations SET checksum = 'edited' WHERE version = 1", []).unwrap();
    }
    let err = SqliteStore::open(&path).err().expect("refused");
    assert!(matches!(err, StoreError::MigrationChanged { version: 1, .. }), "{err}");
}

/// The child side of `acknowledged_appends_survive_a_killed_process`: appends one event at
/// a time and prints each acknowledged version, until it is killed.
#[tokio::test]
#[ignore = "helper process, started by acknowledged_appends_survive_a_killed_process"]
async fn crash_child() {
    let path = std::env::var("ORDERLOG_CRASH_DB").expect("run by the crash test");
    let store = SqliteStore::open(&path).unwrap();
    let mut stdout = std::io::stdout();
    for version in 0..1_000_000u64 {
        store.append(append_one("crash", ExpectedVersion::Exact(version))).await.unwrap();
        writeln!(stdout, "acked {}", version + 1).unwrap();
        stdout.flush().unwrap();
    }
}

#[tokio::test]
async fn acknowledged_appends_survive_a_killed_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orderlog.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "crash_child", "--nocapture", "--test-threads", "1"])
        .env("ORDERLOG_CRASH_DB", &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = 0u64;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(v) = line.strip_prefix("acked ") {
            acked = v.parse().unwrap();
            if acked >= 300 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no flush, no checkpoint
    child.wait().unwrap();
    assert!(acked >= 300, "the child acknowledged appends before it was killed");
    let store = SqliteStore::open(&path).unwrap();
    let version = store.stream_version("crash").await.unwrap();
    assert!(version >= acked, "acknowledged {acked}, found {version}");
    let events = store.read_stream("crash", 1, 10_000).await.unwrap();
    assert_eq!(events.len() as u64, version);
    assert!(verify_stream(&events).is_ok(), "the stream's hash chain is intact");
    store.append(append_one("crash", ExpectedVersion::Exact(version))).await.unwrap();
}
