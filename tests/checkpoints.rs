//! Signed checkpoints catch what `verify` cannot: an insider with write access to the SQLite
//! file or the PostgreSQL tables who changes an event's payload or actor, cuts the tail off,
//! or forges an append, each time recomputing every hash orderlog would (the stream's chain,
//! the commit records, the stream heads), passes `verify`, and fails `verify --against` a
//! checkpoint signed before, which names the first event that differs. An altered
//! checkpoint, or one signed by another key, is refused.

mod common;

use orderlog_store::merkle::independent_verdicts;

use common::orderlog;
use orderlog_store::hash::{commit_digest, event_hash};
use orderlog_store::{EventStore, LogCursor, RecordedEvent, SqliteStore};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Copies a SQLite database with its write-ahead log: a process that ended without
/// checkpointing leaves recent commits (the Merkle tree's rows, say) only in the WAL.
fn copy_db(from: impl AsRef<std::path::Path>, to: impl AsRef<std::path::Path>) {
    let (from, to) = (from.as_ref(), to.as_ref());
    std::fs::copy(from, to).unwrap();
    let wal = |p: &std::path::Path| std::path::PathBuf::from(format!("{}-wal", p.display()));
    if wal(from).exists() {
        std::fs::copy(wal(from), wal(to)).unwrap();
    }
}

/// What an insider does with write access to the database, each time recomputing every
/// hash orderlog would (the stream's chain, the commit records' digests, the stream heads),
/// so that `verify` passes.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Attack {
    /// 1 000 units added to the first stock receipt.
    Units,
    /// Another actor written into the first stock receipt.
    Actor,
    /// The log cut back to before the last commit the checkpoint covers: those events and
    /// every later one removed, with their commit records and the streams' heads.
    Cut,
    /// That tail replaced by one forged event under another actor, with a commit record of
    /// its own.
    Forge,
}

/// The rows an attack writes, and where `verify --against` must say the log first differs.
struct Edits {
    /// Position → new payload, metadata (JSON) and hash.
    updates: Vec<(u64, String, String, String)>,
    /// Events removed, and the commit records (by first position) removed with them.
    removed: Vec<u64>,
    removed_commits: Vec<u64>,
    /// A forged event, appended with a commit record (first position, digest).
    forged: Option<(RecordedEvent, String)>,
    /// Commit records whose digest changes: first position → digest.
    digests: Vec<(u64, String)>,
    first_differs: u64,
}

