// Package engine is the base every algorithm of ace-agent shares, independent of the task
// queue: node sessions, table metadata, the one value and key semantics, the SQL they become,
// the result types and the safety checks. The diff lives in engine/diff, the repair in
// engine/repair and the Merkle trees in engine/mtree, all built on this package's exported base. Callers hand them node sessions
// and typed options, and get results streamed into a sink and progress through a callback; none
// of them logs or knows anything of ace.tasks or NOTIFY.
//
// A map of the files:
//
//   - Sessions and tables: node.go (connections with pinned session settings, logged in as the
//     submitter or SET ROLE), snapshot.go (Session: one exported snapshot per node, every read
//     on it), table.go (a table's shape, checked to be the same everywhere: LoadTable, Table,
//     Column, SameShape).
//   - The semantics: canon.go defines, once, when two values are the same (canonical text; the
//     row hash is SHA-256 over record_send of canonical values; RowDigests hashes rows stored as
//     JSON the same way) and when two keys are the same key (one canonical text per key,
//     KeyFromJSON, KeyString); sqlgen.go turns both into SQL (RowHash and SummarySQL: row
//     digests and block summaries; KeyOrder: key ranges (Range, Where), orders and key matches;
//     Ident, QuoteLiteral, JSONObjectExpr, ElemCast for rows read from jsonb).
//   - Results: result.go (DiffRow, DiffSummary, Sink, Progress); keyederror.go (KeyedError: a
//     failure quoting key values, recorded for the submitter without them).
//   - Safety: filtercheck.go and nodetree.go (CheckFilter: a table_filter is one predicate made
//     only of built-ins that run no SQL, read from PostgreSQL's own parse tree; the diff's only
//     check, kept here because tablecode.go reads expressions with the same parse-tree reader
//     and allow-list), tablecode.go (CheckTableCode: in the set_role mode, tables carrying code
//     a non-superuser owns are refused, for a diff's reads and a repair's casts and writes
//     alike).
//
// The packages beside it:
//
//   - engine/diff: TableDiff (ranges, block hashes, narrowing, row fetch), RecheckKeys and
//     ImportACEDiff, all streaming DiffRows into a Sink.
//   - engine/repair: Repair, from a diff's stored rows: plan, decide against the rows each node
//     holds now, write; and the repair report's arguments and actions.
//   - engine/mtree: Build, Diff and Teardown of Merkle trees (leaves of row-hash sums, kept
//     fresh from the keys the agent's change streams record, split and merged alike on every
//     node), and Compact; differing leaves are narrowed to rows by engine/diff. It writes the
//     tree tables (ace.mtrees, ace.mtree_leaves, ace.mtree_dirty, ...) on the agent's login.
//   - engine/acefile owns ACE's file formats in both directions (the diff file's types, reading
//     and writing it, the repair report); engine/report writes diffs as ACE diff files (through
//     acefile), HTML and CSV reports.
package engine
