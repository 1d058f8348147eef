//! The stored Merkle tree and signed checkpoints (migration 6). Extensions from every
//! process serialise on one advisory lock, and only the one that finds the size it expects
//! writes.

use super::*;
use crate::merkle::{Hash, NodeKey};
use crate::{TreeLeaf, TreeStore};

/// Advisory lock held while the tree is extended ("ORLG" and 3).
const TREE_LOCK_KEY: i64 = 0x4F52_4C47_0000_0003;

fn hash_of(bytes: Vec<u8>) -> Result<Hash, StoreError> {
    bytes.try_into().map_err(|b: Vec<u8>| StoreError::Backend(format!("a tree hash of {} bytes, not 32", b.len())))
}

fn leaf_of(r: &Row) -> Result<TreeLeaf, StoreError> {
    Ok(TreeLeaf {
        index: r.get::<_, i64>(0) as u64,
        cursor: LogCursor { commit: r.get::<_, i64>(1) as u64, position: r.get::<_, i64>(2) as u64 },
        hash: hash_of(r.get(3))?,
    })
}

const LEAF_COLUMNS: &str = "SELECT leaf, commit_order, position, hash FROM orderlog_tree_leaves";

#[async_trait]
impl TreeStore for PostgresStore {
    async fn tree_size(&self) -> Result<(u64, LogCursor), StoreError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(&format!("{LEAF_COLUMNS} ORDER BY leaf DESC LIMIT 1")).await.map_err(pg)?;
        let row = client.query_opt(&stmt, &[]).await.map_err(pg)?;
        Ok(match row {
            Some(row) => {
                let last = leaf_of(&row)?;
                (last.index + 1, last.cursor)
            }
            None => (0, LogCursor::START),
        })
    }

    async fn tree_pending(&self, after: LogCursor, limit: u32) -> Result<Vec<(LogCursor, String)>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT position, tx_id::text AS commit_text, hash FROM orderlog_events
                  WHERE {AFTER_CURSOR} ORDER BY orderlog_events.tx_id, orderlog_events.position LIMIT $3"
            ))
            .await
            .map_err(pg)?;
        let limit = i64::from(limit.min(crate::READ_EVENTS_MAX));
        let rows =
            client.query(&stmt, &[&after.commit.to_string(), &(after.position as i64), &limit]).await.map_err(pg)?;
        rows.iter()
            .map(|r| {
                let commit: &str = r.get(1);
                let commit =
                    commit.parse().map_err(|e| StoreError::Backend(format!("commit order '{commit}': {e}")))?;
                Ok((LogCursor { commit, position: r.get::<_, i64>(0) as u64 }, r.get(2)))
            })
            .collect()
    }

    async fn tree_extend(
        &self,
        size: u64,
        leaves: Vec<TreeLeaf>,
        nodes: Vec<(NodeKey, Hash)>,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&TREE_LOCK_KEY]).await.map_err(pg)?;
        let stored: i64 =
            tx.query_one("SELECT COALESCE(MAX(leaf) + 1, 0) FROM orderlog_tree_leaves", &[]).await.map_err(pg)?.get(0);
        if stored as u64 != size {
            return Ok(false);
        }
        let index: Vec<i64> = leaves.iter().map(|l| l.index as i64).collect();
        let commit: Vec<i64> = leaves.iter().map(|l| l.cursor.commit as i64).collect();
        let position: Vec<i64> = leaves.iter().map(|l| l.cursor.position as i64).collect();
        let hash: Vec<&[u8]> = leaves.iter().map(|l| &l.hash[..]).collect();
        tx.execute(
            "INSERT INTO orderlog_tree_leaves (leaf, commit_order, position, hash)
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bytea[])",
            &[&index, &commit, &position, &hash],
        )
        .await
        .map_err(pg)?;
        let level: Vec<i16> = nodes.iter().map(|(k, _)| k.level as i16).collect();
        let idx: Vec<i64> = nodes.iter().map(|(k, _)| k.index as i64).collect();
        let hash: Vec<&[u8]> = nodes.iter().map(|(_, h)| &h[..]).collect();
        tx.execute(
            "INSERT INTO orderlog_tree_nodes (level, idx, hash)
             SELECT * FROM UNNEST($1::smallint[], $2::bigint[], $3::bytea[])",
            &[&level, &idx, &hash],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(true)
    }

    async fn tree_nodes(&self, keys: Vec<NodeKey>) -> Result<Vec<Option<Hash>>, StoreError> {
        let client = self.client().await?;
        let level: Vec<i16> = keys.iter().map(|k| k.level as i16).collect();
        let idx: Vec<i64> = keys.iter().map(|k| k.index as i64).collect();
        // One look-up by primary key per node (a subquery each), whatever the planner thinks
        // of the tables' sizes.
        let stmt = client
            .prepare_cached(
                "SELECT k.level, k.idx,
                        CASE WHEN k.level = 0
                             THEN (SELECT l.hash FROM orderlog_tree_leaves l WHERE l.leaf = k.idx)
                             ELSE (SELECT n.hash FROM orderlog_tree_nodes n WHERE n.level = k.level AND n.idx = k.idx)
                        END
                   FROM UNNEST($1::smallint[], $2::bigint[]) AS k(level, idx)",
            )
            .await
            .map_err(pg)?;
        let rows = client.query(&stmt, &[&level, &idx]).await.map_err(pg)?;
        let mut found: HashMap<NodeKey, Hash> = HashMap::new();
        for row in rows {
            if let Some(bytes) = row.get::<_, Option<Vec<u8>>>(2) {
                let key = NodeKey::new(row.get::<_, i16>(0) as u8, row.get::<_, i64>(1) as u64);
                found.insert(key, hash_of(bytes)?);
            }
        }
        Ok(keys.iter().map(|k| found.get(k).copied()).collect())
    }

    async fn tree_leaf_at(&self, position: u64) -> Result<Option<TreeLeaf>, StoreError> {
        // BIGINT stops at i64::MAX: nothing is stored past it.
        let Ok(position) = i64::try_from(position) else { return Ok(None) };
        let client = self.client().await?;
        let stmt = client.prepare_cached(&format!("{LEAF_COLUMNS} WHERE position = $1")).await.map_err(pg)?;
        let row = client.query_opt(&stmt, &[&position]).await.map_err(pg)?;
        row.as_ref().map(leaf_of).transpose()
    }

    async fn tree_proof_rows(
        &self,
        position: u64,
        size: u64,
    ) -> Result<Option<(TreeLeaf, HashMap<NodeKey, Hash>)>, StoreError> {
        let (Ok(position), Ok(size)) = (i64::try_from(position), i64::try_from(size)) else { return Ok(None) };
        let client = self.client().await?;
        // `merkle::proof_rows` in SQL (blocks of 16 = 2^STORED_LEVEL_MIN), so the leaf and
        // the rows of its proof come back in one round trip: the leaf first (level -1),
        // then each row by its primary key.
        let stmt = client
            .prepare_cached(
                "WITH leaf AS (SELECT leaf, commit_order, position, hash FROM orderlog_tree_leaves
                                WHERE position = $1 AND leaf < $2),
                      keys(level, idx) AS (
                        SELECT 0, g FROM leaf, generate_series(leaf.leaf / 16 * 16,
                                                               LEAST(leaf.leaf / 16 * 16 + 15, $2 - 1)) AS g
                        UNION SELECT 0, g FROM leaf, generate_series($2 / 16 * 16, $2 - 1) AS g
                        UNION SELECT l, (leaf.leaf >> l) # 1 FROM leaf, generate_series(4, 62) AS l
                               WHERE (leaf.leaf >> l) # 1 < $2 >> l
                        UNION SELECT l, ($2 >> (l + 1)) << 1 FROM leaf, generate_series(4, 62) AS l
                               WHERE ($2 >> l) & 1 = 1)
                 SELECT -1::smallint, leaf, commit_order, position, hash FROM leaf
                 UNION ALL
                 SELECT k.level::smallint, k.idx, NULL, NULL,
                        CASE WHEN k.level = 0
                             THEN (SELECT l.hash FROM orderlog_tree_leaves l WHERE l.leaf = k.idx)
                             ELSE (SELECT n.hash FROM orderlog_tree_nodes n
                                    WHERE n.level = k.level AND n.idx = k.idx)
                        END
                   FROM keys k",
            )
            .await
            .map_err(pg)?;
        let rows = client.query(&stmt, &[&position, &size]).await.map_err(pg)?;
        let mut leaf = None;
        let mut found = HashMap::new();
        for row in rows {
            match row.get::<_, i16>(0) {
                -1 => {
                    leaf = Some(TreeLeaf {
                        index: row.get::<_, i64>(1) as u64,
                        cursor: LogCursor {
                            commit: row.get::<_, i64>(2) as u64,
                            position: row.get::<_, i64>(3) as u64,
                        },
                        hash: hash_of(row.get(4))?,
                    })
                }
                level => {
                    if let Some(bytes) = row.get::<_, Option<Vec<u8>>>(4) {
                        found.insert(NodeKey::new(level as u8, row.get::<_, i64>(1) as u64), hash_of(bytes)?);
                    }
                }
            }
        }
        match leaf {
            Some(leaf) => Ok(Some((leaf, found))),
            // Not among the first `size` leaves, or not in the tree at all.
            None => self.tree_leaf_at(position as u64).await.map(|l| l.map(|l| (l, HashMap::new()))),
        }
    }

    async fn tree_leaf(&self, index: u64) -> Result<Option<TreeLeaf>, StoreError> {
        let Ok(index) = i64::try_from(index) else { return Ok(None) };
        let client = self.client().await?;
        let stmt = client.prepare_cached(&format!("{LEAF_COLUMNS} WHERE leaf = $1")).await.map_err(pg)?;
        let row = client.query_opt(&stmt, &[&index]).await.map_err(pg)?;
        row.as_ref().map(leaf_of).transpose()
    }

    async fn keep_checkpoint(&self, size: u64, json: String) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO orderlog_signed_checkpoints (tree_size, checkpoint) VALUES ($1, $2)
                 ON CONFLICT (tree_size) DO NOTHING",
                &[&(size as i64), &json],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn kept_checkpoint(&self, size: Option<u64>) -> Result<Option<String>, StoreError> {
        if size.is_some_and(|s| i64::try_from(s).is_err()) {
            return Ok(None);
        }
        let client = self.client().await?;
        let row = match size {
            Some(size) => {
                client
                    .query_opt(
                        "SELECT checkpoint FROM orderlog_signed_checkpoints WHERE tree_size = $1",
                        &[&(size as i64)],
                    )
                    .await
            }
            None => {
                client
                    .query_opt(
                        "SELECT checkpoint FROM orderlog_signed_checkpoints ORDER BY tree_size DESC LIMIT 1",
                        &[],
                    )
                    .await
            }
        };
        Ok(row.map_err(pg)?.map(|r| r.get(0)))
    }
}
