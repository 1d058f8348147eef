//! The processes' tables on either backend through one small interface: statements are
//! written once, with `$1`, `$2`, … numbered in order of first appearance (SQLite reads them
//! as named parameters in that order, PostgreSQL as positions), integers are `BIGINT` on
//! PostgreSQL and text is text. The tables are made by the store's migrations.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use deadpool_postgres::Pool;
use tokio_postgres::types::{IsNull, ToSql, Type};

#[derive(Debug, thiserror::Error)]
#[error("process tables: {0}")]
pub struct DbError(pub String);

fn db(e: impl std::fmt::Display) -> DbError {
    DbError(e.to_string())
}

/// PostgreSQL's errors say only "db error" when displayed; the server's message is below.
fn pg(e: tokio_postgres::Error) -> DbError {
    match e.as_db_error() {
        Some(server) => DbError(format!("{}: {}", server.code().code(), server.message())),
        None => DbError(e.to_string()),
    }
}

/// A parameter or a column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Text(String),
    Null,
}

impl Value {
    pub fn int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn text(&self) -> Option<&str> {
        match self {
            Value::Text(t) => Some(t),
            _ => None,
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

pub type Row = Vec<Value>;

/// One statement and its parameters.
pub type Statement = (&'static str, Vec<Value>);

#[async_trait]
pub trait Db: Send + Sync {
    async fn query(&self, sql: &'static str, params: Vec<Value>) -> Result<Vec<Row>, DbError>;
    /// Runs the statements in one transaction; returns the rows each changed. When `guard`
    /// is set and the first statement changes no row, nothing is committed.
    async fn transaction(&self, statements: Vec<Statement>, guard: bool) -> Result<Option<Vec<u64>>, DbError>;

    async fn execute(&self, sql: &'static str, params: Vec<Value>) -> Result<u64, DbError> {
        Ok(self.transaction(vec![(sql, params)], false).await?.map_or(0, |c| c[0]))
    }
}

/// The tables in a SQLite file, through one connection of their own.
pub struct SqliteDb {
    conn: Arc<Mutex<rusqlite::Connection>>,
}

impl SqliteDb {
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteDb, DbError> {
        let conn = rusqlite::Connection::open(path).map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(db)?;
        Ok(SqliteDb { conn: Arc::new(Mutex::new(conn)) })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, DbError> {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || f(&mut conn.lock().expect("connection lock"))).await.map_err(db)?
    }
}

fn sqlite_params(params: &[Value]) -> Vec<rusqlite::types::Value> {
    params
        .iter()
        .map(|v| match v {
            Value::Int(i) => rusqlite::types::Value::Integer(*i),
            Value::Text(t) => rusqlite::types::Value::Text(t.clone()),
            Value::Null => rusqlite::types::Value::Null,
        })
        .collect()
}

#[async_trait]
impl Db for SqliteDb {
    async fn query(&self, sql: &'static str, params: Vec<Value>) -> Result<Vec<Row>, DbError> {
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(sql).map_err(db)?;
            let columns = stmt.column_count();
            let rows = stmt
                .query_map(rusqlite::params_from_iter(sqlite_params(&params)), |r| {
                    (0..columns)
                        .map(|i| {
                            Ok(match r.get::<_, rusqlite::types::Value>(i)? {
                                rusqlite::types::Value::Integer(i) => Value::Int(i),
                                rusqlite::types::Value::Text(t) => Value::Text(t),
                                _ => Value::Null,
                            })
                        })
                        .collect::<rusqlite::Result<Row>>()
                })
                .map_err(db)?;
            rows.collect::<rusqlite::Result<Vec<Row>>>().map_err(db)
        })
        .await
    }

    async fn transaction(&self, statements: Vec<Statement>, guard: bool) -> Result<Option<Vec<u64>>, DbError> {
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db)?;
            let mut changed = Vec::with_capacity(statements.len());
            for (i, (sql, params)) in statements.iter().enumerate() {
                let n = tx
                    .prepare_cached(sql)
                    .and_then(|mut s| s.execute(rusqlite::params_from_iter(sqlite_params(params))))
                    .map_err(db)?;
                if guard && i == 0 && n == 0 {
                    return Ok(None);
                }
                changed.push(n as u64);
            }
            tx.commit().map_err(db)?;
            Ok(Some(changed))
        })
        .await
    }
}

/// The tables in PostgreSQL, through a pool.
pub struct PostgresDb {
    pool: Pool,
}

impl PostgresDb {
    pub fn new(pool: Pool) -> PostgresDb {
        PostgresDb { pool }
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut tokio_postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Int(i) => i.to_sql(ty, out),
            Value::Text(t) => t.to_sql(ty, out),
            Value::Null => Ok(IsNull::Yes),
        }
    }

    fn accepts(ty: &Type) -> bool {
        <i64 as ToSql>::accepts(ty) || <String as ToSql>::accepts(ty)
    }

    tokio_postgres::types::to_sql_checked!();
}

fn pg_params(params: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

#[async_trait]
impl Db for PostgresDb {
    async fn query(&self, sql: &'static str, params: Vec<Value>) -> Result<Vec<Row>, DbError> {
        let client = self.pool.get().await.map_err(db)?;
        let stmt = client.prepare_cached(sql).await.map_err(pg)?;
        let rows = client.query(&stmt, &pg_params(&params)).await.map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| match *r.columns()[i].type_() {
                        Type::INT8 => r.get::<_, Option<i64>>(i).map_or(Value::Null, Value::Int),
                        _ => r.get::<_, Option<String>>(i).map_or(Value::Null, Value::Text),
                    })
                    .collect()
            })
            .collect())
    }

    async fn transaction(&self, statements: Vec<Statement>, guard: bool) -> Result<Option<Vec<u64>>, DbError> {
        let mut client = self.pool.get().await.map_err(db)?;
        let tx = client.transaction().await.map_err(pg)?;
        let mut changed = Vec::with_capacity(statements.len());
        for (i, (sql, params)) in statements.iter().enumerate() {
            let stmt = tx.prepare_cached(sql).await.map_err(pg)?;
            let n = tx.execute(&stmt, &pg_params(params)).await.map_err(pg)?;
            if guard && i == 0 && n == 0 {
                return Ok(None);
            }
            changed.push(n);
        }
        tx.commit().await.map_err(pg)?;
        Ok(Some(changed))
    }
}
