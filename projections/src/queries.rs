//! Queries over the read-model tables, for the HTTP API and other readers in-process (a
//! downstream service can query the same tables and views with plain SQL).

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use rusqlite::{Connection, OptionalExtension};

use crate::deadlines::DeadlineRow;
use crate::inventory::InventoryRow;
use crate::orders::OrderStatusRow;
pub use crate::payments::PaymentRow;
pub use crate::payments::PaymentsDay;
use crate::payments::PaymentsFold;
pub use crate::reports::{SalesDay, TopPromotion, TopSku};
use crate::reports::{SalesFold, TopPromotionFold, TopSkuFold};
use crate::RowsError;

/// Which orders to list. Orders are listed by placement time, then id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrderFilter {
    pub state: Option<String>,
    pub customer: Option<String>,
    /// RFC 3339; placed at or after.
    pub placed_from: Option<String>,
    /// RFC 3339; placed before.
    pub placed_to: Option<String>,
    /// Continue after this order (placement time and id of the last one listed).
    pub after: Option<(String, String)>,
    pub limit: u32,
}

/// Read-model queries.
#[async_trait]
pub trait ReadQueries: Send + Sync {
    async fn order(&self, order_id: &str) -> Result<Option<OrderStatusRow>, RowsError> {
        self.order_json(order_id).await?.map(|json| parse(&json)).transpose()
    }
    /// The order's row as stored: a JSON object of [`OrderStatusRow`]'s fields (served as
    /// is, without a decode and encode).
    async fn order_json(&self, order_id: &str) -> Result<Option<String>, RowsError>;
    async fn orders(&self, filter: &OrderFilter) -> Result<Vec<OrderStatusRow>, RowsError>;
    /// Every stock item of a SKU (one per location).
    async fn inventory_of_sku(&self, sku: &str) -> Result<Vec<InventoryRow>, RowsError>;
    /// Every stock item at a location.
    async fn inventory_at(&self, location: &str) -> Result<Vec<InventoryRow>, RowsError>;
    /// Days from `from` to `to` inclusive (`YYYY-MM-DD`), optionally of one currency.
    async fn sales(&self, from: &str, to: &str, currency: Option<&str>) -> Result<Vec<SalesDay>, RowsError>;
    /// The best-selling SKUs by units, then revenue.
    async fn top_skus(&self, currency: Option<&str>, limit: u32) -> Result<Vec<TopSku>, RowsError>;
    /// The most-used promotions by uses, then discount given.
    async fn top_promotions(&self, currency: Option<&str>, limit: u32) -> Result<Vec<TopPromotion>, RowsError>;
    /// Payments per day their intents were started (`from` to `to` inclusive) and currency.
    async fn payments(&self, from: &str, to: &str, currency: Option<&str>) -> Result<Vec<PaymentsDay>, RowsError>;
    /// The payment whose provider reference (`pi_…`) this is.
    async fn payment_by_provider_ref(&self, provider_ref: &str) -> Result<Option<PaymentRow>, RowsError>;
    /// Waiting deadlines due at `now_ms` (milliseconds since the epoch) or before, the
    /// earliest first.
    async fn due_deadlines(&self, now_ms: i64, limit: u32) -> Result<Vec<DeadlineRow>, RowsError>;
    async fn deadline(&self, deadline_id: &str) -> Result<Option<DeadlineRow>, RowsError>;
}

fn parse<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, RowsError> {
    serde_json::from_str(json)
        .map_err(|e| RowsError::Corrupt(format!("a read-model row does not match this build: {e}")))
}

/// Queries on a SQLite file, through a few read connections (WAL readers never wait for the
/// writer).
pub struct SqliteQueries {
    connections: Vec<Mutex<Connection>>,
    next: std::sync::atomic::AtomicUsize,
}

