-- Merkle trees kept fresh by each node's agent through its logical slot (issue 10).
--
-- Every node holds its own copy of each tree, written only by agents (the schema's owner): the
-- leaf boundaries and leaf ids are decided by the task that builds or diffs the tree and are the
-- same on every node; the counts and hashes are the node's own. Submitters read trees only
-- through ace.mtree_status, so no key of a table they cannot read is shown to them.

-- One row per tracked table on this node.
CREATE TABLE ace.mtrees (
    tree_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name    text NOT NULL UNIQUE,  -- schema.table as ace.resolve_table spells it
    relid         oid NOT NULL,
    publication   text NOT NULL,          -- publishes the table's key columns for the agent's slot
    leaf_rows     int NOT NULL CONSTRAINT leaf_rows_positive CHECK (leaf_rows > 0),
    key_columns   text[] NOT NULL,
    key_collate_c boolean[] NOT NULL,     -- per key column: compared in the "C" collation
    hash_mode     text NOT NULL,
    hash_version  int NOT NULL,
    status        text NOT NULL DEFAULT 'building'
                  CONSTRAINT mtree_status CHECK (status IN ('building', 'ready', 'failed')),
    tracking_lsn  pg_lsn,                 -- the stream covers the table from here on
    next_leaf_id  int NOT NULL DEFAULT 0,
    generation    int NOT NULL DEFAULT 0,  -- bumped by every split or merge, equal on every node
    built_by      name,
    build_task    uuid,
    built_at      timestamptz,
    refreshed_at  timestamptz,
    error         text
);

-- A leaf is the half-open key range [lo, hi) (NULL = open), as canonical key text, with its
-- row count and the exact sums of two 64-bit lanes of its rows' digests. Parents are not
-- stored: they are sums of leaves, grouped by leaf id.
CREATE TABLE ace.mtree_leaves (
    tree_id   bigint NOT NULL REFERENCES ace.mtrees ON DELETE CASCADE,
    leaf_id   int NOT NULL,
    lo        text[],
    hi        text[],
    row_count bigint NOT NULL,
    lane1     numeric NOT NULL,
    lane2     numeric NOT NULL,
    PRIMARY KEY (tree_id, leaf_id)
);

-- Keys the stream delivered that are not yet assigned to leaves (key NULL: the whole table, for
-- a TRUNCATE or a key the stream could not show). xid is the writing transaction, '0' once it
-- was visible to every snapshot when recorded.
CREATE TABLE ace.mtree_pending (
    tree_id bigint NOT NULL REFERENCES ace.mtrees ON DELETE CASCADE,
    key     text[],
    xid     xid8 NOT NULL,
    lsn     pg_lsn NOT NULL
);
CREATE INDEX mtree_pending_tree ON ace.mtree_pending (tree_id);

-- Leaves whose hashes are stale, and the transaction that made them so: a refresh at a snapshot
-- that sees the transaction clears the row.
CREATE TABLE ace.mtree_dirty (
    tree_id bigint NOT NULL REFERENCES ace.mtrees ON DELETE CASCADE,
    leaf_id int NOT NULL,
    xid     xid8 NOT NULL,
    lsn     pg_lsn NOT NULL,
    PRIMARY KEY (tree_id, leaf_id, xid)
);

-- This node's change stream, kept by its agent: everything that committed before confirmed_lsn
-- is in mtree_pending (or already in the trees).
CREATE TABLE ace.cdc_state (
    slot_name     text PRIMARY KEY,
    agent_id      text,
    confirmed_lsn pg_lsn,
    publications  text[] NOT NULL DEFAULT '{}',
    connected     boolean NOT NULL DEFAULT false,
    heartbeat_at  timestamptz,
    last_error    text,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT ON ace.cdc_state TO PUBLIC;

-- The Merkle tree status of every node, as this node's agent last collected it (each node's
-- ace.mtree_local_status(), every heartbeat). ace.mtree_status reads it.
CREATE TABLE ace.mtree_node_status (
    node_name   text NOT NULL,
    table_name  text NOT NULL,
    status      jsonb NOT NULL,
    reported_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node_name, table_name)
);

-- A leaf's neighbours are found by their shared bound when leaves are split and merged.
CREATE INDEX mtree_leaves_lo ON ace.mtree_leaves (tree_id, lo);
CREATE INDEX mtree_leaves_hi ON ace.mtree_leaves (tree_id, hi);
