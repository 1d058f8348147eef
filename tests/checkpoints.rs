//! Signed checkpoints catch what `verify` cannot: an insider with write access to the SQLite
//! file who changes an event and recomputes every hash after it (the stream's chain, the
//! commit records, the stream head) passes `verify`, and fails `verify --against` a
//! checkpoint signed before; so does a log cut short. An altered checkpoint, or one signed
//! by another key, is refused.

mod common;

use orderlog_store::merkle::independent_verdicts;

use common::orderlog;
use orderlog_store::hash::{commit_digest, event_hash};
use orderlog_store::{EventStore, LogCursor, SqliteStore};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// An insider's rewrite of the first stock receipt — 1 000 units added, or another actor —
/// with every hash after it recomputed as orderlog computes them: the rows to change
/// (position, payload, metadata, hash), the stream's new head hash, and the commit records'
/// new digests.
struct Rewrite {
    stream_id: String,
    events: Vec<(u64, String, String, String)>,
    head: String,
    digests: Vec<(u64, String)>,
}

#[derive(Clone, Copy, PartialEq)]
enum Change {
    Units,
    Actor,
}

async fn plan_rewrite(store: &dyn EventStore, change: Change) -> Rewrite {
    let events = store.read_all(LogCursor::START, 10_000).await.unwrap();
    let commits = store.read_commits(LogCursor::START, 10_000).await.unwrap();
    let target = events.iter().find(|e| e.event_type == "StockReceived").unwrap().clone();
    let mut stream: Vec<_> = events.iter().filter(|e| e.stream_id == target.stream_id).cloned().collect();
    let mut prev = orderlog_store::hash::GENESIS.to_string();
    for e in &mut stream {
        if e.position == target.position && change == Change::Units {
            let mut payload: serde_json::Value = serde_json::from_str(&e.payload).unwrap();
            payload["units"] = (payload["units"].as_u64().unwrap() + 1_000).into();
            e.payload = payload.to_string();
        }
        if e.position == target.position && change == Change::Actor {
            e.metadata.actor = "someone-else".into();
        }
        e.hash = event_hash(&prev, e);
        prev = e.hash.clone();
    }
    let hash_of = |position: u64| {
        let rewritten = stream.iter().find(|e| e.position == position);
        rewritten.or_else(|| events.iter().find(|e| e.position == position)).unwrap().hash.clone()
    };
    // A commit record covers the `events` events from `first_position` in log order (on
    // PostgreSQL two calls in flight can interleave their positions).
    let digests = commits
        .iter()
        .map(|c| {
            let start = events.iter().position(|e| e.position == c.first_position).unwrap();
            let positions: Vec<u64> = events[start..start + c.events as usize].iter().map(|e| e.position).collect();
            let hashes: Vec<String> = positions.iter().map(|p| hash_of(*p)).collect();
            (c.first_position, commit_digest(positions.iter().copied().zip(hashes.iter().map(String::as_str))))
        })
        .collect();
    Rewrite {
        stream_id: target.stream_id,
        events: stream
            .into_iter()
            .map(|e| (e.position, e.payload, serde_json::to_string(&e.metadata).unwrap(), e.hash))
            .collect(),
        head: prev,
        digests,
    }
}

/// Makes the rewrite in the SQLite file `db`.
fn rewrite_sqlite(db: &std::path::Path, change: Change) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let plan = runtime.block_on(async { plan_rewrite(&SqliteStore::open(db).unwrap(), change).await });
    let conn = rusqlite::Connection::open(db).unwrap();
    for (position, payload, metadata, hash) in &plan.events {
        conn.execute(
            "UPDATE events SET payload = ?1, metadata = ?2, hash = ?3 WHERE position = ?4",
            (payload, metadata, hash, position),
        )
        .unwrap();
    }
    conn.execute("UPDATE streams SET hash = ?1 WHERE stream_id = ?2", (&plan.head, &plan.stream_id)).unwrap();
    for (first, digest) in &plan.digests {
        conn.execute("UPDATE orderlog_commits SET digest = ?1 WHERE first_position = ?2", (digest, first)).unwrap();
    }
}

