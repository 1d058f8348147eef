//! Backup and restore: the log as NDJSON, one event per line in log order, then one end
//! line with the number of events and a digest chained over every event's hash in file
//! order — so a file cut short, reordered, or with a line changed, added or removed is
//! refused on import, naming the line.
//!
//! Import verifies the whole file before writing anything, then appends the events in
//! file order (consecutive events of one stream in one append, several streams per call)
//! with each stream's expected version, so the store recomputes the same hash chain. A
//! store that already holds a prefix of the file (an import that was interrupted) is
//! resumed after it; any other non-empty store is refused.

use std::collections::HashMap;
use std::io::{BufRead, Write};

use chrono::{DateTime, Utc};
use orderlog_store::hash::{event_hash_of_text, format_time, GENESIS};
use orderlog_store::{
    BulkLoad, EventStore, ExpectedVersion, LoadChunk, LoadEvent, LogCursor, Metadata, NewEvent, RecordedEvent,
    StreamAppend, READ_EVENTS_MAX,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::checkpoint::{Checkpoint, TreeFollower};
use crate::progress::Progress;
use crate::ReplayError;
use ed25519_dalek::{SigningKey, VerifyingKey};
use orderlog_store::merkle::{leaf_hash, Frontier};

mod canonical;

/// The format's name and version, on the end line.
pub const FORMAT: &str = "orderlog-export-1";

/// Checked events handed to the store at a time during a load.
const IMPORT_CHUNK_EVENTS: usize = 256;

/// Chunks of checked events waiting for the store during a load.
const IMPORT_QUEUE_CHUNKS: usize = 32;

/// Events per append when importing (several streams per call).
const IMPORT_BATCH_EVENTS: usize = 1_000;

/// One event line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventLine {
    pub position: u64,
    pub stream_id: String,
    pub version: u64,
    pub event_id: uuid::Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema_version: u32,
    /// The payload exactly as stored (its bytes are hashed).
    pub payload: String,
    pub metadata: Metadata,
    pub recorded_at: String,
    pub hash: String,
}

/// The end line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndLine {
    pub format: String,
    pub events: u64,
    /// SHA-256 chained over the events' hashes in file order.
    pub digest: String,
    /// The signed checkpoint of the log up to the file's last event (an export of the log
    /// from its first event, signed with `--checkpoint-key`): import recomputes the Merkle
    /// root of the file's events and refuses a file that does not give it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Checkpoint>,
}

