package main

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/tern/v2/migrate"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/localpg"
	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/migrations"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// TestInstallUpgradesV5 installs a database the way releases before the squashed migrations did
// (testdata/migrations-v5 is their migrations/ verbatim, applied by tern as their Install did),
// fills it with tasks and results, and upgrades it with ace-agent install: nothing is lost, and
// the schema is the one a fresh install makes, which is in turn the one the old migrations made.
func TestInstallUpgradesV5(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	inst := testclusterNode(t)
	old := newDatabase(t, inst, "v5")
	fresh := newDatabase(t, inst, "fresh")

	// Today's main, to the letter.
	_, err := old.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS ace")
	require.NoError(t, err)
	m, err := migrate.NewMigrator(ctx, old, "ace.schema_version")
	require.NoError(t, err)
	require.NoError(t, m.LoadMigrations(os.DirFS("../../testdata/migrations-v5")))
	require.NoError(t, m.Migrate(ctx))
	v, err := m.GetCurrentVersion(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 5, v)

	// Tasks and results of every kind, as the SQL API and an agent would have left them.
	for _, sql := range []string{
		`CREATE TABLE public.t (id int PRIMARY KEY, v text)`,
		`SELECT ace.add_node('n1', 'host=h1 dbname=app'), ace.add_node('n2', 'host=h2 dbname=app', 'prod')`,
		`INSERT INTO ace.agents (agent_id, node_name, hostname, os_pid, version, max_tasks) VALUES ('a1', 'n1', 'host', 42, 'v0', 4)`,
		`UPDATE ace.settings SET value = '7' WHERE name = 'max_queued_tasks_per_role'`,
		`DELETE FROM ace.settings WHERE name = 'max_recheck_after'`,
	} {
		_, err := old.Exec(ctx, sql)
		require.NoError(t, err, sql)
	}
	var diff, repair, queued string
	require.NoError(t, old.QueryRow(ctx, `SELECT ace.table_diff('public.t', block_size => 5000)`).Scan(&diff))
	for _, sql := range []string{
		`UPDATE ace.tasks SET status = 'COMPLETED', started_at = now(), finished_at = now(), claimed_by = 'a1', attempts = 1,
		        progress = '{"phase": "done"}', result = '{"table_name": "public.t", "nodes": ["n1", "n2"], "differing_keys": 2,
		        "diff_rows_count": {"n1/n2": 2}, "total_rows_checked": 10}' WHERE task_id = $1`,
		`INSERT INTO ace.diff_results (task_id, row_no, pk, pk_sort, kind, rows, versions, meta) VALUES
		        ($1, 1, '{"id": 1}', '[1]', 'missing', '{"n1": {"id": 1, "v": "a"}, "n2": null}', '{"n1": 1}', NULL),
		        ($1, 2, '{"id": 2}', '[2]', 'modified', '{"n1": {"id": 2, "v": "b"}, "n2": {"id": 2, "v": "c"}}', '{"n1": 1, "n2": 2}',
		         '{"n1": {"commit_ts": "2025-01-01T00:00:00Z"}}')`,
		`INSERT INTO ace.claims (task_id, agent_id, attempt, lock_key, claim_pid, claim_role) VALUES ($1, 'a1', 1, 12345, 999, 10)`,
	} {
		_, err := old.Exec(ctx, sql, diff)
		require.NoError(t, err, sql)
	}
	require.NoError(t, old.QueryRow(ctx, `SELECT ace.table_repair($1, 'n1', dry_run => true)`, diff).Scan(&repair))
	for _, sql := range []string{
		`UPDATE ace.tasks SET status = 'FAILED', finished_at = now(), error = 'boom', attempts = 3 WHERE task_id = $1`,
		`INSERT INTO ace.repair_actions (task_id, row_no, attempt, node, action, pk, pk_sort, source, before, after, reason, applied) VALUES
		        ($1, 1, 1, 'n2', 'insert', '{"id": 1}', '[1]', 'n1', NULL, '{"id": 1, "v": "a"}', NULL, true),
		        ($1, 2, 1, 'n2', 'skip', '{"id": 2}', '[2]', NULL, '{"id": 2, "v": "c"}', '{"id": 2, "v": "b"}', 'changed since the diff', false)`,
	} {
		_, err := old.Exec(ctx, sql, repair)
		require.NoError(t, err, sql)
	}
	require.NoError(t, old.QueryRow(ctx, `SELECT ace.table_rerun($1)`, diff).Scan(&queued))
	before := contents(t, old)
	v5 := fingerprint(t, old)
	for _, table := range []string{"nodes", "agents", "tasks", "diff_results", "repair_actions", "claims", "settings", "role_submissions"} {
		require.NotEqual(t, "[]", before[table], table)
	}

	r := ace(t, inst.DSN(old.Config().Database), "install")
	require.Equal(t, exitOK, r.code, r)
	latest := latestVersion(t)
	require.Equal(t, fmt.Sprintf("ace schema installed on %s (version %d)\n", old.Config().Database, latest), r.stdout)
	after := withoutEmptyNew(contentsAsV5(t, old), before)
	before["schema_version"] = strings.Replace(before["schema_version"], `"version": 5`, fmt.Sprintf(`"version": %d`, latest), 1)
	require.Equal(t, before, after, "install lost or changed rows")
	var unset int
	require.NoError(t, old.QueryRow(ctx, `SELECT count(*) FROM ace.tasks WHERE submitted_session_user IS DISTINCT FROM submitted_by`).Scan(&unset))
	require.Zero(t, unset, "migration 007 records the old tasks' submitters as their logins")

	_, err = sqlapi.Install(ctx, fresh)
	require.NoError(t, err)
	want := fingerprint(t, fresh)
	// The tables are the ones the old migrations made; the functions are the SQL API's, which
	// install replaces (issue 9 renamed and merged some), so they are compared with the upgraded
	// database's below, not with the old ones.
	require.Equal(t, withoutFunctions(withoutReplaced(v5)), withoutFunctions(withoutLater(t, want)), "a fresh install's tables differ from what the migrations of earlier releases made")
	require.Equal(t, want, fingerprint(t, old), "the upgraded schema differs from a fresh one")

	// A second install changes nothing, and does not make the triggers again.
	triggers := func(c *pgx.Conn) string {
		var s string
		require.NoError(t, c.QueryRow(ctx, `SELECT string_agg(oid::text, ' ' ORDER BY tgname) FROM pg_trigger WHERE tgrelid = 'ace.tasks'::regclass`).Scan(&s))
		return s
	}
	oids := triggers(old)
	_, err = sqlapi.Install(ctx, old)
	require.NoError(t, err)
	require.Equal(t, oids, triggers(old))
	require.Equal(t, want, fingerprint(t, old))
	require.Equal(t, after, withoutEmptyNew(contentsAsV5(t, old), before))

	// The upgraded API works on the old rows.
	var n int
	require.NoError(t, old.QueryRow(ctx, `SELECT count(*) FROM ace.diff_rows($1)`, diff).Scan(&n))
	require.Equal(t, 2, n)
	require.NoError(t, old.QueryRow(ctx, `SELECT count(*) FROM ace.repair_rows($1)`, repair).Scan(&n))
	require.Equal(t, 2, n)
	_, err = old.Exec(ctx, `SELECT ace.table_repair($1, 'n1', dry_run => true)`, diff)
	require.NoError(t, err)
	_, err = old.Exec(ctx, `UPDATE ace.settings SET value = '0' WHERE name = 'max_running_tasks_per_role'`)
	require.ErrorContains(t, err, "must be a whole number")
}

