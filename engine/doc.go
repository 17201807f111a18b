// Package engine holds the algorithms of ace-agent, independent of the task queue. Callers hand
// it node sessions and typed options, and get results streamed into a sink and progress through a
// callback; the engine never logs and knows nothing of ace.tasks or NOTIFY.
//
// A map of the files:
//
//   - Sessions and tables: node.go (connections with pinned session settings, logged in as the
//     submitter or SET ROLE), snapshot.go (one exported snapshot per node), table.go (a table's
//     shape, checked to be the same everywhere).
//   - The semantics: canon.go defines, once, when two values are the same (canonical text; the
//     row hash is SHA-256 over record_send of canonical values) and when two keys are the same
//     key (one canonical text per key); sqlgen.go turns both into SQL, with key ranges and orders.
//   - Diff: diff.go (TableDiff: prepare, run, summary), plan.go and planint.go (ranges and
//     leaves), compare.go (block summaries, narrowing, row digests), rows.go (fetching the
//     differing rows), fence.go (until and against_origin), recheck.go (RecheckKeys, recheck_after).
//   - Safety: filtercheck.go and nodetree.go (a table_filter is one predicate made only of
//     built-ins that run no SQL, read from PostgreSQL's own parse tree), tablecode.go (in the
//     set_role mode, tables carrying code a non-superuser owns are refused).
//   - Repair: repair.go (Repair, options, results), repairrun.go (sessions, batches, commits),
//     repairplan.go (what each node should get), repairapply.go (decided against the rows the
//     node holds now, by the same digests a diff uses), repairmode.go (replica or normal writes),
//     repairfinish.go, repairjson.go, repairreport.go (RepairOptions.ReportArgs and
//     ACERepairReport: a repair's options and actions handed to acefile's repair report).
//   - ACE's files: engine/acefile owns their formats in both directions (the diff file's types,
//     reading and writing it, the repair report); repairimport.go (ImportACEDiff) reads a diff
//     file into DiffRows with it, and engine/report writes diffs as ACE diff files (through
//     acefile), HTML and CSV reports.
package engine
