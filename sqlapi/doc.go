// Package sqlapi is the Go side of the SQL contract in migrations/: the task types and their
// typed arguments, installing the schema, and submitting, claiming, progressing, finishing and
// reading tasks and their results. It runs no diff or repair itself.
package sqlapi