enum Line {
    End { end: EndLine },
    Event(Box<EventLine>),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndWrapper {
    end: EndLine,
}

impl Line {
    /// An event line, else the end line (read directly: an untagged enum would buffer
    /// every line first).
    fn parse(text: &str) -> Result<Line, serde_json::Error> {
        match serde_json::from_str::<EventLine>(text) {
            Ok(event) => Ok(Line::Event(Box::new(event))),
            Err(e) => match serde_json::from_str::<EndWrapper>(text) {
                Ok(w) => Ok(Line::End { end: w.end }),
                Err(_) => Err(e),
            },
        }
    }
}

/// Which part of the log to export.
#[derive(Clone, Debug, Default)]
pub struct ExportFilter {
    /// Events at positions ≥ this.
    pub from: Option<u64>,
    /// Events at positions ≤ this.
    pub to: Option<u64>,
    /// Streams of this category only (`cart`, `order`, `stock`, `shipment`).
    pub category: Option<String>,
}

fn chain(digest: &str, hash: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(digest.as_bytes());
    hasher.update(hash.as_bytes());
    orderlog_store::hash::to_hex(&hasher.finalize())
}

fn line_of(e: &RecordedEvent) -> EventLine {
    EventLine {
        position: e.position,
        stream_id: e.stream_id.clone(),
        version: e.version,
        event_id: e.event_id,
        event_type: e.event_type.clone(),
        schema_version: e.schema_version,
        payload: e.payload.clone(),
        metadata: e.metadata.clone(),
        recorded_at: format_time(&e.recorded_at),
        hash: e.hash.clone(),
    }
}

/// Writes the log (or the part `filter` selects) to `out`; returns the events written.
/// Reads in bounded batches: memory stays flat however long the log.
pub async fn export(
    store: &dyn EventStore,
    out: &mut dyn Write,
    filter: &ExportFilter,
    progress: &mut Progress,
) -> Result<u64, ReplayError> {
    export_signed(store, out, filter, None, progress).await
}

/// [`export`], and with `signer` (the log's stored tree and a key) the end line carries a
/// checkpoint of the events written, signed once their root is found to be the stored
/// tree's root of that many events. Only an export of the log from its first event can be
/// signed (no `from`, no category, and no event left out before one written).
pub async fn export_signed(
    store: &dyn EventStore,
    out: &mut dyn Write,
    filter: &ExportFilter,
    signer: Option<(&TreeFollower, &SigningKey)>,
    progress: &mut Progress,
) -> Result<u64, ReplayError> {
    if signer.is_some() && (filter.from.is_some() || filter.category.is_some()) {
        return Err(ReplayError::Invalid(
            "a checkpoint covers the log from its first event: it cannot sign an export with --from or --category"
                .into(),
        ));
    }
    let mut frontier = Frontier::new(0, &[]);
    let mut left_out = false;
    let io = |e: std::io::Error| ReplayError::Invalid(format!("cannot write the export: {e}"));
    let prefix = filter.category.as_ref().map(|c| format!("{c}-"));
    let mut cursor = LogCursor::START;
    let mut digest = GENESIS.to_string();
    let mut written = 0u64;
    loop {
        let batch = store.read_all(cursor, READ_EVENTS_MAX).await?;
        let Some(last) = batch.last() else { break };
        cursor = LogCursor::after(last);
        for e in &batch {
            let wanted = filter.from.is_none_or(|from| e.position >= from)
                && filter.to.is_none_or(|to| e.position <= to)
                && prefix.as_ref().is_none_or(|p| e.stream_id.starts_with(p.as_str()));
            if !wanted {
                left_out = true;
                continue;
            }
            if signer.is_some() {
                if left_out {
                    return Err(ReplayError::Invalid(format!(
                        "the events up to position {} are not the log's first events (one committed later has a \
                         lower position): this export cannot be signed; export without --to, or sign none",
                        e.position
                    )));
                }
                let hash = hex::decode(&e.hash).map_err(|_| {
                    ReplayError::Invalid(format!("the event at position {} has a hash that is not hex", e.position))
                })?;
                frontier.add(leaf_hash(&hash));
            }
            serde_json::to_writer(&mut *out, &line_of(e)).map_err(|e| io(e.into()))?;
            out.write_all(b"\n").map_err(io)?;
            digest = chain(&digest, &e.hash);
            written += 1;
        }
        progress.advance(batch.len() as u64);
    }
    let checkpoint = match signer {
        Some((tree, key)) => Some(tree.sign_prefix(written, &frontier.root(), key, Utc::now()).await?),
        None => None,
    };
    let end = EndWrapper { end: EndLine { format: FORMAT.into(), events: written, digest, checkpoint } };
    serde_json::to_writer(&mut *out, &end).map_err(|e| io(e.into()))?;
    out.write_all(b"\n").map_err(io)?;
    out.flush().map_err(io)?;
    progress.finish();
    Ok(written)
}

fn refuse(line: u64, detail: impl std::fmt::Display) -> ReplayError {
    ReplayError::Invalid(format!("line {line}: {detail}; nothing was imported"))
}

fn recorded(line: EventLine, n: u64) -> Result<RecordedEvent, ReplayError> {
    let recorded_at: DateTime<Utc> = DateTime::parse_from_rfc3339(&line.recorded_at)
        .map_err(|e| refuse(n, format!("recorded_at '{}': {e}", line.recorded_at)))?
        .with_timezone(&Utc);
    Ok(RecordedEvent {
        position: line.position,
        commit: line.position,
        stream_id: line.stream_id,
        version: line.version,
        event_id: line.event_id,
        event_type: line.event_type,
        schema_version: line.schema_version,
        payload: line.payload,
        metadata: line.metadata,
        recorded_at,
        hash: line.hash,
    })
}

/// Checks a whole export: every line parses, each stream's versions run 1, 2, 3 … and each
/// hash follows from the event's bytes and the previous event of its stream, the end line
/// is there and its count and digest match, and no event id repeats. Returns the number
/// of events. Memory: one version and hash per stream, and one id per event.
pub fn verify_file(input: &mut dyn BufRead, progress: &mut Progress) -> Result<u64, ReplayError> {
    verify_file_trusting(input, None, progress).map(|(events, _)| events)
}

/// [`verify_file`], and the end line's checkpoint, if it has one: its root must be the
/// Merkle root of the file's events and, with `trusted`, it must be signed by that key
/// (a file without one is then refused).
pub fn verify_file_trusting(
    input: &mut dyn BufRead,
    trusted: Option<VerifyingKey>,
    progress: &mut Progress,
) -> Result<(u64, Option<Checkpoint>), ReplayError> {
    let mut checker = Checker { trusted, ..Checker::default() };
    let mut text = String::new();
    loop {
        text.clear();
        let read = input.read_line(&mut text).map_err(|e| refuse(checker.lines + 1, format!("cannot be read: {e}")))?;
        if read == 0 {
            return checker.finish().map(|events| (events, checker.checkpoint.take()));
        }
        if checker.line(&text)?.is_some() {
            progress.advance(1);
        }
    }
}

/// Checks an export line by line (see [`verify_file`]).
#[derive(Default)]
struct Checker {
    // Looked up once per line: foldhash rather than SipHash (a fifth of the checking).
    heads: foldhash::HashMap<String, (u64, String)>,
    // Event ids are unique in a log; a file that repeats one (in another stream, with hashes
    // made to match) would otherwise be refused by the store halfway through a load.
    ids: foldhash::HashSet<uuid::Uuid>,
    digest: String,
    events: u64,
    lines: u64,
    /// The position of the last event line (0 before the first).
    last_position: u64,
    ended: bool,
    /// The Merkle tree of the events so far (its right edge), for the end line's checkpoint.
    tree: Option<Frontier>,
    /// The key the end line's checkpoint must be signed with, if one is trusted.
    trusted: Option<VerifyingKey>,
    /// The end line's checkpoint, once it held.
    checkpoint: Option<Checkpoint>,
}

/// Lines parsed for the check, in file order: events, then at most one line that is not
/// an event (the end line, or a line that cannot be read or parsed), which ends the chunk.
#[derive(Default)]
struct ParsedChunk {
    events: Vec<LoadEvent>,
    then: Option<Result<EndLine, ReplayError>>,
}

/// A line parsed, before the checks that depend on the lines before it.
// Nearly every line is an event: boxing the large variant would cost an allocation a line.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    End(EndLine),
    Event(LoadEvent),
}

