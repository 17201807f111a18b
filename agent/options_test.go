package agent_test

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

func TestTableDiffOptionGuardrails(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	e.ExecAll(`CREATE TABLE ok (id int PRIMARY KEY)`)
	// The cases share one cluster: they run sequentially, without t.Parallel.
	for _, c := range []struct{ args, msg string }{
		{`'public.ok', block_size => 10`, `block_size must be between 1000 and 1000000, got 10`},
		{`'public.ok', concurrency_factor => 5`, `concurrency_factor must be greater than 0 and at most 4, got 5`},
		{`'public.ok', max_connections => -1`, `max_connections must be between 0 and 1000, got -1`},
		{`'public.ok', output => 'xml'`, `output must be json, html or csv, got "xml"`},
		{`'public.ok', recheck_after => '-5 seconds'`, `recheck_after must not be negative`},
		{`'public.ok', block_size => 10000000`, `block_size must be between 1000 and 1000000`},
	} {
		t.Run(c.args, func(t *testing.T) {
			require.Contains(t, submitErr(t, e, c.args).Message, c.msg, c.args)
		})
	}
	require.Contains(t, submitErr(t, e, `'public.ok', block_size => 10`).Hint, "override_block_size")
	t.Run("nodes as ACE's API sends them", func(t *testing.T) {
		for _, c := range []struct{ nodes, want string }{
			{`"all"`, `["n1", "n2", "n3"]`},
			{`"n3, n1"`, `["n1", "n3"]`},
			{`["n2", "n1"]`, `["n1", "n2"]`},
			{`null`, `["n1", "n2", "n3"]`},
		} {
			var got string
			require.NoError(t, e.Node("n1").Pool.QueryRow(t.Context(), `INSERT INTO ace.tasks (task_type, args)
				VALUES ('table-diff', jsonb_build_object('table_name', 'public.ok', 'nodes', $1::jsonb)) RETURNING args->>'nodes'`, c.nodes).Scan(&got))
			require.Equal(t, c.want, got, c.nodes)
		}
		_, err := e.Node("n1").Pool.Exec(t.Context(), `INSERT INTO ace.tasks (task_type, args) VALUES ('table-diff', '{"table_name": "public.ok", "nodes": 3}')`)
		require.ErrorContains(t, err, `nodes must be an array of node names, or "all", got 3`)
	})
	var id uuid.UUID
	require.NoError(t, e.Node("n1").Pool.QueryRow(t.Context(),
		`SELECT ace.table_diff('public.ok', block_size => 10, override_block_size => true)`).Scan(&id))
}

func TestTableDiffUntilIgnoresLaterCommits(t *testing.T) {
	t.Parallel()
	e := setup(t, `CREATE TABLE u (id int PRIMARY KEY, v text)`)
	e.ExecAll(`INSERT INTO u SELECT g, 'v' FROM generate_series(1, 100) g`)
	e.Node("n2").Exec(t, `UPDATE u SET v = 'drift before the fence' WHERE id = 5`)
	var fence time.Time
	require.NoError(t, e.Node("n1").Pool.QueryRow(t.Context(), `SELECT clock_timestamp()`).Scan(&fence))
	time.Sleep(10 * time.Millisecond)
	e.Node("n1").Exec(t, `INSERT INTO u VALUES (101, 'written after the fence')`)
	s, rows := e.completedDiff(`'public.u', nodes => ARRAY['n1', 'n2'], until => $1`, fence)
	require.Equal(t, []string{`{"id": 5}`}, keys(rows))
	require.NotNil(t, s.Until)
	require.WithinDuration(t, fence, *s.Until, time.Microsecond)
}

func TestTableDiffAgainstOrigin(t *testing.T) {
	t.Parallel()
	e := setup(t, `CREATE TABLE o (id int PRIMARY KEY, v text)`)
	e.Node("n1").Exec(t, `INSERT INTO o SELECT g, 'v' FROM generate_series(1, 20) g`)
	// On n2 the same rows arrive "from n1": written under a replication origin of that name,
	// as a subscription's apply worker would. Row 21 is n2's own.
	ctx := t.Context()
	conn, err := e.Node("n2").Pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	for _, sql := range []string{
		`SELECT pg_replication_origin_create('n1')`,
		`SELECT pg_replication_origin_session_setup('n1')`,
		`INSERT INTO o SELECT g, 'v' FROM generate_series(1, 20) g`,
		`UPDATE o SET v = 'changed in flight' WHERE id = 7`,
		`SELECT pg_replication_origin_session_reset()`,
		`INSERT INTO o VALUES (21, 'local to n2')`,
	} {
		_, err := conn.Exec(ctx, sql)
		require.NoError(t, err, sql)
	}
	s, rows := e.completedDiff(`'public.o', nodes => ARRAY['n1', 'n2'], against_origin => 'n1'`)
	require.Equal(t, []string{`{"id": 7}`}, keys(rows), "row 21 did not come from n1 and is not compared")
	require.True(t, s.OriginOnly)
	require.Equal(t, []uint32{0}, s.OriginIDs["n1"])
	require.Len(t, s.OriginIDs["n2"], 1)
	require.EqualValues(t, 20, s.RowsPerNode["n2"])
}

