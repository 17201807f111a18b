-- Issue 21 (trees cheaper to build): a tree's leaves are summarised in one of two ways, chosen
-- when it is built and the same on every node (leaf_summary):
-- * 'lanes': each leaf's row count and the exact sums of two 64-bit lanes of its rows' digests
--   (lane1, lane2), as before;
-- * 'ordered': each leaf's row count and one SHA-256 over its rows' encodings in byte order
--   (digest; engine.LeafDigestSQL): one digest a leaf instead of one a row. An empty leaf's
--   digest is empty; NULL marks a leaf that held more rows than a digest reads (the tree's cap),
--   which is then compared row by row until a rebalance splits it.
-- Written by package engine/mtree only.
ALTER TABLE ace.mtrees ADD COLUMN leaf_summary text NOT NULL DEFAULT 'lanes'
    CONSTRAINT mtree_leaf_summary CHECK (leaf_summary IN ('lanes', 'ordered'));
ALTER TABLE ace.mtree_leaves ADD COLUMN digest bytea,
    ALTER COLUMN lane1 DROP NOT NULL,
    ALTER COLUMN lane2 DROP NOT NULL,
    ADD CONSTRAINT mtree_leaf_lanes_or_digest CHECK (num_nulls(lane1, lane2) IN (0, 2) AND (lane1 IS NULL OR digest IS NULL));
