-- Issue 20 (performance of a node's resync): a key range that some nodes hold identically and the
-- others not at all is stored as ONE differing row instead of one per key, and a repair copies it
-- whole (COPY from a holder into the empty node) and records it as one action. key_range is then
-- {lo, hi, rows, lane1, lane2, holders, empty} (engine.KeyRange): the bounds [lo, hi) as key
-- texts (null: open), the rows each holder has there, their summed hash lanes, and the nodes
-- holding them and those holding none. Such a row's kind is 'missing', its pk
-- {"range_from": lo, "range_to": hi}, its pk_sort lo. Written by sqlapi (Run.WriteDiffRows,
-- RepairActions.WriteRepairActions); read through sqlapi.ReadDiffRows, ace.diff_rows and
-- ace.repair_rows.
ALTER TABLE ace.diff_results ADD COLUMN key_range jsonb;
ALTER TABLE ace.repair_actions ADD COLUMN key_range jsonb;
