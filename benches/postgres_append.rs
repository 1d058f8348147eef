//! PostgreSQL appends against the server's raw limit, in one run on a fresh database:
//! a plain one-row `INSERT` (autocommit) of an event-sized row from N connections, then
//! orderlog appends of one event per transaction from N writers on distinct streams, for N
//! = 1, 16, 64; then 100-event batches against a 100-row `INSERT` in one transaction.
//!
//! Before each measurement both tables are vacuumed and analyzed and a checkpoint is taken,
//! so neither side pays for the other's autovacuum or checkpoint.
//!
//! `cargo bench --bench postgres_append [-- SECONDS]` (server: `ORDERLOG_TEST_POSTGRES`,
//! default postgres://postgres@127.0.0.1:5432/postgres). `ORDERLOG_BENCH_APPEND_CALLS=N`
//! sets `append_calls_max`; `ORDERLOG_BENCH_SETUP_SQL` runs SQL on the fresh database before
//! measuring (experiments: what an index costs, say); `ORDERLOG_BENCH_ROUNDS=N` measures each
//! workload N times, raw and orderlog in turn, and prints the median;
//! `ORDERLOG_BENCH_ONLY=single|batch` measures only the one-event or the 100-event workloads;
//! `ORDERLOG_BENCH_WRITERS=16,64` sets the writer counts of the one-event workloads.

#[path = "support/events.rs"]
mod events;
use events::{event, metadata, one_event_appends, HASH, PAYLOAD};

// The allocator of the `orderlog` binary, so the figures are those of the CLI.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use orderlog_store::postgres::testing::TestDatabase;
use orderlog_store::{EventStore, ExpectedVersion, PostgresStore, StreamAppend};
use tokio_postgres::NoTls;
use uuid::Uuid;

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// Rows per second of a one-row autocommit `INSERT` from `clients` connections.
async fn raw_single_rows(url: &str, clients: usize, run: Duration) -> f64 {
    let mut tasks = Vec::new();
    let start = Instant::now();
    for _ in 0..clients {
        let client = connect(url).await;
        tasks.push(tokio::spawn(async move {
            let insert = client
                .prepare(
                    "INSERT INTO raw_events (stream_id, version, event_id, event_type, schema_version, payload, metadata, command_id, recorded_at, hash)
                     VALUES ($1, 1, $2, 'StockReserved', 1, $3, $4::text::jsonb, $5, now(), $6)",
                )
                .await
                .unwrap();
            let mut rows = 0u64;
            while start.elapsed() < run {
                let meta = serde_json::to_string(&metadata()).unwrap();
                let id = Uuid::new_v4();
                client.execute(&insert, &[&"stock-tshirt-1@berlin", &id, &PAYLOAD, &meta, &id.to_string(), &HASH]).await.unwrap();
                rows += 1;
            }
            rows
        }));
    }
    let mut rows = 0;
    for t in tasks {
        rows += t.await.unwrap();
    }
    rows as f64 / start.elapsed().as_secs_f64()
}

