package engine_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/diff"
	"github.com/ace-agent/ace-agent/internal/testcluster"
)

// Regression tests for the silent false negatives in ACE's history (reference §9).

func TestSwappedValuesAndPrimaryKeyChangesAreFound(t *testing.T) {
	t.Parallel()
	e, nodes := engineEnv(t, `CREATE TABLE s (id bigint PRIMARY KEY, a text, b text)`)
	e.ExecAll(`INSERT INTO s SELECT g, 'a' || g, 'b' || g FROM generate_series(1, 3000) g`)
	// Two rows trade values: the multiset of values is unchanged, the rows are not.
	e.Node("n2").Exec(t, `UPDATE s SET a = CASE id WHEN 100 THEN 'a200' ELSE 'a100' END WHERE id IN (100, 200)`)
	// Columns trade values within a row.
	e.Node("n2").Exec(t, `UPDATE s SET a = b, b = a WHERE id = 300`)
	// A primary-key-changing update: the old key is gone, a new one appears.
	e.Node("n3").Exec(t, `UPDATE s SET id = 100000 WHERE id = 400`)
	// Keys beyond 2^53 lose precision as float64 (ACE 1.7.2).
	e.ExecAll(`INSERT INTO s VALUES (9007199254740993, 'big', 'big')`)
	e.Node("n3").Exec(t, `UPDATE s SET a = 'bigger' WHERE id = 9007199254740993`)
	for _, kind := range summaries {
		sink := &testcluster.DiffSink{}
		_, err := diff.TableDiff(t.Context(), nodes, diff.TableDiffOptions{Table: "public.s", CompareUnitSize: 10, ForceSummary: kind}, sink, nil)
		require.NoError(t, err)
		require.Equal(t, []string{"[100000]", "[100]", "[200]", "[300]", "[400]", "[9007199254740993]"}, sink.Keys(), kind)
		for _, r := range sink.Rows {
			if string(r.PKSort) == "[9007199254740993]" {
				require.JSONEq(t, `{"id": 9007199254740993}`, string(r.PK))
				k, err := engine.KeyFromJSON(r.PKSort)
				require.NoError(t, err)
				require.Equal(t, []string{"9007199254740993"}, k)
			}
		}
	}
}

func TestRowsOnBlockAndLeafBoundariesAreCountedOnce(t *testing.T) {
	t.Parallel()
	// With integer keys, leaves of 10 and blocks of 1000 start at 1, 11, 21 …; differences sit on
	// both sides of those boundaries. With '<=' upper bounds, a boundary row would be hashed in two
	// ranges and, with XOR, cancel itself out (ACE 2.1.1).
	e, nodes := engineEnv(t, `CREATE TABLE b (id int PRIMARY KEY, v int)`)
	e.ExecAll(`INSERT INTO b SELECT g, g FROM generate_series(1, 5000) g`)
	e.Node("n2").Exec(t, `UPDATE b SET v = -v WHERE id IN (1, 10, 11, 1000, 1001, 2001, 5000)`)
	for _, opts := range []diff.TableDiffOptions{
		{Table: "public.b", CompareUnitSize: 10, BlockSize: 1000, ForceSummary: diff.SummaryLanes},
		{Table: "public.b", CompareUnitSize: 7, BlockSize: 21, ForceSummary: diff.SummaryLanes},
		{Table: "public.b", CompareUnitSize: 10, BlockSize: 1000, ForceSummary: diff.SummaryOrdered},
		{Table: "public.b", CompareUnitSize: 7, BlockSize: 21, ForceSummary: diff.SummaryOrdered},
	} {
		t.Run(fmt.Sprintf("%s_leaves_of_%d_blocks_of_%d", opts.ForceSummary, opts.CompareUnitSize, opts.BlockSize), func(t *testing.T) {
			sink := &testcluster.DiffSink{}
			s, err := diff.TableDiff(t.Context(), nodes, opts, sink, nil)
			require.NoError(t, err)
			require.Equal(t, []string{"[1000]", "[1001]", "[10]", "[11]", "[1]", "[2001]", "[5000]"}, sink.Keys())
			require.EqualValues(t, 5000, s.TotalRowsChecked, "each row counted exactly once")
		})
	}
}

func TestTextKeysSampledIntoSmallBlocks(t *testing.T) {
	t.Parallel()
	// More than 200,000 rows: the bounds of a text key are sampled, not read in order.
	e, nodes := engineEnv(t, `CREATE TABLE k (code text PRIMARY KEY, v int)`)
	e.ExecAll(`INSERT INTO k SELECT md5(g::text), g FROM generate_series(1, 210000) g; ANALYZE k`)
	e.Node("n1").Exec(t, `INSERT INTO k VALUES ('', 0), ('zzzz', 0)`)
	e.Node("n3").Exec(t, `UPDATE k SET v = -1 WHERE v = 777`)
	for _, kind := range summaries {
		sink := &testcluster.DiffSink{}
		s, err := diff.TableDiff(t.Context(), nodes, diff.TableDiffOptions{Table: "public.k", ForceSummary: kind}, sink, nil)
		require.NoError(t, err)
		require.Len(t, sink.Rows, 3, kind)
		require.EqualValues(t, 210002, s.TotalRowsChecked, kind)
		require.Greater(t, s.InitialRangesCount, 10, "blocks are capped at 64 leaves for searched bounds")
	}
}
