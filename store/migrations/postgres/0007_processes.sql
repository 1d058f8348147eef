-- The process side: reactors' checkpoints and the events they parked (with the operator's
-- decision on each), webhook subscriptions, the messages queued for them and every attempt
-- to deliver one. Times are milliseconds since the Unix epoch.
CREATE TABLE orderlog_reactors (
    name         TEXT PRIMARY KEY,
    commit_order BIGINT NOT NULL,
    position     BIGINT NOT NULL,
    events       BIGINT NOT NULL,
    stopped      TEXT,
    updated_ms   BIGINT NOT NULL
);

CREATE TABLE orderlog_parked (
    reactor      TEXT NOT NULL,
    position     BIGINT NOT NULL,
    commit_order BIGINT NOT NULL,
    event_id     TEXT NOT NULL,
    stream_id    TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    error        TEXT NOT NULL,
    attempts     BIGINT NOT NULL,
    parked_ms    BIGINT NOT NULL,
    state        TEXT NOT NULL,
    decided_by   TEXT,
    decided_ms   BIGINT,
    reason       TEXT,
    PRIMARY KEY (reactor, position)
);

CREATE TABLE orderlog_webhooks (
    id                TEXT PRIMARY KEY,
    url               TEXT NOT NULL,
    event_types       TEXT NOT NULL,
    secret            TEXT NOT NULL,
    previous_secret   TEXT,
    previous_until_ms BIGINT,
    status            TEXT NOT NULL,
    status_reason     TEXT,
    created_by        TEXT NOT NULL,
    created_ms        BIGINT NOT NULL
);

CREATE TABLE orderlog_webhook_messages (
    id               TEXT PRIMARY KEY,
    webhook          TEXT NOT NULL,
    seq              BIGINT NOT NULL,
    event_type       TEXT NOT NULL,
    payload          TEXT NOT NULL,
    status           TEXT NOT NULL,
    attempts         BIGINT NOT NULL,
    next_attempt_ms  BIGINT NOT NULL,
    claimed_until_ms BIGINT NOT NULL,
    created_ms       BIGINT NOT NULL,
    delivered_ms     BIGINT,
    last_status      BIGINT,
    last_error       TEXT
);
CREATE INDEX orderlog_webhook_messages_due ON orderlog_webhook_messages (webhook, status, next_attempt_ms, seq);

CREATE TABLE orderlog_webhook_attempts (
    message     TEXT NOT NULL,
    attempt     BIGINT NOT NULL,
    at_ms       BIGINT NOT NULL,
    status      BIGINT,
    error       TEXT,
    duration_ms BIGINT NOT NULL,
    PRIMARY KEY (message, attempt)
);

-- One holder per job (a projection, a reactor, the timer, webhook delivery) across every
-- process on this database: a holder renews its lease before it expires; another process
-- takes an expired one over.
CREATE TABLE orderlog_leases (
    job         TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_ms  BIGINT NOT NULL,
    acquired_ms BIGINT NOT NULL
);
