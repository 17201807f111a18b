package agent_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/sqlapi"
)

const statusDDL = `CREATE TABLE public.t (id int PRIMARY KEY, v text);
INSERT INTO public.t SELECT g, 'v' || g FROM generate_series(1, 300) g`

// nodeStatus is one row of ace.table_status.
type nodeStatus struct {
	Verdict   string
	Differing *int64
	AsOfTask  *uuid.UUID
	Stale     *bool
}

// tableStatus reads ace.table_status(table) on n1 through q, by node.
func tableStatus(t *testing.T, q sqlapi.Querier, table string) map[string]nodeStatus {
	t.Helper()
	rows, err := q.Query(context.Background(),
		`SELECT node_name, verdict, differing_keys, as_of_task, stale FROM ace.table_status($1)`, table)
	require.NoError(t, err)
	out := map[string]nodeStatus{}
	for rows.Next() {
		var node string
		var s nodeStatus
		require.NoError(t, rows.Scan(&node, &s.Verdict, &s.Differing, &s.AsOfTask, &s.Stale))
		out[node] = s
	}
	require.NoError(t, rows.Err())
	return out
}

// verdicts is tableStatus as "verdict differing_keys" per node.
func verdicts(t *testing.T, q sqlapi.Querier, table string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for node, s := range tableStatus(t, q, table) {
		out[node] = s.Verdict
		if s.Differing != nil {
			out[node] += fmt.Sprintf(" %d", *s.Differing)
		}
	}
	return out
}

// statusEvents lists the table_out_of_sync and table_in_sync events of a task as "kind node".
func statusEvents(t *testing.T, q sqlapi.Querier, task uuid.UUID) []string {
	t.Helper()
	rows, err := q.Query(context.Background(), `SELECT kind || ' ' || node_name FROM ace.events_since(0, ARRAY['table_out_of_sync', 'table_in_sync'])
		WHERE task_id = $1 ORDER BY event_id`, task)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}

