package agent_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/sqlapi"
)

// submitRepairErr submits ace.table_repair on node and returns the error its validator raised.
func (e *diffEnv) submitRepairErr(node string, diff uuid.UUID, args string) *pgconn.PgError {
	e.t.Helper()
	var id uuid.UUID
	err := e.Node(node).Pool.QueryRow(context.Background(), `SELECT ace.table_repair($1, `+args+`)`, diff).Scan(&id)
	var pg *pgconn.PgError
	require.True(e.t, errors.As(err, &pg), "the repair must be refused at submission, got %v", err)
	return pg
}

// A diff that saw only part of the table (against_origin, until) is repaired only in
// recovery_mode: the rows it did not see are not in sync, and a plain repair of it would treat
// them as such.
func TestRecoveryGuardRefusesScopedDiffsWithoutRecoveryMode(t *testing.T) {
	t.Parallel()
	e := setup(t, `CREATE TABLE g (id int PRIMARY KEY, v text)`)
	e.ExecAll(`INSERT INTO g SELECT g, 'x' FROM generate_series(1, 10) g`)
	e.Node("n2").Exec(t, `UPDATE g SET v = 'y' WHERE id = 1`)

	for name, c := range map[string]struct{ diffArgs, scope string }{
		"until":          {`$1, until => now()`, "until => "},
		"against_origin": {`$1, against_origin => 'n2'`, "against_origin => 'n2'"},
		"both":           {`$1, against_origin => 'n2', until => now()`, "against_origin => 'n2' and until => "},
	} {
		t.Run(name, func(t *testing.T) {
			id, task := e.diff(c.diffArgs, "public.g")
			require.Equal(t, sqlapi.StatusCompleted, task.Status, "diff: %v", task.Error)
			for _, args := range []string{`'n1'`, `'n1', recovery_mode => false`, `strategy => 'latest_commit'`} {
				pg := e.submitRepairErr("n1", id, args)
				require.Equal(t, pgerrcode.ObjectNotInPrerequisiteState, pg.Code, args)
				require.Contains(t, pg.Message, "the diff was made with "+c.scope, args)
				require.Contains(t, pg.Message, "it is repaired only with recovery_mode => true", args)
				require.Contains(t, pg.Hint, "recovery_mode => true", args)
				require.Contains(t, pg.Hint, "diff it again without against_origin and until", args)
			}
			require.Equal(t, "y", e.scalar("n2", `SELECT v FROM g WHERE id = 1`))
		})
	}

	t.Run("recovery_mode with a source of truth repairs", func(t *testing.T) {
		id, task := e.diff(`$1, until => now()`, "public.g")
		require.Equal(t, sqlapi.StatusCompleted, task.Status, "diff: %v", task.Error)
		_, s := e.completedRepair(id, `'n1', recovery_mode => true`)
		require.True(t, s.FullyRepaired, "%+v", s)
		require.Equal(t, "x", e.scalar("n2", `SELECT v FROM g WHERE id = 1`))
	})

	t.Run("a whole-table diff needs no recovery_mode", func(t *testing.T) {
		e.Node("n3").Exec(t, `UPDATE g SET v = 'z' WHERE id = 2`)
		_, s := e.completedRepair(e.diffID("public.g"), `'n1'`)
		require.True(t, s.FullyRepaired, "%+v", s)
	})
}
