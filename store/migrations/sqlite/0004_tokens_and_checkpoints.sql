-- The tables beside the log: API tokens (stored as SHA-256 hashes of the token) and the
-- read models' checkpoints. Builds before this migration made them on first use; IF NOT
-- EXISTS keeps those.
CREATE TABLE IF NOT EXISTS orderlog_api_tokens (
    id           TEXT PRIMARY KEY,
    principal    TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL,
    revoked_at   TEXT
);

CREATE TABLE IF NOT EXISTS orderlog_checkpoints (
    projection   TEXT PRIMARY KEY,
    version      INTEGER NOT NULL,
    commit_order INTEGER NOT NULL,
    position     INTEGER NOT NULL,
    events       INTEGER NOT NULL,
    error        TEXT
);
