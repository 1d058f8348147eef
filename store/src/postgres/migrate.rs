//! The schema: this build's migrations, applied under an advisory lock.

use super::*;

/// This build's PostgreSQL migrations.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "event_log", sql: include_str!("../../migrations/postgres/0001_event_log.sql") },
    Migration {
        version: 2,
        name: "append_function",
        sql: include_str!("../../migrations/postgres/0002_append_function.sql"),
    },
    Migration {
        version: 3,
        name: "commit_records",
        sql: include_str!("../../migrations/postgres/0003_commit_records.sql"),
    },
    Migration {
        version: 4,
        name: "generic_plans",
        sql: include_str!("../../migrations/postgres/0004_generic_plans.sql"),
    },
    Migration {
        version: 5,
        name: "tokens_and_checkpoints",
        sql: include_str!("../../migrations/postgres/0005_tokens_and_checkpoints.sql"),
    },
    Migration { version: 6, name: "merkle_tree", sql: include_str!("../../migrations/postgres/0006_merkle_tree.sql") },
    Migration { version: 7, name: "processes", sql: include_str!("../../migrations/postgres/0007_processes.sql") },
];
/// Advisory lock held while migrating ("ORLG" and 1).
pub(super) const MIGRATION_LOCK_KEY: i64 = 0x4F52_4C47_0000_0001;

/// Applies the missing migrations under an advisory lock, in one transaction; refuses a
/// database of another application, a newer schema, or a changed migration.
pub(super) async fn migrate(client: &mut deadpool_postgres::Client, target: &str) -> Result<Vec<u32>, StoreError> {
    let tx = client.transaction().await.map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY]).await.map_err(pg)?;
    let ours: bool =
        tx.query_one("SELECT to_regclass('orderlog_migrations') IS NOT NULL", &[]).await.map_err(pg)?.get(0);
    if ours {
        let found: i32 =
            tx.query_one("SELECT COALESCE(MAX(version), 0) FROM orderlog_migrations", &[]).await.map_err(pg)?.get(0);
        let supported = MIGRATIONS.last().map_or(0, |m| m.version);
        if found as u32 > supported {
            return Err(StoreError::SchemaTooNew { path: target.to_string(), found: found as u32, supported });
        }
    } else {
        let others: Vec<String> = tx
            .query(
                "SELECT table_schema || '.' || table_name FROM information_schema.tables
                 WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1 LIMIT 5",
                &[],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !others.is_empty() {
            return Err(StoreError::NotOrderlog {
                path: target.to_string(),
                detail: format!(
                    "it holds tables of another application ({}) and no orderlog schema; give orderlog an empty database of its own",
                    others.join(", ")
                ),
            });
        }
        tx.batch_execute(
            "CREATE TABLE orderlog_migrations (
                version    INTEGER PRIMARY KEY,
                name       TEXT NOT NULL,
                checksum   TEXT NOT NULL,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(pg)?;
    }
    let mut applied = Vec::new();
    for m in MIGRATIONS {
        let current = m.checksum();
        let existing = tx
            .query_opt("SELECT checksum FROM orderlog_migrations WHERE version = $1", &[&(m.version as i32)])
            .await
            .map_err(pg)?
            .map(|r| r.get::<_, String>(0));
        match existing {
            Some(sum) if sum == current => {}
            Some(sum) => {
                return Err(StoreError::MigrationChanged {
                    version: m.version,
                    name: m.name.to_string(),
                    applied: sum,
                    current,
                })
            }
            None => {
                tx.batch_execute(m.sql).await.map_err(|e| {
                    StoreError::Backend(format!("migration {} ({}): {}", m.version, m.name, describe(&e)))
                })?;
                tx.execute(
                    "INSERT INTO orderlog_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    &[&(m.version as i32), &m.name, &current],
                )
                .await
                .map_err(pg)?;
                applied.push(m.version);
            }
        }
    }
    tx.commit().await.map_err(pg)?;
    Ok(applied)
}
