//! The backend seam: a [`Database`] is a SQLite file or a PostgreSQL database, chosen from
//! its URL here and nowhere else. Opening it applies the checksummed migrations of every
//! table (the log, its commit records, API tokens, read-model checkpoints); it hands out the
//! event store, the read models' rows and queries, and the API tokens, all on that one
//! database. It lives in the top library crate because it hands out the token store; the
//! SQL itself stays in each backend (`orderlog_store`, `orderlog_projections`, `auth`).

use std::path::PathBuf;
use std::sync::Arc;

use orderlog_projections::deadlines::{DEADLINE_VIEWS_POSTGRES, DEADLINE_VIEWS_SQLITE};
use orderlog_projections::inventory::{INVENTORY_VIEWS_POSTGRES, INVENTORY_VIEWS_SQLITE};
use orderlog_projections::orders::{ORDER_VIEWS_POSTGRES, ORDER_VIEWS_SQLITE};
use orderlog_projections::postgres::PostgresRows;
use orderlog_projections::queries::{PostgresQueries, ReadQueries, SqliteQueries};
use orderlog_projections::sqlite::SqliteRows;
use orderlog_projections::table::RowStore;
use orderlog_store::postgres::redact;
use orderlog_store::{BulkLoad, EventStore, PostgresStore, SqliteStore, StoreError, TreeStore};
use tokio::sync::OnceCell;

use crate::auth::{PostgresTokens, SqliteTokens, TokenStore};

/// Which kind of database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatabaseError {
    #[error("--database: give a SQLite file path such as ./orderlog.db, or a postgres:// URL")]
    Empty,
    #[error("--database: '{0}' is neither a postgres:// URL nor a file path")]
    Unrecognised(String),
    #[error("cannot open the store '{name}'")]
    Open {
        name: String,
        #[source]
        source: StoreError,
    },
    #[error("the {part} of '{name}': {detail}")]
    Part { part: &'static str, name: String, detail: String },
}

/// One orderlog database, migrated.
pub struct Database {
    inner: Inner,
    applied: Vec<u32>,
}

enum Inner {
    Sqlite { path: PathBuf, store: Arc<SqliteStore> },
    Postgres { url: String, store: Arc<PostgresStore>, rows: OnceCell<Arc<PostgresRows>> },
}

