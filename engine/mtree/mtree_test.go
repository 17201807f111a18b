package mtree_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/diff"
	"github.com/ace-agent/ace-agent/engine/mtree"
	"github.com/ace-agent/ace-agent/internal/testcluster"
)

// treeEnv is public.t (rows 1..rows) on three nodes, each with an agent that streams the
// table's changes once a tree tracks it, and each node opened as a tree task opens it.
type treeEnv struct {
	*testcluster.Env
	nodes  []mtree.NodeLogins
	leaves diff.SummaryKind // how its trees summarise their leaves
}

// leafKinds are the two ways a tree summarises its leaves; what holds of trees holds of both.
var leafKinds = []diff.SummaryKind{diff.SummaryLanes, diff.SummaryOrdered}

// forEachLeafKind runs test as a parallel subtest for each of leafKinds.
func forEachLeafKind(t *testing.T, test func(t *testing.T, kind diff.SummaryKind)) {
	for _, kind := range leafKinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			test(t, kind)
		})
	}
}

// treeSetup seeds public.t and starts the agents; their slots are dropped when the test ends.
// Its trees summarise their leaves as kind says.
func treeSetup(t *testing.T, rows int, kind diff.SummaryKind) *treeEnv {
	t.Helper()
	return treeSetupDDL(t, fmt.Sprintf(`CREATE TABLE public.t (id int PRIMARY KEY, v text NOT NULL);
		INSERT INTO public.t SELECT g, 'v' || g FROM generate_series(1, %d) g`, rows), kind)
}

// treeSetupDDL is treeSetup of the public.t that ddl makes.
func treeSetupDDL(t *testing.T, ddl string, kind diff.SummaryKind) *treeEnv {
	t.Helper()
	e := testcluster.New(t)
	e.CreateTable(ddl)
	e.DropSlotsAtEnd()
	for _, n := range e.Nodes {
		n.StartAgent(t)
	}
	te := &treeEnv{Env: e, leaves: kind}
	te.openNodes()
	return te
}

// openNodes opens every node twice, as a tree task does: the table's reader with the tree
// sessions' settings, and the agent's login that writes the trees. (With treeEnv's field, the
// only place that names the node pair's type.)
func (e *treeEnv) openNodes() {
	for _, n := range e.Nodes {
		e.nodes = append(e.nodes, mtree.NodeLogins{Data: n.EngineNode(e.T, 6, mtree.DataSettings), Agent: n.EngineNode(e.T, 3, nil)})
	}
}

func (e *treeEnv) build(leafRows int) *mtree.BuildResult {
	e.T.Helper()
	res, err := mtree.Build(e.T.Context(), e.nodes, mtree.BuildOptions{Table: "public.t", LeafRows: leafRows, TaskID: uuid.NewString(), User: "postgres",
		TrackTimeout: time.Minute, TxWait: 30 * time.Second, LeafSummary: e.leaves}, nil)
	require.NoError(e.T, err)
	if e.leaves != diff.SummaryAuto {
		require.Equal(e.T, e.leaves, res.LeafSummary)
	}
	return res
}

func (e *treeEnv) diff() (*engine.DiffSummary, *testcluster.DiffSink) {
	e.T.Helper()
	sink := &testcluster.DiffSink{}
	s, err := mtree.Diff(e.T.Context(), e.nodes, mtree.DiffOptions{Diff: diff.TableDiffOptions{Table: "public.t"}, CDCTimeout: time.Minute}, sink, nil)
	require.NoError(e.T, err)
	return s, sink
}

// count runs a counting query on a node.
func (e *treeEnv) count(node, sql string) int64 {
	e.T.Helper()
	var n int64
	require.NoError(e.T, e.Node(node).Pool.QueryRow(context.Background(), sql).Scan(&n))
	return n
}

// keysOf lists the differing keys' values, sorted as text, as DifferingKeys does.
func keysOf(t *testing.T, sink *testcluster.DiffSink) []string {
	var out []string
	for _, r := range sink.Rows {
		k, err := engine.KeyFromJSON(r.PKSort)
		require.NoError(t, err)
		out = append(out, k[0])
	}
	sort.Strings(out)
	return out
}

