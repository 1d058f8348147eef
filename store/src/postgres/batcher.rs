//! Appends sent in batches: one `orderlog_append` call for many concurrent appends.

use super::*;

/// What planning on given heads came to, short of a write.
pub(super) enum Planned {
    Repeat(AppendOutcome),
    /// A version that no longer holds; maybe still an idempotent repeat.
    Conflict(StoreError),
    Failed(StoreError),
}

/// Plans the append on `heads`. Stored event ids are not looked up: `orderlog_append`
/// refuses them, and the caller then plans again with them.
pub(super) fn planned(appends: &[StreamAppend], heads: HashMap<String, (u64, String)>) -> Result<Write, Planned> {
    match plan(&mut Prefetched { heads, events: HashMap::new() }, appends) {
        Ok(Plan::Write(write)) => Ok(write),
        Ok(Plan::Repeat(outcome)) => Err(Planned::Repeat(outcome)),
        Err(e) if e.is_conflict() => Err(Planned::Conflict(e)),
        Err(e) => Err(Planned::Failed(e)),
    }
}

/// One append as the batcher sends it: the head each stream was planned on, and the
/// planned events (positions to be filled in).
pub(super) struct BatchItem {
    streams: Vec<(String, u64, String)>,
    events: Vec<RecordedEvent>,
}

impl BatchItem {
    pub(super) fn new(appends: &[StreamAppend], write: &mut Write) -> BatchItem {
        let streams = appends
            .iter()
            .map(|a| {
                let (version, hash) = write.planned_on(&a.stream_id);
                (a.stream_id.clone(), version, hash.to_string())
            })
            .collect();
        BatchItem { streams, events: std::mem::take(&mut write.events) }
    }
}

/// What `orderlog_append` did with one append.
pub(super) enum ItemReply {
    /// Written: the events with their positions and commit order.
    Written(Vec<RecordedEvent>),
    /// A stream was not at the planned head; this is its actual head.
    Conflict { stream_id: String, version: u64, hash: String },
    /// An event id of the append is stored already.
    Duplicate,
    /// The call failed (connection lost, server error).
    Failed(String),
}

/// Appends waiting for a batch, at most; callers wait beyond that.
pub const BATCH_QUEUE_MAX: usize = 4_096;
/// Appends in one `orderlog_append` call, at most.
pub const BATCH_APPENDS_MAX: usize = 64;
/// `orderlog_append` calls in flight at once, unless the URL's `append_calls_max` says
/// otherwise. Appends that arrive while all are busy wait and go together in the next call.
/// Two calls measured fastest here once the function's plans were generic (BENCHMARKS.md):
/// one call's commit waits for its WAL flush while the next runs; more split the batches
/// too thin. A second call also keeps appends moving while one waits on a stream lock held
/// by another process.
pub const APPEND_CALLS_MAX_DEFAULT: usize = 2;

pub(super) type Submission = (BatchItem, oneshot::Sender<ItemReply>);

/// Gathers concurrent appends into batches: one call and one commit for many appends,
/// as the server's group commit does for transactions, but without a round trip and a
/// commit per append. Each append of a batch is still checked and written on its own.
pub(super) struct Batcher {
    queue: mpsc::Sender<Submission>,
    slots: Arc<tokio::sync::Semaphore>,
    pool: Pool,
}

