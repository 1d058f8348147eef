//! Read-model rows in the PostgreSQL database of the log: `orderlog_checkpoints`,
//! `rm_{model}` (`key`, `data` as JSONB) and the model's views. Read-model tables are
//! rebuilt from the log, never migrated: they are created when absent.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use orderlog_store::{LogCursor, PostgresOptions};
use tokio_postgres::NoTls;

use crate::sqlite::WriteFault;
use crate::table::{Checkpoint, RowStore};
use crate::RowsError;

/// Advisory lock held while creating read-model tables and views ("ORLG" and 2).
const READ_MODEL_DDL_LOCK_KEY: i64 = 0x4F52_4C47_0000_0002;

/// Rows and checkpoints in a PostgreSQL database.
pub struct PostgresRows {
    pool: Pool,
    fault: Mutex<Option<WriteFault>>,
    views: Vec<&'static str>,
}

fn text(e: impl std::fmt::Display) -> RowsError {
    RowsError::Database(e.to_string())
}

fn db(e: tokio_postgres::Error) -> RowsError {
    match e.as_db_error() {
        Some(d) => RowsError::Database(d.message().to_string()),
        None => RowsError::Database(e.to_string()),
    }
}

/// (Re)makes the views inside `tx`. A view may name the table of a model not created yet;
/// it is made when that model is.
async fn make_views(tx: &deadpool_postgres::Transaction<'_>, views: &[&'static str]) -> Result<(), RowsError> {
    for view in views {
        tx.batch_execute("SAVEPOINT view").await.map_err(db)?;
        match tx.batch_execute(view).await {
            Ok(()) => tx.batch_execute("RELEASE view").await.map_err(db)?,
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
                tx.batch_execute("ROLLBACK TO view").await.map_err(db)?
            }
            Err(e) => return Err(db(e)),
        }
    }
    Ok(())
}

/// Runs `ddl` (`CREATE … IF NOT EXISTS`) under the read models' DDL lock: PostgreSQL's
/// `IF NOT EXISTS` does not hold against a concurrent creator (two processes starting at
/// once on a fresh database collide on `pg_type_typname_nsp_index`).
pub async fn create_under_lock(pool: &Pool, ddl: &str) -> Result<(), RowsError> {
    let mut client = pool.get().await.map_err(text)?;
    let tx = client.transaction().await.map_err(db)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&READ_MODEL_DDL_LOCK_KEY]).await.map_err(db)?;
    tx.batch_execute(ddl).await.map_err(db)?;
    tx.commit().await.map_err(db)
}

fn table(model: &str) -> String {
    format!("rm_{model}")
}

impl PostgresRows {
    /// The pool the rows are read and written through (for queries).
    pub fn pool(&self) -> Pool {
        self.pool.clone()
    }

    /// Connects to the orderlog database `url` (connect the event store to it first: that
    /// identifies and migrates it). `views` are statements that (re)create the views, run
    /// once the tables exist.
    pub async fn connect(url: &str, views: &[&'static str]) -> Result<PostgresRows, RowsError> {
        let options = PostgresOptions::from_url(url).map_err(text)?;
        let manager = Manager::from_config(
            options.config.clone(),
            NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(4)
            .wait_timeout(Some(options.pool_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(text)?;
        Ok(PostgresRows { pool, fault: Mutex::new(None), views: views.to_vec() })
    }

    /// Makes the next commit fail at `fault`. For tests.
    pub fn inject(&self, fault: WriteFault) {
        *self.fault.lock().expect("fault lock") = Some(fault);
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, RowsError> {
        self.pool.get().await.map_err(text)
    }
}

#[async_trait]
impl RowStore for PostgresRows {
    async fn ensure(&self, model: &'static str, version: u32) -> Result<(), RowsError> {
        let mut client = self.client().await?;
        // DDL of two runners (or processes) at once fails ("tuple concurrently updated"):
        // one at a time, under an advisory lock.
        let tx = client.transaction().await.map_err(db)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&READ_MODEL_DDL_LOCK_KEY]).await.map_err(db)?;
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {} (key TEXT PRIMARY KEY, data JSONB NOT NULL)",
            table(model)
        ))
        .await
        .map_err(db)?;
        tx.execute(
            "INSERT INTO orderlog_checkpoints (projection, version, commit_order, position, events)
             VALUES ($1, $2, 0, 0, 0) ON CONFLICT (projection) DO NOTHING",
            &[&model, &(version as i32)],
        )
        .await
        .map_err(db)?;
        make_views(&tx, &self.views).await?;
        tx.commit().await.map_err(db)
    }

    async fn checkpoint(&self, model: &'static str) -> Result<Checkpoint, RowsError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT version, commit_order, position, events, error FROM orderlog_checkpoints WHERE projection = $1",
                &[&model],
            )
            .await
            .map_err(db)?
            .ok_or_else(|| RowsError::Refused(format!("projection '{model}' has no checkpoint; run it first")))?;
        Ok(Checkpoint {
            version: row.get::<_, i32>(0) as u32,
            cursor: LogCursor { commit: row.get::<_, i64>(1) as u64, position: row.get::<_, i64>(2) as u64 },
            events: row.get::<_, i64>(3) as u64,
            error: row.get(4),
        })
    }

