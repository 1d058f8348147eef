-- The Merkle tree over the log (RFC 9162) and the signed checkpoints of it. The tree is
-- kept as every perfect subtree's hash: leaves (level 0) with the event each stands for,
-- and inner nodes by level and index, so that any proof reads O(log n) rows. It follows
-- the log: whoever extends it reads the events after its last leaf, so a log from before
-- this migration is folded in on first use.
CREATE TABLE orderlog_tree_leaves (
    leaf         INTEGER PRIMARY KEY,
    commit_order INTEGER NOT NULL,
    position     INTEGER NOT NULL UNIQUE,
    hash         BLOB NOT NULL
);

CREATE TABLE orderlog_tree_nodes (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;

CREATE TABLE orderlog_signed_checkpoints (
    tree_size  INTEGER PRIMARY KEY,
    checkpoint TEXT NOT NULL
);
