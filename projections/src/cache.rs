//! Rows of one read model kept in memory as they are served (the stored JSON text), for
//! reads that repeat — an order page a shopper reloads, a status a shop polls.
//!
//! The runner of this process keeps the cache exact: its row store is wrapped in
//! [`WatchedRows`], which puts the rows a commit wrote into the cache as soon as it has
//! committed (written through), and forgets the whole cache when a rebuild is swapped in. Commits of another process (a second server's
//! projector, `orderlog project`, a rebuild elsewhere) are noticed by [`follow_checkpoints`]:
//! when the stored checkpoint has moved past this process's last commit, the whole cache is
//! forgotten, within [`ROW_CACHE_CHECK_MS`]. A rebuild swapped in elsewhere at the very
//! position the model already stood at moves nothing; for that, every cached row is read
//! again after [`ROW_CACHE_TTL`] at most. A read that must see a given position
//! (read-your-writes) should go to the store, not to the cache.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use orderlog_store::LogCursor;

use crate::table::{Checkpoint, RowStore};
use crate::RowsError;

/// How long a cached row is served before it is read again (the backstop for changes no
/// checkpoint shows: a rebuild swapped in elsewhere at the position the model stood at).
pub const ROW_CACHE_TTL: Duration = Duration::from_secs(30);

/// How often [`follow_checkpoints`] reads the stored checkpoints.
pub const ROW_CACHE_CHECK_MS: u64 = 100;

/// Bytes of keys and rows a cache holds at most; past it, it starts over empty.
pub const ROW_CACHE_BYTES_MAX: usize = 64 << 20;

/// Cached rows of one model.
pub struct RowCache {
    model: &'static str,
    ttl: Duration,
    bytes_max: usize,
    state: Mutex<State>,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Default)]
struct State {
    rows: HashMap<String, (Arc<str>, Instant)>,
    bytes: usize,
    /// Raised whenever rows are forgotten: a row read from the store before a change must
    /// not be put into the cache after it.
    generation: u64,
    /// The model's checkpoint as of the last change the cache heard of.
    cursor: Option<LogCursor>,
}

impl State {
    /// Forgets every row.
    fn clear(&mut self) {
        self.rows.clear();
        self.bytes = 0;
    }
}

/// What a look-up found.
pub enum Lookup {
    Hit(Arc<str>),
    /// Not cached: read the store, then [`RowCache::put`] what it said with this ticket.
    Miss(Ticket),
}

/// When a miss was found (see [`RowCache::put`]).
pub struct Ticket {
    generation: u64,
}

/// Hits and misses so far, and what the cache holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub rows: usize,
    pub bytes: usize,
}

impl RowCache {
    pub fn new(model: &'static str) -> Arc<RowCache> {
        RowCache::with_limits(model, ROW_CACHE_TTL, ROW_CACHE_BYTES_MAX)
    }