/// Parses line `n`: the part of checking a line that needs no other line (JSON, times, the
/// text forms the store writes), so that it can run on a thread of its own.
fn parse_line(n: u64, text: &str) -> Result<Parsed, ReplayError> {
    let text = text.trim_end();
    // Lines as export writes them, directly; any other line through serde_json.
    if let Some(event) = canonical::event(text) {
        return Ok(Parsed::Event(event));
    }
    match Line::parse(text).map_err(|e| refuse(n, format!("not an event line: {e}")))? {
        Line::End { end } => Ok(Parsed::End(end)),
        Line::Event(line) => Ok(Parsed::Event(LoadEvent::new(recorded(*line, n)?))),
    }
}

impl Checker {
    /// The event of the next line (none for the end line), if it holds.
    fn line(&mut self, text: &str) -> Result<Option<LoadEvent>, ReplayError> {
        let parsed = parse_line(self.lines + 1, text);
        self.check(parsed)
    }

    /// The event of the next line (none for the end line), if it holds; `parsed` is what
    /// [`parse_line`] made of it.
    fn check(&mut self, parsed: Result<Parsed, ReplayError>) -> Result<Option<LoadEvent>, ReplayError> {
        match parsed {
            Ok(Parsed::Event(load)) => self.check_event(&load).map(|()| Some(load)),
            Ok(Parsed::End(end)) => self.check_end(&end).map(|()| None),
            Err(e) => {
                self.next_line()?;
                Err(e)
            }
        }
    }

    /// Counts the next line and returns its number; refuses any line after the end line.
    fn next_line(&mut self) -> Result<u64, ReplayError> {
        self.lines += 1;
        if self.digest.is_empty() {
            self.digest = GENESIS.to_string();
        }
        if self.ended {
            return Err(refuse(self.lines, "a line after the end line"));
        }
        Ok(self.lines)
    }