// TestInstallRefusesPartialV5 refuses a database an earlier release left part-way through its
// migrations, which skipping to the squashed baseline would leave without tables.
func TestInstallRefusesPartialV5(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := newDatabase(t, testclusterNode(t), "v3")
	_, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS ace")
	require.NoError(t, err)
	m, err := migrate.NewMigrator(ctx, conn, "ace.schema_version")
	require.NoError(t, err)
	require.NoError(t, m.LoadMigrations(os.DirFS("../../testdata/migrations-v5")))
	require.NoError(t, m.MigrateTo(ctx, 3))
	_, err = sqlapi.Install(ctx, conn)
	require.ErrorContains(t, err, "version 3 of the migrations before the baseline")
}

// testclusterNode is an instance of the shared cluster.
func testclusterNode(t *testing.T) *localpg.Instance {
	return testcluster.New(t).Nodes[0].Instance
}

// newDatabase creates an empty database beside the test's own, and connects to it as the
// superuser.
func newDatabase(t *testing.T, inst *localpg.Instance, suffix string) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	db := regexp.MustCompile(`[^a-z0-9_]+`).ReplaceAllString(strings.ToLower(t.Name()), "_") + "_" + suffix
	admin, err := pgx.Connect(ctx, inst.DSN("postgres"))
	require.NoError(t, err)
	defer admin.Close(ctx)
	_, err = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{db}.Sanitize())
	require.NoError(t, err)
	_, err = admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{db}.Sanitize())
	require.NoError(t, err)
	conn, err := pgx.Connect(ctx, inst.DSN(db))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// contents is every row of every table of the ace schema, as JSON, by table.