/// `signed`: the size of the checkpoint taken before.
async fn plan(store: &dyn EventStore, attack: Attack, signed: usize) -> Edits {
    let events = store.read_all(LogCursor::START, 10_000).await.unwrap();
    let commits = store.read_commits(LogCursor::START, 10_000).await.unwrap();
    let mut edits = Edits {
        updates: vec![],
        removed: vec![],
        removed_commits: vec![],
        forged: None,
        digests: vec![],
        first_differs: 0,
    };
    let mut hashes: std::collections::HashMap<u64, String> =
        events.iter().map(|e| (e.position, e.hash.clone())).collect();
    if matches!(attack, Attack::Units | Attack::Actor) {
        let target = events.iter().find(|e| e.event_type == "StockReceived").unwrap().clone();
        edits.first_differs = target.position;
        let mut prev = orderlog_store::hash::GENESIS.to_string();
        for e in events.iter().filter(|e| e.stream_id == target.stream_id) {
            let mut e = e.clone();
            if e.position == target.position && attack == Attack::Units {
                let mut payload: serde_json::Value = serde_json::from_str(&e.payload).unwrap();
                payload["units"] = (payload["units"].as_u64().unwrap() + 1_000).into();
                e.payload = payload.to_string();
            }
            if e.position == target.position && attack == Attack::Actor {
                e.metadata.actor = "someone-else".into();
            }
            e.hash = event_hash(&prev, &e);
            prev = e.hash.clone();
            hashes.insert(e.position, e.hash.clone());
            edits.updates.push((e.position, e.payload, serde_json::to_string(&e.metadata).unwrap(), e.hash));
        }
    } else {
        // The commit of the last signed event, and everything from it on.
        let starts: Vec<usize> =
            commits.iter().map(|c| events.iter().position(|e| e.position == c.first_position).unwrap()).collect();
        let start = *starts.iter().filter(|s| **s < signed).max().unwrap();
        let gone = &events[start..];
        edits.removed = gone.iter().map(|e| e.position).collect();
        edits.removed_commits =
            commits.iter().map(|c| c.first_position).filter(|p| edits.removed.contains(p)).collect();
        edits.first_differs = gone[0].position;
        if attack == Attack::Forge {
            let mut forged = gone[0].clone();
            forged.metadata.actor = "insider".into();
            let prev = match forged.version {
                1 => orderlog_store::hash::GENESIS.to_string(),
                v => {
                    events.iter().find(|e| e.stream_id == forged.stream_id && e.version == v - 1).unwrap().hash.clone()
                }
            };
            forged.hash = event_hash(&prev, &forged);
            let digest = commit_digest([(forged.position, forged.hash.as_str())]);
            edits.forged = Some((forged, digest));
        }
    }
    // A commit record covers the `events` events from `first_position` in log order (on
    // PostgreSQL two calls in flight can interleave their positions).
    for c in &commits {
        if edits.removed_commits.contains(&c.first_position) {
            continue;
        }
        let start = events.iter().position(|e| e.position == c.first_position).unwrap();
        let covered = &events[start..start + c.events as usize];
        let digest = commit_digest(covered.iter().map(|e| (e.position, hashes[&e.position].as_str())));
        if digest != c.digest {
            edits.digests.push((c.first_position, digest));
        }
    }
    edits
}

/// Makes the attack in the SQLite file `db`; returns where the log now first differs.
fn attack_sqlite(db: &std::path::Path, attack: Attack, signed: usize) -> u64 {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let edits = runtime.block_on(async { plan(&SqliteStore::open(db).unwrap(), attack, signed).await });
    let conn = rusqlite::Connection::open(db).unwrap();
    for (position, payload, metadata, hash) in &edits.updates {
        conn.execute(
            "UPDATE events SET payload = ?1, metadata = ?2, hash = ?3 WHERE position = ?4",
            (payload, metadata, hash, position),
        )
        .unwrap();
    }
    for position in &edits.removed {
        conn.execute("DELETE FROM events WHERE position = ?1", [position]).unwrap();
    }
    for first in &edits.removed_commits {
        conn.execute("DELETE FROM orderlog_commits WHERE first_position = ?1", [first]).unwrap();
    }
    if let Some((e, digest)) = &edits.forged {
        conn.execute(
            "INSERT INTO events (position, stream_id, version, event_id, event_type, schema_version, payload,
                                 metadata, command_id, recorded_at, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            rusqlite::params![
                e.position,
                e.stream_id,
                e.version,
                e.event_id.to_string(),
                e.event_type,
                e.schema_version,
                e.payload,
                serde_json::to_string(&e.metadata).unwrap(),
                e.metadata.command_id,
                orderlog_store::hash::format_time(&e.recorded_at),
                e.hash
            ],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO orderlog_commits (first_position, events, digest) VALUES (?1, 1, ?2)",
            (e.position, digest),
        )
        .unwrap();
    }
    for (first, digest) in &edits.digests {
        conn.execute("UPDATE orderlog_commits SET digest = ?1 WHERE first_position = ?2", (digest, first)).unwrap();
    }
    // Every stream's head back on its last event.
    conn.execute_batch(
        "DELETE FROM streams WHERE stream_id NOT IN (SELECT stream_id FROM events);
         UPDATE streams SET
             version = (SELECT MAX(version) FROM events e WHERE e.stream_id = streams.stream_id),
             hash = (SELECT hash FROM events e WHERE e.stream_id = streams.stream_id ORDER BY version DESC LIMIT 1);",
    )
    .unwrap();
    edits.first_differs
}