    pub fn with_limits(model: &'static str, ttl: Duration, bytes_max: usize) -> Arc<RowCache> {
        Arc::new(RowCache {
            model,
            ttl,
            bytes_max,
            state: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    pub fn lookup(&self, key: &str) -> Lookup {
        let state = self.state.lock().expect("row cache lock");
        match state.rows.get(key) {
            Some((row, at)) if at.elapsed() < self.ttl => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Lookup::Hit(row.clone())
            }
            _ => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                Lookup::Miss(Ticket { generation: state.generation })
            }
        }
    }

    /// Caches the row the store gave for `key` after a miss — unless rows changed since the
    /// miss (the store may have answered from before that change).
    pub fn put(&self, ticket: Ticket, key: &str, row: Arc<str>) {
        let mut state = self.state.lock().expect("row cache lock");
        if state.generation == ticket.generation {
            self.insert(&mut state, key, row);
        }
    }

    fn insert(&self, state: &mut State, key: &str, row: Arc<str>) {
        let size = key.len() + row.len();
        if state.bytes + size > self.bytes_max {
            state.clear();
        }
        state.bytes += size;
        if let Some((old, _)) = state.rows.insert(key.to_string(), (row, Instant::now())) {
            state.bytes -= key.len() + old.len();
        }
    }

    /// A row's JSON as the cache holds and serves it: compact, keys in order — the same
    /// text whether it came from the runner or from the store (PostgreSQL hands `jsonb`
    /// back reformatted). Text that is not JSON is kept as it is.
    pub fn canonical(json: &str) -> Arc<str> {
        match serde_json::from_str::<serde_json::Value>(json) {
            Ok(value) => Arc::from(value.to_string()),
            Err(_) => Arc::from(json),
        }
    }

    /// After a commit of this process that moved the model from `from` to `to`: the rows it
    /// wrote (key, [`RowCache::canonical`] JSON) replace the cached ones — written through,
    /// so that a row just changed (an order just placed) is served from memory from its
    /// first read. If the cache had not heard that the model stood at `from` (something else
    /// moved it there), every other row is forgotten too.
    pub fn written(&self, rows: Vec<(String, Arc<str>)>, from: LogCursor, to: LogCursor) {
        let mut state = self.state.lock().expect("row cache lock");
        state.generation += 1;
        if state.cursor != Some(from) {
            state.clear();
        }
        for (key, row) in rows {
            self.insert(&mut state, &key, row);
        }
        state.cursor = state.cursor.max(Some(to));
    }

    /// The model's stored checkpoint is at `cursor`: if that is past the last commit this
    /// cache heard of, another process changed rows, and every row is forgotten. Says
    /// whether it was.
    pub fn observe(&self, cursor: LogCursor) -> bool {
        let mut state = self.state.lock().expect("row cache lock");
        if state.cursor.is_some_and(|known| cursor <= known) {
            return false;
        }
        let known = state.cursor.replace(cursor);
        state.generation += 1;
        if known.is_none() && state.rows.is_empty() {
            // The first look, with nothing cached yet.
            return false;
        }
        state.clear();
        true
    }

    /// Forgets every row.
    pub fn forget_all(&self) {
        let mut state = self.state.lock().expect("row cache lock");
        state.generation += 1;
        state.clear();
    }

    pub fn stats(&self) -> CacheStats {
        let state = self.state.lock().expect("row cache lock");
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            rows: state.rows.len(),
            bytes: state.bytes,
        }
    }
}

/// A row store that tells caches what its commits changed: the rows a commit wrote go into
/// the model's caches once it has committed (see [`RowCache::committed`]), and all of a
/// model's rows are forgotten when a rebuild is swapped in or the model is discarded.
pub struct WatchedRows {
    inner: Arc<dyn RowStore>,
    caches: Vec<Arc<RowCache>>,
}

impl WatchedRows {
    pub fn new(inner: Arc<dyn RowStore>, caches: Vec<Arc<RowCache>>) -> WatchedRows {
        WatchedRows { inner, caches }
    }

    fn caches_of<'a>(&'a self, model: &'a str) -> impl Iterator<Item = &'a Arc<RowCache>> + 'a {
        self.caches.iter().filter(move |c| c.model == model)
    }
}

#[async_trait]
impl RowStore for WatchedRows {
    async fn ensure(&self, model: &'static str, version: u32) -> Result<(), RowsError> {
        self.inner.ensure(model, version).await
    }

    async fn checkpoint(&self, model: &'static str) -> Result<Checkpoint, RowsError> {
        self.inner.checkpoint(model).await
    }

    async fn load(&self, model: &'static str, keys: Vec<String>) -> Result<BTreeMap<String, String>, RowsError> {
        self.inner.load(model, keys).await
    }

    async fn write_batch(
        &self,
        model: &'static str,
        from: LogCursor,
        to: LogCursor,
        events: u64,
        rows: Vec<(String, String)>,
    ) -> Result<bool, RowsError> {
        // The cached form of the rows, made before (and outside the cache's lock), for models
        // that have a cache.
        let written: Vec<(String, Arc<str>)> = match self.caches_of(model).next() {
            Some(_) => rows.iter().map(|(key, json)| (key.clone(), RowCache::canonical(json))).collect(),
            None => Vec::new(),
        };
        let committed = self.inner.write_batch(model, from, to, events, rows).await;
        for cache in self.caches_of(model) {
            match committed {
                Ok(true) => cache.written(written.clone(), from, to),
                // Nothing written (the checkpoint had moved: see `follow_checkpoints`).
                Ok(false) => {}
                // A commit that failed on the way back may still have committed.
                Err(_) => cache.forget_all(),
            }
        }
        committed
    }

    async fn record_error(&self, model: &'static str, error: &str) -> Result<(), RowsError> {
        self.inner.record_error(model, error).await
    }

