package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// Spock exceptions (issue 18). Spock is not packaged for Debian: the nodes get Spock 5's own
// table definitions (testdata/spock) and two exception "trios" (remote_origin,
// remote_commit_ts, remote_xid) in spock.exception_log: trio A of two commands, trio B of one
// command that failed on two retries.

const (
	trioA = `1001, '2026-01-02 03:04:05.123456+00', 500`
	trioB = `1002, '2026-01-02 03:04:06+00', 501`
)

// plantSpockExceptions creates Spock's tables and the two trios on the node, and public.t, the
// table the exceptions are about.
func plantSpockExceptions(t *testing.T, n *testcluster.Node) {
	t.Helper()
	n.CreateSpockTables(t)
	n.Exec(t, `CREATE TABLE IF NOT EXISTS public.t (id int PRIMARY KEY, v text)`)
	n.Exec(t, fmt.Sprintf(`INSERT INTO spock.exception_log (remote_origin, remote_commit_ts, remote_xid, command_counter,
			retry_errored_at, table_schema, table_name, operation, remote_new_tup, error_message) VALUES
		(%[1]s, 1, '2026-01-02 03:05:00+00', 'public', 't', 'INSERT', '[{"attname": "id", "value": 7}]', 'duplicate key: Key (id)=(7) already exists'),
		(%[1]s, 2, '2026-01-02 03:05:00+00', 'public', 't', 'INSERT', '[{"attname": "id", "value": 8}]', 'duplicate key: Key (id)=(8) already exists'),
		(%[2]s, 1, '2026-01-02 03:05:01+00', 'public', 't', 'UPDATE', '[{"attname": "id", "value": 9}]', 'row (id)=(9) not found'),
		(%[2]s, 1, '2026-01-02 03:05:02+00', 'public', 't', 'UPDATE', '[{"attname": "id", "value": 9}]', 'row (id)=(9) not found')`,
		trioA, trioB))
}

func setupSpockExceptions(t *testing.T) *testcluster.Env {
	t.Helper()
	e := testcluster.New(t)
	plantSpockExceptions(t, e.Node("n1"))
	plantSpockExceptions(t, e.Node("n2"))
	e.Node("n1").StartAgent(t)
	return e
}

// runTask submits sql on n1 and waits for the task.
func runTask(t *testing.T, n *testcluster.Node, sql string, args ...any) sqlapi.Task {
	t.Helper()
	var id uuid.UUID
	require.NoError(t, n.Pool.QueryRow(context.Background(), sql, args...).Scan(&id))
	return n.Wait(t, id)
}

// statuses returns a node's Spock statuses, "status" rows by retry and "detail" rows by command.
func statuses(t *testing.T, n *testcluster.Node) map[string]string {
	t.Helper()
	rows, err := n.Pool.Query(context.Background(), `
		SELECT format('status %s/%s', remote_xid, to_char(retry_errored_at AT TIME ZONE 'UTC', 'SS')), status || coalesce(' ' || (resolution_details->>'why'), '')
		FROM spock.exception_status
		UNION ALL
		SELECT format('detail %s/%s/%s', remote_xid, to_char(retry_errored_at AT TIME ZONE 'UTC', 'SS'), command_counter), status || coalesce(' ' || (resolution_details->>'why'), '')
		FROM spock.exception_status_detail`)
	require.NoError(t, err)
	out := map[string]string{}
	for rows.Next() {
		var k, v string
		require.NoError(t, rows.Scan(&k, &v))
		out[k] = v
	}
	require.NoError(t, rows.Err())
	return out
}

func allPending() map[string]string {
	return map[string]string{
		"status 500/00": "PENDING", "detail 500/00/1": "PENDING", "detail 500/00/2": "PENDING",
		"status 501/01": "PENDING", "status 501/02": "PENDING", "detail 501/01/1": "PENDING", "detail 501/02/1": "PENDING",
	}
}

