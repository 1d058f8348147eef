-- The Merkle tree over the log (RFC 9162) and the signed checkpoints of it. The tree is
-- kept as every perfect subtree's hash: leaves (level 0) with the event each stands for,
-- and inner nodes by level and index, so that any proof reads O(log n) rows. It follows
-- the log: whoever extends it reads the events after its last leaf, so a log from before
-- this migration is folded in on first use.
CREATE TABLE orderlog_tree_leaves (
    leaf         BIGINT PRIMARY KEY,
    commit_order BIGINT NOT NULL,
    position     BIGINT NOT NULL UNIQUE,
    hash         BYTEA NOT NULL
);

CREATE TABLE orderlog_tree_nodes (
    level SMALLINT NOT NULL,
    idx   BIGINT NOT NULL,
    hash  BYTEA NOT NULL,
    PRIMARY KEY (level, idx)
);

CREATE TABLE orderlog_signed_checkpoints (
    tree_size  BIGINT PRIMARY KEY,
    checkpoint TEXT NOT NULL
);
