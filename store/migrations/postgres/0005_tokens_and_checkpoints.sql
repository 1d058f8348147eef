-- The tables beside the log: API tokens (stored as SHA-256 hashes of the token) and the
-- read models' checkpoints. Builds before this migration made them on first use; IF NOT
-- EXISTS keeps those.
CREATE TABLE IF NOT EXISTS orderlog_api_tokens (
    id           text PRIMARY KEY,
    principal    text NOT NULL,
    scopes       text NOT NULL,
    token_sha256 text NOT NULL UNIQUE,
    created_at   text NOT NULL,
    revoked_at   text
);

CREATE TABLE IF NOT EXISTS orderlog_checkpoints (
    projection   TEXT PRIMARY KEY,
    version      INTEGER NOT NULL,
    commit_order BIGINT NOT NULL,
    position     BIGINT NOT NULL,
    events       BIGINT NOT NULL,
    error        TEXT
);