func TestSpockExceptions(t *testing.T) {
	t.Parallel()
	t.Run("sync gives both trios PENDING statuses on every node and lists them", func(t *testing.T) {
		t.Parallel()
		e := setupSpockExceptions(t)
		n1 := e.Node("n1")
		task := runTask(t, n1, `SELECT ace.spock_exception_sync(ARRAY['n1', 'n2'])`)
		require.Equal(t, sqlapi.StatusCompleted, task.Status, "%s", errText(task))
		require.JSONEq(t, `{"nodes": {
			"n1": {"exceptions": 4, "new_status_rows": 3, "new_detail_rows": 4, "by_status": {"PENDING": 4}, "row_images_hidden": 0},
			"n2": {"exceptions": 4, "new_status_rows": 3, "new_detail_rows": 4, "by_status": {"PENDING": 4}, "row_images_hidden": 0}}}`,
			string(task.Result))
		require.Equal(t, allPending(), statuses(t, n1))
		require.Equal(t, allPending(), statuses(t, e.Node("n2")))

		var listed, withImages int
		require.NoError(t, n1.Pool.QueryRow(context.Background(), `SELECT count(*), count(remote_new_tup)
			FROM ace.spock_exceptions('n2', 'pending')`).Scan(&listed, &withImages))
		require.Equal(t, 4, listed)
		require.Equal(t, 4, withImages, "the submitter may SELECT public.t, so the row images are shown")

		again := runTask(t, n1, `SELECT ace.spock_exception_sync(ARRAY['n1'])`)
		require.Equal(t, sqlapi.StatusCompleted, again.Status, "%s", errText(again))
		require.JSONEq(t, `{"exceptions": 4, "new_status_rows": 0, "new_detail_rows": 0, "by_status": {"PENDING": 4}, "row_images_hidden": 0}`,
			jsonAt(t, again.Result, "nodes", "n1"), "a second sync adds nothing")
		require.NoError(t, n1.Pool.QueryRow(context.Background(), `SELECT count(*) FROM ace.spock_exceptions('n2')`).Scan(&listed))
		require.Equal(t, 4, listed, "n2's exceptions are those of the latest sync that covered n2")
		require.NoError(t, n1.Pool.QueryRow(context.Background(), `SELECT count(DISTINCT task_id) FROM ace.spock_exceptions()`).Scan(&listed))
		require.Equal(t, 2, listed, "each node's rows come from its latest sync")
	})
	t.Run("updates without and with command_counter and retry_errored_at", func(t *testing.T) {
		t.Parallel()
		e := setupSpockExceptions(t)
		n1, n2 := e.Node("n1"), e.Node("n2")
		require.Equal(t, sqlapi.StatusCompleted, runTask(t, n1, `SELECT ace.spock_exception_sync(ARRAY['n1', 'n2'])`).Status)

		// Without command_counter: trio A's status and every detail row, on n1 only.
		task := runTask(t, n1, `SELECT ace.update_spock_exception('n1', 1001, '2026-01-02 03:04:05.123456+00', 500, 'RESOLVED',
			resolution_details => '{"why": "fixed"}')`)
		require.Equal(t, sqlapi.StatusCompleted, task.Status, "%s", errText(task))
		require.JSONEq(t, `{"node_name": "n1", "status": "RESOLVED", "status_rows": 1, "detail_rows": 2}`, string(task.Result))
		want := allPending()
		want["status 500/00"], want["detail 500/00/1"], want["detail 500/00/2"] = "RESOLVED fixed", "RESOLVED fixed", "RESOLVED fixed"
		require.Equal(t, want, statuses(t, n1))
		require.Equal(t, allPending(), statuses(t, n2), "n2 is another node")

		// With command_counter: that command's detail row only.
		task = runTask(t, n1, `SELECT ace.update_spock_exception('n2', 1001, '2026-01-02 03:04:05.123456+00', 500, 'IGNORED', command_counter => 2)`)
		require.Equal(t, sqlapi.StatusCompleted, task.Status, "%s", errText(task))
		want2 := allPending()
		want2["detail 500/00/2"] = "IGNORED"
		require.Equal(t, want2, statuses(t, n2))

		// With retry_errored_at: that retry only, as Spock 5 keys it.
		task = runTask(t, n1, `SELECT ace.update_spock_exception('n2', 1002, '2026-01-02 03:04:06+00', 501, 'RESOLVED',
			retry_errored_at => '2026-01-02 03:05:02+00')`)
		require.Equal(t, sqlapi.StatusCompleted, task.Status, "%s", errText(task))
		want2["status 501/02"], want2["detail 501/02/1"] = "RESOLVED", "RESOLVED"
		require.Equal(t, want2, statuses(t, n2))

		// A key that matches nothing fails rather than looking like success.
		task = runTask(t, n1, `SELECT ace.update_spock_exception('n2', 1001, '2026-01-02 03:04:05+00', 500, 'RESOLVED')`)
		require.Equal(t, sqlapi.StatusFailed, task.Status)
		require.Contains(t, *task.Error, "no Spock exception on node n2")
	})
	t.Run("a node without Spock fails the task", func(t *testing.T) {
		t.Parallel()
		e := setupSpockExceptions(t)
		n1 := e.Node("n1")
		task := runTask(t, n1, `SELECT ace.spock_exception_sync(ARRAY['n1', 'n3'])`)
		require.Equal(t, sqlapi.StatusFailed, task.Status)
		require.Contains(t, *task.Error, "spock is not installed on node n3")
		require.Empty(t, statuses(t, n1), "nothing is synced when a node lacks Spock")
		task = runTask(t, n1, `SELECT ace.update_spock_exception('n3', 1001, now(), 500, 'RESOLVED')`)
		require.Equal(t, sqlapi.StatusFailed, task.Status)
		require.Contains(t, *task.Error, "spock is not installed on node n3")
	})
	t.Run("node_name is required", func(t *testing.T) {
		t.Parallel()
		e := testcluster.New(t)
		_, err := e.Node("n1").Pool.Exec(context.Background(), `SELECT ace.update_spock_exception(NULL, 1, now(), 1, 'RESOLVED')`)
		require.ErrorContains(t, err, "node_name is required")
	})
}