    async fn swap(&self, live: &'static str, shadow: &'static str) -> Result<bool, RowsError> {
        let swapped = self.inner.swap(live, shadow).await;
        for cache in self.caches_of(live) {
            cache.forget_all();
        }
        swapped
    }

    async fn discard(&self, model: &'static str) -> Result<(), RowsError> {
        let discarded = self.inner.discard(model).await;
        for cache in self.caches_of(model) {
            cache.forget_all();
        }
        discarded
    }
}

/// Until `stop` turns true: every [`ROW_CACHE_CHECK_MS`], each cache's model checkpoint is
/// read from `rows` (the row store itself, not a [`WatchedRows`]) and shown to the cache
/// (see [`RowCache::observe`]). A checkpoint that cannot be read makes the caches forget
/// everything, as they cannot tell what changed.
pub async fn follow_checkpoints(
    rows: Arc<dyn RowStore>,
    caches: Vec<Arc<RowCache>>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        for cache in &caches {
            match rows.checkpoint(cache.model).await {
                Ok(checkpoint) => {
                    if cache.observe(checkpoint.cursor) {
                        tracing::debug!(model = cache.model, "another process moved the model: cache emptied");
                    }
                }
                Err(e) => {
                    tracing::warn!(model = cache.model, error = %e, "checkpoint unreadable: cache emptied");
                    cache.forget_all();
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            changed = stop.changed() => if changed.is_err() || *stop.borrow() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::SqliteRows;

    fn row(text: &str) -> Arc<str> {
        Arc::from(text)
    }

    fn hit(cache: &RowCache, key: &str) -> Option<String> {
        match cache.lookup(key) {
            Lookup::Hit(row) => Some(row.to_string()),
            Lookup::Miss(_) => None,
        }
    }

    fn miss(cache: &RowCache, key: &str) -> Ticket {
        match cache.lookup(key) {
            Lookup::Hit(row) => panic!("'{key}' is cached: {row}"),
            Lookup::Miss(ticket) => ticket,
        }
    }

    #[test]
    fn a_row_read_before_a_change_is_not_cached_after_it() {
        let cache = RowCache::with_limits("m", Duration::from_secs(3600), 1 << 20);
        let before = miss(&cache, "k");
        // A change lands while the store is being read for `k`.
        cache.forget_all();
        cache.put(before, "k", row("old"));
        let after = miss(&cache, "k");
        cache.put(after, "k", row("new"));
        assert_eq!(hit(&cache, "k").as_deref(), Some("new"));
        assert_eq!(cache.stats(), CacheStats { hits: 1, misses: 2, rows: 1, bytes: 4 });
    }

    #[test]
    fn rows_are_read_again_after_the_ttl() {
        let cache = RowCache::with_limits("m", Duration::from_millis(50), 1 << 20);
        let ticket = miss(&cache, "k");
        cache.put(ticket, "k", row("v"));
        assert!(hit(&cache, "k").is_some());
        std::thread::sleep(Duration::from_millis(60));
        let ticket = miss(&cache, "k");
        cache.put(ticket, "k", row("w"));
        assert_eq!(hit(&cache, "k").as_deref(), Some("w"));
        assert_eq!(cache.stats().bytes, 2, "the replaced row's bytes are given back");
    }

    #[test]
    fn past_its_bytes_it_starts_over() {
        let cache = RowCache::with_limits("m", Duration::from_secs(3600), 100);
        let ticket = miss(&cache, "k1");
        cache.put(ticket, "k1", row(&"a".repeat(60)));
        let ticket = miss(&cache, "k2");
        cache.put(ticket, "k2", row(&"b".repeat(60)));
        assert!(hit(&cache, "k1").is_none());
        assert_eq!(hit(&cache, "k2").map(|r| r.len()), Some(60));
        assert_eq!(cache.stats().bytes, 62);
    }

    #[tokio::test]
    async fn a_commit_writes_its_rows_through_and_a_swap_forgets_all() {
        let dir = tempfile::tempdir().unwrap();
        orderlog_store::SqliteStore::open(dir.path().join("rows.db")).unwrap();
        let inner: Arc<dyn RowStore> = Arc::new(SqliteRows::open(dir.path().join("rows.db"), &[]).unwrap());
        let cache = RowCache::with_limits("m", Duration::from_secs(3600), 1 << 20);
        let other = RowCache::with_limits("n", Duration::from_secs(3600), 1 << 20);
        let rows = WatchedRows::new(inner, vec![cache.clone(), other.clone()]);
        rows.ensure("m", 1).await.unwrap();
        // The follower's first look (see `follow_checkpoints`).
        assert!(!cache.observe(LogCursor::START));
        for (c, key) in [(&cache, "k1"), (&cache, "k2"), (&other, "k1")] {
            let ticket = miss(c, key);
            c.put(ticket, key, row("{}"));
        }
        let to = LogCursor { commit: 1, position: 1 };
        let written = vec![("k1".into(), "{ \"n\": 1, \"a\": [1, 2] }".into()), ("k3".into(), "{\"n\":3}".into())];
        assert!(rows.write_batch("m", LogCursor::START, to, 1, written).await.unwrap());
        assert_eq!(hit(&cache, "k1").as_deref(), Some(r#"{"a":[1,2],"n":1}"#), "written through, canonical");
        assert_eq!(hit(&cache, "k3").as_deref(), Some(r#"{"n":3}"#), "a new row too");
        assert_eq!(hit(&cache, "k2").as_deref(), Some("{}"), "rows the commit did not write stay");
        assert_eq!(hit(&other, "k1").as_deref(), Some("{}"), "another model's rows stay");
        // A read of the store that began before the commit does not overwrite it.
        let before = miss(&cache, "k4");
        let next = LogCursor { commit: 2, position: 2 };
        assert!(rows.write_batch("m", to, next, 1, vec![("k4".into(), "{\"v\":2}".into())]).await.unwrap());
        cache.put(before, "k4", row(r#"{"v":1}"#));
        assert_eq!(hit(&cache, "k4").as_deref(), Some(r#"{"v":2}"#));

        // A commit from a position the cache never heard of: something else moved the
        // model, so nothing cached can be trusted.
        let ticket = miss(&cache, "k5");
        cache.put(ticket, "k5", row("{}"));
        let k9 = vec![("k9".to_string(), row("{}"))];
        cache.written(k9, LogCursor { commit: 5, position: 5 }, LogCursor { commit: 6, position: 6 });
        assert!(hit(&cache, "k5").is_none() && hit(&cache, "k2").is_none());
        assert!(hit(&cache, "k9").is_some(), "the commit's own rows are current");
        let ticket = miss(&cache, "k2");
        cache.put(ticket, "k2", row("{}"));

        rows.ensure("m_rebuild", 1).await.unwrap();
        let ahead = LogCursor { commit: 3, position: 3 };
        assert!(rows
            .write_batch("m_rebuild", LogCursor::START, ahead, 1, vec![("k2".into(), "{}".into())])
            .await
            .unwrap());
        assert!(rows.swap("m", "m_rebuild").await.unwrap());
        assert!(hit(&cache, "k2").is_none(), "a swapped-in rebuild replaces every row");
        assert!(hit(&other, "k1").is_some());
    }

    #[tokio::test]
    async fn a_commit_of_another_process_empties_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        orderlog_store::SqliteStore::open(dir.path().join("rows.db")).unwrap();
        let inner: Arc<dyn RowStore> = Arc::new(SqliteRows::open(dir.path().join("rows.db"), &[]).unwrap());
        let cache = RowCache::with_limits("m", Duration::from_secs(3600), 1 << 20);
        let rows = WatchedRows::new(inner.clone(), vec![cache.clone()]);
        rows.ensure("m", 1).await.unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let follower =
            tokio::spawn(follow_checkpoints(inner.clone(), vec![cache.clone()], Duration::from_millis(10), stopped));
        let at = |n| LogCursor { commit: n, position: n };
        // This process's own commit: only its row is forgotten, and the follower agrees.
        tokio::time::sleep(Duration::from_millis(50)).await;
        for key in ["k1", "k2"] {
            let ticket = miss(&cache, key);
            cache.put(ticket, key, row("{}"));
        }
        assert!(rows.write_batch("m", LogCursor::START, at(1), 1, vec![("k1".into(), "{}".into())]).await.unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(hit(&cache, "k2").is_some(), "the follower saw nothing foreign");
        // Another process commits straight to the store.
        assert!(inner.write_batch("m", at(1), at(2), 1, vec![("k3".into(), "{}".into())]).await.unwrap());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while hit(&cache, "k2").is_some() {
            assert!(std::time::Instant::now() < deadline, "the foreign commit went unnoticed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.send(true).unwrap();
        follower.await.unwrap();
    }
}
