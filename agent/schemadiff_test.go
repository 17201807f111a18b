package agent_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/sqlapi"
)

// schemaDiff submits ace.schema_diff on n1 with the given SQL arguments and waits for it to
// complete.
func (e *diffEnv) schemaDiff(args string) (uuid.UUID, map[string]any) {
	e.t.Helper()
	n1 := e.Node("n1")
	var id uuid.UUID
	require.NoError(e.t, n1.Pool.QueryRow(context.Background(), `SELECT ace.schema_diff(`+args+`)`).Scan(&id))
	task := n1.Wait(e.t, id)
	require.Equal(e.t, sqlapi.StatusCompleted, task.Status, "task error: %v", task.Error)
	var result map[string]any
	require.NoError(e.t, json.Unmarshal(task.Result, &result))
	return id, result
}

type finding struct {
	ObjectType, ObjectName, Detail, Kind string
	Definitions                          map[string]*string
}

// findings reads ace.schema_diff_rows.
func (e *diffEnv) findings(id uuid.UUID) []finding {
	e.t.Helper()
	rows, err := e.Node("n1").Pool.Query(context.Background(),
		`SELECT object_type, object_name, detail, kind, definitions FROM ace.schema_diff_rows($1)`, id)
	require.NoError(e.t, err)
	var out []finding
	for rows.Next() {
		var f finding
		require.NoError(e.t, rows.Scan(&f.ObjectType, &f.ObjectName, &f.Detail, &f.Kind, &f.Definitions))
		out = append(out, f)
	}
	require.NoError(e.t, rows.Err())
	return out
}

func def(s string) *string { return &s }

// A column int on n1 and n3 but bigint on n2, a CHECK and an index only on n3, and a table
// only on n2: exactly those four findings, each with every node's definition.
func TestSchemaDiffStructureFindsEachDifference(t *testing.T) {
	t.Parallel()
	e := setup(t, `CREATE TABLE public.a (id int PRIMARY KEY, v int, w text)`)
	e.Node("n2").Exec(t, `ALTER TABLE a ALTER COLUMN v TYPE bigint`)
	e.Node("n3").Exec(t, `ALTER TABLE a ADD CONSTRAINT a_w_check CHECK (w <> '')`)
	e.Node("n3").Exec(t, `CREATE INDEX a_w_idx ON a (w)`)
	e.Node("n2").Exec(t, `CREATE TABLE public.only_n2 (id int PRIMARY KEY)`)

	id, result := e.schemaDiff(`'public', compare => 'structure'`)
	require.Equal(t, "structure", result["compare"])
	require.EqualValues(t, 4, result["findings"])
	require.ElementsMatch(t, []finding{
		{"column", "public.a.v", "type", "different", map[string]*string{"n1": def("integer"), "n2": def("bigint"), "n3": def("integer")}},
		{"constraint", "public.a.a_w_check", "", "missing", map[string]*string{"n1": nil, "n2": nil, "n3": def("CHECK (w <> ''::text)")}},
		{"index", "public.a.a_w_idx", "", "missing", map[string]*string{"n1": nil, "n2": nil, "n3": def("CREATE INDEX a_w_idx ON public.a USING btree (w)")}},
		{"table", "public.only_n2", "", "missing", map[string]*string{"n1": nil, "n2": def("TABLE public.only_n2"), "n3": nil}},
	}, e.findings(id))
}