impl SqliteQueries {
    /// Opens `readers` read connections to the database at `path` (its read models must
    /// have been created: open its [`crate::sqlite::SqliteRows`] first).
    pub fn open(path: impl AsRef<Path>, readers: usize) -> Result<SqliteQueries, RowsError> {
        let mut connections = Vec::new();
        for _ in 0..readers.max(1) {
            let conn = Connection::open_with_flags(
                path.as_ref(),
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(RowsError::database)?;
            conn.busy_timeout(Duration::from_secs(5)).map_err(RowsError::database)?;
            connections.push(Mutex::new(conn));
        }
        Ok(SqliteQueries { connections, next: Default::default() })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, RowsError> {
        let start = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let n = self.connections.len();
        // A free connection if there is one, else wait for the one whose turn it is.
        for i in 0..n {
            if let Ok(conn) = self.connections[(start + i) % n].try_lock() {
                return f(&conn).map_err(RowsError::database);
            }
        }
        let conn = self.connections[start % n].lock().expect("connection lock");
        f(&conn).map_err(RowsError::database)
    }

    fn rows<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<T>, RowsError> {
        let json: Vec<String> = self.with(|conn| {
            let mut stmt = conn.prepare_cached(sql)?;
            let rows = stmt.query_map(params, |r| r.get::<_, String>(0))?;
            rows.collect()
        })?;
        json.iter().map(|j| parse(j)).collect()
    }

    /// Hands each row's JSON, parsed, to `f`, without holding them all.
    fn each_row<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        params: &[&dyn rusqlite::ToSql],
        mut f: impl FnMut(T),
    ) -> Result<(), RowsError> {
        let mut failed = None;
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(sql)?;
            let mut rows = stmt.query(params)?;
            while let Some(row) = rows.next()? {
                match parse(row.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?) {
                    Ok(value) => f(value),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            Ok(())
        })?;
        failed.map_or(Ok(()), Err)
    }
}

#[async_trait]
impl ReadQueries for SqliteQueries {
    async fn order_json(&self, order_id: &str) -> Result<Option<String>, RowsError> {
        self.with(|conn| {
            conn.prepare_cached("SELECT data FROM rm_order_status WHERE key = ?1")?
                .query_row([order_id], |r| r.get(0))
                .optional()
        })
    }

    async fn orders(&self, f: &OrderFilter) -> Result<Vec<OrderStatusRow>, RowsError> {
        let (after_at, after_id) = f.after.clone().unzip();
        self.rows(
            "SELECT data FROM rm_order_status
              WHERE json_extract(data, '$.placed_at') IS NOT NULL
                AND (?1 IS NULL OR json_extract(data, '$.state') = ?1)
                AND (?2 IS NULL OR json_extract(data, '$.customer') = ?2)
                AND (?3 IS NULL OR json_extract(data, '$.placed_at') >= ?3)
                AND (?4 IS NULL OR json_extract(data, '$.placed_at') < ?4)
                AND (?5 IS NULL OR (json_extract(data, '$.placed_at'), key) > (?5, ?6))
              ORDER BY json_extract(data, '$.placed_at'), key LIMIT ?7",
            &[&f.state, &f.customer, &f.placed_from, &f.placed_to, &after_at, &after_id, &f.limit],
        )
    }

    async fn inventory_of_sku(&self, sku: &str) -> Result<Vec<InventoryRow>, RowsError> {
        self.rows("SELECT data FROM rm_inventory_levels WHERE json_extract(data, '$.sku') = ?1 ORDER BY key", &[&sku])
    }

    async fn inventory_at(&self, location: &str) -> Result<Vec<InventoryRow>, RowsError> {
        self.rows(
            "SELECT data FROM rm_inventory_levels WHERE json_extract(data, '$.location') = ?1 ORDER BY key",
            &[&location],
        )
    }

    async fn sales(&self, from: &str, to: &str, currency: Option<&str>) -> Result<Vec<SalesDay>, RowsError> {
        let (first, last, after) = report_days(from, to)?;
        let mut fold = SalesFold::default();
        self.each_row(
            "SELECT data FROM rm_order_status WHERE json_extract(data, '$.placed_at') >= ?1
                AND json_extract(data, '$.placed_at') < ?2",
            &[&first.to_string(), &after],
            |row| fold.add(&row, first, last, currency),
        )?;
        Ok(fold.finish())
    }

    async fn top_skus(&self, currency: Option<&str>, limit: u32) -> Result<Vec<TopSku>, RowsError> {
        let mut fold = TopSkuFold::default();
        self.each_row(
            "SELECT data FROM rm_order_status WHERE ?1 IS NULL OR json_extract(data, '$.currency') = ?1",
            &[&currency],
            |row| fold.add(&row, currency),
        )?;
        Ok(fold.finish(limit))
    }

    async fn top_promotions(&self, currency: Option<&str>, limit: u32) -> Result<Vec<TopPromotion>, RowsError> {
        let mut fold = TopPromotionFold::default();
        self.each_row(
            "SELECT data FROM rm_order_status WHERE ?1 IS NULL OR json_extract(data, '$.currency') = ?1",
            &[&currency],
            |row| fold.add(&row, currency),
        )?;
        Ok(fold.finish(limit))
    }

    async fn payments(&self, from: &str, to: &str, currency: Option<&str>) -> Result<Vec<PaymentsDay>, RowsError> {
        let (first, last, after) = report_days(from, to)?;
        let mut fold = PaymentsFold::default();
        self.each_row(
            "SELECT data FROM rm_payment_status WHERE json_extract(data, '$.initiated_at') >= ?1
                AND json_extract(data, '$.initiated_at') < ?2",
            &[&first.to_string(), &after],
            |row| fold.add(&row, first, last, currency),
        )?;
        Ok(fold.finish())
    }