func TestBuildThenDiffFindsPlantedDrift(t *testing.T) {
	t.Parallel()
	forEachLeafKind(t, func(t *testing.T, kind diff.SummaryKind) {
		e := treeSetup(t, 2000, kind)
		res := e.build(100)
		require.Equal(t, 20, res.Leaves)
		require.Equal(t, []string{"n1", "n2", "n3"}, res.Nodes)
		require.Equal(t, map[string]int64{"n1": 2000, "n2": 2000, "n3": 2000}, res.RowsPerNode)
		for _, n := range e.Nodes {
			require.EqualValues(t, 20, e.count(n.Name, `SELECT count(*) FROM ace.mtree_leaves`), "leaves on %s", n.Name)
			require.EqualValues(t, 1, e.count(n.Name, `SELECT count(*) FROM ace.mtrees WHERE table_name = 'public.t' AND status = 'ready'`))
		}

		s, sink := e.diff()
		require.Empty(t, sink.Rows)
		require.True(t, s.InSync())
		require.Equal(t, 20, s.Mtree.Leaves)

		// Changes after the build reach the trees through the agents' streams.
		e.Node("n2").Exec(t, `UPDATE public.t SET v = 'changed' WHERE id = 10`)
		e.Node("n3").Exec(t, `INSERT INTO public.t VALUES (5000, 'extra')`)
		e.Node("n1").Exec(t, `DELETE FROM public.t WHERE id = 1500`)
		s, sink = e.diff()
		require.Equal(t, []string{"[10]", "[1500]", "[5000]"}, sink.Keys())
		require.EqualValues(t, 3, s.DifferingKeys)
		require.Equal(t, map[string]int{"n1": 1, "n2": 2, "n3": 1}, sink.ByKey()["[10]"].Versions)
		require.Equal(t, map[string]int64{"n1": 1999, "n2": 2000, "n3": 2001}, s.RowsPerNode)
		require.NotNil(t, s.Mtree)
		require.Equal(t, []string{"10", "1500", "5000"}, e.DifferingKeys("public.t", "id"))
	})
}

func TestDiffOfTreesFindsRandomDrift(t *testing.T) {
	t.Parallel()
	forEachLeafKind(t, func(t *testing.T, kind diff.SummaryKind) {
		e := treeSetup(t, 3000, kind)
		e.build(50)
		for round := uint64(1); round <= 2; round++ {
			t.Run(fmt.Sprintf("round %d", round), func(t *testing.T) {
				e.PlantDrift(rand.New(rand.NewPCG(round, 23)), "public.t", 3000, 25)
				_, sink := e.diff()
				require.Equal(t, e.DifferingKeys("public.t", "id"), keysOf(t, sink))
			})
		}
	})
}

func TestCompactMovesPendingKeysOntoLeaves(t *testing.T) {
	t.Parallel()
	forEachLeafKind(t, func(t *testing.T, kind diff.SummaryKind) {
		e := treeSetup(t, 1000, kind)
		e.build(100)
		// Two leaves change: keys 10 and 20 share the first leaf, 550 lies in another.
		e.Node("n2").Exec(t, `UPDATE public.t SET v = 'changed' WHERE id IN (10, 20, 550)`)
		require.Eventually(t, func() bool {
			return e.count("n2", `SELECT count(*) FROM ace.mtree_pending`) == 3
		}, time.Minute, 100*time.Millisecond, "n2's agent streams the three changed keys into mtree_pending")

		moved, err := mtree.Compact(t.Context(), e.nodes[1].Agent, 1)
		require.NoError(t, err)
		require.EqualValues(t, 2, moved, "one stale mark per changed leaf")
		require.Zero(t, e.count("n2", `SELECT count(*) FROM ace.mtree_pending`))
		require.EqualValues(t, 2, e.count("n2", `SELECT count(DISTINCT leaf_id) FROM ace.mtree_dirty`))

		moved, err = mtree.Compact(t.Context(), e.nodes[1].Agent, 1)
		require.NoError(t, err)
		require.Zero(t, moved, "nothing is pending any more")

		// The stale leaves are hashed again by the next diff: the changes are not lost.
		_, sink := e.diff()
		require.Equal(t, []string{"[10]", "[20]", "[550]"}, sink.Keys())
	})
}