/// Milliseconds per 100-row `INSERT` committed in one transaction.
async fn raw_batches(url: &str, run: Duration) -> f64 {
    let mut client = connect(url).await;
    let start = Instant::now();
    let mut batches = 0u64;
    while start.elapsed() < run {
        let tx = client.transaction().await.unwrap();
        let ids: Vec<Uuid> = (0..100).map(|_| Uuid::new_v4()).collect();
        let metas: Vec<String> = (0..100).map(|_| serde_json::to_string(&metadata()).unwrap()).collect();
        tx.execute(
            "INSERT INTO raw_events (stream_id, version, event_id, event_type, schema_version, payload, metadata, command_id, recorded_at, hash)
             SELECT 'stock-batch', 1, id, 'StockReserved', 1, $2, m::jsonb, id::text, now(), $3
             FROM UNNEST($1::uuid[], $4::text[]) AS u(id, m)",
            &[&ids, &PAYLOAD, &HASH, &metas],
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        batches += 1;
    }
    start.elapsed().as_secs_f64() * 1_000.0 / batches as f64
}

/// Events per second of one-event appends from `writers` tasks on distinct streams.
/// Milliseconds per 100-event append.
async fn orderlog_batches(store: &PostgresStore, run: Duration) -> f64 {
    let start = Instant::now();
    let mut batches = 0u64;
    while start.elapsed() < run {
        let events = (0..100).map(|_| event()).collect();
        store
            .append(vec![StreamAppend {
                stream_id: "stock-batch@berlin".into(),
                expected: ExpectedVersion::Any,
                events,
            }])
            .await
            .unwrap();
        batches += 1;
    }
    start.elapsed().as_secs_f64() * 1_000.0 / batches as f64
}

/// Starts every measurement from the same state: the tables vacuumed and analyzed and a
/// checkpoint taken, so that neither side pays for the other's autovacuum or checkpoint.
async fn quiesce(admin: &tokio_postgres::Client) {
    for statement in ["VACUUM ANALYZE orderlog_events", "VACUUM ANALYZE raw_events", "CHECKPOINT"] {
        admin.batch_execute(statement).await.unwrap();
    }
}

fn main() {
    let seconds: u64 =
        std::env::args().skip(1).find(|a| !a.starts_with("--")).and_then(|a| a.parse().ok()).unwrap_or(5);
    let run = Duration::from_secs(seconds);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let db = TestDatabase::create().await;
        let calls = std::env::var("ORDERLOG_BENCH_APPEND_CALLS")
            .unwrap_or_else(|_| orderlog_store::postgres::APPEND_CALLS_MAX_DEFAULT.to_string());
        let store =
            Arc::new(PostgresStore::connect_url(&db.url_with(&format!("pool_max_size=64&append_calls_max={calls}"))).await.unwrap());
        let admin = connect(&db.url).await;
        admin
            .batch_execute("CREATE TABLE raw_events (LIKE orderlog_events INCLUDING DEFAULTS); ALTER TABLE raw_events ADD PRIMARY KEY (position)")
            .await
            .unwrap();
        // For experiments: SQL run on the bench's database before measuring (say, dropping
        // an index to see what it costs).
        if let Ok(setup) = std::env::var("ORDERLOG_BENCH_SETUP_SQL") {
            admin.batch_execute(&setup).await.unwrap();
            println!("setup: {setup}");
        }
        println!("{seconds} s per measurement, database {}", db.name);
        println!("{:<36} {:>14} {:>14} {:>7}", "workload", "orderlog", "raw", "ratio");
        // `ORDERLOG_BENCH_ROUNDS=N`: each workload measured N times, raw and orderlog in turn,
        // with the median ratio (the machine's rate drifts between measurements).
        let rounds: usize = std::env::var("ORDERLOG_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(1);
        let median = |mut ratios: Vec<f64>| {
            ratios.sort_by(f64::total_cmp);
            ratios[ratios.len() / 2]
        };
        let only = std::env::var("ORDERLOG_BENCH_ONLY").unwrap_or_default();
        let writer_counts: Vec<usize> = match std::env::var("ORDERLOG_BENCH_WRITERS") {
            _ if only == "batch" => Vec::new(),
            Ok(list) => list.split(',').map(|n| n.trim().parse().expect("ORDERLOG_BENCH_WRITERS: numbers")).collect(),
            Err(_) => vec![1, 16, 64],
        };
        for (round, writers) in writer_counts.into_iter().enumerate() {
            let mut ratios = Vec::new();
            for repeat in 0..rounds {
                quiesce(&admin).await;
                let raw = raw_single_rows(&db.url, writers, run).await;
                quiesce(&admin).await;
                let ours = one_event_appends(store.clone(), writers, run, round * rounds + repeat).await;
                println!(
                    "{:<36} {:>10.0} ev/s {:>10.0} tx/s {:>7.2}",
                    format!("1 event per append, {writers} writers"),
                    ours,
                    raw,
                    ours / raw
                );
                ratios.push(ours / raw);
            }
            if rounds > 1 {
                println!("{:<36} {:>37.2}", format!("  median of {rounds}"), median(ratios));
            }
        }
        let batch_rounds = if only == "single" { 0 } else { rounds };
        let mut ratios = Vec::new();
        for _ in 0..batch_rounds {
            quiesce(&admin).await;
            let raw = raw_batches(&db.url, run).await;
            quiesce(&admin).await;
            let ours = orderlog_batches(&store, run).await;
            println!("{:<36} {:>11.2} ms {:>11.2} ms {:>7.2}", "100-event batch, 1 writer", ours, raw, raw / ours);
            ratios.push(ours);
        }
        if batch_rounds > 1 {
            println!("{:<36} {:>11.2} ms", format!("  median of {rounds}"), median(ratios));
        }
    });
}
