// Package migrations holds the ace schema. It has two parts, both applied by sqlapi.Install:
//
//   - FS: the numbered tern migrations, which hold the tables, indexes, row-level-security
//     policies and grants, and never a function. 001_baseline.sql is migrations 001-005 of earlier
//     releases squashed into one; 002-005 are placeholders, so a database those releases installed
//     (at version 5) skips them all. A change to a table is a new numbered file.
//   - Code: every function, procedure and trigger function of the SQL API, each defined once with
//     CREATE OR REPLACE, in files named by area and run in name order, in one transaction, on every
//     install after the migrations. The last file wires up what depends on the functions (the
//     triggers of ace.tasks, the CHECK of ace.settings); the first drops signatures that were
//     replaced. A change to a function is an edit of its one definition.
//
// The Go side only embeds these files.
package migrations

import "embed"

// FS holds the numbered migration files, applied in order by sqlapi.Install.
//
//go:embed *.sql
var FS embed.FS

// Code holds the SQL API's definitions (code/*.sql), run in name order by sqlapi.Install after the
// migrations.
//
//go:embed code/*.sql
var Code embed.FS
