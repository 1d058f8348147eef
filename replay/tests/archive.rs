//! Export and import: a round trip gives the same events with the same hashes, also across
//! backends; a file cut short, reordered or altered is refused naming the line, and the
//! store is left as it was; an interrupted import resumes.

use std::io::BufRead;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use orderlog_commands::{Command, CommandEnvelope, CommandService, ManualClock, SequentialIds};
use orderlog_domain::stock::{AdjustmentReason, StockCommand};
use orderlog_domain::{LocationId, Sku, StockKey};
use orderlog_replay::archive::{export, import, ExportFilter};
use orderlog_replay::progress::Progress;
use orderlog_replay::ReplayError;
use orderlog_store::postgres::testing::TestDatabase;
use orderlog_store::{EventStore, LogCursor, MemoryStore, PostgresStore, SqliteStore};

async fn filled(store: Arc<dyn EventStore>) {
    let clock = Arc::new(ManualClock::new(Utc.with_ymd_and_hms(2026, 4, 1, 9, 0, 0).unwrap()));
    let service = CommandService::new(store, clock.clone(), Arc::new(SequentialIds::new("id-")));
    for i in 0..60u32 {
        clock.advance(chrono::Duration::seconds(7));
        let stock = StockKey::new(Sku::parse(format!("sku{}", i % 7)).unwrap(), LocationId::parse("berlin").unwrap());
        let command = match i % 3 {
            0 => StockCommand::Receive { quantity: 1 + i, reference: Some(format!("DN-{i}")) },
            1 => StockCommand::ExpectIncoming { quantity: 2 },
            _ => StockCommand::Adjust { delta: 1, reason: AdjustmentReason::Correction, expected_on_hand: None },
        };
        service
            .execute(CommandEnvelope::new(format!("c{i}"), "clerk", Command::Stock { stock, command }))
            .await
            .unwrap();
    }
}

async fn exported(store: &dyn EventStore, filter: &ExportFilter) -> String {
    let mut out = Vec::new();
    export(store, &mut out, filter, &mut Progress::quiet()).await.unwrap();
    String::from_utf8(out).unwrap()
}

async fn load(store: &dyn orderlog_store::BulkLoad, file: &str) -> Result<u64, ReplayError> {
    let text = file.to_string();
    let open = move || -> Result<Box<dyn BufRead + Send>, ReplayError> {
        Ok(Box::new(std::io::Cursor::new(text.clone().into_bytes())))
    };
    import(store, &open, &mut Progress::quiet(), &mut Progress::quiet()).await
}

/// The lines without their positions (a PostgreSQL sequence numbers differently).
fn without_positions(file: &str) -> Vec<serde_json::Value> {
    file.lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            if let Some(o) = v.as_object_mut() {
                o.remove("position");
            }
            v
        })
        .collect()
}

#[tokio::test]
async fn a_round_trip_keeps_every_event_and_hash_across_backends() {
    let dir = tempfile::tempdir().unwrap();
    let source: Arc<dyn EventStore> = Arc::new(SqliteStore::open(dir.path().join("a.db")).unwrap());
    filled(source.clone()).await;
    let file = exported(&*source, &ExportFilter::default()).await;
    assert_eq!(file.lines().count(), 61, "60 events and the end line");

    let copy = SqliteStore::open(dir.path().join("b.db")).unwrap();
    assert_eq!(load(&copy, &file).await.unwrap(), 60);
    assert_eq!(exported(&copy, &ExportFilter::default()).await, file, "SQLite to SQLite: the same file");

    let db = TestDatabase::create().await;
    let pg = PostgresStore::connect_url(&db.url).await.unwrap();
    assert_eq!(load(&pg, &file).await.unwrap(), 60);
    let from_pg = exported(&pg, &ExportFilter::default()).await;
    assert_eq!(without_positions(&from_pg), without_positions(&file), "SQLite to PostgreSQL");
    let back = SqliteStore::open(dir.path().join("c.db")).unwrap();
    load(&back, &from_pg).await.unwrap();
    assert_eq!(exported(&back, &ExportFilter::default()).await, file, "and back to SQLite");
    assert!(orderlog_replay::verify_chains(&back).await.unwrap().first_broken.is_none());
}

#[tokio::test]
async fn filters_select_positions_and_categories() {
    let store = Arc::new(MemoryStore::new());
    filled(store.clone()).await;
    let part = exported(&*store, &ExportFilter { from: Some(11), to: Some(20), category: None }).await;
    let positions: Vec<u64> = part
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["position"].as_u64())
        .collect();
    assert_eq!(positions, (11..=20).collect::<Vec<_>>());
    let none = exported(&*store, &ExportFilter { category: Some("order".into()), ..ExportFilter::default() }).await;
    assert_eq!(none.lines().count(), 1, "only the end line");
}

