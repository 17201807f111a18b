package repair_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine/repair"
	"github.com/ace-agent/ace-agent/internal/testcluster"
)

// majorityDrift plants the four cases of a majority repair on public.t (rows 1..1000, v = 'v<id>'):
// n2 updated key 10 (a minority update), n1 lost key 400 (a minority missing row), the three
// nodes each hold their own version of key 20 (no majority), and n3 holds an extra key 2000.
func majorityDrift(e *testcluster.Env) {
	e.Node("n2").Exec(e.T, `UPDATE public.t SET v = 'minority' WHERE id = 10`)
	e.Node("n1").Exec(e.T, `DELETE FROM public.t WHERE id = 400`)
	e.Node("n1").Exec(e.T, `UPDATE public.t SET v = 'one' WHERE id = 20`)
	e.Node("n2").Exec(e.T, `UPDATE public.t SET v = 'two' WHERE id = 20`)
	e.Node("n3").Exec(e.T, `INSERT INTO public.t VALUES (2000, 'extra')`)
}

// repairByMajority repairs every node of the diff by majority; set adjusts the options.
func (r *repairEnv) repairByMajority(set func(o *repair.Options)) (*repair.Summary, *testcluster.RepairSink, error) {
	r.T.Helper()
	o := repair.Options{ID: r.DB, Diff: r.summary, Rows: r.rows.Source(), Strategy: repair.StrategyMajority, CheckUnchanged: true}
	if set != nil {
		set(&o)
	}
	sink := &testcluster.RepairSink{}
	s, err := repair.Repair(r.T.Context(), r.nodes, o, sink, nil)
	return s, sink, err
}

func (r *repairEnv) value(node string, id int) string {
	r.T.Helper()
	var v string
	err := r.Node(node).Pool.QueryRow(r.T.Context(), `SELECT coalesce((SELECT v FROM public.t WHERE id = $1), '<absent>')`, id).Scan(&v)
	require.NoError(r.T, err)
	return v
}

func TestMajorityRepair(t *testing.T) {
	t.Parallel()
	r := repairSetup(t, majorityDrift)
	require.Equal(t, []string{"[10]", "[2000]", "[20]", "[400]"}, r.rows.Keys())
	s, sink, err := r.repairByMajority(nil)
	require.NoError(t, err)
	require.Equal(t, repair.StrategyMajority, s.Mode)
	require.False(t, s.FullyRepaired, "key 20 has no majority")
	require.EqualValues(t, 3, s.Unresolved, "key 20 is left alone on each of the three nodes")
	require.Equal(t, map[string]string{
		"n2 update [10]":   "",                      // a minority update is overwritten by the majority's version
		"n1 insert [400]":  "",                      // a minority missing row is inserted from the majority
		"n3 delete [2000]": "",                      // an extra row on one node: absence is the majority
		"n1 skip [20]":     repair.ReasonNoMajority, // three versions, none held by two nodes
		"n2 skip [20]":     repair.ReasonNoMajority,
		"n3 skip [20]":     repair.ReasonNoMajority,
	}, actions(t, sink))
	for _, a := range sink.Actions {
		if a.Kind != repair.ActionSkip {
			require.Contains(t, []string{"n1", "n2", "n3"}, a.Source, "%+v", a)
			require.NotEqual(t, a.Node, a.Source, "%+v", a)
		}
	}

	t.Run("minority update", func(t *testing.T) { require.Equal(t, "v10", r.value("n2", 10)) })
	t.Run("minority missing row", func(t *testing.T) { require.Equal(t, "v400", r.value("n1", 400)) })
	t.Run("no majority", func(t *testing.T) {
		require.Equal(t, []string{"one", "two", "v20"}, []string{r.value("n1", 20), r.value("n2", 20), r.value("n3", 20)})
	})
	t.Run("extra row on one node", func(t *testing.T) { require.Equal(t, "<absent>", r.value("n3", 2000)) })
	require.Equal(t, []string{"20"}, r.DifferingKeys("public.t", "id"), "only the key without a majority still differs")
}

func TestMajorityRepairUpsertOnlyKeepsTheExtraRow(t *testing.T) {
	t.Parallel()
	r := repairSetup(t, majorityDrift)
	s, sink, err := r.repairByMajority(func(o *repair.Options) { o.UpsertOnly = true })
	require.NoError(t, err)
	require.Equal(t, repair.ReasonUpsertOnly, actions(t, sink)["n3 skip [2000]"])
	require.EqualValues(t, 0, s.Deleted)
	require.Equal(t, "extra", r.value("n3", 2000))
	require.Equal(t, "v10", r.value("n2", 10))
}

func TestMajorityRepairNeedsThreeNodes(t *testing.T) {
	t.Parallel()
	r := repairSetup(t, majorityDrift)
	r.nodes = r.nodes[:2]
	r.summary, r.rows = r.diff()
	require.Equal(t, []string{"n1", "n2"}, r.summary.Nodes)
	_, sink, err := r.repairByMajority(nil)
	require.ErrorContains(t, err, "strategy majority needs a diff of three nodes or more, and this one has 2 (n1, n2)")
	require.Empty(t, sink.Actions)
	require.Equal(t, "minority", r.value("n2", 10), "nothing was written")
}
