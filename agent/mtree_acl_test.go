package agent_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/agent"
	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// Who may use a Merkle tree, and what they learn from it (issue 16): a tree is shared by every
// user of its table, so only a view that sees every row may build or refresh it, it is the tree
// of one table (not of a name), and its counts are shown only to those who may read the table.

// treeWallEnv is a secure cluster where alice owns public.t (500 rows, keys k0001…k0500) and may
// build its tree; bob is another submitter. tune adjusts the agents' configuration.
func treeWallEnv(t *testing.T, tune func(*agent.Config)) *wallEnv {
	t.Helper()
	e := &wallEnv{Env: testcluster.NewSecure(t)}
	e.alice, e.bob = e.AddSubmitter("alice", true), e.AddSubmitter("bob", true)
	e.ExecAll(fmt.Sprintf(`GRANT CREATE ON SCHEMA public TO %s; GRANT CREATE ON DATABASE %s TO %[1]s`, e.alice, e.DB))
	e.DropSlotsAtEnd()
	for _, n := range e.Nodes {
		cfg := n.AgentConfig()
		if tune != nil {
			tune(&cfg)
		}
		n.StartAgentWith(t, cfg)
	}
	e.asAll(t, e.alice, `CREATE TABLE t (id text PRIMARY KEY, v int);
		INSERT INTO t SELECT 'k' || lpad(g::text, 4, '0'), g FROM generate_series(1, 500) g`)
	return e
}

// build builds alice's tree of public.t.
func (e *wallEnv) build(t *testing.T) {
	t.Helper()
	task := e.submit(t, e.alice, `SELECT ace.mtree_build('public.t', leaf_rows => 100)`)
	require.Equal(t, sqlapi.StatusCompleted, task.Status, "build: %v", task.Error)
}

// submitErr runs a task-submitting sql on n1 as role and returns the error its insert raised,
// or waits for the task and returns it.
func (e *wallEnv) submitErr(t *testing.T, role, sql string) (*sqlapi.Task, error) {
	t.Helper()
	var id uuid.UUID
	if err := e.Node("n1").ConnectAs(t, role).QueryRow(context.Background(), sql).Scan(&id); err != nil {
		return nil, err
	}
	task := e.Node("n1").Wait(t, id)
	return &task, nil
}

// differing runs alice's tree diff of public.t and returns how many keys differ.
func (e *wallEnv) differing(t *testing.T) string {
	t.Helper()
	task := e.submit(t, e.alice, `SELECT ace.mtree_diff('public.t')`)
	require.Equal(t, sqlapi.StatusCompleted, task.Status, "alice's diff: %v", task.Error)
	return string(task.Result)
}

// leavesOf is every node's leaves, as text.
func (e *wallEnv) leavesOf(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, n := range e.Nodes {
		var s string
		require.NoError(t, n.Pool.QueryRow(context.Background(), `SELECT
			coalesce((SELECT string_agg(concat_ws(':', leaf_id, row_count, lane1, lane2), ',' ORDER BY leaf_id) FROM ace.mtree_leaves), '')`).Scan(&s))
		out[n.Name] = s
	}
	return out
}

func requireSQLState(t *testing.T, err error, code string, contains ...string) {
	t.Helper()
	var pgErr *pgconn.PgError
	require.True(t, errors.As(err, &pgErr), "want SQLSTATE %s, got %v", code, err)
	require.Equal(t, code, pgErr.Code, "%v", err)
	for _, c := range contains {
		require.Contains(t, pgErr.Message+" "+pgErr.Hint, c)
	}
}

