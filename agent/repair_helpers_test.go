package agent_test

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/repair"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// diffID runs a diff of table on n1 that must complete with differences, and returns its id.
func (e *diffEnv) diffID(table string) uuid.UUID {
	e.t.Helper()
	id, task := e.diff(`$1`, table)
	require.Equal(e.t, sqlapi.StatusCompleted, task.Status, "diff error: %v", task.Error)
	return id
}

// repair submits ace.table_repair on n1 with the given extra SQL arguments and waits for it.
func (e *diffEnv) repair(diff uuid.UUID, args string, params ...any) (uuid.UUID, sqlapi.Task) {
	e.t.Helper()
	sql := `SELECT ace.table_repair($1`
	if args != "" {
		sql += ", " + args
	}
	var id uuid.UUID
	require.NoError(e.t, e.Node("n1").Pool.QueryRow(context.Background(), sql+`)`, append([]any{diff}, params...)...).Scan(&id))
	return id, e.Node("n1").Wait(e.t, id)
}

// completedRepair runs a repair that must complete, and returns its summary.
func (e *diffEnv) completedRepair(diff uuid.UUID, args string, params ...any) (uuid.UUID, *repair.Summary) {
	e.t.Helper()
	id, task := e.repair(diff, args, params...)
	require.Equal(e.t, sqlapi.StatusCompleted, task.Status, "repair error: %v", task.Error)
	var s repair.Summary
	require.NoError(e.t, json.Unmarshal(task.Result, &s))
	return id, &s
}

// requireInSync runs a fresh diff of table and requires it to find nothing.
func (e *diffEnv) requireInSync(table string) {
	e.t.Helper()
	s, rows := e.completedDiff(`$1`, table)
	require.Empty(e.t, keys(rows), "rows still differing after the repair")
	require.True(e.t, s.InSync())
}

// reportRow is one row of ace.repair_rows.
type reportRow struct {
	Node, Action, Reason string
	PK, Before, After    map[string]any
	Applied              bool
}

// report reads ace.repair_rows(id), keyed by node and the key's JSON text.
func (e *diffEnv) report(id uuid.UUID) map[string]reportRow {
	e.t.Helper()
	rows, err := e.Node("n1").Pool.Query(context.Background(),
		`SELECT node, action, pk::text, coalesce(reason, ''), before, after, applied, pk FROM ace.repair_rows($1)`, id)
	require.NoError(e.t, err)
	out := map[string]reportRow{}
	for rows.Next() {
		var r reportRow
		var pk string
		require.NoError(e.t, rows.Scan(&r.Node, &r.Action, &pk, &r.Reason, &r.Before, &r.After, &r.Applied, &r.PK))
		out[r.Node+" "+pk] = r
	}
	require.NoError(e.t, rows.Err())
	return out
}

// count returns the number of rows of a query on a node.
func (e *diffEnv) scalar(node, sql string, args ...any) any {
	e.t.Helper()
	var v any
	require.NoError(e.t, e.Node(node).Pool.QueryRow(context.Background(), sql, args...).Scan(&v))
	return v
}

// completedRerun rechecks a diff's keys and returns the rerun's id and summary.
func (e *diffEnv) completedRerun(diff uuid.UUID) (uuid.UUID, *engine.DiffSummary) {
	e.t.Helper()
	var id uuid.UUID
	require.NoError(e.t, e.Node("n1").Pool.QueryRow(context.Background(), `SELECT ace.table_rerun($1)`, diff).Scan(&id))
	task := e.Node("n1").Wait(e.t, id)
	require.Equal(e.t, sqlapi.StatusCompleted, task.Status, "rerun error: %v", task.Error)
	var s engine.DiffSummary
	require.NoError(e.t, json.Unmarshal(task.Result, &s))
	return id, &s
}

// source is the node a repair copied a row from, as its report says.
func (e *diffEnv) source(id uuid.UUID, node string, key int64) string {
	e.t.Helper()
	var src string
	require.NoError(e.t, e.Node("n1").Pool.QueryRow(context.Background(),
		`SELECT coalesce(source, '') FROM ace.repair_rows($1) WHERE node = $2 AND pk->>'id' = $3::text`, id, node, fmt.Sprint(key)).Scan(&src))
	return src
}

func jsonUnmarshal(raw []byte, v any) error { return json.Unmarshal(raw, v) }

// idsOf lists the ids of a diff's rows, in order.
func (e *diffEnv) idsOf(diff uuid.UUID) []int64 {
	e.t.Helper()
	rows, err := e.Node("n1").Pool.Query(context.Background(), `SELECT (pk->>'id')::bigint FROM ace.diff_rows($1)`, diff)
	require.NoError(e.t, err)
	var ids []int64
	for rows.Next() {
		var id int64
		require.NoError(e.t, rows.Scan(&id))
		ids = append(ids, id)
	}
	require.NoError(e.t, rows.Err())
	return ids
}

// requireInSyncFrom runs a diff submitted on the given node (its agent coordinates it) and
// requires it to find nothing.
func (e *diffEnv) requireInSyncFrom(node, table string) {
	e.t.Helper()
	n := e.Node(node)
	var id uuid.UUID
	require.NoError(e.t, n.Pool.QueryRow(context.Background(), `SELECT ace.table_diff($1)`, table).Scan(&id))
	task := n.Wait(e.t, id)
	require.Equal(e.t, sqlapi.StatusCompleted, task.Status, "diff on %s: %v", node, task.Error)
	var s engine.DiffSummary
	require.NoError(e.t, json.Unmarshal(task.Result, &s))
	require.True(e.t, s.InSync(), "diff coordinated by %s: %+v", node, s.DiffRowsCount)
}