    async fn load(&self, model: &'static str, keys: Vec<String>) -> Result<BTreeMap<String, String>, RowsError> {
        let client = self.client().await?;
        let rows = client
            .query(&format!("SELECT key, data::text FROM {} WHERE key = ANY($1)", table(model)), &[&keys])
            .await
            .map_err(db)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
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
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let at = tx
            .query_one(
                "SELECT commit_order, position FROM orderlog_checkpoints WHERE projection = $1 FOR UPDATE",
                &[&model],
            )
            .await
            .map_err(db)?;
        if (at.get::<_, i64>(0) as u64, at.get::<_, i64>(1) as u64) != (from.commit, from.position) {
            return Ok(false);
        }
        let upsert = format!(
            "INSERT INTO {} (key, data) SELECT k, d::jsonb FROM unnest($1::text[], $2::text[]) AS u(k, d)
             ON CONFLICT (key) DO UPDATE SET data = EXCLUDED.data",
            table(model)
        );
        let written = match fault {
            Some(WriteFault::AfterRows(n)) => n.min(rows.len()),
            _ => rows.len(),
        };
        let keys: Vec<&str> = rows[..written].iter().map(|(k, _)| k.as_str()).collect();
        let data: Vec<&str> = rows[..written].iter().map(|(_, d)| d.as_str()).collect();
        tx.execute(&upsert, &[&keys, &data]).await.map_err(db)?;
        if let Some(WriteFault::AfterRows(n)) = fault {
            return Err(RowsError::Database(format!("injected fault after {n} rows")));
        }
        tx.execute(
            "UPDATE orderlog_checkpoints SET commit_order = $2, position = $3, events = events + $4, error = NULL
             WHERE projection = $1",
            &[&model, &(to.commit as i64), &(to.position as i64), &(events as i64)],
        )
        .await
        .map_err(db)?;
        if fault == Some(WriteFault::BeforeCommit) {
            return Err(RowsError::Database("injected fault before commit".into()));
        }
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn record_error(&self, model: &'static str, error: &str) -> Result<(), RowsError> {
        let client = self.client().await?;
        client
            .execute("UPDATE orderlog_checkpoints SET error = $2 WHERE projection = $1", &[&model, &error])
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn swap(&self, live: &'static str, shadow: &'static str) -> Result<bool, RowsError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&READ_MODEL_DDL_LOCK_KEY]).await.map_err(db)?;
        let at = |row: Option<tokio_postgres::Row>| {
            row.map(|r| (r.get::<_, i32>(0), (r.get::<_, i64>(1), r.get::<_, i64>(2)), r.get::<_, i64>(3)))
        };
        let query = "SELECT version, commit_order, position, events FROM orderlog_checkpoints
                      WHERE projection = $1 FOR UPDATE";
        let Some((version, cursor, events)) = at(tx.query_opt(query, &[&shadow]).await.map_err(db)?) else {
            return Err(RowsError::Refused(format!("no rebuild '{shadow}' to swap in")));
        };
        if let Some((live_version, live_cursor, _)) = at(tx.query_opt(query, &[&live]).await.map_err(db)?) {
            if live_version == version && live_cursor > cursor {
                return Ok(false);
            }
        }
        // The rows move into the live table rather than the table being replaced: the views
        // keep pointing at the same table, and a reader mid-query keeps its snapshot (a table
        // dropped and renamed under a view made concurrent reads fail).
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {live_table} (key TEXT PRIMARY KEY, data JSONB NOT NULL);
             DELETE FROM {live_table};
             INSERT INTO {live_table} (key, data) SELECT key, data FROM {shadow_table};
             DROP TABLE {shadow_table};",
            live_table = table(live),
            shadow_table = table(shadow)
        ))
        .await
        .map_err(db)?;
        tx.execute(
            "INSERT INTO orderlog_checkpoints (projection, version, commit_order, position, events)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (projection) DO UPDATE SET version = EXCLUDED.version,
                commit_order = EXCLUDED.commit_order, position = EXCLUDED.position,
                events = EXCLUDED.events, error = NULL",
            &[&live, &version, &cursor.0, &cursor.1, &events],
        )
        .await
        .map_err(db)?;
        tx.execute("DELETE FROM orderlog_checkpoints WHERE projection = $1", &[&shadow]).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn discard(&self, model: &'static str) -> Result<(), RowsError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&READ_MODEL_DDL_LOCK_KEY]).await.map_err(db)?;
        tx.batch_execute(&format!("DROP TABLE IF EXISTS {}", table(model))).await.map_err(db)?;
        tx.execute("DELETE FROM orderlog_checkpoints WHERE projection = $1", &[&model]).await.map_err(db)?;
        tx.commit().await.map_err(db)
    }
}
