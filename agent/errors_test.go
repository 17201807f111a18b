package agent_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/localpg"
	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// submitErr submits ace.table_diff on n1 and returns the PostgreSQL error it raised at once.
func submitErr(t *testing.T, e *testcluster.Env, args string) *pgconn.PgError {
	t.Helper()
	var id uuid.UUID
	err := e.Node("n1").Pool.QueryRow(t.Context(), `SELECT ace.table_diff(`+args+`)`).Scan(&id)
	var pgErr *pgconn.PgError
	require.True(t, errors.As(err, &pgErr), "want an immediate error, got %v", err)
	return pgErr
}

func TestTableDiffRejectsBadInputAtOnce(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	e.ExecAll(`CREATE TABLE nopk (id int, v text); CREATE TABLE ok (id int PRIMARY KEY); CREATE VIEW v AS SELECT 1 AS x`)
	// The cases share one cluster, and the count below checks them all: they run sequentially,
	// without t.Parallel.
	for _, c := range []struct{ args, msg string }{
		{`'public.missing'`, `table "public.missing" does not exist on this node`},
		{`'public.nopk'`, `table nopk has no primary key`},
		{`'public.v'`, `"public.v" is not a table`},
		{`'public.ok', nodes => ARRAY['n1', 'nine']`, `unknown node(s): nine`},
		{`'public.ok', nodes => ARRAY['n1']`, `a diff needs at least 2 nodes, got n1`},
		{`'public.ok', block_size => 0`, `block_size must be a positive integer, got 0`},
		{`'public.ok', max_diff_rows => -1`, `max_diff_rows must be a positive integer, got -1`},
		{`'not a "valid name'`, `invalid table name`},
	} {
		t.Run(c.args, func(t *testing.T) {
			require.Contains(t, submitErr(t, e, c.args).Message, c.msg, c.args)
		})
	}
	var queued int
	require.NoError(t, e.Node("n1").Pool.QueryRow(t.Context(), `SELECT count(*) FROM ace.tasks`).Scan(&queued))
	require.Zero(t, queued, "a refused submission must leave no task behind")
}

func TestWaitInSubmittingTransactionFails(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	e.ExecAll(`CREATE TABLE t (id int PRIMARY KEY)`)
	_, err := e.Node("n1").Pool.Exec(t.Context(), `SELECT * FROM ace.wait(ace.table_diff('public.t'))`)
	var pgErr *pgconn.PgError
	require.True(t, errors.As(err, &pgErr))
	require.Contains(t, pgErr.Message, "was submitted in this transaction")
	require.Contains(t, pgErr.Hint, "COMMIT first")
}

func TestRunTableDiffProcedureReportsProgressAndSummary(t *testing.T) {
	t.Parallel()
	e := setup(t, `CREATE TABLE t (id int PRIMARY KEY, v int)`)
	e.ExecAll(`INSERT INTO t SELECT g, g FROM generate_series(1, 3000) g`)
	e.Node("n3").Exec(t, `UPDATE t SET v = 0 WHERE id = 17`)
	conn, notices := connectWithNotices(t, e.Node("n1").DSN)
	var status, outcome string
	var differing int64
	require.NoError(t, conn.QueryRow(t.Context(),
		`CALL ace.run_table_diff('public.t', block_size => 1000)`).Scan(new(uuid.UUID), &status, &differing, &outcome, new(map[string]any)))
	require.Equal(t, "COMPLETED", status)
	require.EqualValues(t, 1, differing)
	require.Equal(t, "public.t: 1 differing row(s) (n1/n3 1, n2/n3 1); 3000 rows checked", outcome, "the short line beside the summary")
	require.NotEmpty(t, notices())
	require.Contains(t, notices()[0], "submitted table-diff task")
	require.Contains(t, last(notices(), 1), "SELECT * FROM ace.diff_rows(")
}

func TestTableDiffFailsNamingAnUnreachablePeer(t *testing.T) {
	t.Parallel()
	// A private cluster: stopping a node of the shared one would break other tests.
	c := localpg.StartT(t, localpg.Options{Nodes: 2})
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, c.Nodes[0].DSN("postgres"))
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = sqlapi.Install(ctx, conn)
	require.NoError(t, err)
	for _, n := range c.Nodes {
		require.NoError(t, sqlapi.AddNode(ctx, conn, sqlapi.RegisteredNode{Name: n.Name, ConnInfo: n.DSN("postgres") + " connect_timeout=2"}))
	}
	_, err = conn.Exec(ctx, `CREATE TABLE t (id int PRIMARY KEY)`)
	require.NoError(t, err)
	require.NoError(t, c.Nodes[1].Stop(ctx))

	n1 := &testcluster.Node{Name: "n1", DSN: c.Nodes[0].DSN("postgres")}
	a := testcluster.Node{Name: "n1", DSN: n1.DSN}
	a.StartAgent(t)
	var id uuid.UUID
	require.NoError(t, conn.QueryRow(ctx, `SELECT ace.table_diff('public.t')`).Scan(&id))
	task, err := sqlapi.Wait(ctx, conn, id, 200*time.Millisecond, nil)
	require.NoError(t, err)
	require.Equal(t, sqlapi.StatusFailed, task.Status)
	require.Contains(t, *task.Error, "node n2")
}

