package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// treePoolsEnv is a cluster whose tables have Merkle trees, n1's agent (which coordinates the
// tree tasks submitted on n1) at hand.
type treePoolsEnv struct {
	*diffEnv
	agent *testcluster.Agent
}

// treePoolsSetup creates the tables, starts an agent on every node and builds each table's tree
// on every node.
func treePoolsSetup(t *testing.T, tables ...string) *treePoolsEnv {
	t.Helper()
	e := setupNoAgents(t, "")
	for _, table := range tables {
		e.ExecAll(fmt.Sprintf(`CREATE TABLE %s (id int PRIMARY KEY, v text);
			INSERT INTO %[1]s SELECT g, 'v' || g FROM generate_series(1, 1000) g`, table))
	}
	e.DropSlotsAtEnd()
	env := &treePoolsEnv{diffEnv: e, agent: e.Node("n1").StartAgent(t)}
	for _, n := range e.Nodes[1:] {
		n.StartAgent(t)
	}
	for _, table := range tables {
		var built map[string]any
		e.completed(&built, `ace.mtree_build($1)`, table)
	}
	return env
}

// treeSessions maps each session that n1's agent keeps for tree tasks on the node to when it
// last ran a statement.
func treeSessions(t *testing.T, n *testcluster.Node) map[int32]time.Time {
	t.Helper()
	rows, err := n.Pool.Query(context.Background(), `SELECT pid, coalesce(query_start, backend_start) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = 'ace-agent trees'`)
	require.NoError(t, err)
	sessions := map[int32]time.Time{}
	var pid int32
	var last time.Time
	_, err = pgx.ForEachRow(rows, []any{&pid, &last}, func() error {
		sessions[pid] = last
		return nil
	})
	require.NoError(t, err)
	return sessions
}

// allTreeSessions is treeSessions of every node, by node name.
func (e *treePoolsEnv) allTreeSessions(t *testing.T) map[string]map[int32]time.Time {
	all := map[string]map[int32]time.Time{}
	for _, n := range e.Nodes {
		all[n.Name] = treeSessions(t, n)
	}
	return all
}

