//! Read-model rows in the SQLite file of the log.
//!
//! Tables: `orderlog_checkpoints` (one row per model: version, cursor, events folded, the
//! error that stopped it) and `rm_{model}` (`key`, `data` as JSON), plus the views a model
//! declares for plain-SQL readers. Read models are rebuilt from the log, never migrated:
//! their tables are created when absent.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use orderlog_store::LogCursor;
use rusqlite::{params, Connection, OptionalExtension};

use crate::table::{Checkpoint, RowStore};
use crate::RowsError;

/// A failure injected into the next commit, inside its transaction (which then rolls back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteFault {
    /// After writing this many rows.
    AfterRows(usize),
    /// After moving the checkpoint, before committing.
    BeforeCommit,
}

/// Rows and checkpoints in a SQLite file.
pub struct SqliteRows {
    conn: Arc<Mutex<Connection>>,
    /// For loading rows while `conn` writes (WAL readers see the last commit).
    reader: Arc<Mutex<Connection>>,
    fault: Mutex<Option<WriteFault>>,
    views: Vec<&'static str>,
}

fn text(e: impl std::fmt::Display) -> RowsError {
    RowsError::Database(e.to_string())
}

impl SqliteRows {
    /// Opens the read models of the orderlog database at `path` (open the event store on it
    /// first: that identifies the file and creates it). `views` are statements that
    /// (re)create the views, run once the tables exist.
    pub fn open(path: impl AsRef<Path>, views: &[&'static str]) -> Result<SqliteRows, RowsError> {
        let conn = Connection::open(path.as_ref()).map_err(text)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(text)?;
        // Rows and checkpoint commit together, and only events the log has made durable are
        // folded, so a commit lost to a power cut leaves the model consistent, a little
        // behind, and folded again: read-model commits need not wait for the disk.
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(text)?;
        let reader = Connection::open(path.as_ref()).map_err(text)?;
        reader.busy_timeout(Duration::from_secs(10)).map_err(text)?;
        Ok(SqliteRows {
            conn: Arc::new(Mutex::new(conn)),
            reader: Arc::new(Mutex::new(reader)),
            fault: Mutex::new(None),
            views: views.to_vec(),
        })
    }

    /// Makes the next commit fail at `fault`. For tests.
    pub fn inject(&self, fault: WriteFault) {
        *self.fault.lock().expect("fault lock") = Some(fault);
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, RowsError> + Send + 'static,
    ) -> Result<T, RowsError> {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || f(&mut conn.lock().expect("connection lock"))).await.map_err(text)?
    }

    async fn with_reader<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, RowsError> + Send + 'static,
    ) -> Result<T, RowsError> {
        let conn = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || f(&mut conn.lock().expect("connection lock"))).await.map_err(text)?
    }
}

fn table(model: &str) -> String {
    format!("rm_{model}")
}

