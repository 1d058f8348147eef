//! Bulk load into an empty log: the log's tables taken exclusively, rows by binary COPY,
//! the secondary indexes built once after.

use super::*;

/// How long a bulk load waits for the log's tables before it gives up.
pub const BULK_LOCK_TIMEOUT_MS: u64 = 10_000;

/// The event log's indexes besides its positions (migration 1), dropped and built again
/// around a bulk load: how to drop it, how to build it.
pub(super) const BULK_INDEXES: [(&str, &str); 4] = [
    (
        "ALTER TABLE orderlog_events DROP CONSTRAINT orderlog_events_event_id_key",
        "ALTER TABLE orderlog_events ADD CONSTRAINT orderlog_events_event_id_key UNIQUE (event_id)",
    ),
    (
        "ALTER TABLE orderlog_events DROP CONSTRAINT orderlog_events_stream_id_version_key",
        "ALTER TABLE orderlog_events ADD CONSTRAINT orderlog_events_stream_id_version_key UNIQUE (stream_id, version)",
    ),
    (
        "DROP INDEX orderlog_events_commit_order",
        "CREATE INDEX orderlog_events_commit_order ON orderlog_events (tx_id, position)",
    ),
    (
        "DROP INDEX orderlog_events_by_command",
        "CREATE INDEX orderlog_events_by_command ON orderlog_events USING hash (command_id)",
    ),
];

/// JSON text sent as a `jsonb` value (binary format: version 1, then the text).
#[derive(Debug)]
pub(super) struct JsonbText<'a>(&'a str);

impl tokio_postgres::types::ToSql for JsonbText<'_> {
    fn to_sql(
        &self,
        _ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&[1]);
        out.extend_from_slice(self.0.as_bytes());
        Ok(tokio_postgres::types::IsNull::No)
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        *ty == tokio_postgres::types::Type::JSONB
    }

    tokio_postgres::types::to_sql_checked!();
}

/// Adds the commit record of a bulk load's group of events (first position, count, digest)
/// to `records`; empties the group.
pub(super) fn bulk_record(group: &mut crate::hash::CommitDigest, records: &mut (Vec<i64>, Vec<i64>, Vec<String>)) {
    records.0.push(group.first() as i64);
    records.1.push(group.events() as i64);
    records.2.push(std::mem::take(group).finish());
}

impl PostgresStore {
    pub(super) async fn load(&self, events: crate::BulkEvents) -> Result<u64, StoreError> {
        use tokio_postgres::binary_copy::BinaryCopyInWriter;
        use tokio_postgres::types::Type;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        // Nobody else writes (or reads) the log until the load commits: the positions are
        // the load's own, and the indexes are dropped and built again around it.
        // A session holding the log in an open transaction would block the load for as long
        // as it stays open: wait a bounded time, then say so.
        tx.batch_execute(&format!("SET LOCAL lock_timeout = {BULK_LOCK_TIMEOUT_MS}")).await.map_err(pg)?;
        tx.batch_execute("LOCK TABLE orderlog_events, orderlog_commits IN ACCESS EXCLUSIVE MODE").await.map_err(
            |e| {
                if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) {
                    StoreError::LoadRefused(format!(
                        "the event log is in use: another session has held it in an open transaction for over {} s; \
                     end that transaction (or stop the processes using this database) and import again",
                        BULK_LOCK_TIMEOUT_MS / 1000
                    ))
                } else {
                    pg(e)
                }
            },
        )?;
        tx.batch_execute("SET LOCAL lock_timeout TO DEFAULT").await.map_err(pg)?;
        let occupied: bool =
            tx.query_one("SELECT EXISTS (SELECT 1 FROM orderlog_events)", &[]).await.map_err(pg)?.get(0);
        if occupied {
            return Err(StoreError::LoadRefused("the store is not empty".into()));
        }
        // Into an empty table the rows are copied in (binary COPY) and each index is built
        // once, sorted, at the end, instead of inserting into four trees per row.
        for (drop, _) in BULK_INDEXES {
            tx.batch_execute(drop).await.map_err(pg)?;
        }
        let sink = tx
            .copy_in(
                "COPY orderlog_events (position, stream_id, version, event_id, event_type, schema_version, payload,
                                       metadata, command_id, recorded_at, hash) FROM STDIN (FORMAT binary)",
            )
            .await
            .map_err(pg)?;
        let types = [
            Type::INT8,
            Type::TEXT,
            Type::INT8,
            Type::UUID,
            Type::TEXT,
            Type::INT4,
            Type::TEXT,
            Type::JSONB,
            Type::TEXT,
            Type::TIMESTAMPTZ,
            Type::TEXT,
        ];
        let started = std::time::Instant::now();
        let writer = BinaryCopyInWriter::new(sink, &types);
        tokio::pin!(writer);
        // The commit records, as columns: first positions, counts, digests.
        let mut records: (Vec<i64>, Vec<i64>, Vec<String>) = Default::default();
        let mut group = crate::hash::CommitDigest::default();
        let mut position = 0u64;
        let copy_error =
            |e: tokio_postgres::Error| StoreError::LoadRefused(format!("the events cannot be stored: {e}"));
        for chunk in events {
            for load in chunk?.iter() {
                let e = &load.event;
                position += 1;
                writer
                    .as_mut()
                    .write(&[
                        &(position as i64),
                        &e.stream_id,
                        &(e.version as i64),
                        &e.event_id,
                        &e.event_type,
                        &(e.schema_version as i32),
                        &e.payload,
                        &JsonbText(&load.metadata),
                        &e.metadata.command_id,
                        &e.recorded_at,
                        &e.hash,
                    ])
                    .await
                    .map_err(copy_error)?;
                group.push(position, &e.hash);
                if group.events() >= crate::BULK_RECORD_EVENTS {
                    bulk_record(&mut group, &mut records);
                }
            }
        }
        if group.events() > 0 {
            bulk_record(&mut group, &mut records);
        }
        writer.as_mut().finish().await.map_err(copy_error)?;
        let rows = started.elapsed();
        for (_, create) in BULK_INDEXES {
            tx.batch_execute(create)
                .await
                .map_err(|e| StoreError::LoadRefused(format!("the events cannot be indexed: {e}")))?;
        }
        let indexed = started.elapsed();
        if position > 0 {
            // Appends after the load number on from its last position.
            tx.execute(
                "SELECT setval('orderlog_events_position_seq', GREATEST($1, last_value)) FROM orderlog_events_position_seq",
                &[&(position as i64)],
            )
            .await
            .map_err(pg)?;
        }
        let (firsts, counts, digests) = records;
        tx.execute(
            "INSERT INTO orderlog_commits (commit_order, first_position, events, digest)
             SELECT pg_current_xact_id(), f, c, d FROM unnest($1::INT8[], $2::INT8[], $3::TEXT[]) AS u(f, c, d)",
            &[&firsts, &counts, &digests],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        tracing::debug!(events = position, ?rows, indexes = ?(indexed - rows), commit = ?(started.elapsed() - indexed), "bulk load");
        Ok(position)
    }
}