/// Makes the attack in the PostgreSQL database at `url`; returns where the log now first
/// differs. (PostgreSQL derives stream heads from the events.)
async fn attack_postgres(url: &str, attack: Attack, signed: usize) -> u64 {
    let store = orderlog_store::PostgresStore::connect_url(url).await.unwrap();
    let edits = plan(&store, attack, signed).await;
    let (mut client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    for (position, payload, metadata, hash) in &edits.updates {
        client
            .execute(
                "UPDATE orderlog_events SET payload = $1, metadata = $2::text::jsonb, hash = $3 WHERE position = $4",
                &[payload, metadata, hash, &(*position as i64)],
            )
            .await
            .unwrap();
    }
    let removed: Vec<i64> = edits.removed.iter().map(|p| *p as i64).collect();
    client.execute("DELETE FROM orderlog_events WHERE position = ANY($1)", &[&removed]).await.unwrap();
    let removed_commits: Vec<i64> = edits.removed_commits.iter().map(|p| *p as i64).collect();
    client.execute("DELETE FROM orderlog_commits WHERE first_position = ANY($1)", &[&removed_commits]).await.unwrap();
    if let Some((e, digest)) = &edits.forged {
        // One transaction, so that the forged event's writer and its record's commit order agree.
        let tx = client.transaction().await.unwrap();
        tx.execute(
            "INSERT INTO orderlog_events (position, stream_id, version, event_id, event_type, schema_version, payload,
                                          metadata, command_id, recorded_at, hash)
             VALUES ($1, $2, $3, $4::text::uuid, $5, $6, $7, $8::text::jsonb, $9, $10::text::timestamptz, $11)",
            &[
                &(e.position as i64),
                &e.stream_id,
                &(e.version as i64),
                &e.event_id.to_string(),
                &e.event_type,
                &(e.schema_version as i32),
                &e.payload,
                &serde_json::to_string(&e.metadata).unwrap(),
                &e.metadata.command_id,
                &orderlog_store::hash::format_time(&e.recorded_at),
                &e.hash,
            ],
        )
        .await
        .unwrap();
        tx.execute(
            "INSERT INTO orderlog_commits (commit_order, first_position, events, digest)
             VALUES (pg_current_xact_id(), $1, 1, $2)",
            &[&(e.position as i64), digest],
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    for (first, digest) in &edits.digests {
        client
            .execute("UPDATE orderlog_commits SET digest = $1 WHERE first_position = $2", &[digest, &(*first as i64)])
            .await
            .unwrap();
    }
    edits.first_differs
}

/// `verify --against` refuses the attacked log and names where it first differs.
fn assert_caught(out: &std::process::Output, attack: Attack, first_differs: u64) {
    let said = stderr(out);
    assert!(!out.status.success(), "{attack:?}: {}", stdout(out));
    let what = if said.contains("events were removed") { "events were removed" } else { "was rewritten" };
    assert!(said.contains(what), "{attack:?}: {said}");
    assert!(said.contains("the first event that differs is leaf"), "{attack:?}: {said}");
    assert!(said.contains(&format!("at position {first_differs} when it was signed")), "{attack:?}: {said}");
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
    // The checkpoint's signature holds for the independent verifier too, and an altered one
    // does not.
    let mut altered = signed.clone();
    altered["tree_size"] = (altered["tree_size"].as_u64().unwrap() + 1).into();
    let checks = serde_json::json!([
        {"kind": "checkpoint", "public_key": public, "checkpoint": signed},
        {"kind": "checkpoint", "public_key": public, "checkpoint": altered},
    ]);
    assert_eq!(independent_verdicts(&checks), [true, false]);

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

    // Each insider attack: `verify` cannot see it, the checkpoint can, and the stored tree
    // names the first event that differs.
    for attack in [Attack::Units, Attack::Actor, Attack::Cut, Attack::Forge] {
        let copy = dir.path().join(format!("{attack:?}.db"));
        copy_db(&db, &copy);
        let first_differs = attack_sqlite(&copy, attack, signed_size.parse().unwrap());
        let copy_text = copy.to_str().unwrap();
        let out = orderlog(&["verify", "--database", copy_text]);
        assert!(out.status.success(), "{attack:?} passes the chains: {}", stderr(&out));
        assert_caught(&against(copy_text, &checkpoint, &public), attack, first_differs);
    }

    // An insider who rebuilds the tree's tables from the rewritten log as well: still caught
    // (the rebuilt tree does not give the signed root), though the place cannot be named,
    // and the rebuilt tree's proof of extending the signed size does not lead to the signed root.
    let copy = dir.path().join("retree.db");
    copy_db(&db, &copy);
    attack_sqlite(&copy, Attack::Units, signed_size.parse().unwrap());
    let conn = rusqlite::Connection::open(&copy).unwrap();
    conn.execute_batch("DELETE FROM orderlog_tree_leaves; DELETE FROM orderlog_tree_nodes;").unwrap();
    drop(conn);
    let copy_text = copy.to_str().unwrap();
    let mut forged = prove(copy_text, &["--consistency", &signed_size]);
    assert_ne!(forged["old_root"], signed["root_hash"]);
    forged["old_root"] = signed["root_hash"].clone();
    assert_eq!(independent_verdicts(&serde_json::json!([forged])), [false]);
    let out = against(copy_text, &checkpoint, &public);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("was rewritten"), "{}", stderr(&out));
    assert!(stderr(&out).contains("its tables were rewritten too"), "{}", stderr(&out));
    // Nor does the server sign over it: the rebuilt tree does not extend the kept checkpoint.
    let out = orderlog(&["checkpoint", "--database", copy_text, "--key", key.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not extend the checkpoint"), "{}", stderr(&out));
}

#[test]
fn insider_attacks_on_postgres_pass_verify_and_fail_against_a_signed_checkpoint() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("signing.key");
    let public = stdout(&orderlog(&["keys", "create", "--out", key.to_str().unwrap()])).trim().to_string();
    for attack in [Attack::Units, Attack::Actor, Attack::Cut, Attack::Forge] {
        let db = runtime.block_on(orderlog_store::postgres::testing::TestDatabase::create());
        let out = orderlog(&["demo", "--database", &db.url, "--orders", "6", "--shoppers", "2"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let out = orderlog(&["checkpoint", "--database", &db.url, "--key", key.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        let checkpoint = dir.path().join(format!("{attack:?}.json"));
        std::fs::write(&checkpoint, stdout(&out)).unwrap();
        let against = || {
            let file = checkpoint.to_str().unwrap();
            orderlog(&["verify", "--database", &db.url, "--against", file, "--public-key", &public])
        };
        assert!(against().status.success());
        let signed: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        let signed = signed["tree_size"].as_u64().unwrap() as usize;
        let first_differs = runtime.block_on(attack_postgres(&db.url, attack, signed));
        let out = orderlog(&["verify", "--database", &db.url]);
        assert!(out.status.success(), "{attack:?} passes the chains: {}", stderr(&out));
        assert_caught(&against(), attack, first_differs);
    }
}

/// A loopback receiver of one alarm: its request's body.
fn alarm_receiver() -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/alarm", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut length = 0;
        let mut request_line = String::new();
        reader.read_line(&mut request_line).unwrap();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        (&stream).write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n").unwrap();
        tx.send(format!("{} {}", request_line.trim(), String::from_utf8(body).unwrap())).unwrap();
    });
    (url, rx)
}

/// A shop's log (a small demo) served by `orderlog serve` signing checkpoints with a new key
/// (`serve_args` added), and an `audit` token: the server, the key's public half, the token
/// and a directory of the caller's.
struct Audited {
    server: common::Server,
    public: String,
    token: String,
    dir: tempfile::TempDir,
}

fn audited(database: &str, serve_args: &[&str]) -> Audited {
    let dir = tempfile::tempdir().unwrap();
    let out = orderlog(&["demo", "--database", database, "--orders", "6", "--shoppers", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let key = dir.path().join("signing.key");
    let public = stdout(&orderlog(&["keys", "create", "--out", key.to_str().unwrap()])).trim().to_string();
    let made = orderlog(&["token", "create", "--database", database, "--principal", "auditor", "--scopes", "audit"]);
    assert!(made.status.success(), "{}", stderr(&made));
    let token = stdout(&made).trim().to_string();
    let args = [&["--checkpoint-key", key.to_str().unwrap()], serve_args].concat();
    let server = common::serve(database, &args, std::process::Stdio::null());
    Audited { server, public, token, dir }
}

/// The auditor trusts the server's first checkpoint, follows it while the log grows (each
/// new one proven to extend the last), and alarms — exit code 2, a log line and a POST to
/// its alarm URL — when an insider rewrites the log and covers it up: the tree's tables
/// rebuilt from the rewritten events and the kept checkpoints deleted, so that the server
/// signs the rewritten history.
fn the_auditor_alarms(database: &str, attack: Attack, tamper: impl FnOnce(Attack, usize)) {
    let Audited { server, public, token, dir } = audited(database, &["--checkpoint-every-secs", "1"]);
    let trusted = dir.path().join("trusted");
    let url = format!("http://{}", server.address);
    let (alarm_url, alarms) = alarm_receiver();
    let watch = || {
        orderlog(&[
            "audit",
            "watch",
            "--once",
            "--checkpoints",
            trusted.to_str().unwrap(),
            "--url",
            &url,
            "--token",
            &token,
            "--public-key",
            &public,
            "--alarm-url",
            &alarm_url,
        ])
    };
    let out = watch();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("trusted the checkpoint of"), "{}", stdout(&out));
    let first_size = std::fs::read_dir(&trusted).unwrap().count();
    assert_eq!(first_size, 1);

    // The log grows; the next checkpoint is proven to extend the trusted one.
    let out = orderlog(&["demo", "--database", database, "--orders", "2", "--shoppers", "1", "--seed", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    let out = watch();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_dir(&trusted).unwrap().count(), 2, "{}", stdout(&out));
    let signed: Vec<serde_json::Value> = std::fs::read_dir(&trusted)
        .unwrap()
        .map(|f| serde_json::from_str(&std::fs::read_to_string(f.unwrap().path()).unwrap()).unwrap())
        .collect();
    let size = signed.iter().map(|c| c["tree_size"].as_u64().unwrap()).max().unwrap() as usize;

    tamper(attack, size);
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    let out = watch();
    assert_eq!(out.status.code(), Some(2), "{attack:?}: {} {}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("ALARM"), "{}", stderr(&out));
    let posted = alarms.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    assert!(posted.starts_with("POST /alarm"), "{posted}");
    let alarm: serde_json::Value =
        serde_json::from_str(posted.split_once("HTTP/1.1 ").unwrap().1).unwrap_or_else(|e| panic!("{e}: {posted}"));
    assert!(alarm["alarm"].as_str().unwrap().len() > 20, "{alarm}");
    drop(server);
}

#[test]
fn the_auditor_alarms_on_covered_up_attacks_in_sqlite() {
    for attack in [Attack::Units, Attack::Cut] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("shop.db");
        the_auditor_alarms(db.to_str().unwrap(), attack, |attack, signed| {
            attack_sqlite(&db, attack, signed);
            let conn = rusqlite::Connection::open(&db).unwrap();
            conn.execute_batch(
                "DELETE FROM orderlog_signed_checkpoints; DELETE FROM orderlog_tree_nodes; DELETE FROM orderlog_tree_leaves;",
            )
            .unwrap();
        });
    }
}

/// The tree's tables rebuilt from a rewritten log while the server's checkpoints stay (or
/// one is signed mid-cover-up): the server refuses to sign, and the auditor alarms on that
/// refusal instead of failing to check.
#[test]
fn the_auditor_alarms_when_the_server_refuses_to_sign() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db");
    the_auditor_alarms(db.to_str().unwrap(), Attack::Units, |attack, signed| {
        attack_sqlite(&db, attack, signed);
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("DELETE FROM orderlog_tree_nodes; DELETE FROM orderlog_tree_leaves;").unwrap();
    });
}

#[test]
fn the_auditor_alarms_on_covered_up_attacks_in_postgres() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for attack in [Attack::Actor, Attack::Forge] {
        let db = runtime.block_on(orderlog_store::postgres::testing::TestDatabase::create());
        the_auditor_alarms(&db.url, attack, |attack, signed| {
            runtime.block_on(async {
                attack_postgres(&db.url, attack, signed).await;
                let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(connection);
                client
                    .batch_execute(
                        "DELETE FROM orderlog_signed_checkpoints; DELETE FROM orderlog_tree_nodes; \
                         DELETE FROM orderlog_tree_leaves;",
                    )
                    .await
                    .unwrap();
            })
        });
    }
}

/// An export signed with --checkpoint-key carries the checkpoint of its last event on its
/// end line; import recomputes the root of the file's events and refuses a file that does
/// not give it, or (with --public-key) one signed by another key or not at all. A log whose
/// events no longer give its tree's root is not signed on export.
#[test]
fn an_export_carries_its_signed_checkpoint_and_import_checks_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let db = path("shop.db");
    let out = orderlog(&["demo", "--database", &db, "--orders", "6", "--shoppers", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let key = path("signing.key");
    let public = stdout(&orderlog(&["keys", "create", "--out", &key])).trim().to_string();
    let other = path("other.key");
    let other_public = stdout(&orderlog(&["keys", "create", "--out", &other])).trim().to_string();

    let out = orderlog(&["export", "--database", &db, "--checkpoint-key", &key]);
    assert!(out.status.success(), "{}", stderr(&out));
    let export = stdout(&out);
    let end: serde_json::Value = serde_json::from_str(export.lines().last().unwrap()).unwrap();
    let checkpoint = end["end"]["checkpoint"].clone();
    assert_eq!(checkpoint["tree_size"], end["end"]["events"]);
    let file = path("export.ndjson");
    std::fs::write(&file, &export).unwrap();
    // The checkpoint is the log's: the proof of the log's root at that size matches it.
    let consistency = orderlog(&["prove", "--database", &db, "--consistency", "1"]);
    let consistency: serde_json::Value = serde_json::from_str(&stdout(&consistency)).unwrap();
    assert_eq!(consistency["new_root"], checkpoint["root_hash"]);

    let out = orderlog(&["import", &file, "--database", &path("copy.db"), "--public-key", &public]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("and its signature by the trusted key"), "{}", stderr(&out));
    // The imported store keeps it: verify --against holds there.
    std::fs::write(path("checkpoint.json"), checkpoint.to_string()).unwrap();
    let out = orderlog(&[
        "verify",
        "--database",
        &path("copy.db"),
        "--against",
        &path("checkpoint.json"),
        "--public-key",
        &public,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = orderlog(&["import", &file, "--database", &path("other.db"), "--public-key", &other_public]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not by the trusted key"), "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing was imported"), "{}", stderr(&out));

    let plain = orderlog(&["export", "--database", &db]);
    std::fs::write(path("plain.ndjson"), stdout(&plain)).unwrap();
    let out = orderlog(&["import", &path("plain.ndjson"), "--database", &path("plain.db"), "--public-key", &public]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("carries no signed checkpoint"), "{}", stderr(&out));

    // A forger's file: the log rewritten with every hash and the file's digest recomputed
    // (an export of the rewritten log), under the honest end line's checkpoint.
    let forged_db = dir.path().join("forged.db");
    copy_db(&db, &forged_db);
    let size = checkpoint["tree_size"].as_u64().unwrap() as usize;
    attack_sqlite(&forged_db, Attack::Units, size);
    let out = orderlog(&["export", "--database", forged_db.to_str().unwrap()]);
    let forged_export = stdout(&out);
    let mut lines: Vec<String> = forged_export.lines().map(str::to_string).collect();
    let mut end: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    end["end"]["checkpoint"] = checkpoint.clone();
    *lines.last_mut().unwrap() = end.to_string();
    std::fs::write(path("forged.ndjson"), lines.join("\n") + "\n").unwrap();
    let out = orderlog(&["import", &path("forged.ndjson"), "--database", &path("forged-copy.db")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("do not hash to the root of the checkpoint"), "{}", stderr(&out));
    let out = orderlog(&["export", "--database", &path("forged-copy.db")]);
    assert_eq!(stdout(&out).lines().count(), 1, "nothing was imported: {}", stdout(&out));

    // Nor does a rewritten log get a signed export: its events no longer give its tree's root.
    let out = orderlog(&["export", "--database", forged_db.to_str().unwrap(), "--checkpoint-key", &key]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("do not give the root its Merkle tree holds"), "{}", stderr(&out));
    // And a signed export starts at the first event.
    let out = orderlog(&["export", "--database", &db, "--checkpoint-key", &key, "--from", "3"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cannot sign an export with --from"), "{}", stderr(&out));
}

/// An insider who rewrites event rows and leaves the tree alone changes nothing the server
/// signs; the auditor that also reads the feed (`--events`) recomputes the root from the
/// events served, alarms, and names the first event that differs from its last check.
fn the_feed_reading_auditor_alarms(database: &str, tamper: impl FnOnce(usize) -> u64) {
    let Audited { server, public, token, dir } = audited(database, &[]);
    let trusted = dir.path().join("trusted");
    let url = format!("http://{}", server.address);
    let watch = |events: bool| {
        let mut args = vec!["audit", "watch", "--once", "--checkpoints", trusted.to_str().unwrap(), "--url", &url];
        args.extend(["--token", &token, "--public-key", &public]);
        if events {
            args.push("--events");
        }
        orderlog(&args)
    };
    let out = watch(true);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(trusted.join("leaves.bin").exists());
    let kept =
        std::fs::read_dir(&trusted).unwrap().flatten().find(|f| f.path().extension().is_some_and(|e| e == "json"));
    let signed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(kept.unwrap().path()).unwrap()).unwrap();
    let first_differs = tamper(signed["tree_size"].as_u64().unwrap() as usize);
    // The server's signed history is unchanged: the auditor that reads only checkpoints sees
    // nothing, the one that reads the feed alarms.
    let out = watch(false);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = watch(true);
    assert_eq!(out.status.code(), Some(2), "{} {}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("event rows were rewritten under its tree"), "{}", stderr(&out));
    let named = format!("the first event that differs from the last check is at position {first_differs}");
    assert!(stderr(&out).contains(&named), "{}", stderr(&out));
    drop(server);
}

#[test]
fn the_auditor_reading_the_feed_alarms_on_events_rewritten_under_the_tree_in_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db");
    the_feed_reading_auditor_alarms(db.to_str().unwrap(), |signed| attack_sqlite(&db, Attack::Units, signed));
}

#[test]
fn the_auditor_reading_the_feed_alarms_on_events_rewritten_under_the_tree_in_postgres() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(orderlog_store::postgres::testing::TestDatabase::create());
    the_feed_reading_auditor_alarms(&db.url, |signed| {
        runtime.block_on(attack_postgres(&db.url, Attack::Actor, signed))
    });
}
