package agent_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine/repair"
)

// A repair decides "unchanged since the diff" and "already in sync" with the diff's value
// semantics: a numeric's scale is not a change, a float's -0 is.
func TestRepairComparesRowsByTheDiffsValueSemantics(t *testing.T) {
	t.Parallel()
	e := setup(t, `CREATE TABLE m (id int PRIMARY KEY, amount numeric, f float8, note text);
		INSERT INTO m SELECT g, 3000.00, 0, 'same' FROM generate_series(1, 10) g`)
	n2 := e.Node("n2")
	n2.Exec(t, `UPDATE m SET note = 'drift' WHERE id IN (1, 2, 3, 4)`)
	diff := e.diffID("public.m")

	n2.Exec(t, `UPDATE m SET amount = 3000.0 WHERE id = 1`)                // the same value
	n2.Exec(t, `UPDATE m SET f = '-0' WHERE id = 2`)                       // another value
	n2.Exec(t, `UPDATE m SET note = 'same', amount = 3000.0 WHERE id = 4`) // in sync by value

	_, s := e.completedRepair(diff, `'n1'`)
	require.EqualValues(t, 2, s.Updated, "%+v", s)
	require.EqualValues(t, 1, s.SkippedByReason[repair.ReasonChangedSinceDiff])
	require.EqualValues(t, 1, s.SkippedByReason[repair.ReasonAlreadyInSync])
	require.Equal(t, "same", e.scalar("n2", `SELECT note FROM m WHERE id = 1`))
	require.Equal(t, "drift", e.scalar("n2", `SELECT note FROM m WHERE id = 2`))
}
