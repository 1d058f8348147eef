//! The stored Merkle tree and signed checkpoints (migration 5): extended on the writer's
//! connection, between batches of appends; read on the readers'.

use super::*;
use crate::merkle::{Hash, NodeKey};
use crate::{TreeLeaf, TreeStore};

fn hash_of(bytes: Vec<u8>) -> rusqlite::Result<Hash> {
    bytes.try_into().map_err(|b: Vec<u8>| {
        rusqlite::Error::FromSqlConversionFailure(
            b.len(),
            rusqlite::types::Type::Blob,
            "a tree hash is 32 bytes".into(),
        )
    })
}

fn leaf_of(r: &rusqlite::Row) -> rusqlite::Result<TreeLeaf> {
    Ok(TreeLeaf {
        index: r.get(0)?,
        cursor: LogCursor { commit: r.get(1)?, position: r.get(2)? },
        hash: hash_of(r.get(3)?)?,
    })
}

const LEAF_COLUMNS: &str = "SELECT leaf, commit_order, position, hash FROM orderlog_tree_leaves";

fn extend_on(
    conn: &mut Connection,
    size: u64,
    leaves: &[TreeLeaf],
    nodes: &[(NodeKey, Hash)],
) -> Result<bool, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(backend)?;
    let stored: u64 = tx
        .query_row("SELECT COALESCE(MAX(leaf) + 1, 0) FROM orderlog_tree_leaves", [], |r| r.get(0))
        .map_err(backend)?;
    if stored != size {
        return Ok(false);
    }
    {
        let mut leaf = tx
            .prepare_cached(
                "INSERT INTO orderlog_tree_leaves (leaf, commit_order, position, hash) VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(backend)?;
        for l in leaves {
            leaf.execute(params![l.index, l.cursor.commit, l.cursor.position, &l.hash[..]]).map_err(backend)?;
        }
        let mut node = tx
            .prepare_cached("INSERT INTO orderlog_tree_nodes (level, idx, hash) VALUES (?1, ?2, ?3)")
            .map_err(backend)?;
        for (key, hash) in nodes {
            node.execute(params![key.level, key.index, &hash[..]]).map_err(backend)?;
        }
    }
    tx.commit().map_err(backend)?;
    Ok(true)
}

#[async_trait]
impl TreeStore for SqliteStore {
    async fn tree_size(&self) -> Result<(u64, LogCursor), StoreError> {
        self.with_reader(|conn| {
            let last = conn
                .query_row(&format!("{LEAF_COLUMNS} ORDER BY leaf DESC LIMIT 1"), [], leaf_of)
                .optional()
                .map_err(backend)?;
            Ok(last.map_or((0, LogCursor::START), |l| (l.index + 1, l.cursor)))
        })
        .await
    }

    async fn tree_pending(&self, after: LogCursor, limit: u32) -> Result<Vec<(LogCursor, String)>, StoreError> {
        let (after, limit) = (after.position, limit.min(crate::READ_EVENTS_MAX));
        self.with_reader(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT position, hash FROM events WHERE position > ?1 ORDER BY position LIMIT ?2")
                .map_err(backend)?;
            let rows = stmt.query_map(params![after, limit], |r| {
                let position: u64 = r.get(0)?;
                Ok((LogCursor { commit: position, position }, r.get(1)?))
            });
            rows.and_then(|rows| rows.collect()).map_err(backend)
        })
        .await
    }

    async fn tree_extend(
        &self,
        size: u64,
        leaves: Vec<TreeLeaf>,
        nodes: Vec<(NodeKey, Hash)>,
    ) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        let work = move |conn: &mut Connection| {
            let _ = reply.send(extend_on(conn, size, &leaves, &nodes));
        };
        self.writer.send(WriterJob::Exclusive(Box::new(work))).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn tree_nodes(&self, keys: Vec<NodeKey>) -> Result<Vec<Option<Hash>>, StoreError> {
        self.with_reader(move |conn| {
            let mut leaf =
                conn.prepare_cached("SELECT hash FROM orderlog_tree_leaves WHERE leaf = ?1").map_err(backend)?;
            let mut node = conn
                .prepare_cached("SELECT hash FROM orderlog_tree_nodes WHERE level = ?1 AND idx = ?2")
                .map_err(backend)?;
            keys.iter()
                .map(|key| {
                    let found = match key.level {
                        0 => leaf.query_row([key.index], |r| hash_of(r.get(0)?)),
                        level => node.query_row(params![level, key.index], |r| hash_of(r.get(0)?)),
                    };
                    found.optional().map_err(backend)
                })
                .collect()
        })
        .await
    }

    async fn tree_leaf_at(&self, position: u64) -> Result<Option<TreeLeaf>, StoreError> {
        // SQLite's integers stop at i64::MAX: nothing is stored past it.
        let Ok(position) = i64::try_from(position) else { return Ok(None) };
        self.with_reader(move |conn| {
            conn.query_row(&format!("{LEAF_COLUMNS} WHERE position = ?1"), [position], leaf_of)
                .optional()
                .map_err(backend)
        })
        .await
    }

    async fn tree_leaf(&self, index: u64) -> Result<Option<TreeLeaf>, StoreError> {
        let Ok(index) = i64::try_from(index) else { return Ok(None) };
        self.with_reader(move |conn| {
            conn.query_row(&format!("{LEAF_COLUMNS} WHERE leaf = ?1"), [index], leaf_of).optional().map_err(backend)
        })
        .await
    }

    async fn keep_checkpoint(&self, size: u64, json: String) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        let work = move |conn: &mut Connection| {
            let kept = conn
                .execute(
                    "INSERT INTO orderlog_signed_checkpoints (tree_size, checkpoint) VALUES (?1, ?2)
                     ON CONFLICT (tree_size) DO NOTHING",
                    params![size, json],
                )
                .map(drop)
                .map_err(backend);
            let _ = reply.send(kept);
        };
        self.writer.send(WriterJob::Exclusive(Box::new(work))).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn kept_checkpoint(&self, size: Option<u64>) -> Result<Option<String>, StoreError> {
        let size = match size.map(i64::try_from) {
            Some(Err(_)) => return Ok(None),
            Some(Ok(size)) => Some(size),
            None => None,
        };
        self.with_reader(move |conn| {
            let found = match size {
                Some(size) => conn.query_row(
                    "SELECT checkpoint FROM orderlog_signed_checkpoints WHERE tree_size = ?1",
                    [size],
                    |r| r.get(0),
                ),
                None => conn.query_row(
                    "SELECT checkpoint FROM orderlog_signed_checkpoints ORDER BY tree_size DESC LIMIT 1",
                    [],
                    |r| r.get(0),
                ),
            };
            found.optional().map_err(backend)
        })
        .await
    }
}