func contents(t *testing.T, conn *pgx.Conn) map[string]string {
	t.Helper()
	return contentsAs(t, conn, "to_jsonb(x)", "true")
}

// contentsAsV5 is contents without what later migrations added to existing tables: the tasks'
// submitted_session_user and waiting_on_children, the nodes' states, the repair actions' plan
// rule, the key ranges of differing rows and repair actions, and the newer settings.
func contentsAsV5(t *testing.T, conn *pgx.Conn) map[string]string {
	t.Helper()
	return contentsAs(t, conn, "to_jsonb(x) - 'submitted_session_user' - 'waiting_on_children' - 'state' - 'state_reason' - 'state_changed_at' - 'backend_pid' - 'rule' - 'key_range'",
		"NOT (to_jsonb(x) ? 'description' AND to_jsonb(x)->>'name' IN ('max_cdc_timeout', 'task_retention', 'scheduled_task_retention', "+
			"'event_retention', 'min_schedule_interval', 'schedule_timezone', 'table_status_max_age'))")
}

// contentsAs is every row that matches where, as the JSON row makes it, by table.
func contentsAs(t *testing.T, conn *pgx.Conn, row, where string) map[string]string {
	t.Helper()
	ctx := context.Background()
	rows, err := conn.Query(ctx, `SELECT relname FROM pg_class WHERE relnamespace = 'ace'::regnamespace AND relkind = 'r'`)
	require.NoError(t, err)
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	out := map[string]string{}
	for _, table := range tables {
		var s string
		require.NoError(t, conn.QueryRow(ctx, `SELECT coalesce(jsonb_agg(`+row+` ORDER BY (`+row+`)::text), '[]')::text FROM ace.`+
			pgx.Identifier{table}.Sanitize()+` x WHERE `+where).Scan(&s))
		out[table] = s
	}
	return out
}

// withoutFunctions leaves out a fingerprint's functions.
func withoutFunctions(lines []string) []string {
	var out []string
	for _, l := range lines {
		if !strings.HasPrefix(l, "function ") {
			out = append(out, l)
		}
	}
	return out
}

// withoutEmptyNew leaves out the empty tables that old did not have.
func withoutEmptyNew(tables, old map[string]string) map[string]string {
	out := map[string]string{}
	for table, rows := range tables {
		if _, existed := old[table]; existed || rows != "[]" {
			out[table] = rows
		}
	}
	return out
}

// latestVersion is the number of the last migration: the version an install reaches.
func latestVersion(t *testing.T) int {
	files, err := fs.Glob(migrations.FS, "[0-9]*.sql")
	require.NoError(t, err)
	return len(files)
}

// withoutLater leaves out what the migrations after version 5 made: the Merkle tree tables of
// 006 and later, 007's column and indexes of ace.tasks and ace.role_submissions without grants,
// 010's ace.spock_exception_rows,
// and 011's schema findings, parent index and waiting_on_children.
func withoutLater(t *testing.T, lines []string) []string {
	latest := fmt.Sprintf("version %d", latestVersion(t))
	var out []string
	for _, l := range lines {
		switch {
		case l == latest:
			out = append(out, "version 5")
		case !addedAfterV5(l):
			out = append(out, l)
		}
	}
	return out
}

