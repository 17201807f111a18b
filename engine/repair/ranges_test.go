package repair_test

import (
	"slices"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/diff"
	"github.com/ace-agent/ace-agent/engine/repair"
	"github.com/ace-agent/ace-agent/internal/testcluster"
)

// rangeSetup seeds public.t with 3,000 rows, lets drift change it, and diffs it as a node's
// resync does: ranges some nodes hold and others lack entirely are stored whole. Blocks of 500
// rows with leaves of 10 cut an emptied table into several ranges.
func rangeSetup(t *testing.T, drift func(e *testcluster.Env)) *repairEnv {
	return seededDiff(t, 3000, diff.TableDiffOptions{BlockSize: 500, CompareUnitSize: 10, RangeRows: true}, drift)
}

// repairRanges repairs the targets from the stored diff; set adjusts the options.
func (r *repairEnv) repairRanges(set func(o *repair.Options)) (*repair.Summary, *testcluster.RepairSink, error) {
	r.T.Helper()
	o := repair.Options{ID: r.DB, Diff: r.summary, Rows: r.rows.Source(), Strategy: repair.StrategyMajority, Targets: []string{"n3"}}
	if set != nil {
		set(&o)
	}
	sink := &testcluster.RepairSink{}
	s, err := repair.Repair(r.T.Context(), r.nodes, o, sink, nil)
	return s, sink, err
}

// tableOn is the table's rows on a node, in key order, as one text.
func (r *repairEnv) tableOn(node string) string {
	r.T.Helper()
	var s string
	require.NoError(r.T, r.Node(node).Pool.QueryRow(r.T.Context(),
		`SELECT coalesce(string_agg(x::text, ',' ORDER BY id), '') FROM public.t x`).Scan(&s))
	return s
}

// rangeRows returns the diff's key ranges.
func rangeRows(rows []engine.DiffRow) []*engine.KeyRange {
	var out []*engine.KeyRange
	for _, d := range rows {
		if d.Range != nil {
			out = append(out, d.Range)
		}
	}
	return out
}

// rangeOf returns the diff's key range holding key id.
func (r *repairEnv) rangeOf(id int) *engine.KeyRange {
	r.T.Helper()
	for _, kr := range rangeRows(r.rows.Rows) {
		if (kr.Lo == nil || atoi(r.T, kr.Lo[0]) <= id) && (kr.Hi == nil || id < atoi(r.T, kr.Hi[0])) {
			return kr
		}
	}
	require.FailNow(r.T, "no key range holds the key", "%d", id)
	return nil
}

func atoi(t testing.TB, s string) int {
	n, err := strconv.Atoi(s)
	require.NoError(t, err)
	return n
}

// rowsIn counts node's rows in a key range.
func (r *repairEnv) rowsIn(node string, kr *engine.KeyRange) int64 {
	r.T.Helper()
	var n int64
	require.NoError(r.T, r.Node(node).Pool.QueryRow(r.T.Context(), `SELECT count(*) FROM public.t
		WHERE ($1::int IS NULL OR id >= $1::int) AND ($2::int IS NULL OR id < $2::int)`, first(kr.Lo), first(kr.Hi)).Scan(&n))
	return n
}

func first(key []string) *string {
	if key == nil {
		return nil
	}
	return &key[0]
}