// TestSpockExceptionRowImages: row images (and the error message, which quotes key values) are
// shown only to a caller who may SELECT the table the exception is about.
func TestSpockExceptionRowImages(t *testing.T) {
	t.Parallel()
	e := &wallEnv{Env: testcluster.NewSecure(t)}
	e.alice, e.bob = e.AddSubmitter("alice", true), e.AddSubmitter("bob", true)
	for _, n := range e.Nodes {
		plantSpockExceptions(t, n)
	}
	e.ExecAll(fmt.Sprintf(`GRANT USAGE ON SCHEMA spock TO %[1]s, %[2]s;
		GRANT SELECT ON ALL TABLES IN SCHEMA spock TO %[1]s, %[2]s;
		GRANT INSERT, UPDATE ON spock.exception_status, spock.exception_status_detail TO %[1]s, %[2]s;
		GRANT SELECT ON public.t TO %[2]s`, e.alice, e.bob))
	// A DDL exception is of no table: its error message is no row of one.
	e.Node("n1").Exec(t, `INSERT INTO spock.exception_log (remote_origin, remote_commit_ts, remote_xid, command_counter,
		retry_errored_at, operation, ddl_statement, ddl_user, error_message) VALUES
		(1003, '2026-01-02 03:04:07+00', 502, 1, '2026-01-02 03:05:03+00', 'DDL', 'CREATE TABLE u ()', 'admin', 'relation "u" already exists')`)
	e.Node("n1").StartAgent(t)

	images := func(role string) (listed, shown, messages int) {
		task := e.submit(t, role, `SELECT ace.spock_exception_sync()`)
		require.Equal(t, sqlapi.StatusCompleted, task.Status, "%s's sync: %s", role, errText(task))
		require.NoError(t, e.Node("n1").ConnectAs(t, role).QueryRow(context.Background(),
			`SELECT count(*), count(remote_new_tup), count(error_message) FROM ace.spock_exceptions()`).Scan(&listed, &shown, &messages))
		return listed, shown, messages
	}
	t.Run("a caller without SELECT on the table sees no row images", func(t *testing.T) {
		listed, shown, messages := images(e.alice)
		require.Equal(t, 13, listed, "alice sees every exception of the three nodes")
		require.Zero(t, shown, "alice may not SELECT public.t")
		require.Equal(t, 1, messages, "the error messages quote the rows' keys; only the DDL exception's is shown")
		var stored int
		require.NoError(t, e.Node("n1").ConnectAs(t, e.alice).QueryRow(context.Background(),
			`SELECT count(*) FROM ace.spock_exception_rows WHERE table_name IS NOT NULL AND (remote_new_tup IS NOT NULL OR error_message IS NOT NULL)`).Scan(&stored))
		require.Zero(t, stored, "nor are they stored where alice could read them")
	})
	t.Run("a caller who may SELECT it sees them", func(t *testing.T) {
		listed, shown, messages := images(e.bob)
		require.Equal(t, []int{13, 12, 13}, []int{listed, shown, messages})
	})
	t.Run("a grant revoked since the sync hides them again", func(t *testing.T) {
		e.Node("n1").Exec(t, fmt.Sprintf(`REVOKE SELECT ON public.t FROM %s`, e.bob))
		var shown int
		require.NoError(t, e.Node("n1").ConnectAs(t, e.bob).QueryRow(context.Background(),
			`SELECT count(remote_new_tup) FROM ace.spock_exceptions()`).Scan(&shown))
		require.Zero(t, shown)
	})
}

// jsonAt returns the JSON at path in a JSON object.
func jsonAt(t *testing.T, doc []byte, path ...string) string {
	t.Helper()
	for _, key := range path {
		var obj map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(doc, &obj))
		doc = obj[key]
	}
	return string(doc)
}

func errText(task sqlapi.Task) string {
	if task.Error == nil {
		return ""
	}
	return *task.Error
}
