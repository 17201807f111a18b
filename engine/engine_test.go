package engine_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/diff"
	"github.com/ace-agent/ace-agent/internal/testcluster"
)

func TestMain(m *testing.M) { testcluster.Main(m) }

// engineEnv is a test database on three nodes, opened as engine nodes.
func engineEnv(t *testing.T, ddl string) (*testcluster.Env, []*engine.Node) {
	t.Helper()
	e := testcluster.New(t)
	e.CreateTable(ddl)
	return e, e.EngineNodes(6)
}

func TestQuotedIdentifiersAndMixedCollations(t *testing.T) {
	t.Parallel()
	e, nodes := engineEnv(t, `CREATE SCHEMA "Sales Data"; CREATE TABLE "Sales Data"."Order-Items" ("Key" text, "Line No" int, "Value" text, PRIMARY KEY ("Key", "Line No"))`)
	// n2's key column sorts with a different collation: ranges must still be the same ranges.
	e.Node("n2").Exec(t, `ALTER TABLE "Sales Data"."Order-Items" ALTER COLUMN "Key" TYPE text COLLATE "und-x-icu"`)
	e.ExecAll(`INSERT INTO "Sales Data"."Order-Items" SELECT k, n, k || n FROM unnest(ARRAY['a', 'B', 'c', 'D', 'é', 'Z', '_x']) k, generate_series(1, 40) n`)
	e.Node("n3").Exec(t, `UPDATE "Sales Data"."Order-Items" SET "Value" = 'x' WHERE "Key" = 'D' AND "Line No" = 40`)
	e.Node("n1").Exec(t, `DELETE FROM "Sales Data"."Order-Items" WHERE "Key" = 'c' AND "Line No" = 1`)
	sink := &testcluster.DiffSink{}
	s, err := diff.TableDiff(t.Context(), nodes, diff.TableDiffOptions{
		Table: `"Sales Data"."Order-Items"`, BlockSize: 9, CompareUnitSize: 3}, sink, nil)
	require.NoError(t, err)
	require.Equal(t, []string{`["D", 40]`, `["c", 1]`}, sink.Keys())
	require.Equal(t, "Sales Data", s.Schema)
	require.Equal(t, "Order-Items", s.Table)
	require.EqualValues(t, 280, s.TotalRowsChecked)
}

func TestNondeterministicKeyCollationIsRefused(t *testing.T) {
	t.Parallel()
	// Under a case-insensitive collation 'A' and 'a' are one key, and no canonical text says so:
	// comparing such keys bytewise would report one key as missing on both sides.
	e, nodes := engineEnv(t, `CREATE TABLE ci (k text PRIMARY KEY, v int)`)
	e.Node("n2").Exec(t, `CREATE COLLATION nd (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
		ALTER TABLE ci ALTER COLUMN k TYPE text COLLATE nd`)
	_, err := diff.TableDiff(t.Context(), nodes, diff.TableDiffOptions{Table: "public.ci"}, &testcluster.DiffSink{}, nil)
	require.ErrorContains(t, err, `key column "k" of public.ci uses the nondeterministic collation nd on node n2`)
}

func TestRecheckKeysKeepsOnlyPersistingDifferences(t *testing.T) {
	t.Parallel()
	e, nodes := engineEnv(t, `CREATE TABLE r (a bigint, b numeric, v text, PRIMARY KEY (a, b))`)
	e.ExecAll(`INSERT INTO r SELECT g, g / 4.0, 'v' FROM generate_series(1, 100) g`)
	e.Node("n2").Exec(t, `UPDATE r SET v = 'drift' WHERE a IN (10, 20)`)
	first := &testcluster.DiffSink{}
	_, err := diff.TableDiff(t.Context(), nodes, diff.TableDiffOptions{Table: "public.r"}, first, nil)
	require.NoError(t, err)
	require.Equal(t, []string{`[10, "2.5"]`, `[20, "5"]`}, first.Keys())

	// One difference is resolved; another key is rechecked though it never differed.
	e.Node("n2").Exec(t, `UPDATE r SET v = 'v' WHERE a = 10`)
	var keys [][]string
	for _, r := range first.Rows {
		k, err := engine.KeyFromJSON(r.PKSort)
		require.NoError(t, err)
		keys = append(keys, k)
	}
	keys = append(keys, []string{"30", "7.5"})
	again := &testcluster.DiffSink{}
	s, err := diff.RecheckKeys(t.Context(), nodes, diff.RecheckOptions{Table: "public.r", Keys: keys}, again, nil)
	require.NoError(t, err)
	require.Equal(t, []string{`[20, "5"]`}, again.Keys())
	require.Equal(t, map[string]int64{"n1/n2": 1, "n1/n3": 0, "n2/n3": 1}, s.DiffRowsCount)
	var row map[string]any
	require.NoError(t, json.Unmarshal(again.Rows[0].Rows["n2"], &row))
	require.Equal(t, "drift", row["v"])
}

func TestSplitTableName(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, in      string
		schema, table string
	}{
		{"qualified", "public.orders", "public", "orders"},
		{"unqualified is in public", "orders", "public", "orders"},
		{"unquoted folds to lower case, quoted keeps its case", `Public."Orders"`, "public", "Orders"},
		{"quoted dots and doubled quotes", `"a.b"."c""d"`, "a.b", `c"d`},
		{"spaces around the parts", ` Sales . Items `, "sales", "items"},
		{"quoted spaces and dashes", `"Sales Data"."Line-No"`, "Sales Data", "Line-No"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			schema, table, err := engine.SplitTableName(c.in)
			require.NoError(t, err, c.in)
			require.Equal(t, [2]string{c.schema, c.table}, [2]string{schema, table}, c.in)
		})
	}
	for _, c := range []struct{ name, in string }{
		{"three parts", `a.b.c`},
		{"unterminated quote", `"open`},
		{"empty schema", `.t`},
		{"empty", ``},
	} {
		t.Run("bad: "+c.name, func(t *testing.T) {
			t.Parallel()
			_, _, err := engine.SplitTableName(c.in)
			require.Error(t, err, c.in)
		})
	}
}
