//! Rebuilding the read models from a large log, against the raw rate of scanning the same
//! log, in one run: a log is written — half stock events (100-event appends over 5 000 stock
//! items), half order lifecycles (placed, authorized, confirmed, captured, shipped,
//! delivered, completed; one append per order) — then read end to end through the store
//! twice (the second is the raw scan; the first warms the caches), then folded into each
//! table model from an empty checkpoint (the rebuild).
//!
//! `cargo bench --bench rebuild [-- EVENTS [sqlite|postgres]]` (default 1 000 000, sqlite);
//! `ORDERLOG_BENCH_KEEP_EXPORT=PATH` keeps a copy of the exported file there (to time
//! `orderlog import` on it alone).

#[path = "support/connection.rs"]
mod connection;
#[path = "support/log.rs"]
mod log;
use log::fill;

// The allocator of the `orderlog` binary, so the figures are those of the CLI.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::Instant;

use orderlog_projections::inventory::{InventoryTable, INVENTORY_VIEWS_POSTGRES, INVENTORY_VIEWS_SQLITE};
use orderlog_projections::orders::{OrderStatusTable, ORDER_VIEWS_POSTGRES, ORDER_VIEWS_SQLITE};
use orderlog_projections::postgres::PostgresRows;
use orderlog_projections::sqlite::SqliteRows;
use orderlog_projections::table::{RowStore, Runner, TableModel};
use orderlog_store::postgres::testing::TestDatabase;
use orderlog_store::{EventStore, LogCursor, PostgresStore, SqliteStore, TreeStore, READ_EVENTS_MAX};

/// Events per second of reading the whole log through the store.
async fn scan(log: &dyn EventStore) -> (u64, f64) {
    let started = Instant::now();
    let mut cursor = LogCursor::START;
    let mut count = 0u64;
    loop {
        let page = log.read_all(cursor, READ_EVENTS_MAX).await.unwrap();
        let Some(last) = page.last() else { break };
        cursor = LogCursor::after(last);
        count += page.len() as u64;
    }
    (count, count as f64 / started.elapsed().as_secs_f64())
}

/// Folds the whole log into model `M` from an empty checkpoint and prints its rate.
async fn rebuild<M: TableModel>(log: Arc<dyn EventStore>, rows: Arc<dyn RowStore>, scanned: u64, raw: f64) {
    let started = Instant::now();
    let checkpoint = Runner::<M>::new(log, rows).with_batch_events_max(READ_EVENTS_MAX).catch_up().await.unwrap();
    let rate = checkpoint.events as f64 / started.elapsed().as_secs_f64();
    assert_eq!(checkpoint.events, scanned);
    println!("{:<30}{rate:>10.0} events/s   ratio {:.2}", format!("{} rebuild:", M::NAME), rate / raw);
}

/// `verify`, `export` and `import` over the same log, against the same raw scan.
async fn history_tools(log: &dyn EventStore, scanned: u64, raw: f64, postgres: bool, dir: &std::path::Path) {
    use orderlog_replay::archive::{export, import, ExportFilter};
    use orderlog_replay::progress::Progress;
    let line = |name: &str, rate: f64| println!("{:<30}{rate:>10.0} events/s   ratio {:.2}", name, rate / raw);
    let started = Instant::now();
    let report = orderlog_replay::verify_chains(log).await.unwrap();
    assert!(report.first_broken.is_none());
    line("verify:", report.events as f64 / started.elapsed().as_secs_f64());
    // What `checkpoint` and `verify --against` compute: the Merkle tree of the whole log.
    let started = Instant::now();
    let (tree, _) = orderlog_replay::checkpoint::tree_of(log).await.unwrap();
    assert_eq!(tree.size(), scanned);
    line("merkle tree (verify --against):", scanned as f64 / started.elapsed().as_secs_f64());
    // Inclusion proofs from the tree in memory, at leaves spread over the log.
    let mut took: Vec<std::time::Duration> = (0..10_000u64)
        .map(|i| {
            let leaf = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % scanned;
            let started = Instant::now();
            let proof = tree.inclusion_proof(leaf, scanned).unwrap();
            let took = started.elapsed();
            assert!(!proof.is_empty() || scanned == 1);
            took
        })
        .collect();
    took.sort_unstable();
    println!(
        "inclusion proof (in process):  p50 {:.1} µs, p99 {:.1} µs",
        took[took.len() / 2].as_secs_f64() * 1e6,
        took[took.len() * 99 / 100].as_secs_f64() * 1e6
    );
    let file = dir.join("export.ndjson");
    let started = Instant::now();
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    let written = export(log, &mut out, &ExportFilter::default(), &mut Progress::quiet()).await.unwrap();
    drop(out);
    assert_eq!(written, scanned);
    line("export (to a file):", written as f64 / started.elapsed().as_secs_f64());
    if let Ok(keep) = std::env::var("ORDERLOG_BENCH_KEEP_EXPORT") {
        std::fs::copy(&file, keep).unwrap();
    }
    let target_db;
    let target: Box<dyn orderlog_store::BulkLoad> = if postgres {
        target_db = Some(TestDatabase::create().await);
        Box::new(PostgresStore::connect_url(&target_db.as_ref().unwrap().url).await.unwrap())
    } else {
        target_db = None;
        Box::new(SqliteStore::open(dir.join("imported.db")).unwrap())
    };
    let path = file.clone();
    let open = move || -> Result<Box<dyn std::io::BufRead + Send>, orderlog_replay::ReplayError> {
        Ok(Box::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap())))
    };
    let started = Instant::now();
    let checked = orderlog_replay::archive::verify_file(&mut *open().unwrap(), &mut Progress::quiet()).unwrap();
    line("  of which verifying the file:", checked as f64 / started.elapsed().as_secs_f64());
    // What the export and the earlier phases wrote reaches the disk before the import is
    // timed, so the import's own fsyncs do not wait for it (as the PostgreSQL bench takes a
    // checkpoint before each measurement).
    quiesce();
    let started = Instant::now();
    let imported = import(&*target, &open, &mut Progress::quiet(), &mut Progress::quiet()).await.unwrap();
    assert_eq!(imported, scanned);
    line("import (verify, then load):", imported as f64 / started.elapsed().as_secs_f64());
    drop(target);
    drop(target_db);
}

