//! The file: recognising an orderlog database, this build's migrations and applying them.

use super::*;

/// This build's migrations.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "event_log", sql: include_str!("../../migrations/sqlite/0001_event_log.sql") },
    Migration {
        version: 2,
        name: "commit_records",
        sql: include_str!("../../migrations/sqlite/0002_commit_records.sql"),
    },
    Migration {
        version: 3,
        name: "named_indexes",
        sql: include_str!("../../migrations/sqlite/0003_named_indexes.sql"),
    },
    Migration {
        version: 4,
        name: "tokens_and_checkpoints",
        sql: include_str!("../../migrations/sqlite/0004_tokens_and_checkpoints.sql"),
    },
    Migration { version: 5, name: "merkle_tree", sql: include_str!("../../migrations/sqlite/0005_merkle_tree.sql") },
    Migration { version: 6, name: "processes", sql: include_str!("../../migrations/sqlite/0006_processes.sql") },
];

/// Reads the file header without opening the database: true for a new (absent or empty)
/// file; an error for anything that is not an orderlog database.
pub(super) fn identify(path: &Path) -> Result<bool, StoreError> {
    let display = path.display().to_string();
    let not_ours = |detail: &str| StoreError::NotOrderlog { path: display.clone(), detail: detail.to_string() };
    let mut file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(StoreError::Backend(format!("cannot read '{display}': {e}"))),
    };
    if file.metadata().map_err(backend)?.is_dir() {
        return Err(not_ours("it is a directory"));
    }
    let mut header = Vec::with_capacity(100);
    file.by_ref().take(100).read_to_end(&mut header).map_err(backend)?;
    if header.is_empty() {
        return Ok(true);
    }
    if header.len() < 100 || &header[..16] != b"SQLite format 3\0" {
        return Err(not_ours("not a SQLite database"));
    }
    let application_id = i32::from_be_bytes(header[68..72].try_into().expect("4 bytes"));
    if application_id != APPLICATION_ID {
        return Err(not_ours(&format!(
            "a SQLite database of another application (application_id {application_id:#x})"
        )));
    }
    Ok(false)
}

pub(super) fn check_schema_version(conn: &Connection, path: &str) -> Result<(), StoreError> {
    let exists: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'orderlog_migrations')",
            [],
            |r| r.get(0),
        )
        .map_err(|e| open_error(path, e))?;
    if !exists {
        return Ok(());
    }
    let found: u32 = conn
        .query_row("SELECT COALESCE(MAX(version), 0) FROM orderlog_migrations", [], |r| r.get(0))
        .map_err(backend)?;
    let supported = MIGRATIONS.last().map_or(0, |m| m.version);
    if found > supported {
        return Err(StoreError::SchemaTooNew { path: path.to_string(), found, supported });
    }
    Ok(())
}

/// Applies the missing migrations in order, in one transaction that also locks out other
/// processes migrating the same file; refuses if an applied migration changed.
pub(super) fn migrate(conn: &mut Connection) -> Result<Vec<u32>, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(backend)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS orderlog_migrations (
            version    INTEGER PRIMARY KEY,
            name       TEXT NOT NULL,
            checksum   TEXT NOT NULL,
            applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
        )",
    )
    .map_err(backend)?;
    let mut applied = Vec::new();
    for m in MIGRATIONS {
        let current = m.checksum();
        let existing: Option<String> = tx
            .query_row("SELECT checksum FROM orderlog_migrations WHERE version = ?1", [m.version], |r| r.get(0))
            .optional()
            .map_err(backend)?;
        match existing {
            Some(applied_sum) if applied_sum == current => {}
            Some(applied_sum) => {
                return Err(StoreError::MigrationChanged {
                    version: m.version,
                    name: m.name.to_string(),
                    applied: applied_sum,
                    current,
                })
            }
            None => {
                tx.execute_batch(m.sql).map_err(|e| backend(format!("migration {} ({}): {e}", m.version, m.name)))?;
                tx.execute(
                    "INSERT INTO orderlog_migrations (version, name, checksum) VALUES (?1, ?2, ?3)",
                    params![m.version, m.name, current],
                )
                .map_err(backend)?;
                applied.push(m.version);
            }
        }
    }
    tx.commit().map_err(backend)?;
    Ok(applied)
}
