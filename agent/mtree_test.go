package agent_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/mtree"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// treeSetup is setup whose slots are dropped when the test ends, after its agents stop.
func treeSetup(t *testing.T, ddl string) *diffEnv {
	t.Helper()
	e := setupNoAgents(t, ddl)
	e.DropSlotsAtEnd()
	for _, n := range e.Nodes {
		n.StartAgent(t)
	}
	return e
}

// submit runs a task-submitting SQL expression on n1 and waits for the task.
func (e *diffEnv) submit(expr string, params ...any) (uuid.UUID, sqlapi.Task) {
	e.t.Helper()
	n1 := e.Node("n1")
	var id uuid.UUID
	require.NoError(e.t, n1.Pool.QueryRow(context.Background(), `SELECT `+expr, params...).Scan(&id))
	return id, n1.Wait(e.t, id)
}

// completed runs a task that must complete and decodes its result into out.
func (e *diffEnv) completed(out any, expr string, params ...any) uuid.UUID {
	e.t.Helper()
	id, task := e.submit(expr, params...)
	require.Equal(e.t, sqlapi.StatusCompleted, task.Status, "task error: %v", task.Error)
	require.NoError(e.t, json.Unmarshal(task.Result, out))
	return id
}

func TestMtreeFindsWhatTableDiffFinds(t *testing.T) {
	t.Parallel()
	// Never analysed, so the tree keeps lanes, whose leaves the changed keys can settle.
	e := treeSetup(t, `CREATE TABLE public.t (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = off);
		INSERT INTO public.t SELECT g, 'v' || g FROM generate_series(1, 5000) g`)
	var built map[string]any
	e.completed(&built, `ace.mtree_build('public.t', leaf_rows => 100)`)
	require.EqualValues(t, 50, built["leaves"])
	require.Equal(t, "lanes", built["leaf_summary"])
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, e.Node("n1").Pool.QueryRow(context.Background(),
			`SELECT count(*) FROM ace.mtree_status('public.t') WHERE leaf_summary = 'lanes'`).Scan(&n))
		return n == 3
	}, time.Minute, 50*time.Millisecond, "every node's tree status shows its leaf summary")

	var s engine.DiffSummary
	e.completed(&s, `ace.mtree_diff('public.t')`)
	require.Zero(t, s.DifferingKeys)

	e.Node("n2").Exec(t, `UPDATE public.t SET v = 'changed' WHERE id = 10`)
	e.Node("n3").Exec(t, `INSERT INTO public.t VALUES (6000, 'extra')`)
	e.Node("n1").Exec(t, `DELETE FROM public.t WHERE id = 4000`)
	id := e.completed(&s, `ace.mtree_diff('public.t')`)
	require.EqualValues(t, 3, s.DifferingKeys, "summary %+v", s)
	require.NotNil(t, s.Mtree)
	t.Logf("mtree stats: %+v, took %s", *s.Mtree, s.TimeTaken)
	require.Equal(t, 3, s.Mtree.SettledLeaves, "the changed keys explained every differing leaf")
	got := keys(e.diffRows(id))
	_, want := e.completedDiff(`'public.t'`)
	require.Equal(t, keys(want), got)

	// An earlier difference (id 10, whose change the last diff consumed) sits in the same leaf as
	// a new change: the new changed key does not explain the leaf, which is narrowed down.
	e.Node("n2").Exec(t, `UPDATE public.t SET v = 'streamed' WHERE id = 15`)
	id = e.completed(&s, `ace.mtree_diff('public.t')`)
	require.Zero(t, s.Mtree.SettledLeaves, "%+v", *s.Mtree)
	require.Contains(t, keys(e.diffRows(id)), `{"id": 10}`)
	require.Contains(t, keys(e.diffRows(id)), `{"id": 15}`)
	require.EqualValues(t, 4, s.DifferingKeys)
}

