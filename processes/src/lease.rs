//! One process per job: a lease row per job (`orderlog_leases`) that its holder renews
//! before it expires and that another process takes over once it has expired — within
//! [`LEASE_TTL_MS`] plus one look ([`orderlog_projections::projector::GATE_WAIT_MS`]) of the
//! holder's death. Jobs are safe without it (checkpoints move by compare-and-set, effects
//! are idempotent, deadlines fire once); the lease keeps processes from doing the same
//! work twice, and tells an operator who runs what. Expiry is judged by each process's
//! clock: the processes' clocks must agree to well within the lease's life.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use orderlog_projections::projector::Gate;
use serde::Serialize;

use crate::db::{Db, DbError};

/// How long a lease lasts without renewal.
pub const LEASE_TTL_MS: i64 = 6_000;
/// How often a holder renews (a lease is taken as held for this long after a renewal).
pub const LEASE_RENEW_MS: u64 = 2_000;

/// A job's lease, as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub job: String,
    /// `{host}:{pid}:{random}`: which process holds it.
    pub holder: String,
    pub expires_ms: i64,
    pub acquired_ms: i64,
}

/// This process's leases.
pub struct Leases {
    db: Arc<dyn Db>,
    holder: String,
    /// When each job's lease was last renewed by this process.
    renewed: Mutex<HashMap<String, Instant>>,
}

/// The holder name of this process.
pub fn holder_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "host".into());
    format!("{host}:{}:{:04x}", std::process::id(), rand::random::<u16>())
}

impl Leases {
    pub fn new(db: Arc<dyn Db>, holder: String) -> Leases {
        Leases { db, holder, renewed: Mutex::default() }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Takes or renews the job's lease; whether this process holds it.
    pub async fn hold(&self, job: &str) -> Result<bool, DbError> {
        let now = chrono::Utc::now().timestamp_millis();
        let changed = self
            .db
            .execute(
                "INSERT INTO orderlog_leases (job, holder, expires_ms, acquired_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (job) DO UPDATE SET holder = excluded.holder, expires_ms = excluded.expires_ms,
                   acquired_ms = CASE WHEN orderlog_leases.holder = excluded.holder
                                      THEN orderlog_leases.acquired_ms ELSE excluded.acquired_ms END
                 WHERE orderlog_leases.holder = excluded.holder OR orderlog_leases.expires_ms < $4",
                vec![job.into(), self.holder.as_str().into(), (now + LEASE_TTL_MS).into(), now.into()],
            )
            .await?;
        let held = changed == 1;
        let mut renewed = self.renewed.lock().expect("lease lock");
        if held {
            renewed.insert(job.to_string(), Instant::now());
        } else {
            renewed.remove(job);
        }
        Ok(held)
    }

    /// Gives up every lease this process holds (on shutdown), so others take over at once.
    pub async fn release_all(&self) -> Result<(), DbError> {
        self.renewed.lock().expect("lease lock").clear();
        self.db.execute("DELETE FROM orderlog_leases WHERE holder = $1", vec![self.holder.as_str().into()]).await?;
        Ok(())
    }
}

#[async_trait]
impl Gate for Leases {
    async fn may_run(&self, job: &str) -> bool {
        let fresh = self
            .renewed
            .lock()
            .expect("lease lock")
            .get(job)
            .is_some_and(|at| at.elapsed().as_millis() < u128::from(LEASE_RENEW_MS));
        if fresh {
            return true;
        }
        match self.hold(job).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(job, error = %e, "lease could not be renewed; not running the job");
                false
            }
        }
    }
}

/// Every job's lease.
pub async fn list(db: &dyn Db) -> Result<Vec<Lease>, DbError> {
    let rows =
        db.query("SELECT job, holder, expires_ms, acquired_ms FROM orderlog_leases ORDER BY job", vec![]).await?;
    Ok(rows
        .iter()
        .map(|r| Lease {
            job: r[0].text().unwrap_or_default().to_string(),
            holder: r[1].text().unwrap_or_default().to_string(),
            expires_ms: r[2].int().unwrap_or(0),
            acquired_ms: r[3].int().unwrap_or(0),
        })
        .collect())
}