// The same grants given in another order, an index renamed (with ignore_names), columns created
// in another order, and another search_path on one node are no differences.
func TestSchemaDiffStructureHasNoFalsePositives(t *testing.T) {
	t.Parallel()
	e := setup(t, `
		CREATE ROLE sd_reader_`+uniqueSuffix(t)+`;
		CREATE ROLE sd_writer_`+uniqueSuffix(t)+`;
		CREATE TYPE mood AS ENUM ('sad', 'ok');
		CREATE TABLE public.parent (id int PRIMARY KEY)`)
	reader, writer := "sd_reader_"+uniqueSuffix(t), "sd_writer_"+uniqueSuffix(t)
	t.Cleanup(func() {
		for _, n := range e.Nodes {
			_, _ = n.Pool.Exec(context.Background(), `DROP OWNED BY `+reader+`, `+writer+`; DROP ROLE `+reader+`; DROP ROLE `+writer)
		}
	})
	ordered := map[string]string{
		"n1": `CREATE TABLE public.c (id serial PRIMARY KEY, p int REFERENCES parent, m mood NOT NULL DEFAULT 'ok', note text COLLATE "C");
		       CREATE INDEX c_p_idx ON c (p);
		       GRANT SELECT ON c TO ` + reader + `; GRANT INSERT, UPDATE ON c TO ` + writer,
		"n2": `CREATE TABLE public.c (note text COLLATE "C", m mood NOT NULL DEFAULT 'ok', p int REFERENCES parent, id serial PRIMARY KEY);
		       CREATE INDEX c_parent_lookup ON c (p);
		       GRANT UPDATE ON c TO ` + writer + `; GRANT SELECT ON c TO ` + reader + `; GRANT INSERT ON c TO ` + writer,
		"n3": `CREATE TABLE public.c (m mood NOT NULL DEFAULT 'ok', id serial PRIMARY KEY, note text COLLATE "C", p int REFERENCES parent);
		       CREATE INDEX c_p_idx ON c (p);
		       GRANT INSERT ON c TO ` + writer + `; GRANT UPDATE ON c TO ` + writer + `; GRANT SELECT ON c TO ` + reader,
	}
	for name, ddl := range ordered {
		e.Node(name).Exec(t, ddl)
	}
	// The primary key's constraint names differ with the creation order? They do not; the
	// sequence's name does not either. A node whose sessions search another path first must
	// still render the same definitions.
	e.Node("n2").Exec(t, `ALTER DATABASE `+e.DB+` SET search_path = pg_catalog`)

	t.Run("renamed index without ignore_names", func(t *testing.T) {
		id, result := e.schemaDiff(`'public', compare => 'structure', compare_privileges => true`)
		require.EqualValues(t, 2, result["findings"], "%+v", e.findings(id))
		for _, f := range e.findings(id) {
			require.Equal(t, "index", f.ObjectType)
		}
	})
	t.Run("ignore_names", func(t *testing.T) {
		id, result := e.schemaDiff(`'public', compare => 'structure', compare_privileges => true, ignore_names => true`)
		require.EqualValues(t, 0, result["findings"], "%+v", e.findings(id))
	})
	t.Run("a different grant is found", func(t *testing.T) {
		e.Node("n3").Exec(t, `REVOKE UPDATE ON c FROM `+writer)
		t.Cleanup(func() { e.Node("n3").Exec(t, `GRANT UPDATE ON c TO `+writer) })
		id, _ := e.schemaDiff(`'public', compare => 'structure', compare_privileges => true, ignore_names => true`)
		f := e.findings(id)
		require.Len(t, f, 1)
		require.Equal(t, "privileges", f[0].Detail)
		require.Equal(t, "different", f[0].Kind)
	})
}

// uniqueSuffix makes role names (cluster-wide) unique to the test's database.
func uniqueSuffix(t *testing.T) string {
	return uuid.NewSHA1(uuid.NameSpaceOID, []byte(t.Name())).String()[:8]
}

