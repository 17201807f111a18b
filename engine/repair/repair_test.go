package repair_test

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/diff"
	"github.com/ace-agent/ace-agent/engine/repair"
	"github.com/ace-agent/ace-agent/internal/testcluster"
)

// repairEnv is public.t (rows 1..1000) on three nodes with drift planted, diffed in memory.
type repairEnv struct {
	*testcluster.Env
	nodes    []*engine.Node // n1, n2, n3
	diffOpts diff.TableDiffOptions
	summary  *engine.DiffSummary
	rows     *testcluster.DiffSink
}

// plantedDrift: n2 updated key 10, n3 inserted key 2000, n1 deleted key 400.
func plantedDrift(e *testcluster.Env) {
	e.Node("n2").Exec(e.T, `UPDATE public.t SET v = 'changed' WHERE id = 10`)
	e.Node("n3").Exec(e.T, `INSERT INTO public.t VALUES (2000, 'extra')`)
	e.Node("n1").Exec(e.T, `DELETE FROM public.t WHERE id = 400`)
}

// repairSetup seeds public.t, lets drift change it, and diffs it.
func repairSetup(t *testing.T, drift func(e *testcluster.Env)) *repairEnv {
	return seededDiff(t, 1000, diff.TableDiffOptions{BlockSize: 200, CompareUnitSize: 10}, drift)
}

// seededDiff seeds public.t with rows rows, lets drift change it, and diffs it with opts.
func seededDiff(t *testing.T, rows int, opts diff.TableDiffOptions, drift func(e *testcluster.Env)) *repairEnv {
	t.Helper()
	e := testcluster.New(t)
	e.SeedTable("public.t", rows)
	drift(e)
	opts.Table = "public.t"
	r := &repairEnv{Env: e, nodes: e.EngineNodes(4), diffOpts: opts}
	r.summary, r.rows = r.diff()
	return r
}

// diff diffs public.t again, with the options the environment was set up with.
func (r *repairEnv) diff() (*engine.DiffSummary, *testcluster.DiffSink) {
	r.T.Helper()
	sink := &testcluster.DiffSink{}
	s, err := diff.TableDiff(r.T.Context(), r.nodes, r.diffOpts, sink, nil)
	require.NoError(r.T, err)
	return s, sink
}

// repairFromN1 repairs n2 and n3 from n1 with the stored diff's rows; set adjusts the options.
func (r *repairEnv) repairFromN1(set func(o *repair.Options)) (*repair.Summary, *testcluster.RepairSink, error) {
	r.T.Helper()
	o := repair.Options{ID: r.DB, Diff: r.summary, Rows: r.rows.Source(), SourceOfTruth: "n1"}
	if set != nil {
		set(&o)
	}
	sink := &testcluster.RepairSink{}
	s, err := repair.Repair(r.T.Context(), r.nodes[1:], o, sink, nil)
	return s, sink, err
}

// actions maps "node action key" to the action's reason, for the sink's actions.
func actions(t *testing.T, sink *testcluster.RepairSink) map[string]string {
	out := map[string]string{}
	for _, a := range sink.Actions {
		require.NotEmpty(t, a.PKSort)
		out[a.Node+" "+a.Kind+" "+string(a.PKSort)] = a.Reason
	}
	return out
}

