-- What each append wrote: its first position, how many events, and the digest of their
-- positions and hashes (store::hash::commit_digest). Written in the same transaction as
-- the events, so an event deleted (the last one too), inserted or moved is found by
-- `orderlog verify` even where every stream's own hash chain still holds. Logs written
-- before this migration get their records when the store is next opened.
CREATE TABLE orderlog_commits (
    first_position INTEGER PRIMARY KEY,
    events         INTEGER NOT NULL,
    digest         TEXT    NOT NULL
);
