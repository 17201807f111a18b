package agent_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/sqlapi"
)

func TestMajorityRepairThroughSQL(t *testing.T) {
	t.Parallel()
	e := setup(t, `CREATE TABLE public.t (id int PRIMARY KEY, v text);
		INSERT INTO public.t SELECT g, 'v' || g FROM generate_series(1, 100) g`)
	e.Node("n2").Exec(t, `UPDATE public.t SET v = 'minority' WHERE id = 10`)
	e.Node("n1").Exec(t, `UPDATE public.t SET v = 'one' WHERE id = 20`)
	e.Node("n2").Exec(t, `UPDATE public.t SET v = 'two' WHERE id = 20`)
	diff := e.diffID("public.t")

	t.Run("a repair by majority", func(t *testing.T) {
		id, s := e.completedRepair(diff, `strategy => 'majority'`)
		require.Equal(t, "majority", s.Mode)
		require.EqualValues(t, 1, s.Updated)
		require.EqualValues(t, 3, s.Unresolved)
		report := e.report(id)
		require.Equal(t, "no_majority", report[`n3 {"id": 20}`].Reason)
		require.Equal(t, "update", report[`n2 {"id": 10}`].Action)
		require.Equal(t, "v10", e.scalar("n2", `SELECT v FROM public.t WHERE id = 10`))
	})

	t.Run("two nodes are refused", func(t *testing.T) {
		id, task := e.diff(`'public.t', nodes => ARRAY['n1', 'n2']`)
		require.Equal(t, sqlapi.StatusCompleted, task.Status)
		_, err := e.Node("n1").Pool.Exec(context.Background(), `SELECT ace.table_repair($1, strategy => 'majority')`, id)
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr)
		require.Equal(t, pgerrcode.InvalidParameterValue, pgErr.Code)
		require.Equal(t, "strategy majority needs a diff of three nodes or more; this diff has 2 (n1, n2)", pgErr.Message)
		require.Contains(t, pgErr.Hint, "source_of_truth")
	})
}