    /// Checks the next line, the end line `end`.
    fn check_end(&mut self, end: &EndLine) -> Result<(), ReplayError> {
        let n = self.next_line()?;
        if end.format != FORMAT {
            return Err(refuse(n, format!("format '{}' is not {FORMAT}", end.format)));
        }
        if end.events != self.events {
            return Err(refuse(n, format!("the end line counts {} events, the file has {}", end.events, self.events)));
        }
        if end.digest != self.digest {
            return Err(refuse(n, "the digest does not match the events: lines were changed, removed or reordered"));
        }
        match (&end.checkpoint, &self.trusted) {
            (Some(c), trusted) => {
                if c.tree_size != self.events {
                    return Err(refuse(
                        n,
                        format!(
                            "the end line's checkpoint covers {} events, the file has {}",
                            c.tree_size, self.events
                        ),
                    ));
                }
                let root = hex::encode(self.tree.get_or_insert_with(|| Frontier::new(0, &[])).root());
                if root != c.root_hash {
                    return Err(refuse(
                        n,
                        format!(
                            "the events do not hash to the root of the checkpoint signed at {} (root {root}, signed {}): \
                             this is not the log that was signed",
                            c.time, c.root_hash
                        ),
                    ));
                }
                if let Some(key) = trusted {
                    c.check_signature(key).map_err(|e| refuse(n, e))?;
                }
                self.checkpoint = Some(c.clone());
            }
            (None, Some(_)) => {
                return Err(refuse(n, "the end line carries no signed checkpoint, and a public key was given"));
            }
            (None, None) => {}
        }
        self.ended = true;
        Ok(())
    }

    /// Checks the next line, the event `load`, against the lines before it.
    fn check_event(&mut self, load: &LoadEvent) -> Result<(), ReplayError> {
        let n = self.next_line()?;
        let event = &load.event;
        // An export lists the log in order: each line's position is past the one before.
        if event.position <= self.last_position {
            return Err(refuse(
                n,
                format!(
                    "position {} does not follow position {} of the line before (lines reordered or positions altered)",
                    event.position, self.last_position
                ),
            ));
        }
        self.last_position = event.position;
        let (version, prev) = self.heads.get(&event.stream_id).map_or((0, GENESIS), |(v, h)| (*v, h.as_str()));
        if event.version != version + 1 {
            return Err(refuse(
                n,
                format!(
                    "'{}' version {} follows version {version} (an event is missing or out of order)",
                    event.stream_id, event.version
                ),
            ));
        }
        // The text forms the hash covers are the ones the store writes.
        if event_hash_of_text(prev, event, &load.metadata, &load.recorded_at) != event.hash {
            return Err(refuse(
                n,
                format!(
                    "'{}' version {}: its hash does not follow from its bytes and the previous event of its stream (altered)",
                    event.stream_id, event.version
                ),
            ));
        }
        if !self.ids.insert(event.event_id) {
            return Err(refuse(n, format!("event id {} appears a second time", event.event_id)));
        }
        match self.heads.get_mut(&event.stream_id) {
            Some(head) => {
                head.0 = event.version;
                head.1.clone_from(&event.hash);
            }
            None => {
                self.heads.insert(event.stream_id.clone(), (event.version, event.hash.clone()));
            }
        }
        self.digest = chain(&self.digest, &event.hash);
        let leaf = hex::decode(&event.hash).map(|h| leaf_hash(&h)).map_err(|_| refuse(n, "its hash is not hex"))?;
        self.tree.get_or_insert_with(|| Frontier::new(0, &[])).add(leaf);
        self.events += 1;
        Ok(())
    }

    /// After the last line: the number of events, if the file ended properly.
    fn finish(&self) -> Result<u64, ReplayError> {
        if self.lines == 0 {
            return Err(ReplayError::Invalid(
                "the file is empty (an export has at least its end line); nothing was imported".into(),
            ));
        }
        if !self.ended {
            return Err(refuse(self.lines, "the file ends without its end line: it was cut short"));
        }
        Ok(self.events)
    }
}

/// Loads a verified export (`open` gives the file again from its start) into `store`:
/// into an empty store, or one holding exactly a prefix of the file (resumed). Returns the
/// events appended.
pub async fn import(
    store: &dyn BulkLoad,
    open: &dyn Fn() -> Result<Box<dyn BufRead + Send>, ReplayError>,
    progress_check: &mut Progress,
    progress_load: &mut Progress,
) -> Result<u64, ReplayError> {
    import_trusting(store, open, None, progress_check, progress_load).await.map(|(events, _)| events)
}

