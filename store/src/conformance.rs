//! The conformance suite: one set of test bodies that every backend must pass.
//!
//! A backend's test file calls [`conformance_suite!`](crate::conformance_suite) with an
//! async function that returns a fresh, empty store and a guard that keeps its resources
//! (a temporary file, a database) alive for the test.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{SubsecRound, TimeZone, Utc};
use uuid::Uuid;

use crate::hash::{event_hash, verify_stream};
use crate::{EventStore, ExpectedVersion, LogCursor, Metadata, NewEvent, RecordedEvent, StoreError, StreamAppend};

/// Runs every conformance test against the store that `$make().await` returns as
/// `(store, guard)`.
#[macro_export]
macro_rules! conformance_suite {
    ($make:path) => {
        $crate::conformance_suite!(@each $make;
            appends_and_reads_back_in_order,
            reads_the_log_in_pages,
            reads_several_streams_as_one_by_one,
            a_wrong_expected_version_names_both_and_appends_nothing,
            expected_any_and_no_stream,
            a_conflict_in_one_stream_appends_to_none,
            a_version_check_without_events_takes_part,
            appends_are_idempotent_by_event_id,
            a_partial_repeat_is_refused,
            payloads_and_metadata_read_back_byte_for_byte,
            large_payloads_read_back_whole,
            many_streams_from_concurrent_writers,
            concurrent_appends_with_one_expected_version_let_exactly_one_win,
            bad_appends_are_refused_and_store_nothing,
            waiting_wakes_on_append_and_times_out,
            settling_makes_every_committed_event_readable,
            a_position_has_a_cursor_in_log_order,
            hashes_chain_each_stream,
            events_are_found_by_command,
            commit_records_cover_every_event_once,
            a_bulk_load_fills_an_empty_log_once,
        );
    };
    (@each $make:path; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (store, _guard) = $make().await;
                $crate::conformance::$name(&store).await;
            }
        )+
    };
}

/// An event for the suite: a fresh id, this payload, plain metadata.
pub fn event(event_type: &str, payload: &str) -> NewEvent {
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: event_type.to_string(),
        schema_version: 1,
        payload: payload.to_string(),
        metadata: Metadata {
            actor: "conformance".into(),
            command_id: Uuid::new_v4().to_string(),
            command_hash: None,
            correlation_id: "flow-1".into(),
            causation_id: None,
        },
        recorded_at: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
    }
}

