//! An append: planned on the stream heads the store knows, sent through the batcher, and
//! planned again on heads read under the stream locks when those had moved.

use super::*;

/// An append under the stream locks: done without a write, or written and not yet committed.
pub(super) enum Locked<'c> {
    Done(AppendOutcome),
    Called { tx: deadpool_postgres::Transaction<'c>, write: Write, reply: ItemReply },
}

impl PostgresStore {
    /// Appends, planning again (a bounded number of times) while the heads it planned on
    /// keep moving.
    pub(super) async fn append_planned(&self, appends: Vec<StreamAppend>) -> Result<AppendOutcome, StoreError> {
        validate(&appends)?;
        let mut attempt = 0;
        loop {
            match self.try_append(&appends, attempt > 0).await {
                Ok(outcome) => {
                    if outcome.last_position.is_some() && !outcome.duplicate {
                        self.announce();
                    }
                    return Ok(outcome);
                }
                Err(Attempt::Stale(detail)) => {
                    if attempt >= STALE_RETRY_MAX {
                        return Err(StoreError::Backend(format!(
                            "the streams kept moving under this append: {detail}"
                        )));
                    }
                    attempt += 1;
                }
                Err(Attempt::Failed(e)) => return Err(e),
            }
        }
    }

    /// One try. Optimistic first: plan on the cached (or freshly read) stream heads and hand
    /// the append to the batcher, whose `orderlog_append` call checks them under the stream
    /// locks. When a head had moved (`locked`), the heads are read in a transaction that
    /// holds the locks first, so the call cannot be refused for them.
    async fn try_append(&self, appends: &[StreamAppend], locked: bool) -> Result<AppendOutcome, Attempt> {
        if !locked {
            let heads = match self.cached_heads(appends) {
                Some(heads) => heads,
                None => {
                    let client = self.client().await?;
                    self.read_heads(&client, appends, true).await?
                }
            };
            let mut write = match planned(appends, heads) {
                Ok(write) => write,
                Err(Planned::Repeat(outcome)) => return Ok(outcome),
                Err(Planned::Conflict(e)) => return self.replan(appends, e).await,
                Err(Planned::Failed(e)) => return Err(e.into()),
            };
            let item = BatchItem::new(appends, &mut write);
            let reply = self.batcher().submit(item).await;
            return self.settle_reply(appends, write, reply).await;
        }
        let mut client = self.client().await?;
        let (write, reply) = match self.locked_call(&mut client, appends).await? {
            Locked::Done(outcome) => return Ok(outcome),
            Locked::Called { tx, write, reply } => {
                if matches!(reply, ItemReply::Written(_)) {
                    tx.commit().await.map_err(pg)?;
                }
                (write, reply)
            }
        };
        self.settle_reply(appends, write, reply).await
    }