/// [`import`], checking the end line's checkpoint as [`verify_file_trusting`] does; returns
/// the events appended and that checkpoint.
pub async fn import_trusting(
    store: &dyn BulkLoad,
    open: &dyn Fn() -> Result<Box<dyn BufRead + Send>, ReplayError>,
    trusted: Option<VerifyingKey>,
    progress_check: &mut Progress,
    progress_load: &mut Progress,
) -> Result<(u64, Option<Checkpoint>), ReplayError> {
    if store.read_all(LogCursor::START, 1).await?.is_empty() {
        return load_into_empty(store, open()?, trusted, progress_load).await;
    }
    let (total, checkpoint) = verify_file_trusting(&mut *open()?, trusted, progress_check)?;
    progress_check.finish();
    // What the store holds must be the file's first events, in order.
    let mut held = 0u64;
    let mut cursor = LogCursor::START;
    let mut input = open()?;
    let mut text = String::new();
    let mut n = 0u64;
    'prefix: loop {
        let batch = store.read_all(cursor, READ_EVENTS_MAX).await?;
        let Some(last) = batch.last() else { break };
        cursor = LogCursor::after(last);
        for e in &batch {
            text.clear();
            input.read_line(&mut text).map_err(|e| ReplayError::Invalid(e.to_string()))?;
            n += 1;
            let same = match Line::parse(text.trim_end()) {
                Ok(Line::Event(line)) => line.event_id == e.event_id && line.hash == e.hash,
                _ => false,
            };
            if !same {
                return Err(ReplayError::Invalid(format!(
                    "the store is not empty and its event at position {} is not line {n} of the file; \
                     import into an empty store (or the store of an interrupted import of this file)",
                    e.position
                )));
            }
            held += 1;
            if held == total {
                break 'prefix;
            }
        }
    }
    progress_load.advance(held);
    let mut appended = 0u64;
    let mut batch: Vec<StreamAppend> = Vec::new();
    let mut batch_events = 0usize;
    let mut in_batch: HashMap<String, usize> = HashMap::new();
    loop {
        text.clear();
        if input.read_line(&mut text).map_err(|e| ReplayError::Invalid(e.to_string()))? == 0 {
            break;
        }
        n += 1;
        let Ok(Line::Event(line)) = Line::parse(text.trim_end()) else { break };
        let event = recorded(*line, n)?;
        let continues = batch.last().is_some_and(|a| a.stream_id == event.stream_id);
        if !continues && (in_batch.contains_key(&event.stream_id) || batch_events >= IMPORT_BATCH_EVENTS) {
            appended += flush(store, &mut batch, &mut in_batch, &mut batch_events, progress_load).await?;
        }
        let (stream_id, version) = (event.stream_id, event.version);
        let new = NewEvent {
            event_id: event.event_id,
            event_type: event.event_type,
            schema_version: event.schema_version,
            payload: event.payload,
            metadata: event.metadata,
            recorded_at: event.recorded_at,
        };
        if batch.last().is_some_and(|a| a.stream_id == stream_id) {
            batch.last_mut().expect("a run").events.push(new);
        } else {
            in_batch.insert(stream_id.clone(), batch.len());
            batch.push(StreamAppend { stream_id, expected: ExpectedVersion::Exact(version - 1), events: vec![new] });
        }
        batch_events += 1;
    }
    appended += flush(store, &mut batch, &mut in_batch, &mut batch_events, progress_load).await?;
    progress_load.finish();
    Ok((appended, checkpoint))
}