fn one(stream: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> Vec<StreamAppend> {
    vec![StreamAppend { stream_id: stream.to_string(), expected, events }]
}

/// The whole log, read in pages of `page` events by passing back the last cursor.
pub async fn read_log<S: EventStore>(store: &S, page: u32) -> Vec<RecordedEvent> {
    let mut cursor = LogCursor::START;
    let mut events = Vec::new();
    loop {
        let batch = store.read_all(cursor, page).await.unwrap();
        assert!(batch.len() <= page as usize, "a read returns at most its limit");
        let Some(last) = batch.last() else { return events };
        cursor = LogCursor::after(last);
        events.extend(batch);
    }
}

/// The whole log, after waiting until everything committed so far is readable (on
/// PostgreSQL an event becomes readable in the global log only when every transaction that
/// started before it has ended, in any database of the server).
pub async fn settled_log<S: EventStore>(store: &S, expected: usize) -> Vec<RecordedEvent> {
    assert!(store.settle(Duration::from_secs(30)).await.unwrap(), "the log settles");
    let log = read_log(store, 1_000).await;
    assert!(log.len() >= expected, "{} events readable, {expected} expected", log.len());
    log
}

/// Log order is `(commit, position)`, strictly increasing; positions are unique.
fn assert_log_order(events: &[RecordedEvent]) {
    for pair in events.windows(2) {
        assert!(LogCursor::after(&pair[0]) < LogCursor::after(&pair[1]), "log order: {:?} then {:?}", pair[0], pair[1]);
    }
    let positions: HashSet<u64> = events.iter().map(|e| e.position).collect();
    assert_eq!(positions.len(), events.len(), "positions are unique");
}

fn numbered(n: usize) -> Vec<NewEvent> {
    (0..n).map(|i| event("Numbered", &format!(r#"{{"n":{i}}}"#))).collect()
}

pub async fn appends_and_reads_back_in_order<S: EventStore>(store: &S) {
    assert_eq!(store.head().await.unwrap(), 0);
    let first = store.append(one("s-1", ExpectedVersion::NoStream, numbered(3))).await.unwrap();
    assert!(first.first_position.unwrap() >= 1);
    assert!(first.first_position < first.last_position);
    assert_eq!(first.streams[0].version, 3);
    assert!(!first.duplicate);
    let second = store.append(one("s-2", ExpectedVersion::NoStream, numbered(2))).await.unwrap();
    assert!(second.first_position > first.last_position, "a later append gets later positions");
    let stream = store.read_stream("s-1", 1, 100).await.unwrap();
    assert_eq!(stream.iter().map(|e| e.version).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(stream[0].position, first.first_position.unwrap());
    assert_eq!(stream[2].position, first.last_position.unwrap());
    assert_eq!(stream[2].payload, r#"{"n":2}"#);
    assert_eq!(store.read_stream("s-1", 3, 100).await.unwrap().len(), 1);
    assert!(store.read_stream("missing", 1, 100).await.unwrap().is_empty());
    // A version past any a stream can have reads nothing (it failed on SQLite and read the
    // whole stream on PostgreSQL, where it wrapped to a negative number).
    for from in [4, i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX] {
        assert!(store.read_stream("s-1", from, 100).await.unwrap().is_empty(), "from version {from}");
    }
    let all = settled_log(store, 5).await;
    assert_log_order(&all);
    let streams: Vec<&str> = all.iter().map(|e| e.stream_id.as_str()).collect();
    assert_eq!(streams, ["s-1", "s-1", "s-1", "s-2", "s-2"]);
    assert_eq!(all[..3], stream[..]);
    assert_eq!(store.head().await.unwrap(), second.last_position.unwrap());
    assert_eq!(store.stream_version("s-1").await.unwrap(), 3);
    assert_eq!(store.stream_version("missing").await.unwrap(), 0);
}

pub async fn reads_the_log_in_pages<S: EventStore>(store: &S) {
    for i in 0..10 {
        store.append(one(&format!("p-{i}"), ExpectedVersion::NoStream, numbered(3))).await.unwrap();
    }
    let whole = settled_log(store, 30).await;
    assert_eq!(whole.len(), 30);
    assert_log_order(&whole);
    assert_eq!(read_log(store, 7).await, whole);
    assert!(store.read_all(LogCursor::after(&whole[29]), 10).await.unwrap().is_empty());
    let rest = store.read_all(LogCursor::after(&whole[9]), 100).await.unwrap();
    assert_eq!(rest, whole[10..]);
    // A cursor past any position an event can have reads nothing (the feed's fuzzer sent
    // one: SQLite refused to bind it, a 500; PostgreSQL wrapped it and read from the start).
    let last = LogCursor::after(&whole[29]);
    for position in [i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX] {
        let far = LogCursor { commit: last.commit, position };
        assert!(store.read_all(far, 10).await.unwrap().is_empty(), "after position {position}");
    }
}

/// `read_streams` answers what `read_stream` answers for each request, in the order asked:
/// each from its own version, at most `limit` each, a missing stream or a version past its
/// end as an empty page.
pub async fn reads_several_streams_as_one_by_one<S: EventStore>(store: &S) {
    store.append(one("r-a", ExpectedVersion::NoStream, numbered(5))).await.unwrap();
    store.append(one("r-b", ExpectedVersion::NoStream, numbered(2))).await.unwrap();
    store.append(one("r-c", ExpectedVersion::NoStream, numbered(1))).await.unwrap();
    let requests: Vec<(String, u64)> = [("r-b", 2), ("missing", 1), ("r-a", 2), ("r-c", 2), ("r-a-not", 1)]
        .iter()
        .map(|(s, v)| (s.to_string(), *v))
        .collect();
    for limit in [1, 3, 100] {
        let pages = store.read_streams(&requests, limit).await.unwrap();
        assert_eq!(pages.len(), requests.len());
        for ((stream, from), page) in requests.iter().zip(&pages) {
            assert_eq!(*page, store.read_stream(stream, *from, limit).await.unwrap(), "{stream} from {from}, {limit}");
        }
        assert_eq!(pages[2].iter().map(|e| e.version).collect::<Vec<_>>(), [2, 3, 4, 5][..limit.min(4) as usize]);
    }
    assert!(store.read_streams(&[], 10).await.unwrap().is_empty());
    let huge = vec![("r-a".to_string(), u64::MAX), ("r-b".to_string(), 1)];
    let pages = store.read_streams(&huge, 10).await.unwrap();
    assert!(pages[0].is_empty());
    assert_eq!(pages[1].len(), 2);
}

pub async fn a_wrong_expected_version_names_both_and_appends_nothing<S: EventStore>(store: &S) {
    store.append(one("v-1", ExpectedVersion::NoStream, numbered(2))).await.unwrap();
    let err = store.append(one("v-1", ExpectedVersion::Exact(1), numbered(1))).await.unwrap_err();
    match &err {
        StoreError::WrongExpectedVersion { stream_id, expected, actual } => {
            assert_eq!((stream_id.as_str(), *expected, *actual), ("v-1", ExpectedVersion::Exact(1), 2));
        }
        other => panic!("expected a version conflict, got {other}"),
    }
    assert!(err.is_conflict());
    assert_eq!(err.to_string(), "wrong expected version for stream 'v-1': expected version 1, actual version 2");
    let err = store.append(one("v-1", ExpectedVersion::NoStream, numbered(1))).await.unwrap_err();
    assert!(err.to_string().contains("expected no stream, actual version 2"), "{err}");
    let err = store.append(one("v-9", ExpectedVersion::Exact(4), numbered(1))).await.unwrap_err();
    assert!(err.to_string().contains("expected version 4, actual no stream"), "{err}");
    assert_eq!(store.head().await.unwrap(), 2);
    assert_eq!(store.stream_version("v-1").await.unwrap(), 2);
    assert_eq!(store.stream_version("v-9").await.unwrap(), 0);
}

pub async fn expected_any_and_no_stream<S: EventStore>(store: &S) {
    store.append(one("a-1", ExpectedVersion::Any, numbered(1))).await.unwrap();
    let out = store.append(one("a-1", ExpectedVersion::Any, numbered(1))).await.unwrap();
    assert_eq!(out.streams[0].version, 2);
    let out = store.append(one("a-1", ExpectedVersion::Exact(2), numbered(1))).await.unwrap();
    assert_eq!(out.streams[0].version, 3);
    let out = store.append(one("a-2", ExpectedVersion::Exact(0), numbered(1))).await.unwrap();
    assert_eq!(out.streams[0].version, 1);
}

pub async fn a_conflict_in_one_stream_appends_to_none<S: EventStore>(store: &S) {
    store.append(one("m-1", ExpectedVersion::NoStream, numbered(1))).await.unwrap();
    store.append(one("m-2", ExpectedVersion::NoStream, numbered(1))).await.unwrap();
    let appends = vec![
        StreamAppend { stream_id: "m-1".into(), expected: ExpectedVersion::Exact(1), events: numbered(2) },
        StreamAppend { stream_id: "m-3".into(), expected: ExpectedVersion::NoStream, events: numbered(1) },
        StreamAppend { stream_id: "m-2".into(), expected: ExpectedVersion::Exact(7), events: numbered(1) },
    ];
    let err = store.append(appends).await.unwrap_err();
    assert!(err.to_string().contains("'m-2'"), "{err}");
    assert_eq!(settled_log(store, 2).await.len(), 2);
    assert_eq!(store.stream_version("m-1").await.unwrap(), 1);
    assert_eq!(store.stream_version("m-3").await.unwrap(), 0);
    assert_eq!(settled_log(store, 2).await.len(), 2);
    // The same append with the right versions goes through whole.
    let appends = vec![
        StreamAppend { stream_id: "m-1".into(), expected: ExpectedVersion::Exact(1), events: numbered(2) },
        StreamAppend { stream_id: "m-3".into(), expected: ExpectedVersion::NoStream, events: numbered(1) },
        StreamAppend { stream_id: "m-2".into(), expected: ExpectedVersion::Exact(1), events: numbered(1) },
    ];
    let out = store.append(appends).await.unwrap();
    let versions: Vec<u64> = out.streams.iter().map(|s| s.version).collect();
    assert_eq!(versions, [3, 1, 2]);
    let all = settled_log(store, 6).await;
    assert_eq!(all.len(), 6);
    assert_eq!((out.first_position, out.last_position), (Some(all[2].position), Some(all[5].position)));
}

pub async fn a_version_check_without_events_takes_part<S: EventStore>(store: &S) {
    store.append(one("c-1", ExpectedVersion::NoStream, numbered(2))).await.unwrap();
    let check = |v| {
        vec![
            StreamAppend { stream_id: "c-1".into(), expected: ExpectedVersion::Exact(v), events: vec![] },
            StreamAppend { stream_id: "c-2".into(), expected: ExpectedVersion::Any, events: numbered(1) },
        ]
    };
    assert!(store.append(check(1)).await.unwrap_err().is_conflict());
    assert_eq!(store.stream_version("c-2").await.unwrap(), 0);
    let out = store.append(check(2)).await.unwrap();
    assert_eq!(out.streams[0].version, 2);
    assert_eq!(store.stream_version("c-1").await.unwrap(), 2);
    assert_eq!(settled_log(store, 3).await.len(), 3);
}

pub async fn appends_are_idempotent_by_event_id<S: EventStore>(store: &S) {
    let appends = vec![
        StreamAppend { stream_id: "i-1".into(), expected: ExpectedVersion::NoStream, events: numbered(2) },
        StreamAppend { stream_id: "i-2".into(), expected: ExpectedVersion::NoStream, events: numbered(1) },
    ];
    let first = store.append(appends.clone()).await.unwrap();
    store.append(one("i-3", ExpectedVersion::NoStream, numbered(1))).await.unwrap();
    // The same events again, even with expected versions that no longer hold.
    let again = store.append(appends).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.streams, first.streams);
    assert_eq!((again.first_position, again.last_position), (first.first_position, first.last_position));
    assert_eq!(settled_log(store, 4).await.len(), 4);
    assert_eq!(store.stream_version("i-1").await.unwrap(), 2);
}

pub async fn a_partial_repeat_is_refused<S: EventStore>(store: &S) {
    let events = numbered(2);
    store.append(one("d-1", ExpectedVersion::NoStream, events.clone())).await.unwrap();
    let mut mixed = vec![events[0].clone()];
    mixed.extend(numbered(1));
    let err = store.append(one("d-1", ExpectedVersion::Any, mixed)).await.unwrap_err();
    assert!(matches!(err, StoreError::DuplicateEvent { .. }), "{err}");
    let err = store.append(one("d-2", ExpectedVersion::Any, vec![events[1].clone()])).await.unwrap_err();
    assert!(err.to_string().contains("'d-1'"), "{err}");
    let mut new_then_old = numbered(2);
    new_then_old.push(events[1].clone());
    let err = store.append(one("d-3", ExpectedVersion::Any, new_then_old)).await.unwrap_err();
    assert!(matches!(err, StoreError::DuplicateEvent { .. }), "{err}");
    assert_eq!(store.stream_version("d-3").await.unwrap(), 0);
    assert_eq!(settled_log(store, 2).await.len(), 2);
    assert_eq!(store.stream_version("d-2").await.unwrap(), 0);
}

pub async fn payloads_and_metadata_read_back_byte_for_byte<S: EventStore>(store: &S) {
    let payloads = [
        r#"{"b":1,"a":2}"#,
        "{ \"spaced\" : [1, 2,\n 3] }",
        r#"{"text":"Grüße, 東京, emoji 🛒, rtl עברית"}"#,
        r#"{"escaped":"quote \" backslash \\ tab \t nul \u0000 line\u2028"}"#,
        r#"{"big":12345678901234567890123,"float":1.10}"#,
        "[]",
        r#""a bare string""#,
        "null",
    ];
    let mut events: Vec<NewEvent> = payloads.iter().map(|p| event("Exact", p)).collect();
    events[0].metadata = Metadata {
        actor: "Zoë <zoe@example.com>".into(),
        command_id: "cmd-ü-1".into(),
        command_hash: Some("abc".into()),
        correlation_id: "corr 😀".into(),
        causation_id: Some("cause".into()),
    };
    events[1].recorded_at = Utc.timestamp_opt(1_767_225_600, 123_456_789).unwrap();
    events[2].event_type = "Typ-ü".into();
    events[3].schema_version = 7;
    store.append(one("exact-ü", ExpectedVersion::NoStream, events.clone())).await.unwrap();
    let back = store.read_stream("exact-ü", 1, 100).await.unwrap();
    assert_eq!(back.len(), events.len());
    for (sent, got) in events.iter().zip(&back) {
        assert_eq!(got.payload.as_bytes(), sent.payload.as_bytes());
        assert_eq!(got.metadata, sent.metadata);
        assert_eq!(got.event_id, sent.event_id);
        assert_eq!(got.event_type, sent.event_type);
        assert_eq!(got.schema_version, sent.schema_version);
        assert_eq!(got.recorded_at, sent.recorded_at.trunc_subsecs(6), "recorded times are kept to the microsecond");
    }
    assert_eq!(back[1].recorded_at.timestamp_subsec_nanos(), 123_456_000);
    assert_eq!(settled_log(store, back.len()).await, back);
}

pub async fn large_payloads_read_back_whole<S: EventStore>(store: &S) {
    let text: String = "orderlog ✓ ".chars().cycle().take(1_000_000).collect();
    let payload = serde_json::json!({ "text": text }).to_string();
    assert!(payload.len() > 1_000_000);
    store.append(one("large", ExpectedVersion::NoStream, vec![event("Large", &payload)])).await.unwrap();
    let back = store.read_stream("large", 1, 1).await.unwrap();
    assert_eq!(back[0].payload, payload);
}

pub async fn many_streams_from_concurrent_writers<S: EventStore>(store: &S) {
    const WRITERS: usize = 8;
    const STREAMS_PER_WRITER: usize = 60;
    const EVENTS_PER_STREAM: u64 = 3;
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = Arc::clone(&store);
        tasks.push(async move {
            for s in 0..STREAMS_PER_WRITER {
                for v in 0..EVENTS_PER_STREAM {
                    let stream = format!("many-{w}-{s}");
                    store.append(one(&stream, ExpectedVersion::Exact(v), numbered(1))).await.unwrap();
                }
            }
        });
    }
    futures_join_all(tasks).await;
    let total = (WRITERS * STREAMS_PER_WRITER) as u64 * EVENTS_PER_STREAM;
    let log = settled_log(*store, total as usize).await;
    assert_eq!(log.len() as u64, total, "every event once");
    assert_eq!(read_log(*store, 500).await, log, "pages of 500 read the same log");
    assert_log_order(&log);
    assert_eq!(store.head().await.unwrap(), log.iter().map(|e| e.position).max().unwrap());
    let mut per_stream: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in log {
        per_stream.entry(e.stream_id).or_default().push(e.version);
    }
    assert_eq!(per_stream.len(), WRITERS * STREAMS_PER_WRITER);
    for versions in per_stream.values() {
        assert_eq!(versions, &[1, 2, 3], "each stream in version order");
    }
}

pub async fn concurrent_appends_with_one_expected_version_let_exactly_one_win<S: EventStore>(store: &S) {
    store.append(one("race", ExpectedVersion::NoStream, numbered(1))).await.unwrap();
    let tasks = (0..20).map(|_| store.append(one("race", ExpectedVersion::Exact(1), numbered(1))));
    let results = futures_join_all(tasks).await;
    let wins = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1, "exactly one append wins");
    for r in &results {
        if let Err(e) = r {
            assert!(e.is_conflict(), "losers get a version conflict, got {e}");
        }
    }
    assert_eq!(store.stream_version("race").await.unwrap(), 2);
    assert_eq!(store.read_stream("race", 1, 100).await.unwrap().len(), 2);
}

pub async fn bad_appends_are_refused_and_store_nothing<S: EventStore>(store: &S) {
    store.append(one("ok", ExpectedVersion::NoStream, numbered(1))).await.unwrap();
    let dup = event("Dup", "{}");
    let cases: Vec<(Vec<StreamAppend>, &str)> = vec![
        (vec![], "no streams"),
        (one("", ExpectedVersion::Any, numbered(1)), "stream id"),
        (one("bad", ExpectedVersion::Any, vec![event("Bad", "{not json")]), "not JSON"),
        (one("bad", ExpectedVersion::Any, vec![event("", "{}")]), "type"),
        (
            one("bad", ExpectedVersion::Any, vec![NewEvent { schema_version: 0, ..event("Zero", "{}") }]),
            "schema version 0",
        ),
        (one("bad", ExpectedVersion::Any, vec![dup.clone(), dup]), "twice"),
        (
            vec![
                StreamAppend { stream_id: "twice".into(), expected: ExpectedVersion::Any, events: numbered(1) },
                StreamAppend { stream_id: "twice".into(), expected: ExpectedVersion::Any, events: numbered(1) },
            ],
            "appears twice",
        ),
    ];
    for (appends, needle) in cases {
        let err = store.append(appends).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidAppend(_)), "{err}");
        assert!(err.to_string().contains(needle), "'{err}' should mention '{needle}'");
    }
    assert_eq!(settled_log(store, 1).await.len(), 1);
}

pub async fn waiting_wakes_on_append_and_times_out<S: EventStore>(store: &S) {
    let started = std::time::Instant::now();
    assert!(!store.wait_for(LogCursor::START, Duration::from_millis(50)).await.unwrap());
    assert!(started.elapsed() >= Duration::from_millis(45));
    let waiter = store.wait_for(LogCursor::START, Duration::from_secs(30));
    let writer = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        store.append(one("w", ExpectedVersion::NoStream, numbered(1))).await.unwrap();
    };
    let (ready, ()) = tokio::join!(waiter, writer);
    assert!(ready.unwrap());
    assert!(started.elapsed() < Duration::from_secs(20), "woken by the append, not by the timeout");
    assert!(store.wait_for(LogCursor::START, Duration::from_secs(30)).await.unwrap(), "already readable: at once");
    let last = settled_log(store, 1).await.pop().unwrap();
    assert!(!store.wait_for(LogCursor::after(&last), Duration::from_millis(20)).await.unwrap());
}