    /// Under the locks of every stream of the append: the heads read, the append planned
    /// and written by `orderlog_append`, the transaction left open for the caller to end.
    pub(super) async fn locked_call<'c>(
        &self,
        client: &'c mut deadpool_postgres::Client,
        appends: &[StreamAppend],
    ) -> Result<Locked<'c>, Attempt> {
        let tx = client.transaction().await.map_err(pg)?;
        let mut lock_keys: Vec<i64> = appends.iter().map(|a| stream_lock_key(&a.stream_id)).collect();
        lock_keys.sort_unstable();
        lock_keys.dedup();
        tx.execute("SELECT pg_advisory_xact_lock(k) FROM unnest($1::int8[]) AS k", &[&lock_keys]).await.map_err(pg)?;
        let heads = self.read_heads(&tx, appends, false).await?;
        let mut write = match planned(appends, heads) {
            Ok(write) => write,
            Err(Planned::Repeat(outcome)) => return Ok(Locked::Done(outcome)),
            Err(Planned::Conflict(e)) => {
                drop(tx);
                return self.replan(appends, e).await.map(Locked::Done);
            }
            Err(Planned::Failed(e)) => return Err(e.into()),
        };
        let item = BatchItem::new(appends, &mut write);
        let reply = match call_batch(&tx, &[&item]).await {
            Ok(mut replies) => replies.pop().expect("one reply per item"),
            Err(e) => ItemReply::Failed(describe(&e)),
        };
        Ok(Locked::Called { tx, write, reply })
    }

    /// What the database said of one append.
    pub(super) async fn settle_reply(
        &self,
        appends: &[StreamAppend],
        mut write: Write,
        reply: ItemReply,
    ) -> Result<AppendOutcome, Attempt> {
        match reply {
            ItemReply::Written(events) => {
                write.events = events;
                self.remember(write.heads.iter().map(|(s, h)| (s.as_str(), h.version, h.hash.as_str())));
                Ok(write.outcome())
            }
            // A stream is not at the head this append planned on.
            ItemReply::Conflict { stream_id, version, hash } => {
                self.remember([(stream_id.as_str(), version, hash.as_str())]);
                let expected = appends.iter().find(|a| a.stream_id == stream_id).map(|a| a.expected);
                match expected {
                    // A stale cached head; the next try plans on the new one.
                    Some(expected) if expected.allows(version) => {
                        Err(Attempt::Stale(format!("stream '{stream_id}' had moved on from the cached head")))
                    }
                    Some(expected) => {
                        let conflict = StoreError::WrongExpectedVersion { stream_id, expected, actual: version };
                        self.replan(appends, conflict).await
                    }
                    None => {
                        Err(StoreError::Backend(format!("orderlog_append named unknown stream '{stream_id}'")).into())
                    }
                }
            }
            // An event id is stored already: a repeat of an earlier append, or an error.
            ItemReply::Duplicate => {
                let duplicate = StoreError::DuplicateEvent { event_id: Uuid::nil(), detail: "already".into() };
                self.replan(appends, duplicate).await
            }
            ItemReply::Failed(detail) => Err(StoreError::Backend(detail).into()),
        }
    }

    /// Plans again on fresh heads and every stored event id of the append: an idempotent
    /// repeat gives the first run's outcome, anything else the precise error.
    pub(super) async fn replan(
        &self,
        appends: &[StreamAppend],
        otherwise: StoreError,
    ) -> Result<AppendOutcome, Attempt> {
        let Some(first) = appends.iter().find_map(|a| a.events.first()) else { return Err(otherwise.into()) };
        let client = self.client().await?;
        let event_ids: Vec<Uuid> = appends.iter().flat_map(|a| a.events.iter().map(|e| e.event_id)).collect();
        let known = client
            .prepare_cached(
                "SELECT event_id, position, stream_id, version FROM orderlog_events WHERE event_id = ANY($1)",
            )
            .await
            .map_err(pg)?;
        let found = client.query(&known, &[&event_ids]).await.map_err(pg)?;
        if found.is_empty() {
            return match otherwise {
                StoreError::DuplicateEvent { .. } => Err(Attempt::Stale("an event id was stored, then not".into())),
                other => Err(other.into()),
            };
        }
        if !found.iter().any(|r| r.get::<_, Uuid>(0) == first.event_id) {
            let (id, stream, version): (Uuid, String, i64) = (found[0].get(0), found[0].get(2), found[0].get(3));
            return Err(StoreError::DuplicateEvent {
                event_id: id,
                detail: format!("in stream '{stream}' at version {version}"),
            }
            .into());
        }
        let events = found
            .iter()
            .map(|r| {
                let location = EventLocation {
                    position: r.get::<_, i64>(1) as u64,
                    stream_id: r.get(2),
                    version: r.get::<_, i64>(3) as u64,
                };
                (r.get::<_, Uuid>(0), location)
            })
            .collect();
        let heads = self.read_heads(&client, appends, false).await?;
        match plan(&mut Prefetched { heads, events }, appends)? {
            Plan::Repeat(outcome) => Ok(outcome),
            Plan::Write(_) => Err(Attempt::Stale("the append's events were partly stored".into())),
        }
    }

    /// Every stream's head from what is known without asking the database (new streams,
    /// cached heads at the expected version), or `None`.
    pub(super) fn cached_heads(&self, appends: &[StreamAppend]) -> Option<HashMap<String, (u64, String)>> {
        let cache = self.heads.lock().expect("head cache lock");
        appends
            .iter()
            .map(|append| match (append.expected, cache.get(&append.stream_id)) {
                (ExpectedVersion::NoStream | ExpectedVersion::Exact(0), _) => {
                    Some((append.stream_id.clone(), (0, GENESIS.to_string())))
                }
                (ExpectedVersion::Exact(v), Some((cv, hash))) if *cv == v => {
                    Some((append.stream_id.clone(), (v, hash.clone())))
                }
                _ => None,
            })
            .collect()
    }

    /// The head (version, hash) of every stream of the append: for a new stream known, with
    /// `cached` from the cache when it holds the expected version, else read.
    pub(super) async fn read_heads(
        &self,
        client: &impl GenericClient,
        appends: &[StreamAppend],
        cached: bool,
    ) -> Result<HashMap<String, (u64, String)>, StoreError> {
        let mut heads = HashMap::with_capacity(appends.len());
        let mut missing = Vec::new();
        {
            let cache = self.heads.lock().expect("head cache lock");
            for append in appends {
                let known = match (append.expected, cache.get(&append.stream_id)) {
                    (ExpectedVersion::NoStream | ExpectedVersion::Exact(0), _) => Some((0, GENESIS.to_string())),
                    (ExpectedVersion::Exact(v), Some((cv, hash))) if cached && *cv == v => Some((v, hash.clone())),
                    _ => None,
                };
                match known {
                    Some(head) => {
                        heads.insert(append.stream_id.clone(), head);
                    }
                    None => missing.push(append.stream_id.as_str()),
                }
            }
        }
        if !missing.is_empty() {
            let stmt = client
                .prepare_cached(
                    "SELECT s, h.version, h.hash FROM unnest($1::text[]) AS s
                     LEFT JOIN LATERAL (SELECT version, hash FROM orderlog_events
                                        WHERE stream_id = s ORDER BY version DESC LIMIT 1) h ON true",
                )
                .await
                .map_err(pg)?;
            let rows = client.query(&stmt, &[&missing]).await.map_err(pg)?;
            for row in &rows {
                let version: Option<i64> = row.get(1);
                let hash: Option<String> = row.get(2);
                heads.insert(row.get(0), (version.unwrap_or(0) as u64, hash.unwrap_or_else(|| GENESIS.to_string())));
            }
            self.remember(heads.iter().filter(|(_, (v, _))| *v > 0).map(|(s, (v, h))| (s.as_str(), *v, h.as_str())));
        }
        Ok(heads)
    }

    /// The batcher, started on first use.
    pub(super) fn batcher(&self) -> &Batcher {
        self.batcher.get_or_init(|| {
            let (batcher, task) = Batcher::start(self.pool.clone(), self.options.append_calls_max);
            self.tasks.lock().expect("task lock").push(task);
            batcher
        })
    }

    /// Records stream heads seen, keeping the newer of two; the cache is emptied when full.
    pub(super) fn remember<'a>(&self, heads: impl IntoIterator<Item = (&'a str, u64, &'a str)>) {
        let mut cache = self.heads.lock().expect("head cache lock");
        for (stream, version, hash) in heads {
            if cache.len() >= HEAD_CACHE_MAX && !cache.contains_key(stream) {
                cache.clear();
            }
            match cache.get_mut(stream) {
                Some(entry) if entry.0 >= version => {}
                Some(entry) => *entry = (version, hash.to_string()),
                None => {
                    cache.insert(stream.to_string(), (version, hash.to_string()));
                }
            }
        }
    }
}