    async fn payment_by_provider_ref(&self, provider_ref: &str) -> Result<Option<PaymentRow>, RowsError> {
        let sql = "SELECT data FROM rm_payment_status WHERE json_extract(data, '$.provider_ref') = ?1 LIMIT 1";
        Ok(self.rows(sql, &[&provider_ref])?.pop())
    }

    async fn due_deadlines(&self, now_ms: i64, limit: u32) -> Result<Vec<DeadlineRow>, RowsError> {
        // The WHERE matches the partial index rm_deadlines_waiting, so only waiting rows are read.
        self.rows(
            "SELECT data FROM rm_deadlines
              WHERE json_extract(data, '$.status') = 'scheduled' AND json_extract(data, '$.due_ms') <= ?1
              ORDER BY json_extract(data, '$.due_ms') LIMIT ?2",
            &[&now_ms, &limit],
        )
    }

    async fn deadline(&self, deadline_id: &str) -> Result<Option<DeadlineRow>, RowsError> {
        Ok(self.rows("SELECT data FROM rm_deadlines WHERE key = ?1", &[&deadline_id])?.pop())
    }
}

/// The first and last day of a report, and the day after the last as text (rows are
/// selected by their placement time's text, which starts with its UTC day).
fn report_days(from: &str, to: &str) -> Result<(chrono::NaiveDate, chrono::NaiveDate, String), RowsError> {
    let day = |v: &str| {
        chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|e| RowsError::Refused(format!("'{v}': {e}")))
    };
    let (first, last) = (day(from)?, day(to)?);
    let after = last.succ_opt().map_or_else(|| "9999-99".to_string(), |d| d.to_string());
    Ok((first, last, after))
}

/// Queries on PostgreSQL, through the read models' pool.
pub struct PostgresQueries {
    pool: Pool,
}

impl PostgresQueries {
    pub fn new(pool: Pool) -> PostgresQueries {
        PostgresQueries { pool }
    }

    async fn json_rows<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<T>, RowsError> {
        let client = self.pool.get().await.map_err(RowsError::database)?;
        let stmt = client.prepare_cached(sql).await.map_err(RowsError::database)?;
        let rows = client.query(&stmt, params).await.map_err(RowsError::database)?;
        rows.iter().map(|r| parse(r.get::<_, &str>(0))).collect()
    }
}