pub async fn settling_makes_every_committed_event_readable<S: EventStore>(store: &S) {
    for i in 0..20 {
        store.append(one(&format!("settle-{}", i % 4), ExpectedVersion::Any, numbered(2))).await.unwrap();
    }
    assert!(store.settle(Duration::from_secs(30)).await.unwrap());
    let log = store.read_all(LogCursor::START, 1_000).await.unwrap();
    assert_eq!(log.len(), 40, "after settling, one read returns everything committed before");
}

pub async fn a_position_has_a_cursor_in_log_order<S: EventStore>(store: &S) {
    let out = store.append(one("k", ExpectedVersion::NoStream, numbered(3))).await.unwrap();
    let log = settled_log(store, 3).await;
    for event in &log {
        assert_eq!(store.cursor_of(event.position).await.unwrap(), Some(LogCursor::after(event)));
    }
    assert_eq!(store.cursor_of(out.last_position.unwrap() + 1_000).await.unwrap(), None);
    assert_eq!(store.cursor_of(0).await.unwrap(), None);
}

pub async fn hashes_chain_each_stream<S: EventStore>(store: &S) {
    store.append(one("h", ExpectedVersion::NoStream, numbered(2))).await.unwrap();
    store.append(one("h", ExpectedVersion::Exact(2), numbered(2))).await.unwrap();
    let events = store.read_stream("h", 1, 10).await.unwrap();
    assert!(verify_stream(&events).is_ok());
    let hashes: HashSet<&str> = events.iter().map(|e| e.hash.as_str()).collect();
    assert_eq!(hashes.len(), 4);
    let mut tampered = events.clone();
    tampered[1].payload = r#"{"n":99}"#.into();
    assert_eq!(verify_stream(&tampered).unwrap_err().version, 2);
    let mut removed = events.clone();
    removed.remove(1);
    assert_eq!(verify_stream(&removed).unwrap_err().version, 3);
    assert_eq!(event_hash(&events[0].hash, &events[1]), events[1].hash);
}