func TestTeardownRemovesTreesAndPublications(t *testing.T) {
	t.Parallel()
	e := treeSetup(t, 500, diff.SummaryAuto)
	e.build(100)
	var relid uint32
	require.NoError(t, e.Node("n1").Pool.QueryRow(t.Context(), `SELECT 'public.t'::regclass::oid`).Scan(&relid))
	for _, n := range e.Nodes {
		require.EqualValues(t, 1, e.count(n.Name, `SELECT count(*) FROM pg_publication WHERE pubname LIKE 'ace_mtree_%'`))
	}

	res, err := mtree.Teardown(t.Context(), e.nodes, "public.t")
	require.NoError(t, err)
	for _, n := range e.Nodes {
		require.Equal(t, []string{"public.t"}, res.Tables[n.Name], "on %s", n.Name)
		require.Len(t, res.Publications[n.Name], 1, "on %s", n.Name)
		require.Zero(t, e.count(n.Name, `SELECT count(*) FROM ace.mtrees`), "trees left on %s", n.Name)
		require.Zero(t, e.count(n.Name, `SELECT count(*) FROM ace.mtree_leaves`), "leaves left on %s", n.Name)
		require.Zero(t, e.count(n.Name, `SELECT count(*) FROM pg_publication WHERE pubname LIKE 'ace_mtree_%'`), "publications left on %s", n.Name)
	}
	require.Equal(t, fmt.Sprintf("ace_mtree_%d", relid), res.Publications["n1"][0])
	// A stream left with no tree loses its slot: its agent drops it, or the teardown does.
	for _, n := range e.Nodes {
		require.Eventually(t, func() bool {
			return e.count(n.Name, `SELECT count(*) FROM pg_replication_slots WHERE database = current_database()`) == 0
		}, 15*time.Second, 100*time.Millisecond, "slots left on %s", n.Name)
	}
	require.Empty(t, res.PublicationsLeft)

	// A diff of the torn-down tree is refused.
	_, err = mtree.Diff(t.Context(), e.nodes, mtree.DiffOptions{Diff: diff.TableDiffOptions{Table: "public.t"}}, &testcluster.DiffSink{}, nil)
	require.ErrorContains(t, err, "public.t")
}

// An analysed table with an integer key has its leaves planned from the key span and the row
// estimate, read while the streams take the table on: equal widths of about leaf_rows rows,
// not cut at every leaf_rows-th key (which would need a second pass over the reference node).
func TestBuildPlansIntegerLeavesFromTheEstimate(t *testing.T) {
	t.Parallel()
	e := treeSetup(t, 1500, diff.SummaryAuto)
	for _, n := range e.Nodes {
		e.Node(n.Name).Exec(t, `DELETE FROM public.t WHERE id BETWEEN 501 AND 1000`)
		e.Node(n.Name).Exec(t, `ANALYZE public.t`)
	}
	res := e.build(100)
	require.Equal(t, diff.SummaryOrdered, res.LeafSummary, "analysed, and stored in key order on every node")
	// 1000 rows over keys 1..1500: leaves 150 keys wide, cut at 151, 301, … 1351.
	require.Equal(t, 10, res.Leaves)
	require.Contains(t, res.PhaseSeconds, "planning")
	for _, n := range e.Nodes {
		var lows []int64
		require.NoError(t, e.Node(n.Name).Pool.QueryRow(t.Context(),
			`SELECT array_agg(lo[1]::int8 ORDER BY lo[1]::int8) FROM ace.mtree_leaves WHERE lo IS NOT NULL`).Scan(&lows))
		require.Equal(t, []int64{151, 301, 451, 601, 751, 901, 1051, 1201, 1351}, lows, "leaves on %s", n.Name)
	}
	s, sink := e.diff()
	require.True(t, s.InSync())
	require.Empty(t, sink.Rows)
	e.Node("n2").Exec(t, `UPDATE public.t SET v = 'changed' WHERE id = 1400`)
	e.Node("n3").Exec(t, `INSERT INTO public.t VALUES (700, 'in the empty leaf')`)
	_, sink = e.diff()
	require.Equal(t, []string{"[1400]", "[700]"}, sink.Keys())
}