impl Database {
    /// Opens the database `url` names — a `postgres://` (or `postgresql://`) URL, or a SQLite
    /// file path, created if absent — and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Database, DatabaseError> {
        if url.is_empty() {
            return Err(DatabaseError::Empty);
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let store = PostgresStore::connect_url(url)
                .await
                .map_err(|source| DatabaseError::Open { name: redact(url), source })?;
            let applied = store.applied_migrations().to_vec();
            let inner = Inner::Postgres { url: url.to_string(), store: Arc::new(store), rows: OnceCell::new() };
            return Ok(Database { inner, applied });
        }
        if url.contains("://") {
            return Err(DatabaseError::Unrecognised(redact(url)));
        }
        let path = PathBuf::from(url);
        let store = SqliteStore::open(&path).map_err(|source| DatabaseError::Open { name: url.to_string(), source })?;
        let applied = store.applied_migrations().to_vec();
        Ok(Database { inner: Inner::Sqlite { path, store: Arc::new(store) }, applied })
    }

    pub fn backend(&self) -> Backend {
        match self.inner {
            Inner::Sqlite { .. } => Backend::Sqlite,
            Inner::Postgres { .. } => Backend::Postgres,
        }
    }

    /// The database's name for messages: the path, or the URL without its password.
    pub fn name(&self) -> String {
        match &self.inner {
            Inner::Sqlite { path, .. } => path.display().to_string(),
            Inner::Postgres { url, .. } => redact(url),
        }
    }

    /// The migrations this open applied.
    pub fn applied_migrations(&self) -> &[u32] {
        &self.applied
    }

    pub fn store(&self) -> Arc<dyn EventStore> {
        match &self.inner {
            Inner::Sqlite { store, .. } => store.clone(),
            Inner::Postgres { store, .. } => store.clone(),
        }
    }

    /// The store with its Merkle tree and signed checkpoints.
    pub fn tree(&self) -> Arc<dyn TreeStore> {
        match &self.inner {
            Inner::Sqlite { store, .. } => store.clone(),
            Inner::Postgres { store, .. } => store.clone(),
        }
    }

    /// The store, to load an export into.
    pub fn loader(&self) -> Arc<dyn BulkLoad> {
        match &self.inner {
            Inner::Sqlite { store, .. } => store.clone(),
            Inner::Postgres { store, .. } => store.clone(),
        }
    }

    /// The read models' rows, with the plain-SQL views of every read model.
    pub async fn rows(&self) -> Result<Arc<dyn RowStore>, DatabaseError> {
        match &self.inner {
            Inner::Sqlite { path, .. } => {
                let views = [INVENTORY_VIEWS_SQLITE, ORDER_VIEWS_SQLITE, DEADLINE_VIEWS_SQLITE].concat();
                let rows = SqliteRows::open(path, &views).map_err(|e| self.part("read models", e))?;
                Ok(Arc::new(rows))
            }
            Inner::Postgres { .. } => Ok(self.postgres_rows().await?),
        }
    }

    /// The queries the HTTP API's reads answer from; on SQLite with `readers` connections.
    pub async fn queries(&self, readers: usize) -> Result<Arc<dyn ReadQueries>, DatabaseError> {
        match &self.inner {
            Inner::Sqlite { path, .. } => {
                let queries = SqliteQueries::open(path, readers).map_err(|e| self.part("queries", e))?;
                Ok(Arc::new(queries))
            }
            Inner::Postgres { .. } => Ok(Arc::new(PostgresQueries::new(self.postgres_rows().await?.pool()))),
        }
    }

    /// The API tokens.
    pub async fn tokens(&self) -> Result<Arc<dyn TokenStore>, DatabaseError> {
        match &self.inner {
            Inner::Sqlite { path, .. } => Ok(Arc::new(SqliteTokens::open(path).map_err(|e| self.part("tokens", e))?)),
            Inner::Postgres { .. } => Ok(Arc::new(PostgresTokens::new(self.postgres_rows().await?.pool()))),
        }
    }

    /// The process side's tables: reactors' checkpoints, parked events, webhooks.
    pub async fn processes(&self) -> Result<Arc<dyn orderlog_processes::db::Db>, DatabaseError> {
        match &self.inner {
            Inner::Sqlite { path, .. } => {
                let db = orderlog_processes::db::SqliteDb::open(path).map_err(|e| self.part("process tables", e))?;
                Ok(Arc::new(db))
            }
            Inner::Postgres { .. } => {
                Ok(Arc::new(orderlog_processes::db::PostgresDb::new(self.postgres_rows().await?.pool())))
            }
        }
    }

    /// PostgreSQL's read-model rows, whose pool the queries and tokens share.
    async fn postgres_rows(&self) -> Result<Arc<PostgresRows>, DatabaseError> {
        let Inner::Postgres { url, rows, .. } = &self.inner else { unreachable!("only for PostgreSQL") };
        let views = [INVENTORY_VIEWS_POSTGRES, ORDER_VIEWS_POSTGRES, DEADLINE_VIEWS_POSTGRES].concat();
        let rows = rows
            .get_or_try_init(|| async { PostgresRows::connect(url, &views).await.map(Arc::new) })
            .await
            .map_err(|e| self.part("read models", e))?;
        Ok(rows.clone())
    }

    fn part(&self, part: &'static str, detail: impl ToString) -> DatabaseError {
        DatabaseError::Part { part, name: self.name(), detail: detail.to_string() }
    }
}