func TestTableDiffRecheckSeparatesTransientFromPersistentDrift(t *testing.T) {
	t.Parallel()
	e := setup(t, `CREATE TABLE lag (id int PRIMARY KEY, v text)`)
	e.ExecAll(`INSERT INTO lag SELECT g, 'v' FROM generate_series(1, 500) g`)
	e.Node("n2").Exec(t, `UPDATE lag SET v = 'in flight' WHERE id = 10`)
	e.Node("n3").Exec(t, `UPDATE lag SET v = 'drifted' WHERE id = 20`)
	n1 := e.Node("n1")
	var id uuid.UUID
	require.NoError(t, n1.Pool.QueryRow(t.Context(),
		`SELECT ace.table_diff('public.lag', recheck_after => '3 seconds')`).Scan(&id))
	waitForPhase(t, n1, id, "waiting")
	// Replication catches up on row 10 while the diff waits.
	e.Node("n2").Exec(t, `UPDATE lag SET v = 'v' WHERE id = 10`)
	task := n1.Wait(t, id)
	require.Equal(t, sqlapi.StatusCompleted, task.Status, "%v", task.Error)
	var s struct {
		DifferingKeys  int64  `json:"differing_keys"`
		TransientDiffs int64  `json:"transient_diffs"`
		RecheckAfter   string `json:"recheck_after"`
	}
	require.NoError(t, json.Unmarshal(task.Result, &s))
	require.EqualValues(t, 1, s.DifferingKeys)
	require.EqualValues(t, 1, s.TransientDiffs)
	require.Equal(t, "3s", s.RecheckAfter)
	rows := (&diffEnv{Env: e.Env, t: t}).diffRows(id)
	require.Equal(t, []string{`{"id": 20}`}, keys(rows))
}

func waitForPhase(t *testing.T, n *testcluster.Node, id uuid.UUID, prefix string) {
	t.Helper()
	require.Eventually(t, func() bool {
		task, err := sqlapi.GetTask(t.Context(), n.Pool, id)
		require.NoError(t, err)
		var p struct{ Phase string }
		_ = json.Unmarshal(task.Progress, &p)
		return len(p.Phase) >= len(prefix) && p.Phase[:len(prefix)] == prefix
	}, time.Minute, 20*time.Millisecond, "task never reached phase %q", prefix)
}

func TestTableDiffConcurrencyOptions(t *testing.T) {
	t.Parallel()
	e := setup(t, `CREATE TABLE c (id int PRIMARY KEY, v int)`)
	e.ExecAll(`INSERT INTO c SELECT g, g FROM generate_series(1, 5000) g`)
	e.Node("n3").Exec(t, `DELETE FROM c WHERE id IN (1, 2500, 5000)`)
	// The cases diff one table on one cluster: they run sequentially, without t.Parallel.
	for _, args := range []string{
		`'public.c', concurrency_factor => 0.5, max_connections => 2, block_size => 1000`,
		`'public.c', concurrency_factor => 4, compare_unit_size => 7, block_size => 1000`,
	} {
		t.Run(args, func(t *testing.T) {
			e := &diffEnv{Env: e.Env, t: t}
			s, rows := e.completedDiff(args)
			require.Equal(t, []string{`{"id": 1}`, `{"id": 2500}`, `{"id": 5000}`}, keys(rows), args)
			require.InDelta(t, 5, s.InitialRangesCount, 1, "blocks of about 1000 rows: %s", args)
		})
	}
}

func TestTableDiffWritesTheOutputReport(t *testing.T) {
	t.Parallel()
	e := setup(t, `CREATE TABLE rep (id int PRIMARY KEY, v text)`)
	e.ExecAll(`INSERT INTO rep SELECT g, 'v' FROM generate_series(1, 50) g`)
	e.Node("n2").Exec(t, `UPDATE rep SET v = '<changed>' WHERE id = 5`)
	// The formats diff one table on one cluster: they run sequentially, without t.Parallel.
	for _, format := range []string{"html", "csv", "json"} {
		t.Run(format, func(t *testing.T) {
			e := &diffEnv{Env: e.Env, t: t}
			s, _ := e.completedDiff(`'public.rep', output => $1`, format)
			require.FileExists(t, s.ReportFile)
			require.True(t, strings.HasSuffix(s.ReportFile, "."+format), s.ReportFile)
			raw, err := os.ReadFile(s.ReportFile)
			require.NoError(t, err)
			require.Contains(t, string(raw), "changed", format)
			require.NoError(t, os.Remove(s.ReportFile))
		})
	}
}