// addedAfterV5 says whether a fingerprint line is about something a migration after version 5
// added: one line per migration's part, so that each new migration adds its own lines.
func addedAfterV5(line string) bool {
	for _, part := range []string{
		"mtree", "cdc_state", // 006, 008, 009, 020: Merkle trees
		"submitted_session_user", "tasks_finished", "_by_login", // 007: the queue
		"spock_exception_rows",                                       // 010: Spock exceptions
		"schema_finding", "waiting_on_children", "tasks_parent_task", // 011: schema diffs
		"events", "nodes.state", "node_state", "node_status", "leader_pin", "one_pin", // 012: the cluster's life
		"agents.backend_pid",                  // 013: the cluster's status
		"repair_plans", "repair_actions.rule", // 014: repair plans
		"table_sync",     // 015: per-table sync status
		"repair_commits", // 016: a repair's commit per node
		"schedule",       // 017: schedules, and the index of scheduled runs on ace.tasks
		"repair_polic",   // 018: repair policies, and the index of their runs on ace.tasks
		"key_range",      // 019: differing rows and repair actions that stand for a key range
	} {
		if strings.Contains(line, part) {
			return true
		}
	}
	return strings.HasPrefix(line, "relation role_submissions kind r")
}

// withoutReplaced leaves out what the migrations after version 5 dropped: 007 replaced the
// indexes of the per-role limits with ones on the login, and revoked the grants of
// ace.role_submissions.
func withoutReplaced(lines []string) []string {
	var out []string
	for _, l := range lines {
		if !strings.Contains(l, "_by_role") && !strings.HasPrefix(l, "relation role_submissions kind r") {
			out = append(out, l)
		}
	}
	return out
}

// fingerprint describes the ace schema from the catalog: its relations with their columns,
// constraints, indexes, policies, triggers and grants, and every function's definition.
func fingerprint(t *testing.T, conn *pgx.Conn) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), `
		WITH rel AS (SELECT oid, relname FROM pg_class WHERE relnamespace = 'ace'::regnamespace)
		SELECT 'schema ' || nspname || ' ' || coalesce(nspacl::text, '') FROM pg_namespace WHERE nspname = 'ace'
		UNION ALL
		SELECT format('relation %s kind %s acl %s rls %s/%s options %s', c.relname, c.relkind, c.relacl, c.relrowsecurity,
		              c.relforcerowsecurity, c.reloptions)
		FROM pg_class c WHERE c.relnamespace = 'ace'::regnamespace
		UNION ALL
		SELECT format('column %s.%s #%s %s notnull %s default %s acl %s', r.relname, a.attname, a.attnum,
		              format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attacl)
		FROM rel r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
		LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		UNION ALL
		SELECT format('constraint %s.%s %s', r.relname, c.conname, pg_get_constraintdef(c.oid))
		FROM rel r JOIN pg_constraint c ON c.conrelid = r.oid
		UNION ALL
		SELECT 'index ' || pg_get_indexdef(i.indexrelid) FROM rel r JOIN pg_index i ON i.indrelid = r.oid
		UNION ALL
		SELECT format('policy %s.%s %s %s %s using %s check %s', tablename, policyname, permissive, roles, cmd, qual, with_check)
		FROM pg_policies WHERE schemaname = 'ace'
		UNION ALL
		SELECT format('trigger %s enabled %s', pg_get_triggerdef(g.oid), g.tgenabled)
		FROM rel r JOIN pg_trigger g ON g.tgrelid = r.oid WHERE NOT g.tgisinternal
		UNION ALL
		SELECT format('function %s acl %s security definer %s %s', pg_get_functiondef(p.oid), p.proacl, p.prosecdef, p.proconfig)
		FROM pg_proc p WHERE p.pronamespace = 'ace'::regnamespace
		UNION ALL
		SELECT 'version ' || version FROM ace.schema_version
		ORDER BY 1`)
	require.NoError(t, err)
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return lines
}
