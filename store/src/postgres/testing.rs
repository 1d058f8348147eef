//! Databases for tests: each test gets a fresh one, dropped when the test passes and kept
//! (and named on stderr) when it fails.

use super::*;

/// The server tests use: `ORDERLOG_TEST_POSTGRES` or the local default.
pub fn server_url() -> String {
    std::env::var("ORDERLOG_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh, empty database.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    admin_url: String,
}

impl TestDatabase {
    pub async fn create() -> TestDatabase {
        let admin_url = server_url();
        let name = format!("orderlog_test_{}", Uuid::new_v4().simple());
        let (client, connection) = tokio_postgres::connect(&admin_url, NoTls)
            .await
            .unwrap_or_else(|e| panic!("tests need PostgreSQL at {}: {}", redact(&admin_url), describe(&e)));
        tokio::spawn(connection);
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create the test database");
        let base = admin_url.split_once('?').map_or(admin_url.as_str(), |(b, _)| b);
        let url = match base.rfind('/') {
            Some(slash) if slash > base.find("://").map_or(0, |i| i + 2) => format!("{}/{name}", &base[..slash]),
            _ => format!("{base}/{name}"),
        };
        TestDatabase { name, url, admin_url }
    }

    /// The database's URL with extra query parameters (`pool_max_size=40`).
    pub fn url_with(&self, query: &str) -> String {
        format!("{}?{query}", self.url)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed: keeping database {} for inspection", self.name);
            return;
        }
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&admin_url, NoTls).await?;
                tokio::spawn(connection);
                client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// Fault injection for tests of concurrent readers and crashes: what an append does after
/// writing its rows and before it commits.
#[derive(Clone, Copy, Debug, Default)]
pub struct AppendFault {
    /// Hold the transaction open this long (server-side `pg_sleep`) before committing.
    pub hold_before_commit: Option<Duration>,
    /// Roll back instead of committing.
    pub roll_back: bool,
}

impl PostgresStore {
    /// An append with a fault injected before its commit, through the path an append takes
    /// when its planned heads had moved (under the stream locks, in its own transaction).
    pub async fn append_with_fault(
        &self,
        appends: Vec<StreamAppend>,
        fault: AppendFault,
    ) -> Result<AppendOutcome, StoreError> {
        validate(&appends)?;
        let mut client = self.client().await?;
        let failed = |attempt: Attempt| match attempt {
            Attempt::Failed(e) => e,
            Attempt::Stale(detail) => StoreError::Backend(detail),
        };
        let (tx, write, reply) = match self.locked_call(&mut client, &appends).await.map_err(failed)? {
            Locked::Done(outcome) => return Ok(outcome),
            Locked::Called { tx, write, reply } => (tx, write, reply),
        };
        if matches!(reply, ItemReply::Written(_)) {
            if let Some(hold) = fault.hold_before_commit {
                tx.execute("SELECT pg_sleep($1)", &[&hold.as_secs_f64()]).await.map_err(pg)?;
            }
            if fault.roll_back {
                tx.rollback().await.map_err(pg)?;
                return Err(StoreError::Backend("rolled back by fault injection".into()));
            }
            tx.commit().await.map_err(pg)?;
        }
        let outcome = self.settle_reply(&appends, write, reply).await.map_err(failed)?;
        if outcome.last_position.is_some() && !outcome.duplicate {
            self.announce();
        }
        Ok(outcome)
    }
}