#[async_trait]
impl ReadQueries for PostgresQueries {
    async fn order_json(&self, order_id: &str) -> Result<Option<String>, RowsError> {
        let client = self.pool.get().await.map_err(RowsError::database)?;
        let stmt = client
            .prepare_cached("SELECT data::text FROM rm_order_status WHERE key = $1")
            .await
            .map_err(RowsError::database)?;
        let row = client.query_opt(&stmt, &[&order_id]).await.map_err(RowsError::database)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn orders(&self, f: &OrderFilter) -> Result<Vec<OrderStatusRow>, RowsError> {
        let (after_at, after_id) = f.after.clone().unzip();
        let limit = i64::from(f.limit);
        self.json_rows(
            "SELECT data::text FROM rm_order_status
              WHERE data->>'placed_at' IS NOT NULL
                AND ($1::text IS NULL OR data->>'state' = $1)
                AND ($2::text IS NULL OR data->>'customer' = $2)
                AND ($3::text IS NULL OR (data->>'placed_at')::timestamptz >= $3::text::timestamptz)
                AND ($4::text IS NULL OR (data->>'placed_at')::timestamptz < $4::text::timestamptz)
                AND ($5::text IS NULL OR (data->>'placed_at', key) > ($5, $6::text))
              ORDER BY data->>'placed_at', key LIMIT $7",
            &[&f.state, &f.customer, &f.placed_from, &f.placed_to, &after_at, &after_id, &limit],
        )
        .await
    }

    async fn inventory_of_sku(&self, sku: &str) -> Result<Vec<InventoryRow>, RowsError> {
        self.json_rows("SELECT data::text FROM rm_inventory_levels WHERE data->>'sku' = $1 ORDER BY key", &[&sku]).await
    }

    async fn inventory_at(&self, location: &str) -> Result<Vec<InventoryRow>, RowsError> {
        self.json_rows(
            "SELECT data::text FROM rm_inventory_levels WHERE data->>'location' = $1 ORDER BY key",
            &[&location],
        )
        .await
    }

    async fn sales(&self, from: &str, to: &str, currency: Option<&str>) -> Result<Vec<SalesDay>, RowsError> {
        // The view sums in NUMERIC, read as text: exact past 64 bits, aggregated in the database.
        let client = self.pool.get().await.map_err(RowsError::database)?;
        let rows = client
            .query(
                "SELECT day::text, currency, orders, units::text, gross::text, discounts::text, refunds::text,
                        net::text, average_order_value::text, cancellation_rate, median_seconds_to_ship,
                        tax::text, shipping::text
                   FROM sales_by_day WHERE day >= $1::text::date AND day <= $2::text::date AND ($3::text IS NULL OR currency = $3)
                  ORDER BY day, currency",
                &[&from, &to, &currency],
            )
            .await
            .map_err(RowsError::database)?;
        rows.iter()
            .map(|r| {
                Ok(SalesDay {
                    day: r.get(0),
                    currency: r.get(1),
                    orders: r.get(2),
                    units: numeric(r.get(3))?,
                    gross: numeric(r.get(4))?,
                    discounts: numeric(r.get(5))?,
                    tax: numeric(r.get(11))?,
                    shipping: numeric(r.get(12))?,
                    refunds: numeric(r.get(6))?,
                    net: numeric(r.get(7))?,
                    average_order_value: numeric(r.get(8))?,
                    cancellation_rate: r.get(9),
                    median_seconds_to_ship: r.get(10),
                })
            })
            .collect()
    }

    async fn top_skus(&self, currency: Option<&str>, limit: u32) -> Result<Vec<TopSku>, RowsError> {
        let client = self.pool.get().await.map_err(RowsError::database)?;
        let rows = client
            .query(
                "SELECT sku, currency, units::text, revenue::text FROM top_skus WHERE $1::text IS NULL OR currency = $1
                  ORDER BY top_skus.units DESC, top_skus.revenue DESC, sku LIMIT $2",
                &[&currency, &i64::from(limit)],
            )
            .await
            .map_err(RowsError::database)?;
        rows.iter()
            .map(|r| {
                Ok(TopSku { sku: r.get(0), currency: r.get(1), units: numeric(r.get(2))?, revenue: numeric(r.get(3))? })
            })
            .collect()
    }

    async fn top_promotions(&self, currency: Option<&str>, limit: u32) -> Result<Vec<TopPromotion>, RowsError> {
        let client = self.pool.get().await.map_err(RowsError::database)?;
        let rows = client
            .query(
                "SELECT code, currency, uses, discount::text FROM top_promotions
                  WHERE $1::text IS NULL OR currency = $1 ORDER BY top_promotions.uses DESC, top_promotions.discount DESC, code LIMIT $2",
                &[&currency, &i64::from(limit)],
            )
            .await
            .map_err(RowsError::database)?;
        rows.iter()
            .map(|r| {
                Ok(TopPromotion { code: r.get(0), currency: r.get(1), uses: r.get(2), discount: numeric(r.get(3))? })
            })
            .collect()
    }

    async fn payments(&self, from: &str, to: &str, currency: Option<&str>) -> Result<Vec<PaymentsDay>, RowsError> {
        let (first, last, after) = report_days(from, to)?;
        let rows: Vec<PaymentRow> = self
            .json_rows(
                "SELECT data::text FROM rm_payment_status WHERE data->>'initiated_at' >= $1 AND data->>'initiated_at' < $2",
                &[&first.to_string(), &after],
            )
            .await?;
        let mut fold = PaymentsFold::default();
        for row in &rows {
            fold.add(row, first, last, currency);
        }
        Ok(fold.finish())
    }

    async fn payment_by_provider_ref(&self, provider_ref: &str) -> Result<Option<PaymentRow>, RowsError> {
        let sql = "SELECT data::text FROM rm_payment_status WHERE data->>'provider_ref' = $1 LIMIT 1";
        Ok(self.json_rows(sql, &[&provider_ref]).await?.pop())
    }

    async fn due_deadlines(&self, now_ms: i64, limit: u32) -> Result<Vec<DeadlineRow>, RowsError> {
        self.json_rows(
            "SELECT data::text FROM rm_deadlines
              WHERE data->>'status' = 'scheduled' AND (data->>'due_ms')::bigint <= $1
              ORDER BY (data->>'due_ms')::bigint LIMIT $2",
            &[&now_ms, &i64::from(limit)],
        )
        .await
    }

    async fn deadline(&self, deadline_id: &str) -> Result<Option<DeadlineRow>, RowsError> {
        Ok(self.json_rows("SELECT data::text FROM rm_deadlines WHERE key = $1", &[&deadline_id]).await?.pop())
    }
}

/// A whole NUMERIC as PostgreSQL writes it (`-123`), as the `i128` the reports are in.
fn numeric(text: &str) -> Result<i128, RowsError> {
    text.parse().map_err(|e| RowsError::Corrupt(format!("report figure '{text}': {e}")))
}