#[test]
fn an_insider_rewrite_passes_verify_and_fails_against_a_signed_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db");
    let db_text = db.to_str().unwrap();
    let out = orderlog(&["demo", "--database", db_text, "--orders", "6", "--shoppers", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let key = dir.path().join("signing.key");
    let out = orderlog(&["keys", "create", "--out", key.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let public = stdout(&out).trim().to_string();
    assert_eq!(public.len(), 64);
    let out = orderlog(&["checkpoint", "--database", db_text, "--key", key.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let checkpoint = dir.path().join("checkpoint.json");
    std::fs::write(&checkpoint, stdout(&out)).unwrap();
    let against = |db: &str, file: &std::path::Path, key: &str| {
        orderlog(&["verify", "--database", db, "--against", file.to_str().unwrap(), "--public-key", key])
    };
    let out = against(db_text, &checkpoint, &public);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("extends the checkpoint"), "{}", stdout(&out));

    // The log grows after the checkpoint: it still extends it.
    let out = orderlog(&["demo", "--database", db_text, "--orders", "2", "--shoppers", "1", "--seed", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(against(db_text, &checkpoint, &public).status.success());

    // Proofs the CLI prints hold for an independent verifier, and tie the grown log to the
    // signed root.
    let signed: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&checkpoint).unwrap()).unwrap();
    let signed_size = signed["tree_size"].as_u64().unwrap().to_string();
    let prove = |db: &str, args: &[&str]| -> serde_json::Value {
        let out = orderlog(&[&["prove", "--database", db], args].concat());
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_str(&stdout(&out)).unwrap()
    };
    let consistency = prove(db_text, &["--consistency", &signed_size]);
    assert_eq!(consistency["old_root"], signed["root_hash"], "the grown log's first events hash to the signed root");
    let checks = serde_json::json!([
        prove(db_text, &["1"]),
        prove(db_text, &["7", "--size", &signed_size]),
        prove(db_text, &[&signed_size]),
        consistency,
        prove(db_text, &["--consistency", "1", "--size", &signed_size]),
    ]);
    assert_eq!(independent_verdicts(&checks), [true, true, true, true, true]);

    // An altered checkpoint, or another key, is refused.
    let text = std::fs::read_to_string(&checkpoint).unwrap();
    let mut altered: serde_json::Value = serde_json::from_str(&text).unwrap();
    altered["tree_size"] = (altered["tree_size"].as_u64().unwrap() - 1).into();
    let altered_file = dir.path().join("altered.json");
    std::fs::write(&altered_file, altered.to_string()).unwrap();
    let out = against(db_text, &altered_file, &public);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("signature does not hold"), "{}", stderr(&out));
    let other = dir.path().join("other.key");
    let other_public = stdout(&orderlog(&["keys", "create", "--out", other.to_str().unwrap()])).trim().to_string();
    let out = against(db_text, &checkpoint, &other_public);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not by the trusted key"), "{}", stderr(&out));

    // The insider's rewrite: `verify` cannot see it, the checkpoint can.
    let copy = dir.path().join("rewritten.db");
    std::fs::copy(&db, &copy).unwrap();
    rewrite_sqlite(&copy, Change::Units);
    let copy_text = copy.to_str().unwrap();
    let out = orderlog(&["verify", "--database", copy_text]);
    assert!(out.status.success(), "the rewrite passes the chains: {}", stderr(&out));
    let out = against(copy_text, &checkpoint, &public);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stderr(&out).contains("was rewritten"), "{}", stderr(&out));
    // The rewritten log's proof of extending the signed tree does not lead to the signed root.
    let mut forged = prove(copy_text, &["--consistency", &signed_size]);
    assert_ne!(forged["old_root"], signed["root_hash"]);
    forged["old_root"] = signed["root_hash"].clone();
    assert_eq!(independent_verdicts(&serde_json::json!([forged])), [false]);

    // Another actor written into an event, every hash after it recomputed.
    let actor = dir.path().join("actor.db");
    std::fs::copy(&db, &actor).unwrap();
    rewrite_sqlite(&actor, Change::Actor);
    let actor_text = actor.to_str().unwrap();
    let out = orderlog(&["verify", "--database", actor_text]);
    assert!(out.status.success(), "the actor rewrite passes the chains: {}", stderr(&out));
    let out = against(actor_text, &checkpoint, &public);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("was rewritten"), "{}", stderr(&out));

    // A log cut short: the last commit's events gone (its record and heads too).
    let cut = dir.path().join("cut.db");
    std::fs::copy(&db, &cut).unwrap();
    let conn = rusqlite::Connection::open(&cut).unwrap();
    let size: i64 = serde_json::from_str::<serde_json::Value>(&text).unwrap()["tree_size"].as_i64().unwrap();
    conn.execute("DELETE FROM events WHERE position > ?1", [size - 3]).unwrap();
    drop(conn);
    let out = against(cut.to_str().unwrap(), &checkpoint, &public);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("events were removed"), "{}", stderr(&out));
}

#[test]
fn an_insider_rewrite_in_postgres_passes_verify_and_fails_against_a_signed_checkpoint() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(orderlog_store::postgres::testing::TestDatabase::create());
    let out = orderlog(&["demo", "--database", &db.url, "--orders", "6", "--shoppers", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("signing.key");
    let public = stdout(&orderlog(&["keys", "create", "--out", key.to_str().unwrap()])).trim().to_string();
    let out = orderlog(&["checkpoint", "--database", &db.url, "--key", key.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let checkpoint = dir.path().join("checkpoint.json");
    std::fs::write(&checkpoint, stdout(&out)).unwrap();
    let against = || {
        orderlog(&["verify", "--database", &db.url, "--against", checkpoint.to_str().unwrap(), "--public-key", &public])
    };
    assert!(against().status.success());

    runtime.block_on(async {
        let store = orderlog_store::PostgresStore::connect_url(&db.url).await.unwrap();
        let plan = plan_rewrite(&store, Change::Units).await;
        let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        for (position, payload, _, hash) in &plan.events {
            client
                .execute(
                    "UPDATE orderlog_events SET payload = $1, hash = $2 WHERE position = $3",
                    &[payload, hash, &(*position as i64)],
                )
                .await
                .unwrap();
        }
        for (first, digest) in &plan.digests {
            client
                .execute(
                    "UPDATE orderlog_commits SET digest = $1 WHERE first_position = $2",
                    &[digest, &(*first as i64)],
                )
                .await
                .unwrap();
        }
    });
    let out = orderlog(&["verify", "--database", &db.url]);
    assert!(out.status.success(), "the rewrite passes the chains: {}", stderr(&out));
    let out = against();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("was rewritten"), "{}", stderr(&out));
}
