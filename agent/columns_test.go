package agent_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/sqlapi"
)

// table-diff's columns option compares the key and the named columns only: a change elsewhere is
// not drift, the stored rows hold only those columns, a rerun keeps to them, and repairing from
// such a diff is refused (its rows are not whole rows).
func TestTableDiffColumns(t *testing.T) {
	t.Parallel()
	e := setup(t, `CREATE TABLE public.c (id int PRIMARY KEY, status text, amount numeric, note text);
		INSERT INTO c SELECT g, 's' || g, g * 1.5, 'n' || g FROM generate_series(1, 300) g`)
	e.Node("n2").Exec(t, `UPDATE c SET note = 'not compared' WHERE id = 5`)
	e.Node("n2").Exec(t, `UPDATE c SET status = 'compared' WHERE id = 6`)
	e.Node("n3").Exec(t, `DELETE FROM c WHERE id = 7`)

	s, rows := e.completedDiff(`'public.c', columns => ARRAY['status', 'amount', 'id']`)
	require.Equal(t, []string{`{"id": 6}`, `{"id": 7}`}, keys(rows), "the note of row 5 is not compared")
	require.Equal(t, []string{"id", "status", "amount"}, s.Columns, "the key and the named columns, in table order")
	require.Equal(t, []string{"status", "amount", "id"}, s.CompareColumns)
	require.Equal(t, map[string]any{"id": float64(6), "status": "compared", "amount": "9.0"}, rows[`{"id": 6}`].Rows["n2"])

	_, all := e.completedDiff(`'public.c'`)
	require.Equal(t, []string{`{"id": 5}`, `{"id": 6}`, `{"id": 7}`}, keys(all), "without columns, every column counts")

	ctx := context.Background()
	n1 := e.Node("n1")
	t.Run("unknown columns are named", func(t *testing.T) {
		var id uuid.UUID
		err := n1.Pool.QueryRow(ctx, `SELECT ace.table_diff('public.c', columns => ARRAY['status', 'colour', 'size'])`).Scan(&id)
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr)
		require.Equal(t, pgerrcode.UndefinedColumn, pgErr.Code)
		require.Contains(t, pgErr.Message, "has no column colour, size")
		require.Contains(t, pgErr.Hint, "id, status, amount, note")
	})
	t.Run("a repair from a column-subset diff is refused", func(t *testing.T) {
		diffID, _ := e.diff(`'public.c', columns => ARRAY['status']`)
		var id uuid.UUID
		err := n1.Pool.QueryRow(ctx, `SELECT ace.table_repair($1, 'n1')`, diffID).Scan(&id)
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr)
		require.Equal(t, pgerrcode.ObjectNotInPrerequisiteState, pgErr.Code)
		require.Contains(t, pgErr.Message, "compared only the columns status")
	})
	t.Run("a rerun compares the same columns", func(t *testing.T) {
		diffID, _ := e.diff(`'public.c', columns => ARRAY['status']`)
		var id uuid.UUID
		require.NoError(t, n1.Pool.QueryRow(ctx, `SELECT ace.table_rerun($1)`, diffID).Scan(&id))
		task := n1.Wait(t, id)
		require.Equal(t, sqlapi.StatusCompleted, task.Status, "task error: %v", task.Error)
		require.Equal(t, []string{`{"id": 6}`, `{"id": 7}`}, keys(e.diffRows(id)))
	})
}
