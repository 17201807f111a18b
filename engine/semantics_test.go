package engine_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/diff"
	"github.com/ace-agent/ace-agent/internal/testcluster"
)

// The two tables of docs/semantics.md, "When two values are the same", as tests: n1 and n3 hold one value or
// key, n2 the other.

func TestValueSemanticsTable(t *testing.T) {
	t.Parallel()
	e, nodes := engineEnv(t, `CREATE EXTENSION citext; CREATE TYPE money_pair AS (amount numeric, note text)`)
	for i, c := range []struct {
		typ, a, b string
		same      bool
	}{
		{"numeric", "3000.00", "3000.0", true},
		{"numeric[]", "'{3000.00}'", "'{3000.0}'", true},
		{"numrange", "'[3000.00,4000)'", "'[3000.0,4000.000)'", true},
		{"money_pair", "ROW(3000.00, 'x')", "ROW(3000.0, 'x')", true},
		{"jsonb", `'{"a": 3000.00}'`, `'{"a": 3000.0}'`, true},
		{"numeric", "100.50", "-100.50", false},
		{"numeric", "0", "NULL", false},
		{"numeric", "'NaN'", "'Infinity'", false},
		{"float8", "'0'", "'-0'", false},
		{"float8", "'NaN'", "'Infinity'::float8 - 'Infinity'::float8", true},
		{"interval", "'1 day'", "'24 hours'", false},
		{"jsonb", `'{"a": 1, "b": 2}'`, `'{ "b" : 2, "a" : 1 }'`, true},
		{"json", `'{"a": 1, "b": 2}'`, `'{"a":1, "b":2}'`, false},
		{"jsonb", "'1'", "'[1]'", false},
		{"jsonb", "'{}'", "'[]'", false},
		{"jsonb", `'"1"'`, "'1'", false},
		{"citext", "'Abc'", "'abc'", false},
		{"char(5)", "'ab'", "'ab   '", true},
		{"timestamptz", "'2024-01-01 12:00+02'", "'2024-01-01 10:00+00'", true},
		{"int[]", "'[0:1]={1,2}'", "'{1,2}'", false},
		{"int[]", "'{{1,2},{3,4}}'", "'{1,2,3,4}'", false},
		{"text", "NULL", "''", false},
		{"text[]", "'{NULL}'", `'{"NULL"}'`, false},
	} {
		t.Run(fmt.Sprintf("%s %s vs %s", c.typ, c.a, c.b), func(t *testing.T) {
			table := fmt.Sprintf("vs%d", i)
			e.ExecAll(fmt.Sprintf(`CREATE TABLE %[1]s (id int PRIMARY KEY, v %[2]s); INSERT INTO %[1]s VALUES (1, %[3]s), (2, %[3]s)`, table, c.typ, c.a))
			e.Node("n2").Exec(t, fmt.Sprintf(`UPDATE %s SET v = %s WHERE id = 2`, table, c.b))
			sink := &testcluster.DiffSink{}
			_, err := diff.TableDiff(context.Background(), nodes, diff.TableDiffOptions{Table: table}, sink, nil)
			require.NoError(t, err)
			if c.same {
				require.Empty(t, sink.Keys())
			} else {
				require.Equal(t, []string{"[2]"}, sink.Keys())
			}
		})
	}
}

func TestKeySemanticsTable(t *testing.T) {
	t.Parallel()
	e, nodes := engineEnv(t, `CREATE EXTENSION citext`)
	for i, c := range []struct {
		typ, a, b string
		want      []string // differing keys
		kind      string
	}{
		{"numeric", "150", "150.00", nil, ""},
		{"float8", "0", "'-0'", []string{`["0"]`}, engine.KindModified},
		{"interval", "'1 day'", "'24:00:00'", []string{`["1 day"]`}, engine.KindModified},
		{"citext", "'A'", "'a'", []string{`["a"]`}, engine.KindModified},
		{"bigint", "-1", "4294967295", []string{"[-1]", "[4294967295]"}, engine.KindMissing},
		{"text", "'a'", "'A'", []string{`["A"]`, `["a"]`}, engine.KindMissing},
	} {
		t.Run(fmt.Sprintf("%s %s vs %s", c.typ, c.a, c.b), func(t *testing.T) {
			table := fmt.Sprintf("ks%d", i)
			e.ExecAll(fmt.Sprintf(`CREATE TABLE %[1]s (k %[2]s PRIMARY KEY, v text); INSERT INTO %[1]s VALUES (%[3]s, 'same')`, table, c.typ, c.a))
			e.Node("n2").Exec(t, fmt.Sprintf(`UPDATE %s SET k = %s`, table, c.b))
			sink := &testcluster.DiffSink{}
			_, err := diff.TableDiff(context.Background(), nodes, diff.TableDiffOptions{Table: table}, sink, nil)
			require.NoError(t, err)
			require.Equal(t, c.want, sink.Keys())
			for _, r := range sink.Rows {
				require.Equal(t, c.kind, r.Kind)
			}
		})
	}
}