// The data comparison: drift in one table, a table missing on one node, a table whose column
// types differ (failed, not diffed), a skipped table with drift, and a per-role running limit
// of 1, which the parent must not deadlock on: it holds no running slot while it waits.
func TestSchemaDiffData(t *testing.T) {
	t.Parallel()
	e := setup(t, `
		CREATE TABLE public.same (id int PRIMARY KEY, v text);
		CREATE TABLE public.drift (id int PRIMARY KEY, v text);
		CREATE TABLE public.skipped (id int PRIMARY KEY, v text);
		CREATE TABLE public.typed (id int PRIMARY KEY, v int);
		INSERT INTO same SELECT g, 'v' || g FROM generate_series(1, 500) g;
		INSERT INTO drift SELECT g, 'v' || g FROM generate_series(1, 500) g;
		INSERT INTO skipped SELECT g, 'v' || g FROM generate_series(1, 50) g;`)
	e.Node("n1").Exec(t, `UPDATE ace.settings SET value = '1' WHERE name = 'max_running_tasks_per_role'`)
	e.Node("n2").Exec(t, `UPDATE drift SET v = 'changed' WHERE id IN (7, 8)`)
	e.Node("n3").Exec(t, `DELETE FROM skipped WHERE id = 1`)
	e.Node("n2").Exec(t, `ALTER TABLE typed ALTER COLUMN v TYPE bigint`)
	e.Node("n1").Exec(t, `CREATE TABLE public.partial (id int PRIMARY KEY)`)
	e.Node("n2").Exec(t, `CREATE TABLE public.partial (id int PRIMARY KEY)`)

	id, result := e.schemaDiff(`'public', skip_tables => ARRAY['public.skipped']`)
	require.Equal(t, "data", result["compare"])
	require.EqualValues(t, 4, result["tables_total"])
	require.Equal(t, []any{"public.same"}, result["identical"])
	require.Equal(t, []any{"public.skipped"}, result["skipped"])
	require.Equal(t, []any{map[string]any{"table": "public.partial", "present_on": []any{"n1", "n2"}, "missing_from": []any{"n3"}}}, result["missing"])
	failed := result["failed"].([]any)
	require.Len(t, failed, 1)
	require.Equal(t, "public.typed", failed[0].(map[string]any)["table"])
	require.Contains(t, failed[0].(map[string]any)["error"], "bigint")
	differed := result["differed"].([]any)
	require.Len(t, differed, 1)
	d := differed[0].(map[string]any)
	require.Equal(t, "public.drift", d["table"])
	require.EqualValues(t, 2, d["differing_keys"])

	// Each child is a table-diff that names its parent, and holds the differing rows.
	child := uuid.MustParse(d["task_id"].(string))
	task, err := sqlapi.GetTask(context.Background(), e.Node("n1").Pool, child)
	require.NoError(t, err)
	require.Equal(t, sqlapi.TypeTableDiff, task.Type)
	var args map[string]any
	require.NoError(t, json.Unmarshal(task.Args, &args))
	require.Equal(t, id.String(), args["parent_task"])
	require.Len(t, e.diffRows(child), 2)
	var children int
	require.NoError(t, e.Node("n1").Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM ace.tasks WHERE args->>'parent_task' = $1`, id.String()).Scan(&children))
	require.Equal(t, 2, children, "only same and drift are diffed")
}

// ace.cancel(parent) cancels its children; a child cannot name a task that is not its
// submitter's running task as its parent.
func TestSchemaDiffCancelReachesChildren(t *testing.T) {
	t.Parallel()
	e := setupNoAgents(t, `CREATE TABLE public.t (id int PRIMARY KEY)`)
	n1 := e.Node("n1")
	ctx := context.Background()
	var parent uuid.UUID
	require.NoError(t, n1.Pool.QueryRow(ctx, `SELECT ace.schema_diff('public')`).Scan(&parent))
	childArgs := map[string]any{"table_name": "public.t", sqlapi.ParentTaskArg: parent.String()}
	_, err := sqlapi.Submit(ctx, n1.Pool, sqlapi.TypeTableDiff, childArgs)
	require.ErrorContains(t, err, "is not a running task", "a queued parent has no children")

	// As the parent's agent would have claimed it.
	n1.Exec(t, `UPDATE ace.tasks SET status = 'RUNNING', claimed_by = 'test', attempts = 1 WHERE task_id = $1`, parent)
	child, err := sqlapi.Submit(ctx, n1.Pool, sqlapi.TypeTableDiff, childArgs)
	require.NoError(t, err)
	outcome, err := sqlapi.Cancel(ctx, n1.Pool, parent)
	require.NoError(t, err)
	require.Equal(t, "CANCEL REQUESTED", outcome)
	task, err := sqlapi.GetTask(ctx, n1.Pool, child)
	require.NoError(t, err)
	require.Equal(t, sqlapi.StatusCancelled, task.Status)
}

// compare => 'objects' (ddl_only) compares the objects' names: ACE's per-pair result, and a
// finding per object missing somewhere.
func TestSchemaDiffObjects(t *testing.T) {
	t.Parallel()
	e := setup(t, `CREATE TABLE public.t (id int PRIMARY KEY, v int); CREATE VIEW public.v AS SELECT id FROM t`)
	e.Node("n2").Exec(t, `CREATE FUNCTION public.f(a int, b text) RETURNS int LANGUAGE sql AS 'SELECT 1'`)
	e.Node("n3").Exec(t, `ALTER TABLE t ALTER COLUMN v TYPE bigint`) // names only: no difference

	id, result := e.schemaDiff(`'public', ddl_only => true`)
	require.Equal(t, "objects", result["compare"])
	pairs := result["pairs"].(map[string]any)
	require.Equal(t, map[string]any{"status": "IDENTICAL", "diffs": map[string]any{}}, pairs["n1/n3"])
	require.Equal(t, map[string]any{"status": "MISMATCH", "diffs": map[string]any{
		"n1": map[string]any{"missing_objects": map[string]any{"functions": []any{"f(a integer, b text)"}}, "extra_objects": map[string]any{}},
		"n2": map[string]any{"missing_objects": map[string]any{}, "extra_objects": map[string]any{"functions": []any{"f(a integer, b text)"}}},
	}}, pairs["n1/n2"])
	require.Equal(t, "MISMATCH", pairs["n2/n3"].(map[string]any)["status"])
	require.Equal(t, []finding{{"function", "public.f(a integer, b text)", "", "missing",
		map[string]*string{"n1": nil, "n2": def("public.f(a integer, b text)"), "n3": nil}}}, e.findings(id))
}

// An agent that runs one task at a time still runs a schema diff's children: the parent, only
// waiting, does not take that one place.
func TestSchemaDiffOnAnAgentOfOneTask(t *testing.T) {
	t.Parallel()
	e := setupNoAgents(t, `CREATE TABLE public.a (id int PRIMARY KEY); CREATE TABLE public.b (id int PRIMARY KEY)`)
	cfg := e.Node("n1").AgentConfig()
	cfg.MaxTasks = 1
	e.Node("n1").StartAgentWith(t, cfg)
	_, result := e.schemaDiff(`'public'`)
	require.Equal(t, []any{"public.a", "public.b"}, result["identical"])
}
