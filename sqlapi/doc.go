// Package sqlapi is the Go side of the SQL contract in migrations/: the task types and their
// typed arguments, installing the schema, and submitting, claiming, progressing, finishing and
// reading tasks and their results. It runs no diff or repair itself.
//
// A map of the files: task.go (TaskType, Status, Task, TableDiffArgs), mtree.go and repair.go
// (the Merkle-tree, repair, rerun and import tasks' arguments), install.go (Install: migrations,
// then every SQL function; the schema-ownership checks), client.go (Submit, GetTask, Wait, nodes),
// queue.go (Claim and Run: the fenced writes of a running task), recover.go (the recovery
// sweep's query), results.go and diffs.go (diff rows written and read, completed diffs), and
// repair.go (a repair's recorded actions).
package sqlapi
