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

// Regression tests for the false negatives and false positives of the row hash built on
// PostgreSQL's hash-table functions (hash version 1): each case is one row changed on n2.

// valueDrift is one value column whose row differs between n1/n3 (value) and n2 (other).
type valueDrift struct {
	name, typ, value, other string
}

var valueDrifts = []valueDrift{
	{"numeric sign", "numeric", "100.50", "-100.50"},
	{"numeric zero vs NULL", "numeric", "0", "NULL"},
	{"numeric NaN vs Infinity", "numeric", "'NaN'", "'Infinity'"},
	{"numeric Infinity vs -Infinity", "numeric", "'Infinity'", "'-Infinity'"},
	{"bigint -1 vs 2^32-1", "bigint", "-1", "4294967295"},
	{"bigint 100 vs 2^32+101", "bigint", "100", "4294967397"},
	{"jsonb sign", "jsonb", `'{"amount": 5}'`, `'{"amount": -5}'`},
	{"jsonb scalar vs array", "jsonb", "'1'", "'[1]'"},
	{"jsonb empty object vs array", "jsonb", "'{}'", "'[]'"},
	{"jsonb nesting", "jsonb", `'{"a": {"b": 1}, "c": 2}'`, `'{"a": {"b": 1, "c": 2}}'`},
	{"jsonb 33 elements, two swapped", "jsonb",
		"(SELECT jsonb_agg(g ORDER BY g) FROM generate_series(1, 33) g)",
		"(SELECT jsonb_agg(CASE g WHEN 3 THEN 30 WHEN 30 THEN 3 ELSE g END ORDER BY g) FROM generate_series(1, 33) g)"},
	{"array dimensions", "int[]", "'{{1,2},{3,4}}'", "'{1,2,3,4}'"},
	{"array lower bound", "int[]", "'[0:1]={1,2}'", "'{1,2}'"},
	{"numeric[] zero vs NULL element", "numeric[]", "'{0}'", "'{NULL}'"},
	// Values whose 64-bit forms fold onto each other (high word XOR low word).
	{"timestamptz folded", "timestamptz", "'1999-12-31 23:59:59.999999+00'", "'2000-01-01 01:11:34.967295+00'"},
	{"time folded", "time", "'00:00:00'", "'01:11:34.967297'"},
	{"timestamp infinity folded", "timestamp", "'infinity'", "'2000-01-01 00:35:47.483648'"},
	// Two texts whose version-1 row hashes agree: their 64-bit hashes fold to one 32-bit value.
	{"texts colliding under hash version 1", "text", "'" + foldCollision[0] + "'", "'" + foldCollision[1] + "'"},
}

// summaries are the two ways a table-diff can summarise its leaves: every trap must be found
// under both.
var summaries = []diff.SummaryKind{diff.SummaryLanes, diff.SummaryOrdered}

// foldCollision was found by hashing 'note 1' … 'note 300000' with the version-1 row hash.
var foldCollision = [2]string{"note 59495", "note 182120"}

func TestValueDriftIsFoundForEveryFoldedOrSignedValue(t *testing.T) {
	t.Parallel()
	e, nodes := engineEnv(t, "SELECT 1")
	for i, c := range valueDrifts {
		t.Run(c.name, func(t *testing.T) {
			table := fmt.Sprintf("v%d", i)
			e.ExecAll(fmt.Sprintf(`CREATE TABLE %[1]s (id int PRIMARY KEY, v %[2]s); INSERT INTO %[1]s SELECT g, %[3]s FROM generate_series(1, 20) g`,
				table, c.typ, c.value))
			e.Node("n2").Exec(t, fmt.Sprintf(`UPDATE %s SET v = %s WHERE id = 7`, table, c.other))
			for _, kind := range summaries {
				sink := &testcluster.DiffSink{}
				opts := diff.TableDiffOptions{Table: table, CompareUnitSize: 3, ForceSummary: kind}
				s, err := diff.TableDiff(context.Background(), nodes, opts, sink, nil)
				require.NoError(t, err)
				require.Equal(t, []string{"[7]"}, sink.Keys(), kind)
				require.Equal(t, map[string]int64{"n1/n2": 1, "n1/n3": 0, "n2/n3": 1}, s.DiffRowsCount, kind)
				require.Equal(t, string(kind), s.LeafSummary)
			}
		})
	}
}

func TestBigintKeyFoldedOntoAnotherIsTwoMissingKeys(t *testing.T) {
	t.Parallel()
	e, nodes := engineEnv(t, `CREATE TABLE k (id bigint PRIMARY KEY, v text)`)
	e.ExecAll(`INSERT INTO k VALUES (-1, 'same'), (1, 'other')`)
	e.Node("n2").Exec(t, `UPDATE k SET id = 4294967295 WHERE id = -1`)
	for _, kind := range summaries {
		sink := &testcluster.DiffSink{}
		_, err := diff.TableDiff(context.Background(), nodes, diff.TableDiffOptions{Table: "k", ForceSummary: kind}, sink, nil)
		require.NoError(t, err)
		require.Equal(t, []string{"[-1]", "[4294967295]"}, sink.Keys(), kind)
	}
}