/// Into an empty store: checked and loaded in one pass, in one transaction of the store —
/// a file that fails a check leaves the store empty.
async fn load_into_empty(
    store: &dyn BulkLoad,
    input: Box<dyn BufRead + Send>,
    trusted: Option<VerifyingKey>,
    progress: &mut Progress,
) -> Result<(u64, Option<Checkpoint>), ReplayError> {
    let (checked_send, checked) = std::sync::mpsc::channel::<Option<Checkpoint>>();
    let loaded = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    // Two threads ahead of the store's writing, with bounded queues between them: one reads
    // and parses the lines (needing no other line), the other checks them in order
    // (versions, hashes, ids, the digest) where they lie and hands each chunk on to the
    // store as it is. The store sends each chunk back when it is done with it, to the
    // parsing thread, which allocated the chunk and its events, frees the events at the
    // least cost and fills the chunk again. An event is never moved after it is parsed.
    let (parsed_send, parsed) = std::sync::mpsc::sync_channel::<ParsedChunk>(IMPORT_QUEUE_CHUNKS);
    let (send, receive) = std::sync::mpsc::sync_channel(IMPORT_QUEUE_CHUNKS);
    let (home, spent) = std::sync::mpsc::channel::<Vec<LoadEvent>>();
    let start = |name: &str, work: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(work)
            .map(drop)
            .map_err(|e| ReplayError::Invalid(format!("cannot start the import: {e}")))
    };
    start(
        "orderlog-import-parse",
        Box::new(move || {
            let mut input = input;
            let mut text = String::new();
            let mut n = 0u64;
            let mut chunk = ParsedChunk::default();
            loop {
                text.clear();
                let line = match input.read_line(&mut text) {
                    Err(e) => Some(Err(refuse(n + 1, format!("cannot be read: {e}")))),
                    Ok(0) => None,
                    Ok(_) => {
                        n += 1;
                        Some(parse_line(n, &text))
                    }
                };
                // The end of the file, or a line that cannot be read or parsed: nothing
                // after it is needed (the checks stop there at the latest).
                let last = !matches!(line, Some(Ok(_)));
                match line {
                    Some(Ok(Parsed::Event(event))) => chunk.events.push(event),
                    Some(Ok(Parsed::End(end))) => chunk.then = Some(Ok(end)),
                    Some(Err(e)) => chunk.then = Some(Err(e)),
                    None => {}
                }
                if last || chunk.then.is_some() || chunk.events.len() == IMPORT_CHUNK_EVENTS {
                    // A chunk the store is done with: its events are freed here, where
                    // they were allocated, and it is filled again.
                    let mut events = spent.try_iter().last().unwrap_or_default();
                    events.clear();
                    events.reserve(IMPORT_CHUNK_EVENTS);
                    let full = std::mem::replace(&mut chunk, ParsedChunk { events, then: None });
                    if parsed_send.send(full).is_err() || last {
                        return;
                    }
                }
            }
        }),
    )?;
    let counter = std::sync::Arc::clone(&loaded);
    start(
        "orderlog-import-check",
        Box::new(move || {
            let mut checker = Checker { trusted, ..Checker::default() };
            let mut check = || -> Result<(), ReplayError> {
                for chunk in parsed.iter() {
                    chunk.events.iter().try_for_each(|event| checker.check_event(event))?;
                    counter.fetch_add(chunk.events.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    if !chunk.events.is_empty()
                        && send.send(Ok(LoadChunk::returning(chunk.events, home.clone()))).is_err()
                    {
                        // The store stopped reading: its own error ends the import.
                        return Ok(());
                    }
                    if let Some(then) = chunk.then {
                        checker.check(then.map(Parsed::End))?;
                    }
                }
                // The lines ran out: the file must have ended with its end line.
                checker.finish().map(drop)
            };
            match check() {
                Ok(()) => {
                    let _ = checked_send.send(checker.checkpoint.take());
                }
                Err(e) => {
                    let _ = send.send(Err(orderlog_store::StoreError::LoadRefused(e.to_string())));
                }
            }
        }),
    )?;
    let load = store.bulk_load(Box::new(receive.into_iter()));
    tokio::pin!(load);
    let result = loop {
        tokio::select! {
            result = &mut load => break result,
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {
                let now = loaded.load(std::sync::atomic::Ordering::Relaxed);
                progress.advance(now.saturating_sub(progress.done()));
            }
        }
    };
    let count = result.map_err(|e| match e {
        orderlog_store::StoreError::LoadRefused(reason) => ReplayError::Invalid(reason),
        other => ReplayError::Store(other),
    })?;
    progress.advance(count.saturating_sub(progress.done()));
    progress.finish();
    Ok((count, checked.try_recv().ok().flatten()))
}

async fn flush(
    store: &dyn EventStore,
    batch: &mut Vec<StreamAppend>,
    in_batch: &mut HashMap<String, usize>,
    batch_events: &mut usize,
    progress: &mut Progress,
) -> Result<u64, ReplayError> {
    if batch.is_empty() {
        return Ok(0);
    }
    let events = *batch_events as u64;
    store.append(std::mem::take(batch)).await?;
    in_batch.clear();
    *batch_events = 0;
    progress.advance(events);
    Ok(events)
}
