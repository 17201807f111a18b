package agent_test

import (
	"encoding/json"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/internal/acesample"
	"github.com/ace-agent/ace-agent/sqlapi"
)

func TestImportedACEDiffCanBeRepaired(t *testing.T) {
	t.Parallel()
	e := setup(t, "")
	pools := map[string]*pgxpool.Pool{}
	for _, n := range e.Nodes {
		pools[n.Name] = n.Pool
	}
	require.NoError(t, acesample.Load(t.Context(), pools))
	file, err := acesample.Read()
	require.NoError(t, err)

	// Our own diff of the table finds exactly what ACE found.
	s, rows := e.completedDiff(`$1`, acesample.Table)
	require.Len(t, rows, 20)
	require.Equal(t, map[string]int64{"n1/n2": 10, "n1/n3": 10, "n2/n3": 20}, s.DiffRowsCount)

	n1 := e.Node("n1")
	var id uuid.UUID
	require.NoError(t, n1.Pool.QueryRow(t.Context(), `SELECT ace.diff_import($1::jsonb, 'sample.json')`, string(file)).Scan(&id))
	task := n1.Wait(t, id)
	require.Equal(t, sqlapi.StatusCompleted, task.Status, "import error: %v", task.Error)
	var imported engine.DiffSummary
	require.NoError(t, json.Unmarshal(task.Result, &imported))
	require.EqualValues(t, 20, imported.DifferingKeys)
	require.Equal(t, s.DiffRowsCount, imported.DiffRowsCount)
	require.Equal(t, []string{"n1", "n2", "n3"}, imported.Nodes)
	require.Equal(t, "public.customers_sample", imported.TableName)
	importedRows := e.diffRows(id)
	require.Equal(t, keys(rows), keys(importedRows))
	for k, r := range rows {
		require.Equal(t, r.Rows, importedRows[k].Rows, "key %s: the import encodes values as a diff does", k)
	}

	// A rerun of the imported diff finds the same keys; the repair checks every row against the
	// file's view of it, so nothing is skipped.
	_, rerun := e.completedRerun(id)
	require.EqualValues(t, 20, rerun.DifferingKeys)
	_, rs := e.completedRepair(id, `'n1'`)
	require.True(t, rs.FullyRepaired, "%+v", rs)
	require.EqualValues(t, 0, rs.Skipped)
	e.requireInSync(acesample.Table)
}

func TestImportRejectsABadFileAtOnce(t *testing.T) {
	t.Parallel()
	e := setup(t, `CREATE TABLE public.v (id int PRIMARY KEY, x text)`)
	n1 := e.Node("n1")
	// The cases share one cluster: they run sequentially, without t.Parallel.
	for _, c := range []struct{ name, file, msg string }{
		{"not a diff file", `{"rows": []}`, "not an ACE diff file"},
		{"unknown table", `{"diffs": {}, "summary": {"schema": "public", "table": "nope", "nodes": ["n1", "n2"], "primary_key": ["id"]}}`, `table "public.nope" does not exist`},
		{"unknown node", `{"diffs": {}, "summary": {"schema": "public", "table": "v", "nodes": ["n1", "n9"], "primary_key": ["id"]}}`, "unknown node(s): n9"},
		{"other primary key", `{"diffs": {}, "summary": {"schema": "public", "table": "v", "nodes": ["n1", "n2"], "primary_key": ["x"]}}`, "the diff file's primary key (x) is not the primary key of public.v here (id)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var id string
			err := n1.Pool.QueryRow(t.Context(), `SELECT ace.diff_import($1::jsonb)`, c.file).Scan(&id)
			require.ErrorContains(t, err, c.msg, c.file)
		})
	}
}

func TestRunTableRepairAndRerunProcedures(t *testing.T) {
	t.Parallel()
	e := setup(t, `CREATE TABLE public.v (id int PRIMARY KEY, x text)`)
	e.ExecAll(`INSERT INTO v SELECT g, 'x' FROM generate_series(1, 100) g`)
	e.Node("n2").Exec(t, `UPDATE v SET x = 'y' WHERE id = 1`)
	diff := e.diffID("public.v")
	conn, notices := connectWithNotices(t, e.Node("n1").DSN)
	var status, outcome string
	var summary map[string]any
	require.NoError(t, conn.QueryRow(t.Context(), `CALL ace.run_table_repair($1, source_of_truth => 'n1')`, diff).
		Scan(new(uuid.UUID), &status, &outcome, &summary))
	require.Equal(t, "COMPLETED", status)
	require.Equal(t, true, summary["fully_repaired"])
	require.Contains(t, notices()[0], "submitted table-repair task")
	const repaired = "public.v: n2 0 inserted, 1 updated, 0 deleted, 0 skipped; n3 0 inserted, 0 updated, 0 deleted, 0 skipped"
	require.Contains(t, last(notices(), 2), repaired)
	require.Equal(t, repaired, outcome, "the short line beside the summary")
	require.Contains(t, last(notices(), 1), "SELECT * FROM ace.repair_rows(")

	var differing int64
	require.NoError(t, conn.QueryRow(t.Context(), `CALL ace.run_table_rerun($1)`, diff).
		Scan(new(uuid.UUID), &status, &differing, &outcome, &summary))
	require.Equal(t, "COMPLETED", status)
	require.EqualValues(t, 0, differing)
	require.Equal(t, "all previously reported differences have been resolved", outcome)
	require.Contains(t, last(notices(), 1), "all previously reported differences have been resolved")
}
