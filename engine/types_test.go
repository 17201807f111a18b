package engine_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine/diff"
	"github.com/ace-agent/ace-agent/internal/testcluster"
)

// typeCases are the types of ACE's typed-repair list and more: a column of each, a value, and a
// different value planted on one node.
var typeCases = []struct{ typ, value, other string }{
	{"time", "'12:34:56.789'", "'12:34:56.788'"},
	{"timetz", "'12:00:00+02'", "'12:00:00+03'"},
	{"money", "'1234.56'", "'1234.57'"},
	{"uuid", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12'"},
	{"interval", "'1 day'", "'24 hours'"},
	{"numeric", "'3000.10'", "'3000.1000001'"},
	{"point", "'(1,2)'", "'(1,2.0001)'"},
	{"int4range", "'[1,10)'", "'[1,11)'"},
	{"daterange", "'[2024-01-01,2024-02-01)'", "'[2024-01-01,2024-02-02)'"},
	{"bit(8)", "B'10101010'", "B'10101011'"},
	{"varbit", "B'101'", "B'1010'"},
	{"inet", "'10.0.0.1/24'", "'10.0.0.1/25'"},
	{"cidr", "'10.0.0.0/24'", "'10.0.0.0/25'"},
	{"xml", "'<a x=\"1\">t</a>'", "'<a x=\"2\">t</a>'"},
	{"mood", "'ok'", "'happy'"},
	{"jsonb", `'{"a": [1, 2.50]}'`, `'{"a": [1, 2.51]}'`},
	{"json", `'{"a": 1,  "b": 2}'`, `'{"a": 1, "b": 2}'`},
	{"text[]", `ARRAY['a,b', 'c"d', NULL]`, `ARRAY['a,b', 'c"d', '']`},
	{"numeric[]", `ARRAY[1.5, 2]`, `ARRAY[1.5, 3]`},
	{"positive_int", "5", "6"},
	{"bytea", `'\x00ff10'`, `'\x00ff11'`},
	{"timestamp", "'2024-01-01 10:00:00.123456'", "'2024-01-01 10:00:00.123457'"},
	{"date", "'2024-02-29'", "'2024-03-01'"},
	{"float8", "0.1", "0.30000000000000004"},
	{"real", "1.5", "1.25"},
	{"boolean", "true", "false"},
	{"char(5)", "'ab'", "'abc'"},
	{"macaddr", "'08:00:2b:01:02:03'", "'08:00:2b:01:02:04'"},
	{"tsvector", "'a fat cat'", "'a fat rat'"},
	{"box", "'(0,0),(1,1)'", "'(0,0),(1,2)'"},
}

func TestEveryTypeIsComparedExactlyAndRoundTrips(t *testing.T) {
	t.Parallel()
	var cols, vals []string
	for i, c := range typeCases {
		cols = append(cols, fmt.Sprintf("c%d %s", i, c.typ))
		vals = append(vals, c.value)
	}
	ddl := `CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
		CREATE DOMAIN positive_int AS int CHECK (VALUE > 0);
		CREATE TABLE ty (id int PRIMARY KEY, ` + strings.Join(cols, ", ") + `)`
	e, nodes := engineEnv(t, ddl)
	e.ExecAll(fmt.Sprintf(`INSERT INTO ty SELECT g, %s FROM generate_series(0, %d) g`, strings.Join(vals, ", "), len(typeCases)+5))
	// Row i differs in column i, on a node that depends on i.
	var want []string
	for i, c := range typeCases {
		e.Nodes[1+i%2].Exec(t, fmt.Sprintf(`UPDATE ty SET c%d = %s WHERE id = %d`, i, c.other, i))
		want = append(want, fmt.Sprintf("[%d]", i))
	}
	sink := &testcluster.DiffSink{}
	_, err := diff.TableDiff(context.Background(), nodes, diff.TableDiffOptions{Table: "public.ty"}, sink, nil)
	require.NoError(t, err)
	require.ElementsMatch(t, want, sink.Keys())

	// Every reported value reads back, cast from its text to its column's type, as the node's
	// value: what a repair will write is what the diff saw.
	var checks []string
	for i, c := range typeCases {
		checks = append(checks, fmt.Sprintf(`((($1::jsonb->>'c%[1]d')::%[2]s)::text IS NOT DISTINCT FROM c%[1]d::text)`, i, c.typ))
	}
	sql := `SELECT ` + strings.Join(checks, " AND ") + ` FROM ty WHERE id = ($2::jsonb->>'id')::int`
	for _, r := range sink.Rows {
		for _, n := range e.Nodes {
			var same bool
			require.NoError(t, n.Pool.QueryRow(context.Background(), sql, string(r.Rows[n.Name]), string(r.PK)).Scan(&same))
			require.True(t, same, "row %s on %s does not round-trip: %s", r.PK, n.Name, r.Rows[n.Name])
		}
	}
}

func TestWideTablesLargeValuesAndPartitions(t *testing.T) {
	t.Parallel()
	var cols []string
	for i := range 150 {
		cols = append(cols, fmt.Sprintf("c%d int DEFAULT %d", i, i))
	}
	e, nodes := engineEnv(t, `CREATE TABLE wide (id int PRIMARY KEY, `+strings.Join(cols, ", ")+`, blob bytea);
		CREATE TABLE parted (id int, region text, v text, PRIMARY KEY (region, id)) PARTITION BY LIST (region);
		CREATE TABLE parted_eu PARTITION OF parted FOR VALUES IN ('eu');
		CREATE TABLE parted_us PARTITION OF parted FOR VALUES IN ('us')`)
	e.ExecAll(`INSERT INTO wide (id, blob) SELECT g, CASE WHEN g = 3 THEN decode(repeat('ab', 1500000), 'hex') END FROM generate_series(1, 10) g;
		INSERT INTO parted SELECT g, r, 'v' FROM generate_series(1, 100) g, unnest(ARRAY['eu', 'us']) r`)
	e.Node("n2").Exec(t, `UPDATE wide SET c149 = -1 WHERE id = 7`)
	e.Node("n3").Exec(t, `UPDATE wide SET blob = blob || '\x00'::bytea WHERE id = 3`)
	e.Node("n2").Exec(t, `UPDATE parted SET v = 'x' WHERE region = 'us' AND id = 50`)
	e.Node("n3").Exec(t, `DELETE FROM parted_eu WHERE id = 1`)

	sink := &testcluster.DiffSink{}
	_, err := diff.TableDiff(context.Background(), nodes, diff.TableDiffOptions{Table: "public.wide"}, sink, nil)
	require.NoError(t, err)
	require.Equal(t, []string{"[3]", "[7]"}, sink.Keys())
	for _, r := range sink.Rows {
		if string(r.PKSort) == "[3]" {
			require.Greater(t, len(r.Rows["n3"]), 3_000_000, "the 1.5 MB value is reported whole")
		}
	}
	sink = &testcluster.DiffSink{}
	_, err = diff.TableDiff(context.Background(), nodes, diff.TableDiffOptions{Table: "public.parted"}, sink, nil)
	require.NoError(t, err)
	require.Equal(t, []string{`["eu", 1]`, `["us", 50]`}, sink.Keys())
}