func TestMtreeRebalancesAppendedKeys(t *testing.T) {
	t.Parallel()
	e := treeSetup(t, `CREATE TABLE public.t (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT '2026-11-30 12:00+00', v text);
		INSERT INTO public.t (v) SELECT 'v' || g FROM generate_series(1, 5000) g`)
	var built map[string]any
	e.completed(&built, `ace.mtree_build('public.t', leaf_rows => 1000)`)
	// Ever-increasing keys all land past the last bound, in the last leaf.
	e.ExecAll(`INSERT INTO public.t (v) SELECT 'appended' FROM generate_series(1, 100000)`)
	var s engine.DiffSummary
	e.completed(&s, `ace.mtree_diff('public.t')`)
	require.Zero(t, s.DifferingKeys)
	require.Positive(t, s.Mtree.Splits)
	requireBalancedLeaves(t, e.Env, 1000)
	var leaves int
	require.NoError(t, e.Node("n2").Pool.QueryRow(context.Background(), `SELECT count(*) FROM ace.mtree_leaves`).Scan(&leaves))
	require.GreaterOrEqual(t, leaves, 105000/2000, "the appended rows were spread over new leaves")

	// Deleting most rows merges leaves again, still the same on every node.
	e.ExecAll(`DELETE FROM public.t WHERE id % 10 <> 0`)
	e.completed(&s, `ace.mtree_diff('public.t')`)
	require.Zero(t, s.DifferingKeys)
	require.Positive(t, s.Mtree.Merges)
	requireBalancedLeaves(t, e.Env, 1000)
}

func TestMtreeTeardownLeavesNothing(t *testing.T) {
	t.Parallel()
	e := treeSetup(t, `CREATE TABLE public.a (id int PRIMARY KEY); CREATE TABLE public.b (id int PRIMARY KEY);
		INSERT INTO public.a SELECT generate_series(1, 100); INSERT INTO public.b SELECT generate_series(1, 100)`)
	var built map[string]any
	e.completed(&built, `ace.mtree_build('public.a')`)
	e.completed(&built, `ace.mtree_build('public.b')`)
	requireTracked(t, e, 2, true)

	var res map[string]any
	e.completed(&res, `ace.mtree_teardown('public.a')`)
	requireTracked(t, e, 1, true)

	t.Run("failed build", func(t *testing.T) {
		// n3 cannot publish public.c, so the build fails after n1 and n2 published it.
		e.ExecAll(`CREATE TABLE public.c (id int PRIMARY KEY)`)
		e.Node("n3").Exec(t, `ALTER TABLE public.c REPLICA IDENTITY NOTHING`)
		_, task := e.submit(`ace.mtree_build('public.c')`)
		require.Equal(t, sqlapi.StatusFailed, task.Status)
		require.Contains(t, *task.Error, "REPLICA IDENTITY NOTHING")
		requireTracked(t, e, 1, true)
	})

	e.completed(&res, `ace.mtree_teardown()`)
	requireTracked(t, e, 0, false)
}

// requireTracked checks every node's trees, publications and slot.
func requireTracked(t *testing.T, e *diffEnv, trees int, slot bool) {
	t.Helper()
	ctx := context.Background()
	for _, n := range e.Nodes {
		var gotTrees, pubs, leaves, pending, slots int
		require.NoError(t, n.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM ace.mtrees), (SELECT count(*) FROM pg_publication WHERE pubname LIKE 'ace_mtree%'),
			(SELECT count(*) FROM ace.mtree_leaves l WHERE NOT EXISTS (SELECT 1 FROM ace.mtrees m WHERE m.tree_id = l.tree_id)),
			(SELECT count(*) FROM ace.mtree_pending p WHERE NOT EXISTS (SELECT 1 FROM ace.mtrees m WHERE m.tree_id = p.tree_id)),
			(SELECT count(*) FROM pg_replication_slots WHERE database = current_database())`).Scan(&gotTrees, &pubs, &leaves, &pending, &slots))
		require.Equal(t, trees, gotTrees, "trees on %s", n.Name)
		require.Equal(t, trees, pubs, "publications on %s", n.Name)
		require.Zero(t, leaves+pending, "orphaned rows on %s", n.Name)
		if slot {
			require.Equal(t, 1, slots, "slot on %s", n.Name)
		} else {
			require.Eventually(t, func() bool {
				require.NoError(t, n.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE database = current_database()`).Scan(&slots))
				return slots == 0
			}, 10*time.Second, 50*time.Millisecond, "slot left on %s", n.Name)
		}
	}
}