// reused lists the sessions of before that ran a statement since.
func reused(before, after map[int32]time.Time) []int32 {
	var pids []int32
	for pid, last := range after {
		if was, ok := before[pid]; ok && last.After(was) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// opened lists the sessions of after that before did not have.
func opened(before, after map[int32]time.Time) []int32 {
	var pids []int32
	for pid := range after {
		if _, ok := before[pid]; !ok {
			pids = append(pids, pid)
		}
	}
	return pids
}

// mtreeDiff runs a tree diff of the table on n1 and waits for it.
func (e *treePoolsEnv) mtreeDiff(t *testing.T, table string) sqlapi.Task {
	t.Helper()
	n1 := e.Node("n1")
	var id uuid.UUID
	require.NoError(t, n1.Pool.QueryRow(context.Background(), `SELECT ace.mtree_diff($1)`, table).Scan(&id))
	return n1.Wait(t, id)
}

// diffInSync runs a tree diff of the table, which must find it in sync.
func (e *treePoolsEnv) diffInSync(t *testing.T, table string) {
	t.Helper()
	task := e.mtreeDiff(t, table)
	require.Equal(t, sqlapi.StatusCompleted, task.Status, "task error: %v", task.Error)
	var s engine.DiffSummary
	require.NoError(t, json.Unmarshal(task.Result, &s))
	require.Zero(t, s.DifferingKeys)
}

// requireNoTreeSessions waits for every node to have no session of the tree tasks' pools left.
func (e *treePoolsEnv) requireNoTreeSessions(t *testing.T, why string) {
	t.Helper()
	for _, n := range e.Nodes {
		eventually(t, func() bool { return len(treeSessions(t, n)) == 0 }, fmt.Sprintf("%s: no session on %s", why, n.Name))
	}
}

// TestTreeTasksKeepTheAgentsSessions: the sessions a tree task opens with the agent's own login
// serve the next tree tasks, unless what they were opened with changed, their task failed, or
// they were dropped; they close once idle, and when the agent stops.
func TestTreeTasksKeepTheAgentsSessions(t *testing.T) {
	t.Parallel()
	e := treePoolsSetup(t, "public.t")
	// public.half has a tree on n1 and n2 only: a diff of it on every node fails on n3.
	e.ExecAll(`CREATE TABLE public.half (id int PRIMARY KEY)`)
	var built map[string]any
	e.completed(&built, `ace.mtree_build('public.half', nodes => ARRAY['n1', 'n2'])`)
	e.diffInSync(t, "public.t")

	t.Run("a second diff runs on the first one's sessions", func(t *testing.T) {
		before := e.allTreeSessions(t)
		e.diffInSync(t, "public.t")
		after := e.allTreeSessions(t)
		for _, n := range e.Nodes {
			require.NotEmpty(t, before[n.Name], "sessions kept on %s after a diff", n.Name)
			require.NotEmpty(t, reused(before[n.Name], after[n.Name]), "the second diff used the kept sessions on %s", n.Name)
			require.Empty(t, opened(before[n.Name], after[n.Name]), "the second diff opened no session on %s", n.Name)
		}
	})
	t.Run("a changed connection string opens fresh sessions", func(t *testing.T) {
		e.Node("n1").Exec(t, `UPDATE ace.nodes SET conninfo = conninfo || ' connect_timeout=10' WHERE node_name = 'n2'`)
		before := e.allTreeSessions(t)
		e.diffInSync(t, "public.t")
		after := e.allTreeSessions(t)
		require.Empty(t, reused(before["n2"], after["n2"]), "no session opened with n2's old connection string was used")
		require.NotEmpty(t, opened(before["n2"], after["n2"]))
		for _, n := range []string{"n1", "n3"} {
			require.NotEmpty(t, reused(before[n], after[n]), "the sessions on %s, whose connection string did not change, were used", n)
		}
	})
	t.Run("a failed task's sessions are closed", func(t *testing.T) {
		before := e.allTreeSessions(t)
		task := e.mtreeDiff(t, "public.half")
		require.Equal(t, sqlapi.StatusFailed, task.Status, "result: %s", task.Result)
		require.Contains(t, *task.Error, "n3")
		e.diffInSync(t, "public.t")
		after := e.allTreeSessions(t)
		for _, n := range []string{"n1", "n3"} {
			for pid := range before[n] {
				require.NotContains(t, after[n], pid, "a session on %s that served the failed diff was closed", n)
			}
		}
	})
	t.Run("a dropped session is replaced", func(t *testing.T) {
		e.Node("n2").Exec(t, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = 'ace-agent trees'`)
		eventually(t, func() bool { return len(treeSessions(t, e.Node("n2"))) == 0 }, "n2's tree sessions ended")
		e.diffInSync(t, "public.t")
		require.NotEmpty(t, treeSessions(t, e.Node("n2")))
	})
	t.Run("sessions idle too long are closed", func(t *testing.T) {
		e.agent.ExpireTreePools()
		e.requireNoTreeSessions(t, "after expiry")
		e.diffInSync(t, "public.t")
		require.NotEmpty(t, treeSessions(t, e.Node("n2")), "a diff after the expiry opens sessions again")
	})
	t.Run("the agent's stop closes them", func(t *testing.T) {
		require.NoError(t, e.agent.Stop())
		e.requireNoTreeSessions(t, "after the agent stopped")
	})
}

// TestConcurrentTreeDiffsComplete: tree diffs of different tables submitted at once all complete,
// twice: the second time on the sessions the first ones kept (a diff holds its tree lock on one
// connection per node and asks for more, so two diffs never share a pool).
func TestConcurrentTreeDiffsComplete(t *testing.T) {
	t.Parallel()
	tables := []string{"public.a", "public.b", "public.c", "public.d"}
	e := treePoolsSetup(t, tables...)
	for round := range 2 {
		t.Run(fmt.Sprintf("round %d", round+1), func(t *testing.T) {
			n1 := e.Node("n1")
			for _, table := range tables {
				n1.Exec(t, `UPDATE `+table+` SET v = 'changed' WHERE id = $1`, round+1)
			}
			// One statement submits them all: the agent claims them together.
			rows, err := n1.Pool.Query(context.Background(), `SELECT ace.mtree_diff(table_name) FROM unnest($1::text[]) table_name`, tables)
			require.NoError(t, err)
			ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
			require.NoError(t, err)
			for i, id := range ids {
				task := n1.Wait(t, id)
				require.Equal(t, sqlapi.StatusCompleted, task.Status, "diff of %s: %v", tables[i], task.Error)
				var s engine.DiffSummary
				require.NoError(t, json.Unmarshal(task.Result, &s))
				require.EqualValues(t, round+1, s.DifferingKeys, "diff of %s: the rows changed on n1 so far", tables[i])
			}
		})
	}
	for _, n := range e.Nodes {
		require.LessOrEqual(t, len(treeSessions(t, n)), len(tables)*3, "at most one pool of 3 connections per diff run at once on %s", n.Name)
	}
}

// BenchmarkTreeDiffSessions times a tree diff after an update on a secure cluster (TLS, and
// the agent's certificate), with the agent's own sessions kept between diffs and, as before
// they were, opened by every diff. The two alternate, so that they share the machine's load;
// the metrics are the medians of each, from the claim to the end ("run") and outside the engine
// ("around").
func BenchmarkTreeDiffSessions(b *testing.B) {
	e := testcluster.NewSecure(b)
	alice := e.AddSubmitter("alice", true)
	e.ExecAll(fmt.Sprintf(`GRANT CREATE ON SCHEMA public TO %s; GRANT CREATE ON DATABASE %s TO %[1]s`, alice, e.DB))
	e.DropSlotsAtEnd()
	n1 := e.Node("n1")
	a := n1.StartAgent(b)
	for _, n := range e.Nodes[1:] {
		n.StartAgent(b)
	}
	for _, n := range e.Nodes {
		_, err := n.ConnectAs(b, alice).Exec(context.Background(), `CREATE TABLE t (id int PRIMARY KEY, v text);
			INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 10000) g`)
		require.NoError(b, err)
	}
	submitter := n1.ConnectAs(b, alice)
	run := func(sql string) sqlapi.Task {
		var id uuid.UUID
		require.NoError(b, submitter.QueryRow(context.Background(), sql).Scan(&id))
		task := n1.Wait(b, id)
		require.Equal(b, sqlapi.StatusCompleted, task.Status, "%s: %v", sql, task.Error)
		return task
	}
	run(`SELECT ace.mtree_build('public.t')`)
	runs := map[bool][]float64{}
	arounds := map[bool][]float64{}
	b.ResetTimer()
	for i := range b.N {
		// In fours: a diff that keeps its sessions, one that runs on them, and two that open and
		// close their own.
		keep := i%4 < 2
		a.KeepTreePools(keep)
		// The diff before takes the update in, so that each diff has one changed row to find.
		e.Node("n2").Exec(b, `UPDATE public.t SET v = 'changed' WHERE id = $1`, i+1)
		task := run(`SELECT ace.mtree_diff('public.t')`)
		var ran, engine float64
		require.NoError(b, n1.Pool.QueryRow(context.Background(), `SELECT extract(epoch FROM finished_at - started_at)::float8,
			(result->>'time_taken_seconds')::float8 FROM ace.tasks WHERE task_id = $1`, task.ID).Scan(&ran, &engine))
		if i%4 != 0 {
			runs[keep] = append(runs[keep], ran)
			arounds[keep] = append(arounds[keep], ran-engine)
		}
	}
	b.StopTimer()
	for keep, name := range map[bool]string{true: "kept", false: "opened"} {
		if len(runs[keep]) > 0 {
			b.ReportMetric(medianOf(runs[keep])*1000, "ms-run-"+name)
			b.ReportMetric(medianOf(arounds[keep])*1000, "ms-around-"+name)
		}
	}
}

func medianOf(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