// Issue 16 item 2: a reader whom row-level security restricts must not refresh the owner's tree
// at her view, or later diffs by anyone would report drift in the rows she cannot see as "in
// sync".
func TestMtreeRefusesARestrictedView(t *testing.T) {
	t.Parallel()
	e := treeWallEnv(t, nil)
	// bob sees only the first 100 keys, on every node; alice, the owner, sees all (no FORCE).
	e.asAll(t, e.alice, fmt.Sprintf(`GRANT SELECT ON t TO %[1]s; ALTER TABLE t ENABLE ROW LEVEL SECURITY;
		CREATE POLICY owner ON t TO %[2]s USING (true); CREATE POLICY mine ON t FOR SELECT TO %[1]s USING (id <= 'k0100')`, e.bob, e.alice))
	e.build(t)
	e.Node("n2").Exec(t, `UPDATE public.t SET v = -v WHERE id = 'k0300'`)
	// The stream must have delivered the change, so a refresh would hash its leaf.
	require.Eventually(t, func() bool {
		return e.scalarOn(t, "n2", `SELECT (SELECT count(*) FROM ace.mtree_pending) + (SELECT count(*) FROM ace.mtree_dirty)`) > 0
	}, 20*time.Second, 50*time.Millisecond)
	before := e.leavesOf(t)

	t.Run("restricted on the coordinator", func(t *testing.T) {
		task, err := e.submitErr(t, e.bob, `SELECT ace.mtree_diff('public.t')`)
		require.Nil(t, task, "bob's diff was accepted and ran")
		requireSQLState(t, err, pgerrcode.InsufficientPrivilege, e.bob, "public.t", "does not see every row", "shared by every user", "ace.table_diff")
	})
	t.Run("restricted on a peer only", func(t *testing.T) {
		e.Node("n1").Exec(t, `ALTER TABLE public.t DISABLE ROW LEVEL SECURITY`)
		task, err := e.submitErr(t, e.bob, `SELECT ace.mtree_diff('public.t')`)
		require.NoError(t, err)
		require.Equal(t, sqlapi.StatusFailed, task.Status, "bob's diff: %s", task.Result)
		require.Contains(t, *task.Error, "node n2")
		require.Contains(t, *task.Error, "does not see every row of public.t")
	})
	t.Run("a column withheld on a peer", func(t *testing.T) {
		e.ExecAll(`ALTER TABLE public.t DISABLE ROW LEVEL SECURITY`)
		e.Node("n2").Exec(t, fmt.Sprintf(`REVOKE SELECT ON public.t FROM %[1]s; GRANT SELECT (id) ON public.t TO %[1]s`, e.bob))
		task, err := e.submitErr(t, e.bob, `SELECT ace.mtree_diff('public.t')`)
		require.NoError(t, err)
		require.Equal(t, sqlapi.StatusFailed, task.Status, "bob's diff: %s", task.Result)
		require.Contains(t, *task.Error, "node n2")
		require.Contains(t, *task.Error, "may not read the column(s) v")
	})
	require.Equal(t, before, e.leavesOf(t), "the refused diffs wrote nothing into the trees")
	require.Contains(t, e.differing(t), `"differing_keys": 1`, "the drift in rows bob cannot see is still found")
}

// Issue 16 item 2, the owner too: FORCE ROW LEVEL SECURITY restricts the table's owner, so she
// cannot build a tree at her restricted view.
func TestMtreeBuildRefusesForcedRowSecurity(t *testing.T) {
	t.Parallel()
	e := treeWallEnv(t, nil)
	e.asAll(t, e.alice, `ALTER TABLE t ENABLE ROW LEVEL SECURITY; ALTER TABLE t FORCE ROW LEVEL SECURITY;
		CREATE POLICY part ON t USING (id <= 'k0100')`)
	_, err := e.submitErr(t, e.alice, `SELECT ace.mtree_build('public.t')`)
	requireSQLState(t, err, pgerrcode.InsufficientPrivilege, "does not see every row")
}

// Issue 16 item 8: a tree is the tree of one table. Dropped and re-created, or given to another
// owner, the table is not the one the tree describes, and a diff must not compare it.
func TestMtreeRefusesATreeOfAnotherTable(t *testing.T) {
	t.Parallel()
	e := treeWallEnv(t, nil)
	e.build(t)
	recreate := `DROP TABLE public.t; CREATE TABLE public.t (id text PRIMARY KEY, v int);
		INSERT INTO public.t SELECT 'k' || lpad(g::text, 4, '0'), -g FROM generate_series(1, 500) g`
	rebuildHint := "build it again with ace.mtree_build('public.t')"

	t.Run("re-created on a peer", func(t *testing.T) {
		e.Node("n2").Exec(t, recreate+fmt.Sprintf(`; ALTER TABLE public.t OWNER TO %s`, e.alice))
		task, err := e.submitErr(t, e.alice, `SELECT ace.mtree_diff('public.t')`)
		require.NoError(t, err)
		require.Equal(t, sqlapi.StatusFailed, task.Status, "the diff ran on the old tree: %s", task.Result)
		require.Contains(t, *task.Error, "node n2")
		require.Contains(t, *task.Error, "dropped and re-created")
		require.Contains(t, *task.Error, rebuildHint)
	})
	t.Run("re-created on the coordinator", func(t *testing.T) {
		e.Node("n1").Exec(t, recreate+fmt.Sprintf(`; ALTER TABLE public.t OWNER TO %s`, e.alice))
		_, err := e.submitErr(t, e.alice, `SELECT ace.mtree_diff('public.t')`)
		requireSQLState(t, err, pgerrcode.ObjectNotInPrerequisiteState, "dropped and re-created", rebuildHint)
	})
	t.Run("given to another owner", func(t *testing.T) {
		e.build(t)
		e.Node("n1").Exec(t, fmt.Sprintf(`ALTER TABLE public.t OWNER TO %s`, e.bob))
		_, err := e.submitErr(t, e.bob, `SELECT ace.mtree_diff('public.t')`)
		requireSQLState(t, err, pgerrcode.ObjectNotInPrerequisiteState, "changed owner")
	})
}

