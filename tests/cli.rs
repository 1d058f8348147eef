//! The `orderlog` binary, run as a user runs it.

use std::process::{Command, Output};

fn orderlog(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orderlog")).args(args).output().expect("the binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn demo_json(db: &str) -> serde_json::Value {
    let out = orderlog(&["demo", "--database", db, "--orders", "150", "--shoppers", "4", "--seed", "7", "--json"]);
    assert!(out.status.success(), "demo failed: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn the_demo_run_twice_on_one_file_continues_the_history_and_never_oversells() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db");
    let db = db.to_str().unwrap();
    let first = demo_json(db);
    for field in ["events_appended", "orders_placed", "checkouts_rejected_out_of_stock", "oversold_units", "elapsed_ms"]
    {
        assert!(first.get(field).is_some(), "the JSON has {field}");
    }
    assert_eq!(first["oversold_units"], 0);
    assert!(first["orders_placed"].as_u64().unwrap() > 50);
    assert!(first["checkouts_rejected_out_of_stock"].as_u64().unwrap() >= 40, "the flash sale turns shoppers away");
    assert_eq!((first["flash_sale"]["winners"].as_u64(), first["flash_sale"]["paid"].as_u64()), (Some(10), Some(5)));
    assert_eq!(first["time_passed"]["flash_available_before"], 0);
    assert_eq!(first["time_passed"]["flash_available_after"], 5, "the unpaid winners' orders expired");
    let payments = &first["payments"];
    assert_eq!(payments["charged_without_order"], 0, "{payments}");
    assert_eq!(payments["double_charged"], 0, "{payments}");
    assert_eq!(payments["ledger_mismatches"], 0, "{payments}");
    assert!(payments["authorized"].as_u64().unwrap() > 0 && payments["declined"].as_u64().unwrap() > 0, "{payments}");
    let hooks = &first["webhooks"];
    assert!(hooks["delivered"].as_u64().unwrap() > 50, "{hooks}");
    assert_eq!(hooks["received"], hooks["delivered"]);
    assert_eq!(hooks["signatures_verified"], hooks["delivered"]);
    assert_eq!(hooks["by_type"]["order.placed"], first["orders_placed"]);
    assert_eq!(hooks["by_type"]["stock.low"], 1, "the flash sale left fewer than 3 once: {hooks}");
    assert_eq!(first["read_models"][0]["name"], "inventory_levels");
    assert_eq!(first["read_models"][0]["matches_log"], true);
    let second = demo_json(db);
    assert_eq!(second["oversold_units"], 0);
    assert_eq!(second["flash_sale"]["winners"], 15, "the first run's 5 expired units and 10 new are raced for");
    assert_eq!(second["read_models"][0]["matches_log"], true);
    let total = first["events_appended"].as_u64().unwrap() + second["events_appended"].as_u64().unwrap();
    assert_eq!(second["events_total"].as_u64().unwrap(), total, "the second run appends to the same log");
    assert_eq!(
        second["log"]["orders_placed"].as_u64().unwrap(),
        first["orders_placed"].as_u64().unwrap() + second["orders_placed"].as_u64().unwrap()
    );
}

#[test]
fn the_demo_prints_a_summary_for_people() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db");
    let out = orderlog(&["demo", "--database", db.to_str().unwrap(), "--orders", "40", "--shoppers", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in ["events appended", "orders placed", "oversold units", "flash sale", "Inventory"] {
        assert!(text.contains(needle), "summary lacks '{needle}':\n{text}");
    }
}

#[test]
fn a_file_that_is_not_an_orderlog_database_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "my shopping list\n").unwrap();
    for args in [vec!["demo", "--database"], vec!["migrate", "--database"]] {
        let mut args = args.clone();
        args.push(path.to_str().unwrap());
        let out = orderlog(&args);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("is not an orderlog database"), "{}", stderr(&out));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "my shopping list\n");
    }
}

#[test]
fn migrate_creates_the_schema_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("orderlog.db");
    let db = db.to_str().unwrap();
    let out = orderlog(&["migrate", "--database", db]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("applied migrations [1, 2, 3, 4, 5, 6]"));
    let out = orderlog(&["migrate", "--database", db]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("up to date"), "{}", String::from_utf8_lossy(&out.stdout));
    // The migrations made every table, the tokens' and the read models' checkpoints too.
    let conn = rusqlite::Connection::open(db).unwrap();
    for table in ["events", "orderlog_commits", "orderlog_api_tokens", "orderlog_checkpoints"] {
        let found: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1", [table], |r| r.get(0))
            .unwrap();
        assert_eq!(found, 1, "{table}");
    }
}

