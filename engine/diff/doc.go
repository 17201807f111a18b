// Package diff finds the rows of a table that differ between nodes and streams them, as
// engine.DiffRows, into an engine.Sink. It is built on package engine: node sessions and
// snapshots, table metadata, the value and key semantics (the row hash, canonical keys), the SQL
// generation and the filter and table-code checks come from there; like the engine it never
// logs and knows nothing of the task queue.
//
// A map of the files:
//
//   - diff.go: TableDiff and TableDiffOptions (the name is ACE's command, table-diff, and the
//     task type's): prepare (tables checked to be the same everywhere, filter and table-code
//     checks, one snapshot per node), run, and the summary.
//   - plan.go and planint.go: the ranges, split into blocks and leaves from sampled keys, or
//     arithmetically for an integer key.
//   - compare.go: block summaries (engine.SummarySQL), narrowing mismatched blocks down to
//     leaves, and row digests compared key by key.
//   - rows.go: fetching the differing rows, within max_diff_rows per node pair.
//   - fence.go: until and against_origin, as a predicate on every read.
//   - recheck.go: RecheckKeys and recheck_after: differing keys compared again at fresh
//     snapshots.
//   - aceimport.go: ImportACEDiff, an ACE diff file read through engine/acefile into DiffRows
//     and a DiffSummary, re-encoded by a node exactly as TableDiff stores them. It lives here
//     because it is another way to produce a diff's results (rows hashed with the diff's
//     engine.RowHash), which a repair or rerun then consumes like a table-diff's.
package diff
