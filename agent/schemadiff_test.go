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
