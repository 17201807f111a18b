// Package repair makes the nodes of a table agree again, from the rows a completed diff stored
// (a table-diff, a table-rerun or an imported ACE diff file). It is built on package engine: node
// sessions, table metadata, the value and key semantics (the same row digests a diff uses) and
// the SQL generation come from there; like the engine it never logs and knows nothing of the
// task queue.
//
// A map of the files:
//
//   - repair.go: Repair, its options (Options: source of truth, modes, dry run, atomic),
//     the actions and reasons it records (Action, Sink) and its results
//     (NodeRepair, Summary).
//   - run.go: the run: tables checked against what the diff saw, one session and transaction
//     per target, batches of diff rows, progress.
//   - plan.go: what each node should get for a key (source of truth, latest_commit, majority,
//     bidirectional, fix_nulls, insert_only and upsert_only), from the stored rows alone.
//   - apply.go: each plan decided against the row the node holds now (by the row digests of
//     engine.RowDigests) and written in set-based statements; json.go compares JSON rows.
//   - mode.go: how a repair writes on a node (WriteReplica or WriteNormal) and, in the set_role
//     mode, the refusal of tables carrying code a non-superuser owns (engine.CheckTableCode).
//   - finish.go: commit, rollback, two-phase commit for Atomic, and the summary.
//   - report.go: Options.ReportArgs and ACERepairReport, a repair's options and actions
//     handed to engine/acefile's repair report.
//   - planrules.go, planeval.go, planactions.go: repair plans (ACE's rule files, Options.Plan):
//     the plan's types and its sides bound to the diff's nodes; the first pass, which decides
//     every key's rule (when and pick_freshest evaluated on a node as the submitter, typed) before
//     anything is written; and each decision turned into what every target gets.
//   - recovery.go: recovery_mode's choice of a source of truth (SelectSurvivor): the survivor
//     with the highest origin LSN for the failed node, read from its replication origins.
//   - preserve.go: preserve_origin: each original commit's rows written in a transaction of
//     their own, under the failed node's origin and with that commit's timestamp.
package repair