pub async fn events_are_found_by_command<S: EventStore>(store: &S) {
    let mut events = numbered(3);
    for e in &mut events {
        e.metadata.command_id = "cmd-42".into();
    }
    store.append(one("x", ExpectedVersion::NoStream, numbered(1))).await.unwrap();
    store.append(one("y", ExpectedVersion::NoStream, events)).await.unwrap();
    let found = store.read_command("cmd-42").await.unwrap();
    assert_eq!(found.iter().map(|e| e.version).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(found.iter().all(|e| e.stream_id == "y" && e.metadata.command_id == "cmd-42"));
    assert_log_order(&found);
    assert!(store.read_command("cmd-none").await.unwrap().is_empty());
}

/// Every event is in exactly one commit record, which `commit_of` finds from any of its
/// positions; each record's digest is that of its events; the records page in log order.
pub async fn commit_records_cover_every_event_once<S: EventStore>(store: &S) {
    for i in 0..6 {
        let stream = format!("s{}", i % 2);
        store.append(one(&stream, ExpectedVersion::Any, numbered(1 + i % 3))).await.unwrap();
    }
    assert!(store.settle(Duration::from_secs(10)).await.unwrap());
    let events = store.read_all(LogCursor::START, 1_000).await.unwrap();
    let commits = store.read_commits(LogCursor::START, 1_000).await.unwrap();
    assert_eq!(commits.iter().map(|c| c.events).sum::<u64>(), events.len() as u64);
    for commit in &commits {
        // A record covers the `events` events from its first position, in log order.
        let start = events.iter().position(|e| e.position == commit.first_position).expect("the record's first event");
        let mine: Vec<&RecordedEvent> = events[start..].iter().take(commit.events as usize).collect();
        assert_eq!(mine.len() as u64, commit.events, "{commit:?}");
        let digest = crate::hash::commit_digest(mine.iter().map(|e| (e.position, e.hash.as_str())));
        assert_eq!(commit.digest, digest, "{commit:?}");
        for e in mine {
            assert_eq!(store.commit_of(e.position).await.unwrap().as_ref(), Some(commit));
        }
    }
    let head = store.head().await.unwrap();
    assert_eq!(store.commit_of(head + 1).await.unwrap(), None);
    let second = store.read_commits(commits[0].cursor(), 1).await.unwrap();
    assert_eq!(second.first(), commits.get(1), "records page after a cursor");
}

/// A bulk load puts the given events into an empty log as they are (versions, ids, hashes),
/// is refused by a log that holds events, and appends carry on after it.
pub async fn a_bulk_load_fills_an_empty_log_once<S: crate::BulkLoad>(store: &S) {
    let source = crate::MemoryStore::new();
    for i in 0..5 {
        source.append(one(&format!("s{}", i % 3), ExpectedVersion::Any, numbered(2))).await.unwrap();
    }
    let given = source.read_all(LogCursor::START, 1_000).await.unwrap();
    let input = |events: &[RecordedEvent]| -> crate::BulkEvents {
        let chunk: Vec<crate::LoadEvent> = events.iter().cloned().map(crate::LoadEvent::new).collect();
        Box::new(std::iter::once(Ok(crate::LoadChunk::from(chunk))))
    };
    assert_eq!(store.bulk_load(input(&given)).await.unwrap(), given.len() as u64);
    assert!(store.settle(Duration::from_secs(10)).await.unwrap());
    let loaded = store.read_all(LogCursor::START, 1_000).await.unwrap();
    let essence = |e: &RecordedEvent| (e.stream_id.clone(), e.version, e.event_id, e.hash.clone(), e.payload.clone());
    assert_eq!(loaded.iter().map(essence).collect::<Vec<_>>(), given.iter().map(essence).collect::<Vec<_>>());
    for (stream, version) in stream_heads(&loaded) {
        assert_eq!(store.stream_version(&stream).await.unwrap(), version, "{stream}");
    }
    let again = store.bulk_load(input(&given)).await.unwrap_err();
    assert!(matches!(again, StoreError::LoadRefused(_)), "{again}");
    assert_eq!(store.read_all(LogCursor::START, 1_000).await.unwrap(), loaded, "a refused load changes nothing");
    let after = store.append(one("s0", ExpectedVersion::Any, numbered(1))).await.unwrap();
    assert_eq!(after.last_position, Some(store.head().await.unwrap()));
    let s0 = store.read_stream("s0", 1, 100).await.unwrap();
    verify_stream(&s0).unwrap();
}

fn stream_heads(events: &[RecordedEvent]) -> BTreeMap<String, u64> {
    events.iter().map(|e| (e.stream_id.clone(), e.version)).collect()
}

/// Runs futures concurrently on the current task and collects their outputs in order.
async fn futures_join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut outputs: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in set.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *out = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(|o| o.expect("every future finished")).collect()
}