func TestTableStatus(t *testing.T) {
	t.Parallel()
	t.Run("unknown before any diff", func(t *testing.T) {
		t.Parallel()
		e := setupNoAgents(t, statusDDL)
		st := tableStatus(t, e.Node("n1").Pool, "t")
		require.Len(t, st, 3)
		for node, s := range st {
			require.Equal(t, "unknown", s.Verdict, node)
			require.Nil(t, s.Differing)
			require.Nil(t, s.Stale)
		}
		var n int
		require.NoError(t, e.Node("n1").Pool.QueryRow(context.Background(), `SELECT count(*) FROM ace.table_status()`).Scan(&n))
		require.Zero(t, n, "without a table name, only tables with a verdict are listed")
	})

	t.Run("drift on n2 is out_of_sync, a repair brings it back", func(t *testing.T) {
		t.Parallel()
		e := setup(t, statusDDL)
		n1 := e.Node("n1").Pool
		e.Node("n2").Exec(t, `UPDATE t SET v = 'drift' WHERE id IN (3, 4); DELETE FROM t WHERE id = 5; INSERT INTO t VALUES (1000, 'extra')`)
		diff := e.diffID("public.t")
		require.Equal(t, map[string]string{"n1": "in_sync 0", "n2": "out_of_sync 4", "n3": "in_sync 0"}, verdicts(t, n1, "public.t"))
		st := tableStatus(t, n1, "public.t")
		require.Equal(t, diff, *st["n2"].AsOfTask)
		require.False(t, *st["n2"].Stale)
		require.Equal(t, []string{"table_out_of_sync n2"}, statusEvents(t, n1, diff))

		repairID, s := e.completedRepair(diff, `source_of_truth => 'n1'`)
		require.True(t, s.FullyRepaired)
		require.Equal(t, map[string]string{"n1": "in_sync 0", "n2": "in_sync 0", "n3": "in_sync 0"}, verdicts(t, n1, "public.t"))
		require.Equal(t, repairID, *tableStatus(t, n1, "public.t")["n2"].AsOfTask)
		require.Equal(t, []string{"table_in_sync n2"}, statusEvents(t, n1, repairID))
	})

	t.Run("a partial repair leaves what it skipped", func(t *testing.T) {
		t.Parallel()
		e := setup(t, statusDDL)
		n1 := e.Node("n1").Pool
		e.Node("n2").Exec(t, `DELETE FROM t WHERE id = 5; INSERT INTO t VALUES (1000, 'extra')`)
		diff := e.diffID("public.t")
		_, s := e.completedRepair(diff, `source_of_truth => 'n1', insert_only => true`)
		require.EqualValues(t, 1, s.Skipped, "the extra row is left: insert_only deletes nothing")
		require.Equal(t, map[string]string{"n1": "in_sync 0", "n2": "out_of_sync 1", "n3": "in_sync 0"}, verdicts(t, n1, "public.t"))
	})

	t.Run("a dry run changes nothing", func(t *testing.T) {
		t.Parallel()
		e := setup(t, statusDDL)
		n1 := e.Node("n1").Pool
		e.Node("n2").Exec(t, `DELETE FROM t WHERE id = 5`)
		diff := e.diffID("public.t")
		e.completedRepair(diff, `source_of_truth => 'n1', dry_run => true`)
		require.Equal(t, diff, *tableStatus(t, n1, "public.t")["n2"].AsOfTask)
		require.Equal(t, "out_of_sync 1", verdicts(t, n1, "public.t")["n2"])
	})

	t.Run("a rerun replaces the diff's verdict", func(t *testing.T) {
		t.Parallel()
		e := setup(t, statusDDL)
		n1 := e.Node("n1").Pool
		e.Node("n3").Exec(t, `UPDATE t SET v = 'drift' WHERE id IN (7, 8)`)
		diff := e.diffID("public.t")
		require.Equal(t, "out_of_sync 2", verdicts(t, n1, "public.t")["n3"])
		e.Node("n3").Exec(t, `UPDATE t SET v = 'v7' WHERE id = 7`)
		rerun, _ := e.completedRerun(diff)
		require.Equal(t, map[string]string{"n1": "in_sync 0", "n2": "in_sync 0", "n3": "out_of_sync 1"}, verdicts(t, n1, "public.t"))
		e.Node("n3").Exec(t, `UPDATE t SET v = 'v8' WHERE id = 8`)
		again, _ := e.completedRerun(rerun)
		require.Equal(t, map[string]string{"n1": "in_sync 0", "n2": "in_sync 0", "n3": "in_sync 0"}, verdicts(t, n1, "public.t"))
		require.Equal(t, []string{"table_in_sync n3"}, statusEvents(t, n1, again))
	})

	t.Run("two nodes that differ are both diverged", func(t *testing.T) {
		t.Parallel()
		e := setup(t, statusDDL)
		e.Node("n2").Exec(t, `UPDATE t SET v = 'drift' WHERE id = 9`)
		_, task := e.diff(`'public.t', nodes => ARRAY['n1', 'n2']`)
		require.Equal(t, sqlapi.StatusCompleted, task.Status, "%v", task.Error)
		require.Equal(t, map[string]string{"n1": "diverged 1", "n2": "diverged 1", "n3": "unknown"},
			verdicts(t, e.Node("n1").Pool, "public.t"))
	})

	t.Run("three versions of one key on three nodes are all diverged", func(t *testing.T) {
		t.Parallel()
		e := setup(t, statusDDL)
		e.Node("n2").Exec(t, `UPDATE t SET v = 'two' WHERE id = 9`)
		e.Node("n3").Exec(t, `UPDATE t SET v = 'three' WHERE id = 9; UPDATE t SET v = 'three' WHERE id = 10`)
		e.diffID("public.t")
		require.Equal(t, map[string]string{"n1": "diverged 1", "n2": "diverged 1", "n3": "diverged 2"},
			verdicts(t, e.Node("n1").Pool, "public.t"))
	})

	t.Run("a filtered diff cannot say in_sync", func(t *testing.T) {
		t.Parallel()
		e := setup(t, statusDDL)
		n1 := e.Node("n1").Pool
		e.Node("n2").Exec(t, `UPDATE t SET v = 'drift' WHERE id = 250`)
		e.diffID("public.t")
		_, task := e.diff(`'public.t', table_filter => 'id < 100'`)
		require.Equal(t, sqlapi.StatusCompleted, task.Status, "%v", task.Error)
		require.Equal(t, "out_of_sync 1", verdicts(t, n1, "public.t")["n2"], "the filtered diff saw none of n2's drift")
	})

	t.Run("stale after table_status_max_age", func(t *testing.T) {
		t.Parallel()
		e := setup(t, statusDDL)
		n1 := e.Node("n1").Pool
		e.diffID("public.t")
		require.False(t, *tableStatus(t, n1, "public.t")["n1"].Stale)
		e.Node("n1").Exec(t, `UPDATE ace.settings SET value = '1 millisecond' WHERE name = 'table_status_max_age'`)
		require.Eventually(t, func() bool { return *tableStatus(t, n1, "public.t")["n1"].Stale }, 10*time.Second, 10*time.Millisecond)
		var n int
		require.NoError(t, n1.QueryRow(context.Background(), `SELECT count(*) FROM ace.table_status() WHERE stale AND verdict = 'in_sync'`).Scan(&n))
		require.Equal(t, 3, n)
	})
}