// Issue 16 item 12: a role that cannot read a table sees its tree's status and warnings, not its
// row counts or change activity.
func TestMtreeStatusHidesCountsFromNonReaders(t *testing.T) {
	t.Parallel()
	e := treeWallEnv(t, nil)
	e.build(t)
	counts := `SELECT count(*), count(row_count), count(leaves), count(largest_leaf_rows), count(dirty_leaves), count(pending_changes)
		FROM ace.mtree_status('public.t') WHERE status = 'ready'`
	read := func(role string) []int {
		out := make([]any, 6)
		vals := make([]int, 6)
		for i := range out {
			out[i] = &vals[i]
		}
		require.NoError(t, e.Node("n1").ConnectAs(t, role).QueryRow(context.Background(), counts).Scan(out...))
		return vals
	}
	require.Eventually(t, func() bool { return read(e.alice)[1] == 3 }, 20*time.Second, 100*time.Millisecond, "alice sees every node's counts")
	require.Equal(t, []int{3, 3, 3, 3, 3, 3}, read(e.alice))
	require.Equal(t, []int{3, 0, 0, 0, 0, 0}, read(e.bob), "bob, who may not read public.t, sees its trees but no counts")
	e.asAll(t, e.alice, fmt.Sprintf(`GRANT SELECT ON t TO %s`, e.bob))
	require.Equal(t, []int{3, 3, 3, 3, 3, 3}, read(e.bob), "once he may read it, he sees them")
}

// Issue 16 item 13: no function an ordinary role may call returns a tree's row, its builder or
// its build task.
func TestMtreeRowIsNotReadableThroughFunctions(t *testing.T) {
	t.Parallel()
	e := treeWallEnv(t, nil)
	e.build(t)
	conn := e.Node("n1").ConnectAs(t, e.bob)
	var leaks []string
	rows, err := conn.Query(context.Background(), `SELECT p.oid::regprocedure::text FROM pg_proc p
		WHERE p.pronamespace = 'ace'::regnamespace AND has_function_privilege(p.oid, 'EXECUTE')
		  AND (p.prorettype = 'ace.mtrees'::regtype
		       OR p.proargnames && ARRAY['built_by', 'build_task']
		       OR pg_get_function_result(p.oid) ~ 'built_by|build_task')`)
	require.NoError(t, err)
	for rows.Next() {
		var f string
		require.NoError(t, rows.Scan(&f))
		leaks = append(leaks, f)
	}
	require.NoError(t, rows.Err())
	require.Empty(t, leaks, "functions that hand out a tree's builder or build task")
	// The diff's validation, which needed the row, still works for bob once he may read the table.
	e.asAll(t, e.alice, fmt.Sprintf(`GRANT SELECT ON t TO %s`, e.bob))
	task := e.submit(t, e.bob, `SELECT ace.mtree_diff('public.t')`)
	require.Equal(t, sqlapi.StatusCompleted, task.Status, "bob's diff: %v", task.Error)
	_, err = conn.Exec(context.Background(), `SELECT ace.check_mtree_ready('public.t', 0)`)
	requireSQLState(t, err, pgerrcode.ObjectNotInPrerequisiteState, "dropped and re-created")
}

// Issue 16 item 7: a failed tree diff tells its submitter which range failed by position, never by
// its key values (the agent's log has those).
func TestMtreeDiffErrorsQuoteNoKeys(t *testing.T) {
	t.Parallel()
	e := treeWallEnv(t, nil)
	// Drift from before the build: no changed key settles its leaf, so the leaf's range is
	// narrowed down, and the filter raises on one of its keys there.
	e.Node("n2").Exec(t, `UPDATE public.t SET v = -v WHERE id = 'k0250'`)
	e.build(t)
	task := e.submit(t, e.alice, `SELECT ace.mtree_diff('public.t', table_filter => '1 / (CASE WHEN id = ''k0250'' THEN 0 ELSE 1 END) = 1')`)
	require.Equal(t, sqlapi.StatusFailed, task.Status, "%s", task.Result)
	require.Contains(t, *task.Error, "division by zero")
	require.NotContains(t, *task.Error, "k0", "the task's error quotes key values")
}

// Issue 16 item 17: a session idle in a transaction does not stall a tree build for ever; the
// build fails naming it, and leaves nothing behind.
func TestMtreeBuildNamesTheTransactionItWaitsFor(t *testing.T) {
	t.Parallel()
	e := treeWallEnv(t, func(c *agent.Config) { c.TreeTxWait = 3 * time.Second })
	idle := e.Node("n1").ConnectAs(t, e.bob)
	ctx := context.Background()
	var pid int
	require.NoError(t, idle.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid))
	_, err := idle.Exec(ctx, `BEGIN; SELECT pg_current_xact_id()`)
	require.NoError(t, err)

	start := time.Now()
	task := e.submit(t, e.alice, `SELECT ace.mtree_build('public.t')`)
	require.Equal(t, sqlapi.StatusFailed, task.Status, "%s", task.Result)
	require.Less(t, time.Since(start), 45*time.Second)
	require.Contains(t, *task.Error, "pid "+strconv.Itoa(pid))
	require.Contains(t, *task.Error, "user "+e.bob)
	require.Contains(t, *task.Error, "pg_terminate_backend")
	for _, n := range e.Nodes {
		require.Zero(t, e.scalarOn(t, n.Name, `SELECT count(*) FROM ace.mtrees`), "tree left on %s", n.Name)
		require.Zero(t, e.scalarOn(t, n.Name, `SELECT count(*) FROM pg_publication`), "publication left on %s", n.Name)
	}
	_, err = idle.Exec(ctx, `ROLLBACK`)
	require.NoError(t, err)
	e.build(t)
}