func TestRangeRepairOfAnEmptiedNodeConverges(t *testing.T) {
	t.Parallel()
	r := rangeSetup(t, func(e *testcluster.Env) { e.Node("n3").Exec(e.T, `TRUNCATE public.t`) })
	n1Before, n2Before := nodeRows(r, "n1"), nodeRows(r, "n2")

	t.Run("the diff stores key ranges, not keys", func(t *testing.T) {
		ranges := rangeRows(r.rows.Rows)
		require.Len(t, ranges, len(r.rows.Rows), "every differing row is a key range")
		require.Greater(t, len(ranges), 1, "the blocks cut the table into several ranges")
		var keys int64
		for _, kr := range ranges {
			require.Equal(t, []string{"n1", "n2"}, kr.Holders)
			require.Equal(t, []string{"n3"}, kr.Empty)
			keys += kr.Rows
		}
		require.EqualValues(t, 3000, keys)
		require.EqualValues(t, 3000, r.summary.DifferingKeys)
		require.EqualValues(t, len(ranges), r.summary.KeyRanges)
		require.EqualValues(t, 3000, r.summary.DiffRowsCount["n1/n3"])
		require.Zero(t, r.summary.DiffRowsCount["n1/n2"])
	})

	s, sink, err := r.repairRanges(nil)
	require.NoError(t, err)

	t.Run("every row is copied, one action per range", func(t *testing.T) {
		require.True(t, s.FullyRepaired)
		require.EqualValues(t, 3000, s.Nodes["n3"].Inserted)
		require.Len(t, sink.Actions, len(r.rows.Rows))
		for _, a := range sink.Actions {
			require.Equal(t, repair.ActionInsert, a.Kind)
			require.Equal(t, "n3", a.Node)
			require.Contains(t, []string{"n1", "n2"}, a.Source)
			require.NotNil(t, a.Range)
		}
		require.Equal(t, []string{"n3"}, sink.Applied)
	})
	t.Run("the node holds exactly the others' rows", func(t *testing.T) {
		require.Equal(t, r.tableOn("n1"), r.tableOn("n3"))
		require.Empty(t, r.DifferingKeys("public.t", "id"))
	})
	t.Run("no other node is written", func(t *testing.T) {
		require.Equal(t, n1Before, nodeRows(r, "n1"))
		require.Equal(t, n2Before, nodeRows(r, "n2"))
	})
}

// nodeRows is the table's rows on a node with each row's xmin: a write of any kind changes them.
func nodeRows(r *repairEnv, node string) string {
	r.T.Helper()
	var s string
	require.NoError(r.T, r.Node(node).Pool.QueryRow(r.T.Context(),
		`SELECT coalesce(string_agg(x::text || xmin::text, ',' ORDER BY id), '') FROM public.t x`).Scan(&s))
	return s
}

func TestRangeRepairByLatestCommit(t *testing.T) {
	t.Parallel()
	r := rangeSetup(t, func(e *testcluster.Env) { e.Node("n3").Exec(e.T, `TRUNCATE public.t`) })
	s, _, err := r.repairRanges(func(o *repair.Options) { o.Strategy = repair.StrategyLatestCommit })
	require.NoError(t, err)
	require.True(t, s.FullyRepaired)
	require.EqualValues(t, 3000, s.Nodes["n3"].Inserted)
	require.Equal(t, r.tableOn("n1"), r.tableOn("n3"))
}

func TestRangeRepairAtomic(t *testing.T) {
	t.Parallel()
	r := rangeSetup(t, func(e *testcluster.Env) { e.Node("n3").Exec(e.T, `TRUNCATE public.t`) })
	s, _, err := r.repairRanges(func(o *repair.Options) { o.Atomic = true })
	require.NoError(t, err)
	require.True(t, s.FullyRepaired)
	require.Equal(t, r.tableOn("n1"), r.tableOn("n3"))
}