func TestThreeDifferentVersionsCountEveryPair(t *testing.T) {
	t.Parallel()
	e, nodes := engineEnv(t, `CREATE TABLE p (id int PRIMARY KEY, amount numeric)`)
	e.ExecAll(`INSERT INTO p SELECT g, 100.50 FROM generate_series(1, 50) g`)
	e.Node("n2").Exec(t, `UPDATE p SET amount = -100.50 WHERE id <= 5`)
	e.Node("n3").Exec(t, `UPDATE p SET amount = 100.51 WHERE id <= 5`)
	for _, kind := range summaries {
		sink := &testcluster.DiffSink{}
		s, err := diff.TableDiff(context.Background(), nodes, diff.TableDiffOptions{Table: "p", CompareUnitSize: 4, ForceSummary: kind}, sink, nil)
		require.NoError(t, err)
		require.Equal(t, map[string]int64{"n1/n2": 5, "n1/n3": 5, "n2/n3": 5}, s.DiffRowsCount, kind)
		for _, r := range sink.Rows {
			require.Len(t, r.Versions, 3)
			require.NotEqual(t, r.Versions["n2"], r.Versions["n3"], "n2 and n3 hold different rows")
		}
	}
}

// A real difference next to each key below makes the leaf be compared row by row, which is where
// keys of equal value but different text used to be reported missing on both sides.
func TestEqualKeysOfDifferentTextAreOneKey(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, typ, key, other string
		want                  []string // the differing keys, by canonical text
	}{
		{"numeric scale is not part of the key or the value", "numeric", "150", "150.00", []string{`["151"]`}},
		{"float -0 is the key 0, with another text", "float8", "0", "'-0'", []string{`["0"]`, `["1"]`}},
		{"interval 24 hours is the key 1 day, with another text", "interval", "'1 day'", "'24:00:00'", []string{`["1 day 00:00:01"]`, `["1 day"]`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e, nodes := engineEnv(t, fmt.Sprintf(`CREATE TABLE ek (id %s PRIMARY KEY, v text)`, c.typ))
			next := map[string]string{"numeric": "151", "float8": "1", "interval": "'1 day 1 second'"}[c.typ]
			e.ExecAll(fmt.Sprintf(`INSERT INTO ek VALUES (%s, 'a'), (%s, 'b')`, c.key, next))
			e.Node("n2").Exec(t, fmt.Sprintf(`UPDATE ek SET id = %s WHERE id = %s; UPDATE ek SET v = 'changed' WHERE id = %s`, c.other, c.key, next))
			for _, kind := range summaries {
				sink := &testcluster.DiffSink{}
				_, err := diff.TableDiff(context.Background(), nodes, diff.TableDiffOptions{Table: "ek", CompareUnitSize: 2, ForceSummary: kind}, sink, nil)
				require.NoError(t, err)
				require.Equal(t, c.want, sink.Keys(), kind)
				for _, r := range sink.Rows {
					require.Equal(t, engine.KindModified, r.Kind, "an equal key is never missing on both sides")
				}
			}
		})
	}
}

func TestEnumKeysWhoseLabelOrderDiffersBetweenNodes(t *testing.T) {
	t.Parallel()
	e, nodes := engineEnv(t, `SELECT 1`)
	// w was added before x on n1 and n3, after y on n2: the labels sort differently there.
	for _, n := range []string{"n1", "n3"} {
		e.Node(n).Exec(t, `CREATE TYPE colour AS ENUM ('x', 'y'); ALTER TYPE colour ADD VALUE 'w' BEFORE 'x'`)
	}
	e.Node("n2").Exec(t, `CREATE TYPE colour AS ENUM ('x', 'y'); ALTER TYPE colour ADD VALUE 'w' AFTER 'y'`)
	e.ExecAll(`CREATE TABLE en (c colour, n int, v text, PRIMARY KEY (c, n));
		INSERT INTO en SELECT c::colour, n, 'same' FROM unnest(ARRAY['w', 'x', 'y']) c, generate_series(1, 84) n`)
	e.Node("n2").Exec(t, `UPDATE en SET v = 'drift' WHERE c = 'x' AND n = 42`)
	for _, opts := range []diff.TableDiffOptions{{Table: "en"}, {Table: "en", CompareUnitSize: 5, BlockSize: 50},
		{Table: "en", CompareUnitSize: 5, BlockSize: 50, ForceSummary: diff.SummaryLanes},
		{Table: "en", CompareUnitSize: 5, BlockSize: 50, ForceSummary: diff.SummaryOrdered}} {
		sink := &testcluster.DiffSink{}
		_, err := diff.TableDiff(context.Background(), nodes, opts, sink, nil)
		require.NoError(t, err)
		require.Equal(t, []string{`["x", 42]`}, sink.Keys())
	}
}
