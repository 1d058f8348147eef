-- The process side: reactors' checkpoints and the events they parked (with the operator's
-- decision on each), webhook subscriptions, the messages queued for them and every attempt
-- to deliver one. Times are milliseconds since the Unix epoch.
CREATE TABLE orderlog_reactors (
    name         TEXT PRIMARY KEY,
    commit_order INTEGER NOT NULL,
    position     INTEGER NOT NULL,
    events       INTEGER NOT NULL,
    stopped      TEXT,
    updated_ms   INTEGER NOT NULL
);

CREATE TABLE orderlog_parked (
    reactor      TEXT NOT NULL,
    position     INTEGER NOT NULL,
    commit_order INTEGER NOT NULL,
    event_id     TEXT NOT NULL,
    stream_id    TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    error        TEXT NOT NULL,
    attempts     INTEGER NOT NULL,
    parked_ms    INTEGER NOT NULL,
    state        TEXT NOT NULL,
    decided_by   TEXT,
    decided_ms   INTEGER,
    reason       TEXT,
    PRIMARY KEY (reactor, position)
);

CREATE TABLE orderlog_webhooks (
    id                TEXT PRIMARY KEY,
    url               TEXT NOT NULL,
    event_types       TEXT NOT NULL,
    secret            TEXT NOT NULL,
    previous_secret   TEXT,
    previous_until_ms INTEGER,
    status            TEXT NOT NULL,
    status_reason     TEXT,
    created_by        TEXT NOT NULL,
    created_ms        INTEGER NOT NULL
);

CREATE TABLE orderlog_webhook_messages (
    id               TEXT PRIMARY KEY,
    webhook          TEXT NOT NULL,
    seq              INTEGER NOT NULL,
    event_type       TEXT NOT NULL,
    payload          TEXT NOT NULL,
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL,
    next_attempt_ms  INTEGER NOT NULL,
    claimed_until_ms INTEGER NOT NULL,
    created_ms       INTEGER NOT NULL,
    delivered_ms     INTEGER,
    last_status      INTEGER,
    last_error       TEXT
);
CREATE INDEX orderlog_webhook_messages_due ON orderlog_webhook_messages (webhook, status, next_attempt_ms, seq);

CREATE TABLE orderlog_webhook_attempts (
    message     TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    at_ms       INTEGER NOT NULL,
    status      INTEGER,
    error       TEXT,
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (message, attempt)
);

-- One holder per job (a projection, a reactor, the timer, webhook delivery) across every
-- process on this database: a holder renews its lease before it expires; another process
-- takes an expired one over.
CREATE TABLE orderlog_leases (
    job         TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_ms  INTEGER NOT NULL,
    acquired_ms INTEGER NOT NULL
);