#[test]
fn bad_arguments_name_the_problem() {
    let out = orderlog(&["demo", "--orders", "0"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--orders"), "{}", stderr(&out));
    let out = orderlog(&["demo", "--database", "mysql://localhost/shop"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("neither a postgres:// URL nor a file path"), "{}", stderr(&out));
}

#[test]
fn the_demo_runs_twice_on_postgres_and_never_oversells() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(orderlog_store::postgres::testing::TestDatabase::create());
    let out = orderlog(&["migrate", "--database", &db.url]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("applied migrations [1, 2, 3, 4, 5, 6, 7]"));
    let first = demo_json(&db.url);
    assert_eq!(first["oversold_units"], 0);
    assert_eq!(first["flash_sale"]["winners"], 10);
    assert_eq!(first["time_passed"]["flash_available_after"], 5, "the unpaid winners' orders expired");
    let second = demo_json(&db.url);
    assert_eq!(second["oversold_units"], 0);
    assert_eq!(second["flash_sale"]["winners"], 15);
    let total = first["events_appended"].as_u64().unwrap() + second["events_appended"].as_u64().unwrap();
    assert_eq!(second["events_total"].as_u64().unwrap(), total);
    assert_eq!(second["read_models"][0]["matches_log"], true);
    assert_eq!(second["read_models"][0]["events"].as_u64().unwrap(), total);
}

#[test]
fn read_models_are_projected_and_their_status_is_shown() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db");
    let db = db.to_str().unwrap();
    demo_json(db);
    let out = orderlog(&["projections", "status", "--database", db, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status[0]["name"], "inventory_levels");
    assert_eq!(status[0]["events_behind"], 0, "the demo left its read models caught up");
    assert!(status[0]["error"].is_null());
    let out = orderlog(&["project", "--database", db, "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("inventory_levels:"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let table = orderlog(&["projections", "status", "--database", db]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("inventory_levels"));
}

#[test]
fn an_unreachable_postgres_url_is_named() {
    let out = orderlog(&["migrate", "--database", "postgres://postgres:hunter2@127.0.0.1:1/shop?connect_timeout=2"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(!err.contains("hunter2"), "the password is never printed: {err}");
}

#[test]
fn history_shows_a_stream_at_a_version_and_a_flow_across_streams() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db");
    let db = db.to_str().unwrap();
    demo_json(db);
    let conn = rusqlite::Connection::open(db).unwrap();
    let stream: String = conn
        .query_row("SELECT stream_id FROM events WHERE stream_id LIKE 'stock-%' GROUP BY stream_id HAVING count(*) > 2 LIMIT 1", [], |r| r.get(0))
        .unwrap();
    let out = orderlog(&["history", &stream, "--database", db, "--at-version", "2", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let at: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((at["version"].as_u64(), at["events"].as_array().unwrap().len()), (Some(2), 2));
    assert!(at["state"].get("on_hand").is_some(), "{at}");
    let correlation = at["events"][1]["correlation_id"].as_str().unwrap();
    let out = orderlog(&["history", "--correlation", correlation, "--database", db, "--json"]);
    let flow: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(flow.as_array().unwrap().iter().all(|e| e["correlation_id"] == correlation));
    let out = orderlog(&["history", &stream, "--database", db, "--as-of", "not a time"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--as-of"), "{}", stderr(&out));
}

/// Lines of a gzipped export.
fn unzip_lines(bytes: &[u8]) -> usize {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(bytes), &mut text).unwrap();
    text.lines().count()
}

#[test]
fn export_import_and_rebuild_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db");
    let db = db.to_str().unwrap();
    demo_json(db);
    let out = orderlog(&["rebuild", "--all", "--database", db]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("inventory_levels: rebuilt") && text.contains("order_status: rebuilt"), "{text}");
    let export = orderlog(&["export", "--database", db, "--gzip"]);
    assert!(export.status.success(), "{}", stderr(&export));
    let file = dir.path().join("log.ndjson.gz");
    std::fs::write(&file, &export.stdout).unwrap();
    let copy = dir.path().join("copy.db");
    let copy = copy.to_str().unwrap();
    let out = orderlog(&["import", file.to_str().unwrap(), "--database", copy]);
    assert!(out.status.success(), "{}", stderr(&out));
    let events = unzip_lines(&export.stdout) - 1;
    assert!(stderr(&out).contains(&format!("imported {events} events; {events} checked")), "{}", stderr(&out));
    let again = orderlog(&["export", "--database", copy, "--gzip"]);
    let unzip = |bytes: &[u8]| {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(bytes), &mut text).unwrap();
        text
    };
    assert_eq!(unzip(&again.stdout), unzip(&export.stdout), "the copy exports the same log");
    let verify = orderlog(&["verify", "--database", copy]);
    assert!(verify.status.success(), "{}", stderr(&verify));
    // The copy's read models, folded from the imported log, equal the original's.
    for database in [db, copy] {
        let out = orderlog(&["project", "--once", "--database", database]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let rows = |path: &str, table: &str| -> Vec<(String, String)> {
        let conn = rusqlite::Connection::open(path).unwrap();
        let mut stmt = conn.prepare(&format!("SELECT key, data FROM {table} ORDER BY key")).unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
    };
    for table in ["rm_inventory_levels", "rm_order_status"] {
        let original = rows(db, table);
        assert!(!original.is_empty());
        assert_eq!(rows(copy, table), original, "{table} of the copy");
    }
    let bad = orderlog(&["rebuild", "nothing", "--database", db]);
    assert!(stderr(&bad).contains("no read model 'nothing'"));
}

/// A log of `count` events written straight into a SQLite store (faster than the demo).
fn big_log(path: &std::path::Path, count: u64) {
    use orderlog_store::hash::{event_hash, GENESIS};
    use orderlog_store::{BulkLoad, LoadEvent, Metadata, RecordedEvent};
    let mut heads: std::collections::HashMap<String, (u64, String)> = Default::default();
    let mut chunks: Vec<Result<Vec<LoadEvent>, orderlog_store::StoreError>> = Vec::new();
    let mut chunk = Vec::new();
    for i in 1..=count {
        let stream_id = format!("stock-s{}@berlin", i % 101);
        let (version, prev) = heads.get(&stream_id).cloned().unwrap_or((0, GENESIS.to_string()));
        let mut event = RecordedEvent {
            position: i,
            commit: i,
            stream_id: stream_id.clone(),
            version: version + 1,
            event_id: uuid::Uuid::from_u128(0xc1_0000_0000_0000_0000_0000_0000_0000 + u128::from(i)),
            event_type: "StockAdjusted".into(),
            schema_version: 1,
            payload: format!(r#"{{"delta":{},"reason":"count {i}"}}"#, i % 7),
            metadata: Metadata {
                actor: "loader".into(),
                command_id: format!("c{i}"),
                command_hash: None,
                correlation_id: format!("c{i}"),
                causation_id: None,
            },
            recorded_at: chrono::DateTime::from_timestamp(1_780_000_000 + i as i64, 0).unwrap(),
            hash: String::new(),
        };
        event.hash = event_hash(&prev, &event);
        heads.insert(stream_id, (event.version, event.hash.clone()));
        chunk.push(LoadEvent::new(event));
        if chunk.len() == 1_000 {
            chunks.push(Ok(std::mem::take(&mut chunk)));
        }
    }
    chunks.push(Ok(chunk));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = orderlog_store::SqliteStore::open(path).unwrap();
    let chunks = chunks.into_iter().map(|chunk| chunk.map(orderlog_store::LoadChunk::from));
    assert_eq!(runtime.block_on(store.bulk_load(Box::new(chunks))).unwrap(), count);
}

/// An import into SQLite killed while it commits (it writes the file through a rollback
/// journal when it has the file to itself) leaves the store empty and sound, in WAL mode,
/// and the import run again loads everything.
#[test]
fn an_import_killed_while_it_commits_leaves_the_store_empty_and_can_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.db");
    big_log(&source, 60_000);
    let export = orderlog(&["export", "--database", source.to_str().unwrap()]);
    assert!(export.status.success(), "{}", stderr(&export));
    let file = dir.path().join("log.ndjson");
    std::fs::write(&file, &export.stdout).unwrap();

    let mut interrupted = 0;
    for attempt in 0..8 {
        let target = dir.path().join(format!("target{attempt}.db"));
        let target = target.to_str().unwrap().to_string();
        assert!(orderlog(&["migrate", "--database", &target]).status.success());
        let empty_size = std::fs::metadata(&target).unwrap().len();
        let mut child = Command::new(env!("CARGO_BIN_EXE_orderlog"))
            .args(["import", file.to_str().unwrap(), "--database", &target])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let journal = format!("{target}-journal");
        // Killed once the commit has begun: the journal is synced (SQLite writes its magic
        // number then, just before it writes pages into the database file) and the file has
        // grown.
        const JOURNAL_MAGIC: [u8; 8] = [0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7];
        let killed = loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "the import failed on its own");
                break false;
            }
            let synced = std::fs::read(&journal).is_ok_and(|bytes| bytes.starts_with(&JOURNAL_MAGIC));
            let writing = synced && std::fs::metadata(&target).map(|m| m.len()).unwrap_or(0) > empty_size;
            if writing {
                child.kill().unwrap();
                child.wait().unwrap();
                break true;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        };
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let store = orderlog_store::SqliteStore::open(&target).unwrap();
        let head = runtime.block_on(orderlog_store::EventStore::head(&store)).unwrap();
        drop(store);
        if killed {
            interrupted += 1;
            assert_eq!(head, 0, "the killed load was rolled back from its journal");
            assert!(!std::path::Path::new(&journal).exists(), "the hot journal was played back");
            let mode: String = rusqlite::Connection::open(&target)
                .unwrap()
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
            let again = orderlog(&["import", file.to_str().unwrap(), "--database", &target]);
            assert!(again.status.success(), "{}", stderr(&again));
            assert!(stderr(&again).contains("imported 60000 events"), "{}", stderr(&again));
            let verify = orderlog(&["verify", "--database", &target]);
            assert!(verify.status.success(), "{}", stderr(&verify));
            break;
        }
        assert_eq!(head, 60_000, "an import that was not killed is complete");
    }
    assert_eq!(interrupted, 1, "no attempt was caught while committing");
}
