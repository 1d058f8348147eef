//! The demo's throughput against the raw commit rate of SQLite on the same machine, in one
//! run: first a plain one-row `INSERT` + `COMMIT` loop (WAL, `synchronous=FULL`, a row of
//! an event's size) for a few seconds, then `orderlog demo --json` on a fresh file.
//!
//! `cargo bench --bench demo [-- ORDERS [SHOPPERS]]`

use std::process::Command;
use std::time::{Duration, Instant};

const RAW_SECONDS: u64 = 5;

fn raw_commits_per_second(dir: &tempfile::TempDir) -> f64 {
    let conn = rusqlite::Connection::open(dir.path().join("raw.db")).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn.execute_batch("CREATE TABLE raw (position INTEGER PRIMARY KEY, stream_id TEXT, event_id TEXT UNIQUE, payload TEXT, metadata TEXT, hash TEXT)").unwrap();
    let payload =
        r#"{"order_id":"h0-s1-o17","quantity":2,"sku":"tshirt-1","unit_price":{"amount":2499,"currency":"EUR"}}"#;
    let metadata = r#"{"actor":"shopper-1","command_id":"h0-s1-42","command_hash":"0000000000000000000000000000000000000000000000000000000000000000","correlation_id":"h0-s1-42"}"#;
    let start = Instant::now();
    let mut commits = 0u64;
    while start.elapsed() < Duration::from_secs(RAW_SECONDS) {
        conn.execute(
            "INSERT INTO raw (stream_id, event_id, payload, metadata, hash) VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![
                "stock-tshirt-1@berlin",
                uuid::Uuid::new_v4().to_string(),
                payload,
                metadata,
                "0".repeat(64)
            ],
        )
        .unwrap();
        commits += 1;
    }
    commits as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let orders = args.first().cloned().unwrap_or_else(|| "2000".into());
    let shoppers = args.get(1).cloned().unwrap_or_else(|| "8".into());
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_commits_per_second(&dir);
    let db = dir.path().join("demo.db");
    let out = Command::new(env!("CARGO_BIN_EXE_orderlog"))
        .args(["demo", "--json", "--orders", &orders, "--shoppers", &shoppers, "--database"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success(), "demo failed: {}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let events_per_sec = summary["events_per_sec"].as_f64().unwrap();
    println!("raw SQLite one-row commits/s:   {raw:>10.0}");
    println!("orderlog demo events/s:         {events_per_sec:>10.0}   ({} events, {} commands, {} ms, {orders} orders, {shoppers} shoppers)",
        summary["events_appended"], summary["commands"], summary["elapsed_ms"]);
    println!("ratio demo events/s ÷ raw:      {:>10.2}", events_per_sec / raw);
    println!("oversold units:                 {:>10}", summary["oversold_units"]);
}