impl Batcher {
    pub(super) fn start(pool: Pool, calls_max: usize) -> (Batcher, tokio::task::JoinHandle<()>) {
        let (queue, mut pending) = mpsc::channel::<Submission>(BATCH_QUEUE_MAX);
        let slots = Arc::new(tokio::sync::Semaphore::new(calls_max.max(1)));
        let batcher = Batcher { queue, slots: Arc::clone(&slots), pool: pool.clone() };
        let task = tokio::spawn(async move {
            // Appends that touch a stream already in the batch being formed wait for the
            // next one, first in line.
            let mut deferred: std::collections::VecDeque<Submission> = std::collections::VecDeque::new();
            loop {
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return };
                let first = match deferred.pop_front() {
                    Some(first) => first,
                    None => match pending.recv().await {
                        Some(first) => first,
                        None => return,
                    },
                };
                // A call that just finished woke its appenders, and those that append again
                // are about to submit: one yield lets them in before this batch is cut, so
                // the next call takes them together instead of one call for the first and
                // the rest left waiting for a slot (16 writers: 0.69 → 0.85 of the raw
                // commit rate, BENCHMARKS.md).
                tokio::task::yield_now().await;
                let mut streams: std::collections::HashSet<String> =
                    first.0.streams.iter().map(|(s, _, _)| s.clone()).collect();
                let mut batch = vec![first];
                let mut waiting = std::mem::take(&mut deferred);
                while batch.len() < BATCH_APPENDS_MAX {
                    let next = match waiting.pop_front() {
                        Some(next) => next,
                        None => match pending.try_recv() {
                            Ok(next) => next,
                            Err(_) => break,
                        },
                    };
                    if next.0.streams.iter().any(|(s, _, _)| streams.contains(s)) {
                        deferred.push_back(next);
                    } else {
                        streams.extend(next.0.streams.iter().map(|(s, _, _)| s.clone()));
                        batch.push(next);
                    }
                }
                deferred.extend(waiting);
                let pool = pool.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    let (items, replies): (Vec<BatchItem>, Vec<oneshot::Sender<ItemReply>>) = batch.into_iter().unzip();
                    let results = match pool.get().await {
                        Ok(client) => {
                            let refs: Vec<&BatchItem> = items.iter().collect();
                            call_batch(&client, &refs).await.map_err(|e| describe(&e))
                        }
                        Err(e) => Err(pool_error(&e)),
                    };
                    match results {
                        Ok(results) => {
                            for (reply, result) in replies.into_iter().zip(results) {
                                let _ = reply.send(result);
                            }
                        }
                        Err(detail) => {
                            for reply in replies {
                                let _ = reply.send(ItemReply::Failed(detail.clone()));
                            }
                        }
                    }
                });
            }
        });
        (batcher, task)
    }

    pub(super) async fn submit(&self, item: BatchItem) -> ItemReply {
        // Nothing waiting and a call free: no batch to join, so go straight to the database
        // and save the hand-offs.
        if self.queue.capacity() == self.queue.max_capacity() {
            if let Ok(_slot) = Arc::clone(&self.slots).try_acquire_owned() {
                return match self.pool.get().await {
                    Ok(client) => match call_batch(&client, &[&item]).await {
                        Ok(mut replies) => replies.pop().expect("one reply per item"),
                        Err(e) => ItemReply::Failed(describe(&e)),
                    },
                    Err(e) => ItemReply::Failed(pool_error(&e)),
                };
            }
        }
        let (reply, answer) = oneshot::channel();
        if self.queue.send((item, reply)).await.is_err() {
            return ItemReply::Failed("the append batcher stopped".into());
        }
        answer.await.unwrap_or_else(|_| ItemReply::Failed("the append batcher dropped an append".into()))
    }
}

