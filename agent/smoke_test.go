package agent_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

func TestSmoke(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	e.ExecAll(`CREATE TABLE t (id int PRIMARY KEY, v text)`)
	e.ExecAll(`INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 1000) g`)
	e.Node("n2").Exec(t, `UPDATE t SET v = 'changed' WHERE id = 500`)
	e.Node("n3").Exec(t, `DELETE FROM t WHERE id = 7`)
	n1 := e.Node("n1")
	n1.StartAgent(t)
	var id uuid.UUID
	require.NoError(t, n1.Pool.QueryRow(context.Background(), `SELECT ace.table_diff('public.t')`).Scan(&id))
	task := n1.Wait(t, id)
	require.Equal(t, sqlapi.StatusCompleted, task.Status, "error: %v", task.Error)
	t.Logf("result: %s", task.Result)
	rows, err := n1.Pool.Query(context.Background(), `SELECT pk::text, kind, rows::text FROM ace.diff_rows($1)`, id)
	require.NoError(t, err)
	for rows.Next() {
		var pk, kind, r string
		require.NoError(t, rows.Scan(&pk, &kind, &r))
		t.Logf("%s %s %s", pk, kind, r)
	}
}