#[async_trait]
impl RowStore for SqliteRows {
    async fn ensure(&self, model: &'static str, version: u32) -> Result<(), RowsError> {
        let views = self.views.clone();
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(text)?;
            tx.execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {} (key TEXT PRIMARY KEY, data TEXT NOT NULL)",
                table(model)
            ))
            .map_err(text)?;
            tx.execute(
                "INSERT INTO orderlog_checkpoints (projection, version, commit_order, position, events)
                 VALUES (?1, ?2, 0, 0, 0) ON CONFLICT (projection) DO NOTHING",
                params![model, version],
            )
            .map_err(text)?;
            // SQLite resolves the tables a view names when it is used, not when it is made.
            for view in views {
                tx.execute_batch(view).map_err(text)?;
            }
            tx.commit().map_err(text)
        })
        .await
    }

    async fn checkpoint(&self, model: &'static str) -> Result<Checkpoint, RowsError> {
        self.with(move |conn| {
            conn.query_row(
                "SELECT version, commit_order, position, events, error FROM orderlog_checkpoints WHERE projection = ?1",
                [model],
                |r| {
                    Ok(Checkpoint {
                        version: r.get(0)?,
                        cursor: LogCursor { commit: r.get(1)?, position: r.get(2)? },
                        events: r.get(3)?,
                        error: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(text)?
            .ok_or_else(|| RowsError::Refused(format!("projection '{model}' has no checkpoint; run it first")))
        })
        .await
    }

    async fn load(&self, model: &'static str, keys: Vec<String>) -> Result<BTreeMap<String, String>, RowsError> {
        if keys.is_empty() {
            return Ok(BTreeMap::new());
        }
        self.with_reader(move |conn| {
            let mut stmt =
                conn.prepare_cached(&format!("SELECT data FROM {} WHERE key = ?1", table(model))).map_err(text)?;
            let mut rows = BTreeMap::new();
            for key in keys {
                if let Some(data) = stmt.query_row([&key], |r| r.get::<_, String>(0)).optional().map_err(text)? {
                    rows.insert(key, data);
                }
            }
            Ok(rows)
        })
        .await
    }

    async fn write_batch(
        &self,
        model: &'static str,
        from: LogCursor,
        to: LogCursor,
        events: u64,
        rows: Vec<(String, String)>,
    ) -> Result<bool, RowsError> {
        let fault = self.fault.lock().expect("fault lock").take();
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(text)?;
            let at: (u64, u64) = tx
                .query_row(
                    "SELECT commit_order, position FROM orderlog_checkpoints WHERE projection = ?1",
                    [model],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(text)?;
            if at != (from.commit, from.position) {
                return Ok(false);
            }
            {
                let mut upsert = tx
                    .prepare_cached(&format!(
                        "INSERT INTO {} (key, data) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET data = excluded.data",
                        table(model)
                    ))
                    .map_err(text)?;
                if fault == Some(WriteFault::AfterRows(0)) {
                    return Err(RowsError::Database("injected fault after 0 rows".into()));
                }
                for (written, (key, data)) in (1..).zip(&rows) {
                    upsert.execute(params![key, data]).map_err(text)?;
                    if fault == Some(WriteFault::AfterRows(written)) {
                        return Err(RowsError::Database(format!("injected fault after {written} rows")));
                    }
                }
            }
            tx.execute(
                "UPDATE orderlog_checkpoints SET commit_order = ?2, position = ?3, events = events + ?4, error = NULL
                 WHERE projection = ?1",
                params![model, to.commit, to.position, events],
            )
            .map_err(text)?;
            if fault == Some(WriteFault::BeforeCommit) {
                return Err(RowsError::Database("injected fault before commit".into()));
            }
            tx.commit().map_err(text)?;
            Ok(true)
        })
        .await
    }

    async fn record_error(&self, model: &'static str, error: &str) -> Result<(), RowsError> {
        let error = error.to_string();
        self.with(move |conn| {
            conn.execute("UPDATE orderlog_checkpoints SET error = ?2 WHERE projection = ?1", params![model, error])
                .map_err(text)?;
            Ok(())
        })
        .await
    }

    async fn swap(&self, live: &'static str, shadow: &'static str) -> Result<bool, RowsError> {
        let views = self.views.clone();
        self.with(move |conn| {
            // Renaming a table must not rewrite (or check) the views that name the live one.
            conn.pragma_update(None, "legacy_alter_table", "ON").map_err(text)?;
            let swapped = (|| {
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(text)?;
                let at = |name: &str| {
                    tx.query_row(
                        "SELECT version, commit_order, position, events FROM orderlog_checkpoints WHERE projection = ?1",
                        [name],
                        |r| Ok((r.get::<_, u32>(0)?, (r.get::<_, u64>(1)?, r.get::<_, u64>(2)?), r.get::<_, u64>(3)?)),
                    )
                    .optional()
                    .map_err(text)
                };
                let Some((version, cursor, events)) = at(shadow)? else {
                    return Err(RowsError::Refused(format!("no rebuild '{shadow}' to swap in")));
                };
                if let Some((live_version, live_cursor, _)) = at(live)? {
                    if live_version == version && live_cursor > cursor {
                        return Ok(false);
                    }
                }
                tx.execute_batch(&format!(
                    "DROP TABLE IF EXISTS {live_table}; ALTER TABLE {shadow_table} RENAME TO {live_table};",
                    live_table = table(live),
                    shadow_table = table(shadow)
                ))
                .map_err(text)?;
                tx.execute(
                    "INSERT INTO orderlog_checkpoints (projection, version, commit_order, position, events)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (projection) DO UPDATE SET version = excluded.version,
                        commit_order = excluded.commit_order, position = excluded.position,
                        events = excluded.events, error = NULL",
                    params![live, version, cursor.0, cursor.1, events],
                )
                .map_err(text)?;
                tx.execute("DELETE FROM orderlog_checkpoints WHERE projection = ?1", [shadow]).map_err(text)?;
                for view in &views {
                    tx.execute_batch(view).map_err(text)?;
                }
                tx.commit().map_err(text)?;
                Ok(true)
            })();
            conn.pragma_update(None, "legacy_alter_table", "OFF").map_err(text)?;
            swapped
        })
        .await
    }

    async fn discard(&self, model: &'static str) -> Result<(), RowsError> {
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(text)?;
            tx.execute_batch(&format!("DROP TABLE IF EXISTS {}", table(model))).map_err(text)?;
            tx.execute("DELETE FROM orderlog_checkpoints WHERE projection = ?1", [model]).map_err(text)?;
            tx.commit().map_err(text)
        })
        .await
    }
}