func TestRepairFromSourceOfTruthConverges(t *testing.T) {
	t.Parallel()
	r := repairSetup(t, plantedDrift)
	require.Equal(t, []string{"[10]", "[2000]", "[400]"}, r.rows.Keys())
	s, sink, err := r.repairFromN1(nil)
	require.NoError(t, err)

	require.True(t, s.FullyRepaired)
	require.Equal(t, "source_of_truth", s.Mode)
	require.EqualValues(t, 3, s.KeysChecked)
	require.Equal(t, []string{"n2", "n3"}, s.RepairedNodes)
	// A target that already holds the source's version of a key gets no action for it.
	none := map[string]int64{}
	require.Equal(t, repair.NodeRepair{Status: repair.NodeRepaired, Updated: 1, Deleted: 1, SkippedByReason: none,
		WriteMode: repair.WriteReplica}, *s.Nodes["n2"])
	require.Equal(t, repair.NodeRepair{Status: repair.NodeRepaired, Deleted: 2, SkippedByReason: none,
		WriteMode: repair.WriteReplica}, *s.Nodes["n3"])
	require.ElementsMatch(t, []string{"n2", "n3"}, sink.Applied)
	got := actions(t, sink)
	require.Equal(t, map[string]string{
		"n2 update [10]": "", "n2 delete [400]": "", "n3 delete [400]": "", "n3 delete [2000]": "",
	}, got)

	require.Empty(t, r.DifferingKeys("public.t", "id"), "the nodes agree row by row")
	again, rows := r.diff()
	require.True(t, again.InSync(), "a fresh diff finds %v", rows.Keys())
	var v string
	require.NoError(t, r.Node("n2").Pool.QueryRow(t.Context(), `SELECT v FROM public.t WHERE id = 10`).Scan(&v))
	require.Equal(t, "v10", v, "n2 holds n1's version again")
}

func TestRepairDryRunChangesNothing(t *testing.T) {
	t.Parallel()
	r := repairSetup(t, plantedDrift)
	s, sink, err := r.repairFromN1(func(o *repair.Options) { o.DryRun = true })
	require.NoError(t, err)
	require.True(t, s.DryRun)
	require.False(t, s.FullyRepaired)
	require.Equal(t, repair.NodePlanned, s.Nodes["n2"].Status)
	require.Equal(t, repair.NodePlanned, s.Nodes["n3"].Status)
	require.EqualValues(t, 1, s.Updated)
	require.EqualValues(t, 3, s.Deleted)
	require.Empty(t, sink.Applied)
	for _, a := range sink.Actions {
		require.False(t, a.Applied, "%+v", a)
	}
	require.Equal(t, []string{"10", "2000", "400"}, r.DifferingKeys("public.t", "id"), "the drift is still there")
}

func TestRepairCheckUnchangedSkipsRowsChangedSinceTheDiff(t *testing.T) {
	t.Parallel()
	r := repairSetup(t, plantedDrift)
	r.Node("n2").Exec(t, `UPDATE public.t SET v = 'changed again' WHERE id = 10`)
	s, sink, err := r.repairFromN1(func(o *repair.Options) { o.CheckUnchanged = true })
	require.NoError(t, err)
	require.False(t, s.FullyRepaired)
	require.EqualValues(t, 1, s.Unresolved)
	require.Equal(t, map[string]int64{repair.ReasonChangedSinceDiff: 1}, s.Nodes["n2"].SkippedByReason)
	require.Equal(t, repair.ReasonChangedSinceDiff, actions(t, sink)["n2 skip [10]"])
	require.Equal(t, []string{"10"}, r.DifferingKeys("public.t", "id"), "only the row changed since the diff still differs")
}

func TestRepairConvergesRandomDrift(t *testing.T) {
	t.Parallel()
	r := repairSetup(t, func(e *testcluster.Env) {
		e.PlantDrift(rand.New(rand.NewPCG(7, 17)), "public.t", 1000, 30)
	})
	require.Len(t, r.rows.Rows, 30)
	s, _, err := r.repairFromN1(nil)
	require.NoError(t, err)
	require.True(t, s.FullyRepaired)
	require.Empty(t, r.DifferingKeys("public.t", "id"))
}

// Many batches: the next batch of the diff is read while one is applied.
func TestRepairInSmallBatchesConverges(t *testing.T) {
	t.Parallel()
	r := repairSetup(t, func(e *testcluster.Env) {
		e.PlantDrift(rand.New(rand.NewPCG(3, 5)), "public.t", 1000, 40)
	})
	s, sink, err := r.repairFromN1(func(o *repair.Options) { o.BatchSize = 3 })
	require.NoError(t, err)
	require.True(t, s.FullyRepaired)
	require.EqualValues(t, 40, s.KeysChecked)
	require.NotEmpty(t, sink.Actions)
	require.Empty(t, r.DifferingKeys("public.t", "id"))
}
