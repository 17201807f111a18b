package sqlapi_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// A tree built without leaf_rows gets 250 rows a leaf, by SQL and by a task row alike: few
// enough that a diff after scattered changes rehashes little, many enough that comparing every
// leaf of a 10,000,000-row table stays small (docs/performance.md, issue 21).
func TestMtreeBuildDefaultLeafRows(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	n1 := e.Node("n1")
	n1.Exec(t, `CREATE TABLE public.t (id int PRIMARY KEY, v text)`)
	ctx := context.Background()
	leafRows := func(t *testing.T, id string) int {
		var n int
		require.NoError(t, n1.Pool.QueryRow(ctx, `SELECT (args->>'leaf_rows')::int FROM ace.tasks WHERE task_id = $1`, id).Scan(&n))
		return n
	}
	t.Run("ace.mtree_build", func(t *testing.T) {
		var id string
		require.NoError(t, n1.Pool.QueryRow(ctx, `SELECT ace.mtree_build('public.t')::text`).Scan(&id))
		require.Equal(t, 250, leafRows(t, id))
	})
	t.Run("a task row without leaf_rows", func(t *testing.T) {
		id, err := sqlapi.Submit(ctx, n1.Pool, sqlapi.TypeMtreeBuild, sqlapi.MtreeBuildArgs{TableName: "public.t"})
		require.NoError(t, err)
		require.Equal(t, 250, leafRows(t, id.String()))
	})
}