// Who may read a verdict: whoever may SELECT the table; the task it comes from (as_of_task and
// the events) only whoever may see that task.
func TestTableStatusReaders(t *testing.T) {
	t.Parallel()
	e := newWallEnv(t)
	carol := e.AddSubmitter("carol", false)
	e.asAll(t, e.alice, `CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' FROM generate_series(1, 50) g;
		CREATE TABLE hidden (id int PRIMARY KEY, v text); INSERT INTO hidden VALUES (1, 'x')`)
	e.asAll(t, e.alice, fmt.Sprintf(`GRANT SELECT ON t TO %s`, e.bob))
	e.Node("n2").Exec(t, `UPDATE public.t SET v = 'drift' WHERE id = 7; UPDATE public.hidden SET v = 'y'`)
	for _, table := range []string{"public.t", "public.hidden"} {
		diff := e.submit(t, e.alice, `SELECT ace.table_diff($1)`, table)
		require.Equal(t, sqlapi.StatusCompleted, diff.Status, "%v", diff.Error)
	}
	alice, bob, c := e.Node("n1").ConnectAs(t, e.alice), e.Node("n1").ConnectAs(t, e.bob), e.Node("n1").ConnectAs(t, carol)

	t.Run("the submitter sees her task", func(t *testing.T) {
		st := tableStatus(t, alice, "public.t")
		require.Equal(t, "out_of_sync", st["n2"].Verdict)
		require.NotNil(t, st["n2"].AsOfTask)
		require.Equal(t, []string{"table_out_of_sync n2"}, statusEvents(t, alice, *st["n2"].AsOfTask))
	})
	t.Run("a reader of the table sees the verdict, not the task", func(t *testing.T) {
		st := tableStatus(t, bob, "public.t")
		require.Equal(t, "out_of_sync", st["n2"].Verdict)
		require.EqualValues(t, 1, *st["n2"].Differing)
		require.Nil(t, st["n2"].AsOfTask)
		task := *tableStatus(t, alice, "public.t")["n2"].AsOfTask
		require.Empty(t, statusEvents(t, bob, task))
	})
	t.Run("a table the role may not read is not listed", func(t *testing.T) {
		var tables []string
		rows, err := bob.Query(context.Background(), `SELECT DISTINCT table_name FROM ace.table_status()`)
		require.NoError(t, err)
		tables, err = pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		require.Equal(t, []string{"public.t"}, tables)
		var n int
		require.NoError(t, c.QueryRow(context.Background(), `SELECT count(*) FROM ace.table_sync`).Scan(&n))
		require.Zero(t, n, "carol reads no table")
		_, err = bob.Exec(context.Background(), `SELECT * FROM ace.table_status('public.hidden')`)
		var pgErr *pgconn.PgError
		require.True(t, errors.As(err, &pgErr), "%v", err)
		require.Equal(t, pgerrcode.InsufficientPrivilege, pgErr.Code)
	})
	t.Run("only the schema's owner records verdicts", func(t *testing.T) {
		task := *tableStatus(t, alice, "public.t")["n2"].AsOfTask
		_, err := alice.Exec(context.Background(), `SELECT ace.record_table_status($1, 'COMPLETED', (SELECT result FROM ace.tasks WHERE task_id = $1), '{}')`, task)
		var pgErr *pgconn.PgError
		require.True(t, errors.As(err, &pgErr), "%v", err)
		require.Equal(t, pgerrcode.InsufficientPrivilege, pgErr.Code)
	})
}