// nodeRows is a table's rows on a node with each row's xmin: a write of any kind changes them.
func nodeRows(t *testing.T, e *diffEnv, node, table string) []string {
	t.Helper()
	rows, err := e.Node(node).Pool.Query(context.Background(), `SELECT x::text || ' ' || xmin::text FROM `+table+` x ORDER BY 1`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}

// resyncOf runs ace.resync_node on n1 with the given SQL arguments and returns the task.
func resyncOf(t *testing.T, e *diffEnv, args string, params ...any) (uuid.UUID, sqlapi.Task) {
	t.Helper()
	var id uuid.UUID
	require.NoError(t, e.Node("n1").Pool.QueryRow(context.Background(), `SELECT ace.resync_node(`+args+`)`, params...).Scan(&id))
	return id, e.Node("n1").Wait(t, id)
}

type resyncSummary struct {
	NodeName      string   `json:"node_name"`
	Strategy      string   `json:"strategy"`
	Nodes         []string `json:"nodes"`
	TablesTotal   int      `json:"tables_total"`
	InSync        int      `json:"in_sync"`
	Repaired      int      `json:"repaired"`
	Inserted      int64    `json:"inserted"`
	Updated       int64    `json:"updated"`
	Deleted       int64    `json:"deleted"`
	FullyResynced bool     `json:"fully_resynced"`
	Tables        []struct {
		Table      string     `json:"table"`
		Status     string     `json:"status"`
		RepairTask *uuid.UUID `json:"repair_task"`
	} `json:"tables"`
}

func TestResyncNode(t *testing.T) {
	t.Parallel()
	e := setup(t, `CREATE TABLE public.a (id int PRIMARY KEY, v text);
		CREATE TABLE public.b (id int PRIMARY KEY, v text);
		CREATE TABLE public.same (id int PRIMARY KEY, v text);
		CREATE TABLE public.nokey (v text);
		INSERT INTO public.a SELECT g, 'a' || g FROM generate_series(1, 1000) g;
		INSERT INTO public.b SELECT g, 'b' || g FROM generate_series(1, 300) g;
		INSERT INTO public.same SELECT g, 's' || g FROM generate_series(1, 50) g`)
	// n3 comes back having lost table a, some rows of b, with a row of its own and a stale one.
	e.Node("n3").Exec(t, `TRUNCATE public.a; DELETE FROM public.b WHERE id % 10 = 0;
		INSERT INTO public.b VALUES (5000, 'only on n3'); UPDATE public.b SET v = 'stale' WHERE id = 7`)
	tables := []string{"public.a", "public.b", "public.same"}
	before := map[string][]string{}
	for _, n := range []string{"n1", "n2"} {
		for _, tbl := range tables {
			before[n+" "+tbl] = nodeRows(t, e, n, tbl)
		}
	}

	id, task := resyncOf(t, e, `'n3'`)
	require.Equal(t, sqlapi.StatusCompleted, task.Status, "resync error: %v", task.Error)
	var s resyncSummary
	require.NoError(t, json.Unmarshal(task.Result, &s))

	t.Run("every readable table with a key, each diffed on every node", func(t *testing.T) {
		require.Equal(t, "n3", s.NodeName)
		require.Equal(t, "majority", s.Strategy)
		require.Equal(t, []string{"n1", "n2", "n3"}, s.Nodes)
		require.Equal(t, 3, s.TablesTotal)
		got := map[string]string{}
		for _, tbl := range s.Tables {
			got[tbl.Table] = tbl.Status
		}
		require.Equal(t, map[string]string{"public.a": "repaired", "public.b": "repaired", "public.same": "in_sync"}, got)
		require.True(t, s.FullyResynced)
		require.EqualValues(t, 1000+30, s.Inserted)
		require.EqualValues(t, 1, s.Updated)
		require.EqualValues(t, 1, s.Deleted)
	})

	t.Run("the node gets the rows", func(t *testing.T) {
		for _, tbl := range tables {
			require.Equal(t, e.scalar("n1", `SELECT string_agg(x::text, ',' ORDER BY id) FROM `+tbl+` x`),
				e.scalar("n3", `SELECT string_agg(x::text, ',' ORDER BY id) FROM `+tbl+` x`), tbl)
		}
	})

	t.Run("no other node is written", func(t *testing.T) {
		for _, n := range []string{"n1", "n2"} {
			for _, tbl := range tables {
				require.Equal(t, before[n+" "+tbl], nodeRows(t, e, n, tbl), "%s on %s", tbl, n)
			}
		}
		var others int
		require.NoError(t, e.Node("n1").Pool.QueryRow(context.Background(), `SELECT count(*) FROM ace.repair_actions a
			JOIN ace.tasks c ON c.task_id = a.task_id WHERE c.args->>'parent_task' = $1 AND a.node <> 'n3'`, id.String()).Scan(&others))
		require.Zero(t, others, "the repairs acted on n3 only")
	})

	t.Run("the children are the submitter's diffs and repairs", func(t *testing.T) {
		var diffs, repairs int
		require.NoError(t, e.Node("n1").Pool.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE task_type = 'table-diff'),
			count(*) FILTER (WHERE task_type = 'table-repair' AND args->'target_nodes' = '["n3"]' AND args->>'strategy' = 'majority')
			FROM ace.tasks WHERE args->>'parent_task' = $1 AND status = 'COMPLETED'`, id.String()).Scan(&diffs, &repairs))
		require.Equal(t, 3, diffs)
		require.Equal(t, 2, repairs)
	})

	t.Run("a second resync finds the node in sync", func(t *testing.T) {
		_, task := resyncOf(t, e, `'n3', tables => ARRAY['public.a', 'public.b']`)
		require.Equal(t, sqlapi.StatusCompleted, task.Status, "resync error: %v", task.Error)
		var again resyncSummary
		require.NoError(t, json.Unmarshal(task.Result, &again))
		require.Equal(t, 2, again.InSync)
	})
}

func TestResyncNodeFromASourceOfTruth(t *testing.T) {
	t.Parallel()
	e := setup(t, `CREATE TABLE public.t (id int PRIMARY KEY, v text);
		INSERT INTO public.t SELECT g, 'v' || g FROM generate_series(1, 200) g`)
	e.Node("n2").Exec(t, `UPDATE public.t SET v = 'n2 only' WHERE id = 5`)
	e.Node("n3").Exec(t, `DELETE FROM public.t WHERE id > 100`)
	n1Before := nodeRows(t, e, "n1", "public.t")
	n3Before := nodeRows(t, e, "n3", "public.t")

	_, task := resyncOf(t, e, `'n2', source_of_truth => 'n1'`)
	require.Equal(t, sqlapi.StatusCompleted, task.Status, "resync error: %v", task.Error)
	var s resyncSummary
	require.NoError(t, json.Unmarshal(task.Result, &s))
	require.Equal(t, "source_of_truth", s.Strategy)
	require.Equal(t, []string{"n1", "n2"}, s.Nodes, "diffed between the source and the node only")
	require.EqualValues(t, 1, s.Updated)
	require.Equal(t, "v5", e.scalar("n2", `SELECT v FROM public.t WHERE id = 5`))
	require.Equal(t, n1Before, nodeRows(t, e, "n1", "public.t"))
	require.Equal(t, n3Before, nodeRows(t, e, "n3", "public.t"), "a node outside the resync is not touched")

	for _, c := range []struct{ args, msg string }{
		{`'n9'`, "unknown node: n9"},
		{`'n2', source_of_truth => 'n2'`, "node n2 cannot be resynced from itself"},
		{`'n2', strategy => 'latest_commit', source_of_truth => 'n1'`, "strategy latest_commit and source_of_truth cannot be combined"},
		{`'n2', strategy => 'vote'`, `unknown strategy "vote"`},
	} {
		_, err := e.Node("n1").Pool.Exec(context.Background(), `SELECT ace.resync_node(`+c.args+`)`)
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr, c.args)
		require.Equal(t, c.msg, pgErr.Message)
		require.Equal(t, pgerrcode.InvalidParameterValue, pgErr.Code)
	}
}

// childTask is the id of a resync's child of the given type.
func childTask(t *testing.T, e *diffEnv, parent uuid.UUID, taskType string) uuid.UUID {
	t.Helper()
	var id uuid.UUID
	require.NoError(t, e.Node("n1").Pool.QueryRow(context.Background(), `SELECT task_id FROM ace.tasks
		WHERE args->>'parent_task' = $1 AND task_type = $2`, parent.String(), taskType).Scan(&id))
	return id
}

func TestResyncNodeCopiesAnEmptiedTableWhole(t *testing.T) {
	t.Parallel()
	e := setup(t, `CREATE TABLE public.big (id int PRIMARY KEY, v text, n numeric);
		INSERT INTO public.big SELECT g, 'v' || g, g / 7.0 FROM generate_series(1, 2000) g;
		ANALYZE public.big`) // stored in key order, so a plain diff would take the ordered leaf digests
	e.Node("n3").Exec(t, `TRUNCATE public.big`)
	n1 := e.Node("n1").Pool
	ctx := context.Background()

	id, task := resyncOf(t, e, `'n3', ARRAY['public.big']`)
	require.Equal(t, sqlapi.StatusCompleted, task.Status, "resync error: %v", task.Error)
	var s resyncSummary
	require.NoError(t, json.Unmarshal(task.Result, &s))
	require.True(t, s.FullyResynced)
	require.EqualValues(t, 2000, s.Inserted)
	diffID, repairID := childTask(t, e, id, "table-diff"), childTask(t, e, id, "table-repair")

	t.Run("the node holds exactly the others' rows", func(t *testing.T) {
		require.Equal(t, e.scalar("n1", `SELECT string_agg(x::text, ',' ORDER BY id) FROM public.big x`),
			e.scalar("n3", `SELECT string_agg(x::text, ',' ORDER BY id) FROM public.big x`))
	})

	t.Run("the diff stored key ranges, which ace.diff_rows shows as ranges", func(t *testing.T) {
		var ranges, keys, others int64
		require.NoError(t, n1.QueryRow(ctx, `SELECT count(*) FILTER (WHERE kind = 'missing_range'),
			coalesce(sum((rows->>'rows')::bigint) FILTER (WHERE kind = 'missing_range' AND rows->'holders' = '["n1", "n2"]' AND rows->'empty' = '["n3"]'), 0),
			count(*) FILTER (WHERE kind <> 'missing_range') FROM ace.diff_rows($1)`, diffID).Scan(&ranges, &keys, &others))
		require.Positive(t, ranges)
		require.EqualValues(t, 2000, keys)
		require.Zero(t, others)
		var differing int64
		require.NoError(t, n1.QueryRow(ctx, `SELECT (result->>'differing_keys')::bigint FROM ace.tasks WHERE task_id = $1`, diffID).Scan(&differing))
		require.EqualValues(t, 2000, differing)
	})

	t.Run("the repair copied each range as one insert on the node", func(t *testing.T) {
		var actions, inserted, wrong int64
		require.NoError(t, n1.QueryRow(ctx, `SELECT count(*), coalesce(sum((after->>'rows')::bigint), 0),
			count(*) FILTER (WHERE action <> 'insert' OR node <> 'n3' OR NOT applied OR source NOT IN ('n1', 'n2'))
			FROM ace.repair_rows($1)`, repairID).Scan(&actions, &inserted, &wrong))
		require.Positive(t, actions)
		require.EqualValues(t, 2000, inserted)
		require.Zero(t, wrong)
	})

	t.Run("the table status counts every key", func(t *testing.T) {
		var differing int64
		require.NoError(t, n1.QueryRow(ctx, `SELECT (detail->>'differing_keys')::bigint FROM ace.events_since(0, ARRAY['table_out_of_sync'])
			WHERE task_id = $1 AND node_name = 'n3'`, diffID).Scan(&differing))
		require.EqualValues(t, 2000, differing, "the diff found n3 out of sync by every key of its ranges")
		require.Equal(t, map[string]string{"n1": "in_sync 0", "n2": "in_sync 0", "n3": "in_sync 0"}, verdicts(t, n1, "public.big"))
	})

	t.Run("a reader of rows is told the rows are on the nodes", func(t *testing.T) {
		err := sqlapi.ReadDiffRows(ctx, n1, diffID, func(engine.DiffRow) error { return nil })
		var rangeErr *sqlapi.KeyRangeError
		require.ErrorAs(t, err, &rangeErr)
		require.ErrorContains(t, err, "diff the table again with ace.table_diff")
	})

	t.Run("a rerun rechecks the ranges row by row", func(t *testing.T) {
		e.Node("n3").Exec(t, `DELETE FROM public.big WHERE id IN (5, 1500); UPDATE public.big SET v = 'later' WHERE id = 900`)
		rerun, summary := e.completedRerun(diffID)
		require.EqualValues(t, 3, summary.DifferingKeys)
		var keys []string
		rows, err := n1.Query(ctx, `SELECT pk::text FROM ace.diff_rows($1)`, rerun)
		require.NoError(t, err)
		keys, err = pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		require.Equal(t, []string{`{"id": 5}`, `{"id": 900}`, `{"id": 1500}`}, keys)
		require.Equal(t, map[string]string{"n1": "in_sync 0", "n2": "in_sync 0", "n3": "out_of_sync 3"}, verdicts(t, n1, "public.big"))
	})
}
