//! The one writer thread: appends in batches, each in its own savepoint, one commit per batch.

use super::*;

/// One row of the log, in the order `write_rows` and `bulk_load` bind it.
pub(super) const INSERT_EVENT: &str =
    "INSERT INTO events (position, stream_id, version, event_id, event_type, schema_version,
                                                payload, metadata, command_id, recorded_at, hash)
                            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

/// One commit record: first position, number of events, digest.
pub(super) const INSERT_COMMIT: &str =
    "INSERT INTO orderlog_commits (first_position, events, digest) VALUES (?1, ?2, ?3)";

pub(super) struct SqliteTarget<'c> {
    conn: &'c Connection,
}

impl AppendLookup for SqliteTarget<'_> {
    fn find_event(&mut self, event_id: &Uuid) -> Result<Option<EventLocation>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT position, stream_id, version FROM events WHERE event_id = ?1")
            .map_err(backend)?;
        stmt.query_row([event_id.to_string()], |r| {
            Ok(EventLocation { position: r.get(0)?, stream_id: r.get(1)?, version: r.get(2)? })
        })
        .optional()
        .map_err(backend)
    }

    fn stream_head(&mut self, stream_id: &str) -> Result<Option<StreamHead>, StoreError> {
        let mut stmt =
            self.conn.prepare_cached("SELECT version, hash FROM streams WHERE stream_id = ?1").map_err(backend)?;
        stmt.query_row([stream_id], |r| Ok(StreamHead { version: r.get(0)?, hash: r.get(1)? }))
            .optional()
            .map_err(backend)
    }
}

/// Writes the planned events at positions `next`, `next + 1`, … and the new stream heads.
/// Gives the events of a log written before commit records existed one record each.
pub(super) fn record_earlier_commits(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(backend)?;
    {
        let mut read = tx.prepare("SELECT position, hash FROM events ORDER BY position").map_err(backend)?;
        let mut insert = tx.prepare(INSERT_COMMIT).map_err(backend)?;
        let mut rows = read.query([]).map_err(backend)?;
        while let Some(row) = rows.next().map_err(backend)? {
            let (position, hash): (u64, String) = (row.get(0).map_err(backend)?, row.get(1).map_err(backend)?);
            insert.execute(params![position, 1, commit_digest([(position, hash.as_str())])]).map_err(backend)?;
        }
    }
    tx.commit().map_err(backend)
}

pub(super) fn write_rows(conn: &Connection, write: &mut Write, next: u64) -> Result<(), StoreError> {
    let mut insert = conn.prepare_cached(INSERT_EVENT).map_err(backend)?;
    for (e, position) in write.events.iter_mut().zip(next..) {
        e.position = position;
        e.commit = position;
        let metadata = serde_json::to_string(&e.metadata).map_err(backend)?;
        insert
            .execute(params![
                e.position,
                e.stream_id,
                e.version,
                e.event_id.to_string(),
                e.event_type,
                e.schema_version,
                e.payload,
                metadata,
                e.metadata.command_id,
                format_time(&e.recorded_at),
                e.hash,
            ])
            .map_err(|err| match err.sqlite_error_code() {
                Some(rusqlite::ErrorCode::ConstraintViolation) if err.to_string().contains("event_id") => {
                    StoreError::DuplicateEvent { event_id: e.event_id, detail: "in another append".into() }
                }
                _ => backend(err),
            })?;
    }
    let mut upsert = conn
        .prepare_cached(
            "INSERT INTO streams (stream_id, version, hash) VALUES (?1, ?2, ?3)
             ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, hash = excluded.hash",
        )
        .map_err(backend)?;
    for (stream_id, head) in &write.heads {
        upsert.execute(params![stream_id, head.version, head.hash]).map_err(backend)?;
    }
    Ok(())
}

pub(super) fn writer_loop(mut conn: Connection, mut rx: mpsc::Receiver<WriterJob>, head: watch::Sender<u64>) {
    // A job taken while gathering a batch, to run after it.
    let mut pending: Option<WriterJob> = None;
    loop {
        let Some(job) = pending.take().or_else(|| rx.blocking_recv()) else { return };
        let first = match job {
            WriterJob::Exclusive(work) => {
                work(&mut conn);
                continue;
            }
            WriterJob::Append(request) => request,
        };
        let mut batch = vec![first];
        while batch.len() < BATCH_APPENDS_MAX {
            match rx.try_recv() {
                Ok(WriterJob::Append(request)) => batch.push(request),
                Ok(exclusive) => {
                    pending = Some(exclusive);
                    break;
                }
                Err(_) => break,
            }
        }
        let (results, last) = write_batch(&mut conn, &batch);
        if let Some(last) = last {
            head.send_if_modified(|h| {
                let moved = last > *h;
                *h = (*h).max(last);
                moved
            });
        }
        for (request, result) in batch.into_iter().zip(results) {
            let _ = request.reply.send(result);
        }
    }
}

/// Commits a batch of appends in one transaction; each append in its own savepoint.
pub(super) fn write_batch(
    conn: &mut Connection,
    batch: &[AppendRequest],
) -> (Vec<Result<AppendOutcome, StoreError>>, Option<u64>) {
    let fail_all = |e: StoreError| {
        let message = e.to_string();
        (batch.iter().map(|_| Err(StoreError::Backend(message.clone()))).collect(), None)
    };
    let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => return fail_all(backend(e)),
    };
    let mut next: u64 = match tx.query_row("SELECT COALESCE(MAX(position), 0) + 1 FROM events", [], |r| r.get(0)) {
        Ok(n) => n,
        Err(e) => return fail_all(backend(e)),
    };
    let mut results = Vec::with_capacity(batch.len());
    for request in batch {
        let result = (|| {
            tx.execute_batch("SAVEPOINT append").map_err(backend)?;
            let planned = plan(&mut SqliteTarget { conn: &tx }, &request.appends).and_then(|planned| match planned {
                Plan::Repeat(outcome) => Ok((outcome, 0)),
                Plan::Write(mut write) => {
                    write_rows(&tx, &mut write, next)?;
                    let written = write.events.len() as u64;
                    if written > 0 {
                        let digest = commit_digest(write.events.iter().map(|e| (e.position, e.hash.as_str())));
                        tx.prepare_cached(INSERT_COMMIT)
                            .and_then(|mut insert| insert.execute(params![next, written, digest]))
                            .map_err(backend)?;
                    }
                    Ok((write.outcome(), written))
                }
            });
            match planned {
                Ok((outcome, written)) => {
                    tx.execute_batch("RELEASE append").map_err(backend)?;
                    next += written;
                    Ok(outcome)
                }
                Err(e) => {
                    tx.execute_batch("ROLLBACK TO append; RELEASE append").map_err(backend)?;
                    Err(e)
                }
            }
        })();
        results.push(result);
    }
    if let Err(e) = tx.commit() {
        return fail_all(backend(e));
    }
    (results, Some(next - 1))
}