func TestRangeRepairCompareAndSet(t *testing.T) {
	t.Parallel()

	t.Run("a row inserted on the target since the diff: its range is left alone", func(t *testing.T) {
		t.Parallel()
		r := rangeSetup(t, func(e *testcluster.Env) { e.Node("n3").Exec(e.T, `TRUNCATE public.t`) })
		kr := r.rangeOf(1500)
		r.Node("n3").Exec(t, `INSERT INTO public.t VALUES (1500, 'written on n3 after the diff')`)
		s, sink, err := r.repairRanges(nil)
		require.NoError(t, err)
		require.False(t, s.FullyRepaired)
		require.EqualValues(t, kr.Rows, s.Nodes["n3"].SkippedByReason[repair.ReasonChangedSinceDiff])
		require.EqualValues(t, 3000-kr.Rows, s.Nodes["n3"].Inserted)
		skipped := slices.DeleteFunc(slices.Clone(sink.Actions), func(a repair.Action) bool { return a.Kind != repair.ActionSkip })
		require.Len(t, skipped, 1)
		require.Equal(t, kr, skipped[0].Range)
		require.EqualValues(t, 1, r.rowsIn("n3", kr), "nothing of the range was written")
		require.Equal(t, "written on n3 after the diff", r.value("n3", 1500))
		require.Contains(t, s.Warnings, "key range "+kr.Range().String()+" was not repaired on node n3: node n3 holds rows of the range now")
		require.EqualValues(t, 3000-kr.Rows+1, r.rowsIn("n3", &engine.KeyRange{}), "every other range was copied")
	})

	t.Run("a row changed on the source since the diff: its range is left alone", func(t *testing.T) {
		t.Parallel()
		r := rangeSetup(t, func(e *testcluster.Env) { e.Node("n3").Exec(e.T, `TRUNCATE public.t`) })
		kr := r.rangeOf(1500)
		r.Node("n1").Exec(t, `UPDATE public.t SET v = 'changed on n1 after the diff' WHERE id = 1500`)
		s, _, err := r.repairRanges(func(o *repair.Options) { o.Strategy, o.SourceOfTruth = "", "n1" })
		require.NoError(t, err)
		require.EqualValues(t, kr.Rows, s.Nodes["n3"].SkippedByReason[repair.ReasonChangedSinceDiff])
		require.Zero(t, r.rowsIn("n3", kr), "nothing of the range was written")
		require.EqualValues(t, 3000-kr.Rows, r.rowsIn("n3", &engine.KeyRange{}))
	})

	t.Run("a row deleted on the source since the diff: its range is left alone", func(t *testing.T) {
		t.Parallel()
		r := rangeSetup(t, func(e *testcluster.Env) { e.Node("n3").Exec(e.T, `TRUNCATE public.t`) })
		kr := r.rangeOf(2500)
		r.Node("n1").Exec(t, `DELETE FROM public.t WHERE id = 2500`)
		s, _, err := r.repairRanges(func(o *repair.Options) { o.Strategy, o.SourceOfTruth = "", "n1" })
		require.NoError(t, err)
		require.EqualValues(t, kr.Rows, s.Nodes["n3"].SkippedByReason[repair.ReasonChangedSinceDiff])
		require.Zero(t, r.rowsIn("n3", kr))
	})
}

