//! Append throughput of the SQLite store against the raw limit of the same file setup:
//! a plain `INSERT` + `COMMIT` of a row of the same size, in WAL mode with
//! `synchronous=FULL`, measured in the same run.
//!
//! `cargo bench --bench append`

#[path = "support/events.rs"]
mod events;
use events::{event, PAYLOAD};

// The allocator of the `orderlog` binary, so the figures are those of the CLI.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use orderlog_store::{EventStore, ExpectedVersion, SqliteStore, StreamAppend};
use uuid::Uuid;

fn append(stream: String, events: usize) -> Vec<StreamAppend> {
    vec![StreamAppend {
        stream_id: stream,
        expected: ExpectedVersion::Any,
        events: (0..events).map(|_| event()).collect(),
    }]
}

/// The raw limit: one row per transaction (or `rows` rows), same size, same pragmas.
fn raw_inserts(conn: &mut rusqlite::Connection, transactions: u64, rows: usize) {
    let metadata = serde_json::to_string(&event().metadata).unwrap();
    for _ in 0..transactions {
        let tx = conn.transaction().unwrap();
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO raw (stream_id, event_id, event_type, payload, metadata, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .unwrap();
            for _ in 0..rows {
                stmt.execute(rusqlite::params![
                    "stock-tshirt-1@berlin",
                    Uuid::new_v4().to_string(),
                    "StockReserved",
                    PAYLOAD,
                    metadata,
                    "0".repeat(64)
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }
}

fn raw_connection(dir: &tempfile::TempDir) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(dir.path().join("raw.db")).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn.execute_batch(
        "CREATE TABLE raw (position INTEGER PRIMARY KEY, stream_id TEXT, event_id TEXT UNIQUE, event_type TEXT, payload TEXT, metadata TEXT, hash TEXT)",
    )
    .unwrap();
    conn
}

fn appends(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut group = c.benchmark_group("sqlite_append");
    group.sample_size(10).measurement_time(Duration::from_secs(8));

    group.throughput(Throughput::Elements(1));
    group.bench_function("raw_insert_commit/1_row", |b| {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = raw_connection(&dir);
        b.iter_custom(|iters| {
            let start = Instant::now();
            raw_inserts(&mut conn, iters, 1);
            start.elapsed()
        })
    });

    for writers in [1usize, 16, 64] {
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(
            BenchmarkId::new("orderlog/1_event_per_append", format!("{writers}_writers")),
            &writers,
            |b, &writers| {
                let dir = tempfile::tempdir().unwrap();
                let store = Arc::new(SqliteStore::open(dir.path().join("orderlog.db")).unwrap());
                b.to_async(&rt).iter_custom(|iters| {
                    let store = Arc::clone(&store);
                    async move {
                        let per_writer = iters.div_ceil(writers as u64);
                        let start = Instant::now();
                        let tasks: Vec<_> = (0..writers)
                            .map(|w| {
                                let store = Arc::clone(&store);
                                tokio::spawn(async move {
                                    for _ in 0..per_writer {
                                        store.append(append(format!("stock-w{w}"), 1)).await.unwrap();
                                    }
                                })
                            })
                            .collect();
                        for t in tasks {
                            t.await.unwrap();
                        }
                        start.elapsed().mul_f64(iters as f64 / (per_writer * writers as u64) as f64)
                    }
                })
            },
        );
    }

    group.throughput(Throughput::Elements(100));
    group.bench_function("raw_insert_commit/100_rows", |b| {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = raw_connection(&dir);
        b.iter_custom(|iters| {
            let start = Instant::now();
            raw_inserts(&mut conn, iters, 100);
            start.elapsed()
        })
    });
    group.bench_function("orderlog/100_event_batch", |b| {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("orderlog.db")).unwrap();
        b.to_async(&rt).iter(|| async { store.append(append("stock-batch".into(), 100)).await.unwrap() })
    });
    group.finish();
}

criterion_group!(benches, appends);
criterion_main!(benches);