// A diff after scattered changes rehashes many leaves at once, several queries of many ranges
// each: every refreshed leaf must get its own summary, or the trees disagree where the tables
// agree.
func TestDiffRehashesManyScatteredLeaves(t *testing.T) {
	t.Parallel()
	forEachLeafKind(t, func(t *testing.T, kind diff.SummaryKind) {
		e := treeSetup(t, 60000, kind)
		e.build(100) // 600 leaves

		// One change: the leaves of its one differing parent are read by id.
		e.Node("n3").Exec(t, `UPDATE public.t SET v = 'single' WHERE id = 30000`)
		s, sink := e.diff()
		require.Equal(t, []string{"[30000]"}, sink.Keys())
		require.Equal(t, 1, s.Mtree.MismatchedLeaves)
		e.Node("n1").Exec(t, `UPDATE public.t SET v = 'single' WHERE id = 30000`)
		e.Node("n2").Exec(t, `UPDATE public.t SET v = 'single' WHERE id = 30000`)

		// One row in every fourth leaf: 140 stale leaves, fewer than a quarter of the tree, so
		// they are hashed range by range, more than one query's worth.
		update := `UPDATE public.t SET v = 'scattered' WHERE id % 400 = 50 AND id < 56000`
		e.Node("n2").Exec(t, update)
		s, sink = e.diff()
		require.Len(t, sink.Rows, 140)
		require.Equal(t, 140, s.Mtree.MismatchedLeaves)
		if kind == diff.SummaryLanes {
			require.Equal(t, 140, s.Mtree.SettledLeaves, "the changed keys explain every mismatched leaf")
		}
		require.Equal(t, map[string]int{"n1": 1, "n2": 141, "n3": 0}, s.Mtree.LeavesRefreshed, "n2's 140 and the single change's leaf on n1 and n2")

		e.Node("n1").Exec(t, update)
		e.Node("n3").Exec(t, update)
		s, sink = e.diff()
		require.Empty(t, sink.Rows)
		require.Zero(t, s.Mtree.MismatchedLeaves, "the leaves refreshed on n2 match those refreshed on n1 and n3")
		require.True(t, s.InSync())
	})
}

// A table stored out of key order on some node gets additive lanes: an ordered leaf is a range
// scan of its key's index, which would read a page per row there.
func TestBuildKeepsLanesForTablesOutOfKeyOrder(t *testing.T) {
	t.Parallel()
	e := treeSetup(t, 3000, diff.SummaryAuto)
	e.Node("n2").Exec(t, `CREATE TEMP TABLE s AS SELECT * FROM public.t; TRUNCATE public.t;
		INSERT INTO public.t SELECT * FROM s ORDER BY md5(id::text)`)
	for _, n := range e.Nodes {
		e.Node(n.Name).Exec(t, `ANALYZE public.t`)
	}
	res := e.build(100)
	require.Equal(t, diff.SummaryLanes, res.LeafSummary)
	s, sink := e.diff()
	require.True(t, s.InSync())
	require.Empty(t, sink.Rows)
}

// An ordered leaf's digest reads at most 64 × leaf_rows rows. Where a build cuts a leaf that
// holds more on every node (equal-width leaves over a dense cluster of keys), two nodes that
// differ only in a row past the rows read must not look alike: the leaf is marked, and its
// rows are compared one by one.
func TestOverflowedOrderedLeavesAreComparedRowByRow(t *testing.T) {
	t.Parallel()
	e := treeSetup(t, 100, diff.SummaryOrdered)
	e.ExecAll(`INSERT INTO public.t SELECT g, 'dense ' || g FROM generate_series(1000001, 1000300) g; ANALYZE public.t`)
	e.Node("n3").Exec(t, `UPDATE public.t SET v = 'differs' WHERE id = 1000300`)
	e.build(2) // leaves 5002 keys wide: the cluster's 300 rows in one leaf, over its cap of 128
	for _, n := range e.Nodes {
		require.EqualValues(t, 1, e.count(n.Name, `SELECT count(*) FROM ace.mtree_leaves WHERE digest IS NULL AND row_count = 129`),
			"one overflowed leaf on %s", n.Name)
	}
	s, sink := e.diff()
	require.Equal(t, []string{"[1000300]"}, sink.Keys(), "%+v", *s.Mtree)

	// Once a change there refreshes the leaf, the rebalance splits it into leaves within the cap.
	e.ExecAll(`UPDATE public.t SET v = 'same again' WHERE id = 1000300`)
	s, sink = e.diff()
	require.Empty(t, sink.Rows)
	require.Positive(t, s.Mtree.Splits)
	for _, n := range e.Nodes {
		require.Zero(t, e.count(n.Name, `SELECT count(*) FROM ace.mtree_leaves WHERE digest IS NULL`), "overflowed leaves left on %s", n.Name)
	}
}

