// Package engine holds the diff of ace-agent and the base every algorithm shares, independent of
// the task queue. Callers hand it node sessions and typed options, and get results streamed into
// a sink and progress through a callback; the engine never logs and knows nothing of ace.tasks or
// NOTIFY. The repair lives in engine/repair, built on this package's exported base.
//
// A map of the files:
//
//   - Sessions and tables (shared): node.go (connections with pinned session settings, logged in
//     as the submitter or SET ROLE), snapshot.go (one exported snapshot per node), table.go (a
//     table's shape, checked to be the same everywhere: LoadTable, Table, Column).
//   - The semantics (shared): canon.go defines, once, when two values are the same (canonical
//     text; the row hash is SHA-256 over record_send of canonical values; RowDigests hashes rows
//     stored as JSON the same way) and when two keys are the same key (one canonical text per
//     key, KeyFromJSON, KeyString); sqlgen.go turns both into SQL (KeyOrder: key ranges, orders
//     and key matches; Ident, QuoteLiteral, JSONObjectExpr, ElemCast for rows read from jsonb).
//   - Results (shared): result.go (DiffRow, DiffSummary, Sink, Progress).
//   - Diff: diff.go (TableDiff: prepare, run, summary), plan.go and planint.go (ranges and
//     leaves), compare.go (block summaries, narrowing, row digests), rows.go (fetching the
//     differing rows), fence.go (until and against_origin), recheck.go (RecheckKeys,
//     recheck_after), aceimport.go (ImportACEDiff: an ACE diff file read into DiffRows through
//     engine/acefile, as a diff would have found them).
//   - Safety (shared): filtercheck.go and nodetree.go (a table_filter is one predicate made only
//     of built-ins that run no SQL, read from PostgreSQL's own parse tree), tablecode.go
//     (CheckTableCode: in the set_role mode, tables carrying code a non-superuser owns are
//     refused, for a diff's reads and a repair's casts and writes alike).
//
// The packages beside it:
//
//   - engine/repair: Repair, from a diff's stored rows: plan, decide against the rows each node
//     holds now, write; and the repair report's arguments and actions.
//   - engine/acefile owns ACE's file formats in both directions (the diff file's types, reading
//     and writing it, the repair report); engine/report writes diffs as ACE diff files (through
//     acefile), HTML and CSV reports.
package engine