#[tokio::test]
async fn a_damaged_file_is_refused_naming_the_line_and_nothing_is_imported() {
    let store = Arc::new(MemoryStore::new());
    filled(store.clone()).await;
    let file = exported(&*store, &ExportFilter::default()).await;
    let lines: Vec<&str> = file.lines().collect();
    let join = |ls: Vec<&str>| ls.join("\n") + "\n";
    let altered = file.replacen(r#"DN-3\""#, r#"DN-9\""#, 1);
    assert_ne!(altered, file);
    // Line 10 (position 10) and the stream's next event: sku2 gets events at i = 2, 9, 16 …
    let mut swapped = lines.clone();
    swapped.swap(2, 9);
    let mut dropped_middle = lines.clone();
    dropped_middle.remove(2);
    let mut dropped_last_event = lines.clone();
    dropped_last_event.remove(59);
    let mut added = lines.clone();
    added.insert(60, lines[59]);
    // Lines are parsed ahead of the checks, on a thread of their own: the first failing
    // line is still the one named, even when a later one cannot be parsed at all.
    let mut swapped_then_garbage = swapped.clone();
    swapped_then_garbage[19] = "not json";
    let mut garbage_after_end = lines.clone();
    garbage_after_end.push("not json");
    let cases = [
        (join(lines[..60].to_vec()), "line 60: the file ends without its end line"),
        (altered, "(altered)"),
        (join(swapped), "line 3:"),
        (join(dropped_middle), "an event is missing or out of order"),
        (join(dropped_last_event), "line 60: the end line counts 60 events, the file has 59"),
        (join(added), "line 61:"),
        (join(swapped_then_garbage), "line 3:"),
        (join(lines[..19].iter().copied().chain(["not json"]).collect()), "line 20: not an event line"),
        (join(garbage_after_end), "line 62: a line after the end line"),
        (join(lines.iter().copied().chain([lines[5]]).collect()), "line 62: a line after the end line"),
        (String::new(), "the file is empty"),
        (file.replacen("{\"position\":1,", "{\"position\":1,\"extra\":1,", 1), "line 1: not an event line"),
        // Positions are not hashed, so they are checked for order: each line's is past the last.
        (file.replacen("{\"position\":5,", "{\"position\":3,", 1), "line 5: position 3 does not follow position 4"),
        (file.replacen("{\"position\":1,", "{\"position\":0,", 1), "line 1: position 0 does not follow position 0"),
    ];
    for (damaged, says) in cases {
        let target = MemoryStore::new();
        let error = load(&target, &damaged).await.expect_err(says).to_string();
        assert!(error.contains(says), "expected '{says}' in: {error}");
        assert!(error.contains("nothing was imported"), "{error}");
        assert_eq!(target.head().await.unwrap(), 0, "the store is as it was");
    }
}

#[tokio::test]
async fn an_interrupted_import_resumes_and_a_foreign_store_is_refused() {
    let store = Arc::new(MemoryStore::new());
    filled(store.clone()).await;
    let file = exported(&*store, &ExportFilter::default()).await;
    let first_half = exported(&*store, &ExportFilter { to: Some(25), ..ExportFilter::default() }).await;
    let target = MemoryStore::new();
    load(&target, &first_half).await.unwrap();
    assert_eq!(load(&target, &file).await.unwrap(), 35, "resumed after the 25 already there");
    assert_eq!(exported(&target, &ExportFilter::default()).await, file);

    // A store holding something else is refused, untouched.
    let other = Arc::new(MemoryStore::new());
    let service =
        CommandService::new(other.clone(), Arc::new(orderlog_commands::SystemClock), Arc::new(SequentialIds::new("x")));
    let stock = StockKey::new(Sku::parse("tea").unwrap(), LocationId::parse("paris").unwrap());
    let command = StockCommand::Receive { quantity: 1, reference: None };
    service.execute(CommandEnvelope::new("other", "clerk", Command::Stock { stock, command })).await.unwrap();
    let error = load(&*other, &file).await.unwrap_err().to_string();
    assert!(error.contains("event at position 1 is not line 1 of the file"), "{error}");
    assert_eq!(other.head().await.unwrap(), 1);
    assert_eq!(other.read_all(LogCursor::START, 10).await.unwrap().len(), 1);
}

/// Rewrites every hash and the end line so that a changed file is consistent again — as
/// someone forging a file would.
fn reseal(mut lines: Vec<orderlog_replay::archive::EventLine>) -> String {
    use sha2::Digest;
    let mut heads: std::collections::HashMap<String, String> = Default::default();
    let mut digest = orderlog_store::hash::GENESIS.to_string();
    let mut out = String::new();
    for line in &mut lines {
        let prev = heads.get(&line.stream_id).cloned().unwrap_or_else(|| orderlog_store::hash::GENESIS.to_string());
        let event = orderlog_store::RecordedEvent {
            position: line.position,
            commit: line.position,
            stream_id: line.stream_id.clone(),
            version: line.version,
            event_id: line.event_id,
            event_type: line.event_type.clone(),
            schema_version: line.schema_version,
            payload: line.payload.clone(),
            metadata: line.metadata.clone(),
            recorded_at: chrono::DateTime::parse_from_rfc3339(&line.recorded_at).unwrap().with_timezone(&Utc),
            hash: String::new(),
        };
        line.hash = orderlog_store::hash::event_hash(&prev, &event);
        heads.insert(line.stream_id.clone(), line.hash.clone());
        let mut hasher = sha2::Sha256::new();
        hasher.update(digest.as_bytes());
        hasher.update(line.hash.as_bytes());
        digest = hex::encode(hasher.finalize());
        out.push_str(&serde_json::to_string(line).unwrap());
        out.push('\n');
    }
    let end = serde_json::json!({"end": {"format": "orderlog-export-1", "events": lines.len(), "digest": digest}});
    out + &end.to_string() + "\n"
}

#[tokio::test]
async fn a_forged_file_that_repeats_an_event_id_is_refused_before_anything_is_written() {
    let store = Arc::new(MemoryStore::new());
    filled(store.clone()).await;
    let file = exported(&*store, &ExportFilter::default()).await;
    let mut lines: Vec<orderlog_replay::archive::EventLine> =
        file.lines().take(60).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(load(&MemoryStore::new(), &reseal(lines.clone())).await.unwrap(), 60, "resealing alone is fine");
    lines[40].event_id = lines[3].event_id;
    let target = MemoryStore::new();
    let error = load(&target, &reseal(lines)).await.unwrap_err().to_string();
    assert!(error.contains("line 41: event id") && error.contains("a second time"), "{error}");
    assert_eq!(target.head().await.unwrap(), 0);
}
