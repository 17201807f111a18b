package agent_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// treeEnv is a diffEnv whose slots are dropped when the test ends, after its agents stop.
func treeSetup(t *testing.T, ddl string) *diffEnv {
	t.Helper()
	e := setupNoAgents(t, ddl)
	t.Cleanup(func() {
		for _, n := range e.Nodes {
			_, _ = n.Pool.Exec(context.Background(), `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
				WHERE database = current_database() AND NOT active`)
		}
	})
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
	e := treeSetup(t, `CREATE TABLE public.t (id int PRIMARY KEY, v text);
		INSERT INTO public.t SELECT g, 'v' || g FROM generate_series(1, 5000) g`)
	var built map[string]any
	e.completed(&built, `ace.mtree_build('public.t', leaf_rows => 100)`)
	require.EqualValues(t, 50, built["leaves"])

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
	got := keys(e.diffRows(id))
	_, want := e.completedDiff(`'public.t'`)
	require.Equal(t, keys(want), got)
}