/// One call of `orderlog_append` for a batch of appends; a reply per item, in order.
pub(super) async fn call_batch(
    client: &impl GenericClient,
    items: &[&BatchItem],
) -> Result<Vec<ItemReply>, tokio_postgres::Error> {
    let mut lock_keys: Vec<i64> =
        items.iter().flat_map(|item| item.streams.iter().map(|(s, _, _)| stream_lock_key(s))).collect();
    lock_keys.sort_unstable();
    lock_keys.dedup();
    let (mut s_append, mut s_stream, mut s_version, mut s_hash) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut e_append, mut e_stream, mut e_version, mut e_id, mut e_type, mut e_schema) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut e_payload, mut e_metadata, mut e_command, mut e_time, mut e_hash) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (index, item) in (1i32..).zip(items) {
        for (stream, version, hash) in &item.streams {
            s_append.push(index);
            s_stream.push(stream.as_str());
            s_version.push(*version as i64);
            s_hash.push(hash.as_str());
        }
        for e in &item.events {
            e_append.push(index);
            e_stream.push(e.stream_id.as_str());
            e_version.push(e.version as i64);
            e_id.push(e.event_id);
            e_type.push(e.event_type.as_str());
            e_schema.push(e.schema_version as i32);
            e_payload.push(e.payload.as_str());
            e_metadata.push(serde_json::to_string(&e.metadata).expect("metadata serializes"));
            e_command.push(e.metadata.command_id.as_str());
            e_time.push(e.recorded_at);
            e_hash.push(e.hash.as_str());
        }
    }
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 16] = [
        &lock_keys,
        &s_append,
        &s_stream,
        &s_version,
        &s_hash,
        &e_append,
        &e_stream,
        &e_version,
        &e_id,
        &e_type,
        &e_schema,
        &e_payload,
        &e_metadata,
        &e_command,
        &e_time,
        &e_hash,
    ];
    let stmt = client
        .prepare_cached(
            "SELECT append_index, outcome, out_stream, out_version, out_hash, out_event, out_position, out_tx_id
             FROM orderlog_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .await?;
    let rows = client.query(&stmt, &params).await?;
    let mut placed: Vec<HashMap<Uuid, (u64, u64)>> = items.iter().map(|_| HashMap::new()).collect();
    let mut replies: Vec<Option<ItemReply>> = items.iter().map(|_| None).collect();
    let owner: HashMap<Uuid, usize> =
        items.iter().enumerate().flat_map(|(i, item)| item.events.iter().map(move |e| (e.event_id, i))).collect();
    for row in &rows {
        match row.get::<_, &str>(1) {
            "ok" => {
                if let Some(event_id) = row.get::<_, Option<Uuid>>(5) {
                    let tx_id: String = row.get(7);
                    let index = owner[&event_id];
                    placed[index].insert(event_id, (row.get::<_, i64>(6) as u64, tx_id.parse().unwrap_or(0)));
                }
            }
            "conflict" => {
                let index = row.get::<_, i32>(0) as usize - 1;
                replies[index] = Some(ItemReply::Conflict {
                    stream_id: row.get(2),
                    version: row.get::<_, i64>(3) as u64,
                    hash: row.get(4),
                })
            }
            _ => replies[row.get::<_, i32>(0) as usize - 1] = Some(ItemReply::Duplicate),
        }
    }
    Ok(items
        .iter()
        .zip(replies)
        .zip(placed)
        .map(|((item, reply), placed)| {
            reply.unwrap_or_else(|| {
                let mut events = item.events.clone();
                for event in &mut events {
                    let (position, commit) = placed[&event.event_id];
                    event.position = position;
                    event.commit = commit;
                }
                ItemReply::Written(events)
            })
        })
        .collect())
}

/// Why one attempt at an append ended without an outcome.
pub(super) enum Attempt {
    /// The heads it planned on moved (a stale cache, a concurrent first write): plan again.
    Stale(String),
    Failed(StoreError),
}

impl From<StoreError> for Attempt {
    fn from(e: StoreError) -> Self {
        Attempt::Failed(e)
    }
}

/// The advisory lock that guards one stream: the first 8 bytes of the SHA-256 of its id.
///
/// Streams are locked with transaction-scoped advisory locks, not `SELECT … FOR UPDATE` on
/// their rows, because a row lock gives the transaction its id at once: an append that
/// locks stream A, then waits for stream B, would hold an older transaction id than the
/// append it waited for, and its event in B would sort before that append's earlier event
/// in B in commit order. Advisory locks take no transaction id; the id comes with the
/// first insert, after every lock is held, so each stream's versions follow commit order.
pub(super) fn stream_lock_key(stream_id: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(stream_id.as_bytes());
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

pub(super) struct Prefetched {
    pub(super) heads: HashMap<String, (u64, String)>,
    pub(super) events: HashMap<Uuid, EventLocation>,
}

impl AppendLookup for Prefetched {
    fn find_event(&mut self, event_id: &Uuid) -> Result<Option<EventLocation>, StoreError> {
        Ok(self.events.get(event_id).cloned())
    }

    fn stream_head(&mut self, stream_id: &str) -> Result<Option<StreamHead>, StoreError> {
        Ok(self.heads.get(stream_id).map(|(version, hash)| StreamHead { version: *version, hash: hash.clone() }))
    }
}