func TestTableDiffFailsWhenPeersDisagreeAboutTheTable(t *testing.T) {
	t.Parallel()
	e := setup(t, "")
	e.Node("n1").Exec(t, `CREATE TABLE t (id int PRIMARY KEY, v numeric); CREATE TABLE only_here (id int PRIMARY KEY)`)
	e.Node("n2").Exec(t, `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	e.Node("n3").Exec(t, `CREATE TABLE t (id int PRIMARY KEY, v numeric)`)
	_, task := e.diff(`'public.t'`)
	require.Equal(t, sqlapi.StatusFailed, task.Status)
	require.Contains(t, *task.Error, `column "v" is numeric on n1 but text on n2`)
	_, task = e.diff(`'public.only_here'`)
	require.Equal(t, sqlapi.StatusFailed, task.Status)
	require.Contains(t, *task.Error, "public.only_here on node n2")
}

func TestTableDiffRunsAsTheSubmittingRole(t *testing.T) {
	t.Parallel()
	e := setup(t, `CREATE TABLE t (id int PRIMARY KEY, secret text)`)
	// Roles are cluster-wide: give them names unique to this test's database.
	reader, outsider := e.DB+"_reader", e.DB+"_outsider"
	e.ExecAll(`CREATE ROLE ` + reader + ` LOGIN; CREATE ROLE ` + outsider + ` LOGIN`)
	e.ExecAll(`GRANT SELECT ON t TO ` + reader)
	e.Node("n2").Exec(t, `REVOKE SELECT ON t FROM `+reader)
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, e.Node("n1").DSN)
	require.NoError(t, err)
	defer conn.Close(ctx)

	_, err = conn.Exec(ctx, `SET ROLE `+outsider)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `SELECT ace.table_diff('public.t')`)
	require.ErrorContains(t, err, "cannot read table")

	_, err = conn.Exec(ctx, `SET ROLE `+reader)
	require.NoError(t, err)
	var id uuid.UUID
	require.NoError(t, conn.QueryRow(ctx, `SELECT ace.table_diff('public.t')`).Scan(&id))
	task, err := sqlapi.Wait(ctx, conn, id, 200*time.Millisecond, nil)
	require.NoError(t, err)
	require.Equal(t, sqlapi.StatusFailed, task.Status)
	require.Equal(t, reader, task.SubmittedBy)
	require.Contains(t, *task.Error, "node n2")
	require.Contains(t, *task.Error, "permission denied")
}

func TestConcurrentInstallsAreSafe(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	n := e.Node("n1")
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			conn, err := pgx.Connect(t.Context(), n.DSN)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close(t.Context())
			_, err = sqlapi.Install(t.Context(), conn)
			errs <- err
		}()
	}
	for range 4 {
		require.NoError(t, <-errs)
	}
}

func TestApplicationInsertAndCompletionNotify(t *testing.T) {
	t.Parallel()
	e := setup(t, `CREATE TABLE t (id int PRIMARY KEY)`)
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, e.Node("n1").DSN)
	require.NoError(t, err)
	defer conn.Close(ctx)
	// LISTEN in the inserting transaction: it takes effect as the task becomes visible.
	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	var id uuid.UUID
	var channel string
	require.NoError(t, tx.QueryRow(ctx, `INSERT INTO ace.tasks (task_type, args)
		VALUES ('table-diff', '{"table_name": "t", "nodes": ["n1", "n2"]}') RETURNING task_id, ace.task_channel(task_id)`).Scan(&id, &channel))
	require.Equal(t, sqlapi.TaskChannel(id), channel)
	_, err = tx.Exec(ctx, `LISTEN `+channel)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	waitCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var payloads []string
	for len(payloads) == 0 || payloads[len(payloads)-1] != "COMPLETED" {
		n, err := conn.WaitForNotification(waitCtx)
		require.NoError(t, err, "got %v", payloads)
		require.Equal(t, channel, n.Channel)
		payloads = append(payloads, n.Payload)
	}
	require.Equal(t, "RUNNING", payloads[0])
	task, err := sqlapi.GetTask(ctx, conn, id)
	require.NoError(t, err)
	require.Equal(t, sqlapi.StatusCompleted, task.Status)
	require.JSONEq(t, `{"table_name": "public.t", "nodes": ["n1", "n2"], "override_block_size": false}`, string(task.Args), "args are normalised on insert")

	_, err = conn.Exec(ctx, `INSERT INTO ace.tasks (task_type) VALUES ('table-dif')`)
	var pgErr *pgconn.PgError
	require.True(t, errors.As(err, &pgErr))
	require.Equal(t, `unknown task type "table-dif"`, pgErr.Message)
	require.Contains(t, pgErr.Hint, "table-diff")
}