fn percentiles(mut took: Vec<std::time::Duration>) -> String {
    took.sort_unstable();
    let at = |p: usize| took[(took.len() * p / 100).min(took.len() - 1)].as_secs_f64() * 1e3;
    format!("p50 {:.3} ms, p99 {:.3} ms", at(50), at(99))
}

/// The stored Merkle tree: built from the whole log (what the first proof or `orderlog
/// serve` does on a log from before the tree), then inclusion proofs read from it at 10 000
/// events spread over the log — in process, and over HTTP from `orderlog serve`.
async fn stored_tree(log: Arc<dyn TreeStore>, database: &str, scanned: u64, raw: f64) {
    use orderlog_replay::checkpoint::TreeFollower;
    let follower = TreeFollower::new(log.clone());
    let started = Instant::now();
    assert_eq!(follower.extend().await.unwrap(), scanned);
    let rate = scanned as f64 / started.elapsed().as_secs_f64();
    println!("{:<30}{rate:>10.0} events/s   ratio {:.2}", "stored tree built:", rate / raw);
    let (_, positions) = orderlog_replay::checkpoint::tree_of(&*log).await.unwrap();
    // On PostgreSQL the million rows just written are vacuumed and analyzed and a checkpoint
    // taken before proofs are timed, as the append bench does before each measurement, so
    // that autovacuum's pass over them does not land in the figures.
    if database.starts_with("postgres") {
        let (client, connection) = tokio_postgres::connect(database, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        for statement in ["VACUUM ANALYZE orderlog_tree_leaves", "VACUUM ANALYZE orderlog_tree_nodes", "CHECKPOINT"] {
            client.batch_execute(statement).await.unwrap();
        }
    }
    let spread = |i: u64| positions[(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % scanned) as usize];
    let mut took = Vec::new();
    for i in 0..10_000u64 {
        let started = Instant::now();
        let proof = follower.inclusion(spread(i), None).await.unwrap();
        took.push(started.elapsed());
        assert_eq!(proof.size, scanned);
    }
    println!("inclusion proof, stored tree, in process: {}", percentiles(took));
    // Over HTTP: the release binary serving this database, one keep-alive connection.
    let bin = env!("CARGO_BIN_EXE_orderlog");
    let made = std::process::Command::new(bin)
        .args(["token", "create", "--database", database, "--principal", "bench", "--scopes", "audit"])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let token = String::from_utf8(made.stdout).unwrap().trim().to_string();
    let mut child = std::process::Command::new(bin)
        .args(["serve", "--database", database, "--listen", "127.0.0.1:0", "--no-projectors"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    let address = line.trim().strip_prefix("listening on http://").unwrap().to_string();
    let mut c = connection::Connection::open(&address, &token).await;
    let mut took = Vec::new();
    for i in 0..10_000u64 {
        let started = Instant::now();
        let (status, body) = c.request("GET", &format!("/proofs/inclusion?position={}", spread(i)), None).await;
        took.push(started.elapsed());
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    println!("inclusion proof over HTTP (orderlog serve): {}", percentiles(took));
    let _ = child.kill();
    let _ = child.wait();
}

/// Flushes every dirty page of the machine to disk (`sync`).
fn quiesce() {
    let status = std::process::Command::new("sync").status().expect("run sync");
    assert!(status.success(), "sync failed");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let events: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let postgres = args.get(1).is_some_and(|b| b == "postgres");
    // `RUST_LOG=orderlog_store=debug` shows the phases of the import's bulk load.
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut db = None;
        let database;
        let (log, rows): (Arc<dyn TreeStore>, Arc<dyn RowStore>) = if postgres {
            let test_db = TestDatabase::create().await;
            database = test_db.url.clone();
            let log = Arc::new(PostgresStore::connect_url(&test_db.url).await.unwrap());
            let views = [INVENTORY_VIEWS_POSTGRES, ORDER_VIEWS_POSTGRES].concat();
            let rows = Arc::new(PostgresRows::connect(&test_db.url, &views).await.unwrap());
            db = Some(test_db);
            (log, rows)
        } else {
            let path = dir.path().join("orderlog.db");
            database = path.to_str().unwrap().to_string();
            let log = Arc::new(SqliteStore::open(&path).unwrap());
            let views = [INVENTORY_VIEWS_SQLITE, ORDER_VIEWS_SQLITE].concat();
            (log, Arc::new(SqliteRows::open(&path, &views).unwrap()))
        };
        fill(&*log, events).await;
        assert!(log.settle(std::time::Duration::from_secs(60)).await.unwrap());
        // A first scan warms the caches, so that neither measurement pays for it.
        scan(&*log).await;
        let (scanned, raw) = scan(&*log).await;
        let backend = if postgres { "PostgreSQL" } else { "SQLite" };
        println!("{backend}, {scanned} events");
        println!("raw scan through the store:   {raw:>10.0} events/s");
        rebuild::<InventoryTable>(log.clone(), rows.clone(), scanned, raw).await;
        rebuild::<OrderStatusTable>(log.clone(), rows, scanned, raw).await;
        history_tools(&*log, scanned, raw, postgres, dir.path()).await;
        stored_tree(log.clone(), &database, scanned, raw).await;
        drop(db);
    });
}
