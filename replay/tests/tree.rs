//! The stored Merkle tree follows the log on every backend: its roots and proofs are those
//! of the tree recomputed from the events, two followers extending it at once (two
//! processes on one database) leave one tree with every event once, and signed checkpoints
//! are kept by size.

use std::sync::Arc;

use chrono::Utc;
use orderlog_replay::checkpoint::{tree_of, TreeFollower};
use orderlog_store::conformance::event;
use orderlog_store::merkle::{verify_consistency, verify_inclusion, Hash};
use orderlog_store::postgres::testing::TestDatabase;
use orderlog_store::{EventStore, ExpectedVersion, MemoryStore, PostgresStore, SqliteStore, StreamAppend, TreeStore};

/// Appends `count` events, a few per call, over five streams.
async fn append(store: &dyn EventStore, from: u32, count: u32) {
    for n in (from..from + count).step_by(3) {
        let events =
            (n..(n + 3).min(from + count)).map(|q| event("StockReceived", &format!(r#"{{"quantity":{q}}}"#))).collect();
        let stream = format!("stock-{}@x", n % 5);
        store.append(vec![StreamAppend { stream_id: stream, expected: ExpectedVersion::Any, events }]).await.unwrap();
    }
}

fn hash(text: &str) -> Hash {
    hex::decode(text).unwrap().try_into().unwrap()
}

/// Every proof the stored tree serves agrees with the tree recomputed from the log.
async fn follows(store: Arc<dyn TreeStore>) {
    let follower = TreeFollower::new(store.clone());
    assert_eq!(follower.extend().await.unwrap(), 0);
    let mut sizes = vec![];
    for round in 0..4 {
        append(&*store, round * 100, 37 + round * 20).await;
        let (size, root) = follower.head().await.unwrap();
        let (recomputed, positions) = tree_of(&*store).await.unwrap();
        assert_eq!(size, recomputed.size());
        assert_eq!(root, recomputed.root(size).unwrap());
        for (index, position) in positions.iter().enumerate() {
            let proof = follower.inclusion(*position, None).await.unwrap();
            assert_eq!(proof.index, index as u64);
            let path: Vec<Hash> = proof.proof.iter().map(|h| hash(h)).collect();
            verify_inclusion(proof.index, size, &hash(&proof.leaf), &path, &root).unwrap();
            assert_eq!(hash(&proof.leaf), recomputed.leaf(index as u64).unwrap());
            // At every earlier size: proven where the event is among its leaves, refused
            // by name where it is not.
            for &earlier in sizes.iter().chain([1, 17].iter()) {
                match follower.inclusion(*position, Some(earlier)).await {
                    Ok(proof) => {
                        assert!((index as u64) < earlier);
                        let path: Vec<Hash> = proof.proof.iter().map(|h| hash(h)).collect();
                        let old_root = recomputed.root(earlier).unwrap();
                        assert_eq!(hash(&proof.root), old_root);
                        verify_inclusion(proof.index, earlier, &hash(&proof.leaf), &path, &old_root).unwrap();
                    }
                    Err(e) => {
                        assert!(index as u64 >= earlier, "{e}");
                        assert!(e.to_string().contains("not among the first"), "{e}");
                    }
                }
            }
        }
        for old in sizes.iter().copied().chain([1, size / 2]) {
            let proof = follower.consistency(old, Some(size)).await.unwrap();
            let path: Vec<Hash> = proof.proof.iter().map(|h| hash(h)).collect();
            assert_eq!(hash(&proof.old_root), recomputed.root(old).unwrap());
            verify_consistency(old, size, &hash(&proof.old_root), &root, &path).unwrap();
        }
        sizes.push(size);
    }
    // Past what the databases' integers hold: not found, not a database error.
    for position in [u64::MAX / 2, u64::MAX - 1] {
        let missing = follower.inclusion(position, None).await.unwrap_err();
        assert!(missing.to_string().contains("no event at position"), "{missing}");
    }
    assert_eq!(follower.kept(Some(u64::MAX)).await.unwrap(), None);
    assert_eq!(store.tree_leaf(u64::MAX).await.unwrap(), None);
}

/// Two followers (two processes) extend one stored tree while the log grows.
async fn two_followers(first: Arc<dyn TreeStore>, second: Arc<dyn TreeStore>) {
    let (a, b) = (TreeFollower::new(first.clone()), TreeFollower::new(second.clone()));
    let writer = {
        let store = first.clone();
        tokio::spawn(async move {
            for round in 0..20 {
                append(&*store, round * 50, 31).await;
            }
        })
    };
    let extend = |f: TreeFollower| {
        tokio::spawn(async move {
            for _ in 0..30 {
                f.extend().await.unwrap();
                tokio::task::yield_now().await;
            }
            f
        })
    };
    let (a, b) = (extend(a), extend(b));
    writer.await.unwrap();
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    let (size, root) = a.head().await.unwrap();
    assert_eq!(b.head().await.unwrap(), (size, root));
    let (recomputed, positions) = tree_of(&*second).await.unwrap();
    assert_eq!(size, 20 * 31);
    assert_eq!(root, recomputed.root(size).unwrap());
    for (index, position) in positions.iter().enumerate() {
        let leaf = second.tree_leaf_at(*position).await.unwrap().unwrap();
        assert_eq!(leaf.index, index as u64, "every event once, in log order");
    }
}

#[tokio::test]
async fn the_stored_tree_follows_the_log_in_memory() {
    follows(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn the_stored_tree_follows_the_log_in_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    follows(Arc::new(SqliteStore::open(dir.path().join("log.db")).unwrap())).await;
}

#[tokio::test]
async fn the_stored_tree_follows_the_log_in_postgres() {
    let db = TestDatabase::create().await;
    follows(Arc::new(PostgresStore::connect_url(&db.url).await.unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_extend_one_tree_in_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let first = Arc::new(SqliteStore::open(&path).unwrap());
    let second = Arc::new(SqliteStore::open(&path).unwrap());
    two_followers(first, second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_extend_one_tree_in_postgres() {
    let db = TestDatabase::create().await;
    let first = Arc::new(PostgresStore::connect_url(&db.url).await.unwrap());
    let second = Arc::new(PostgresStore::connect_url(&db.url).await.unwrap());
    two_followers(first, second).await;
}

#[tokio::test]
async fn checkpoints_are_kept_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn TreeStore> = Arc::new(SqliteStore::open(dir.path().join("log.db")).unwrap());
    let follower = TreeFollower::new(store.clone());
    let key = ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]);
    append(&*store, 0, 10).await;
    let first = follower.sign(&key, Utc::now()).await.unwrap();
    assert_eq!(first.tree_size, 10);
    assert_eq!(follower.sign(&key, Utc::now()).await.unwrap(), first, "the log has not grown: the same checkpoint");
    append(&*store, 10, 5).await;
    let second = follower.sign(&key, Utc::now()).await.unwrap();
    assert_eq!(second.tree_size, 15);
    assert_eq!(follower.kept(None).await.unwrap(), Some(second.clone()));
    assert_eq!(follower.kept(Some(10)).await.unwrap(), Some(first));
    assert_eq!(follower.kept(Some(11)).await.unwrap(), None);
    second.check_signature(&key.verifying_key()).unwrap();
}