func TestRangeRepairOfAMixedTable(t *testing.T) {
	t.Parallel()
	r := rangeSetup(t, func(e *testcluster.Env) {
		// n3 lost rows 1..600 and two scattered rows, and holds two stale rows.
		e.Node("n3").Exec(e.T, `DELETE FROM public.t WHERE id <= 600 OR id IN (1234, 2545);
			UPDATE public.t SET v = 'stale' WHERE id IN (700, 2999)`)
		// n1 and n2 lost rows 2001..2400 that n3 still holds: the majority deletes them there.
		e.Node("n1").Exec(e.T, `DELETE FROM public.t WHERE id BETWEEN 2001 AND 2400`)
		e.Node("n2").Exec(e.T, `DELETE FROM public.t WHERE id BETWEEN 2001 AND 2400`)
		// n2 changed a row: n1 and n3 are the majority there.
		e.Node("n2").Exec(e.T, `UPDATE public.t SET v = 'n2 only' WHERE id = 1800`)
	})
	var held, lost int64
	for _, kr := range rangeRows(r.rows.Rows) {
		switch {
		case slices.Equal(kr.Holders, []string{"n3"}):
			held += kr.Rows
		case slices.Equal(kr.Empty, []string{"n3"}):
			lost += kr.Rows
		default:
			require.FailNow(t, "an unexpected key range", "%+v", kr)
		}
	}
	// The pieces at the edges of a band hold rows of both kinds: their keys are listed one by one.
	require.Greater(t, lost, int64(500), "most of rows 1..600 are key ranges")
	require.Greater(t, held, int64(300), "most of rows 2001..2400 are a key range n3 alone holds")
	keys := r.rows.ByKey()
	for _, k := range []string{"[700]", "[1234]", "[1800]", "[2545]", "[2999]"} {
		require.Contains(t, keys, k, "a partial difference is a key")
		require.Nil(t, keys[k].Range)
	}
	require.EqualValues(t, 600+2+2+400+1, r.summary.DifferingKeys)

	s, _, err := r.repairRanges(func(o *repair.Options) { o.Targets = nil })
	require.NoError(t, err)
	require.True(t, s.FullyRepaired)
	require.EqualValues(t, 602, s.Nodes["n3"].Inserted)
	require.EqualValues(t, 2, s.Nodes["n3"].Updated)
	require.EqualValues(t, 400, s.Nodes["n3"].Deleted)
	require.EqualValues(t, 1, s.Nodes["n2"].Updated)
	require.Zero(t, s.Nodes["n1"].Inserted+s.Nodes["n1"].Updated+s.Nodes["n1"].Deleted)
	require.Empty(t, r.DifferingKeys("public.t", "id"))
	require.Equal(t, r.tableOn("n1"), r.tableOn("n3"))
	require.Equal(t, r.tableOn("n1"), r.tableOn("n2"))
}

func TestRangeRepairListsTheKeysOfARangeItCannotCopyWhole(t *testing.T) {
	t.Parallel()
	emptied := func(e *testcluster.Env) { e.Node("n3").Exec(e.T, `TRUNCATE public.t`) }
	perKey := func(t *testing.T, sink *testcluster.RepairSink) {
		t.Helper()
		require.Len(t, sink.Actions, 3000)
		for _, a := range sink.Actions {
			require.Nil(t, a.Range)
			require.Equal(t, repair.ActionInsert, a.Kind)
		}
	}

	t.Run("bidirectional", func(t *testing.T) {
		t.Parallel()
		r := rangeSetup(t, emptied)
		s, sink, err := r.repairRanges(func(o *repair.Options) { o.Strategy, o.Bidirectional = "", true })
		require.NoError(t, err)
		require.True(t, s.FullyRepaired)
		perKey(t, sink)
		require.Equal(t, r.tableOn("n1"), r.tableOn("n3"))
	})

	t.Run("a target with row-level security, which COPY FROM refuses", func(t *testing.T) {
		t.Parallel()
		r := rangeSetup(t, func(e *testcluster.Env) {
			emptied(e)
			e.Node("n3").Exec(e.T, `ALTER TABLE public.t ENABLE ROW LEVEL SECURITY`)
		})
		s, sink, err := r.repairRanges(nil)
		require.NoError(t, err)
		require.True(t, s.FullyRepaired)
		perKey(t, sink)
		require.Equal(t, r.tableOn("n1"), r.tableOn("n3"))
	})

	t.Run("a row changed on the holder since the diff: its range is left alone", func(t *testing.T) {
		t.Parallel()
		r := rangeSetup(t, emptied)
		kr := r.rangeOf(1500)
		r.Node("n1").Exec(t, `UPDATE public.t SET v = 'changed on n1 after the diff' WHERE id = 1500`)
		s, _, err := r.repairRanges(func(o *repair.Options) { o.Strategy, o.Bidirectional = "", true })
		require.NoError(t, err)
		require.EqualValues(t, kr.Rows, s.Nodes["n3"].SkippedByReason[repair.ReasonChangedSinceDiff])
		require.Zero(t, r.rowsIn("n3", kr), "nothing of the range was written")
		require.EqualValues(t, 3000-kr.Rows, r.rowsIn("n3", &engine.KeyRange{}))
	})
}