// Differences already there when the tree is built are in its leaves, each leaf's where its
// keys are: the first diff finds them, with leaves planned from the keys and from the estimate.
func TestDriftFromBeforeTheBuildIsFound(t *testing.T) {
	t.Parallel()
	forEachLeafKind(t, func(t *testing.T, kind diff.SummaryKind) {
		for _, analysed := range []bool{false, true} {
			t.Run(fmt.Sprintf("analysed %v", analysed), func(t *testing.T) {
				t.Parallel()
				e := treeSetup(t, 2000, kind)
				if analysed {
					e.ExecAll(`ANALYZE public.t`)
				}
				e.Node("n3").Exec(t, `UPDATE public.t SET v = 'before the build' WHERE id = 1234`)
				e.Node("n2").Exec(t, `DELETE FROM public.t WHERE id = 777`)
				e.Node("n1").Exec(t, `INSERT INTO public.t VALUES (1999999, 'past the end')`)
				e.build(100)
				_, sink := e.diff()
				require.Equal(t, []string{"[1234]", "[1999999]", "[777]"}, sink.Keys())
			})
		}
	})
}

// A mismatched leaf is settled by its changed keys alone only when nothing else in it can
// differ. Each case would hide a difference if it were settled by the keys the streams brought.
func TestChangedKeysSettleOnlyLeavesTheyExplain(t *testing.T) {
	t.Parallel()
	forEachLeafKind(t, func(t *testing.T, kind diff.SummaryKind) {
		e := treeSetup(t, 2000, kind)
		e.build(100)

		// The leaves agreed, and the change came with its key.
		e.Node("n2").Exec(t, `UPDATE public.t SET v = 'changed' WHERE id = 10`)
		s, sink := e.diff()
		require.Equal(t, []string{"[10]"}, sink.Keys())
		require.Equal(t, 1, s.Mtree.SettledLeaves)

		t.Run("a difference already there", func(t *testing.T) {
			e.Node("n2").Exec(t, `UPDATE public.t SET v = 'changed' WHERE id = 15`)
			s, sink := e.diff()
			require.Equal(t, []string{"[10]", "[15]"}, sink.Keys())
			require.Zero(t, s.Mtree.SettledLeaves)
		})
		t.Run("keys a compaction folded into stale marks", func(t *testing.T) {
			e.Node("n3").Exec(t, `UPDATE public.t SET v = 'compacted' WHERE id = 510`)
			require.Eventually(t, func() bool {
				moved, err := mtree.Compact(t.Context(), e.nodes[2].Agent, 1)
				require.NoError(t, err)
				return moved > 0
			}, time.Minute, 50*time.Millisecond, "n3's change reaches a stale mark")
			e.Node("n3").Exec(t, `UPDATE public.t SET v = 'streamed' WHERE id = 520`)
			_, sink := e.diff()
			require.Equal(t, []string{"[10]", "[15]", "[510]", "[520]"}, sink.Keys())
		})
		t.Run("a TRUNCATE", func(t *testing.T) {
			e.Node("n1").Exec(t, `CREATE TEMP TABLE s AS SELECT * FROM public.t; TRUNCATE public.t;
				INSERT INTO public.t SELECT * FROM s WHERE id <> 800`)
			_, sink := e.diff()
			require.Equal(t, []string{"[10]", "[15]", "[510]", "[520]", "[800]"}, sink.Keys())
		})
	})
}

// Leaves of a key of several columns are ranges of rows compared column by column: built, then
// hashed again range by range after changes, they find what a table-diff finds.
func TestTreesOfACompositeKey(t *testing.T) {
	t.Parallel()
	forEachLeafKind(t, func(t *testing.T, kind diff.SummaryKind) {
		e := treeSetupDDL(t, `CREATE TABLE public.t (a int, b text, v text, PRIMARY KEY (a, b));
			INSERT INTO public.t SELECT g, c, 'v' || g || c FROM generate_series(1, 1000) g, unnest('{p,q,r}'::text[]) c;
			ANALYZE public.t`, kind)
		e.Node("n2").Exec(t, `UPDATE public.t SET v = 'before' WHERE a = 10 AND b = 'q'`)
		e.build(50)
		e.Node("n3").Exec(t, `INSERT INTO public.t VALUES (500, 's', 'extra')`)
		e.Node("n1").Exec(t, `DELETE FROM public.t WHERE a = 700 AND b = 'p'`)
		e.Node("n2").Exec(t, `UPDATE public.t SET v = 'after' WHERE a = 10 AND b = 'r'`)
		_, sink := e.diff()
		require.Equal(t, []string{`[10, "q"]`, `[10, "r"]`, `[500, "s"]`, `[700, "p"]`}, sink.Keys())
	})
}