func TestMtreeDiffRefusesAStaleTree(t *testing.T) {
	t.Parallel()
	e := setupNoAgents(t, `CREATE TABLE public.t (id int PRIMARY KEY, v text); INSERT INTO public.t SELECT g, 'v' FROM generate_series(1, 300) g`)
	e.DropSlotsAtEnd()
	agents := map[string]interface{ Stop() error }{}
	for _, n := range e.Nodes {
		agents[n.Name] = n.StartAgent(t)
	}
	var built map[string]any
	e.completed(&built, `ace.mtree_build('public.t')`)

	t.Run("agent down", func(t *testing.T) {
		require.NoError(t, agents["n3"].Stop())
		e.Node("n3").Exec(t, `UPDATE public.t SET v = 'unseen' WHERE id = 7`)
		_, task := e.submit(`ace.mtree_diff('public.t', cdc_timeout => '2 seconds')`)
		require.Equal(t, sqlapi.StatusFailed, task.Status, "result: %s; stream: %v", task.Result, statusRows(t, e))
		require.Contains(t, *task.Error, "node n3")
		require.Contains(t, *task.Error, "is ace-agent running there")
		require.Contains(t, *task.Error, "ace.table_diff")
	})
	t.Run("slot dropped", func(t *testing.T) {
		e.Node("n3").Exec(t, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = current_database()`)
		_, task := e.submit(`ace.mtree_diff('public.t', cdc_timeout => '2 seconds')`)
		require.Equal(t, sqlapi.StatusFailed, task.Status)
		require.Contains(t, *task.Error, "node n3")
		require.Contains(t, *task.Error, "slot")
		require.Contains(t, *task.Error, "ace.mtree_build")
	})
	t.Run("rebuilt", func(t *testing.T) {
		agents["n3"] = e.Node("n3").StartAgent(t)
		e.completed(&built, `ace.mtree_build('public.t')`)
		var s engine.DiffSummary
		e.completed(&s, `ace.mtree_diff('public.t')`)
		require.EqualValues(t, 1, s.DifferingKeys, "the change made while n3's agent was down: %+v", *s.Mtree)
	})
}

func TestMtreeStatusShowsEveryNode(t *testing.T) {
	t.Parallel()
	e := treeSetup(t, `CREATE TABLE public.t (id int PRIMARY KEY); INSERT INTO public.t SELECT generate_series(1, 2500)`)
	var built map[string]any
	e.completed(&built, `ace.mtree_build('public.t', leaf_rows => 1000)`)
	require.Eventually(t, func() bool {
		var nodes int
		var leaves *int
		var warnings int
		err := e.Node("n1").Pool.QueryRow(context.Background(), `SELECT count(DISTINCT node_name), min(leaves), count(warning)
			FROM ace.mtree_status('public.t') WHERE row_count = 2500 AND hash_version = $1 AND confirmed_lsn IS NOT NULL AND retained_wal_bytes >= 0`,
			engine.HashVersion).Scan(&nodes, &leaves, &warnings)
		require.NoError(t, err)
		return nodes == 3 && leaves != nil && *leaves == 3 && warnings == 0
	}, 10*time.Second, 100*time.Millisecond, "status: %v", statusRows(t, e))
}

func statusRows(t *testing.T, e *diffEnv) []string {
	rows, err := e.Node("n1").Pool.Query(context.Background(), `SELECT to_jsonb(s)::text FROM ace.mtree_status() s`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}

// Compaction folds pending keys onto leaves, skips a tree a task holds, and changes nothing a
// diff finds.
func TestMtreeCompaction(t *testing.T) {
	t.Parallel()
	e := treeSetup(t, `CREATE TABLE public.t (id int PRIMARY KEY, v text); INSERT INTO public.t SELECT g, 'v' FROM generate_series(1, 2000) g`)
	var built map[string]any
	e.completed(&built, `ace.mtree_build('public.t', leaf_rows => 100)`)
	n2 := e.Node("n2")
	n2.Exec(t, `UPDATE public.t SET v = 'drift' WHERE id % 97 = 0`)
	ctx := context.Background()
	agentNode, err := engine.OpenNode(ctx, engine.NodeOptions{Name: "n2", ConnInfo: n2.DSN, MaxConns: 2})
	require.NoError(t, err)
	defer agentNode.Close()
	require.Eventually(t, func() bool {
		var pending int
		require.NoError(t, n2.Pool.QueryRow(ctx, `SELECT count(*) FROM ace.mtree_pending`).Scan(&pending))
		return pending == 20
	}, 10*time.Second, 20*time.Millisecond, "the stream records the 20 changed keys")

	t.Run("a held tree is skipped", func(t *testing.T) {
		tx, err := n2.Pool.Begin(ctx)
		require.NoError(t, err)
		defer tx.Rollback(ctx)
		_, err = tx.Exec(ctx, `SELECT 1 FROM ace.mtrees FOR UPDATE`)
		require.NoError(t, err)
		moved, err := mtree.Compact(ctx, agentNode, 1)
		require.NoError(t, err)
		require.Zero(t, moved)
	})
	moved, err := mtree.Compact(ctx, agentNode, 1)
	require.NoError(t, err)
	require.Positive(t, moved)
	var pending, dirty int
	require.NoError(t, n2.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM ace.mtree_pending), (SELECT count(DISTINCT leaf_id) FROM ace.mtree_dirty)`).Scan(&pending, &dirty))
	require.Zero(t, pending)
	require.Equal(t, 20, dirty, "ids 97, 194, … fall in 20 leaves of 100 rows")

	var s engine.DiffSummary
	id := e.completed(&s, `ace.mtree_diff('public.t')`)
	require.EqualValues(t, 20, s.DifferingKeys)
	require.Equal(t, 20, s.Mtree.LeavesRefreshed["n2"])
	_, want := e.completedDiff(`'public.t'`)
	require.Equal(t, keys(want), keys(e.diffRows(id)))
}

// recheck_after rechecks an mtree diff's differences at fresh snapshots, as a table-diff's.
func TestMtreeDiffRecheckReadsFreshSnapshots(t *testing.T) {
	t.Parallel()
	e := treeSetup(t, `CREATE TABLE public.lag (id int PRIMARY KEY, v text); INSERT INTO public.lag SELECT g, 'v' FROM generate_series(1, 500) g`)
	var built map[string]any
	e.completed(&built, `ace.mtree_build('public.lag', leaf_rows => 100)`)
	e.Node("n2").Exec(t, `UPDATE public.lag SET v = 'in flight' WHERE id = 10`)
	e.Node("n3").Exec(t, `UPDATE public.lag SET v = 'drifted' WHERE id = 20`)
	n1 := e.Node("n1")
	var id uuid.UUID
	require.NoError(t, n1.Pool.QueryRow(t.Context(), `SELECT ace.mtree_diff('public.lag', recheck_after => '3 seconds')`).Scan(&id))
	waitForPhase(t, n1, id, "waiting")
	e.Node("n2").Exec(t, `UPDATE public.lag SET v = 'v' WHERE id = 10`)
	task := n1.Wait(t, id)
	require.Equal(t, sqlapi.StatusCompleted, task.Status, "%v", task.Error)
	var s engine.DiffSummary
	require.NoError(t, json.Unmarshal(task.Result, &s))
	require.EqualValues(t, 1, s.DifferingKeys)
	require.EqualValues(t, 1, s.TransientDiffs)
	require.Equal(t, []string{`{"id": 20}`}, keys(e.diffRows(id)))
}
