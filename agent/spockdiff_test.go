package agent_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine/spockdiff"
	"github.com/ace-agent/ace-agent/internal/localpg"
	"github.com/ace-agent/ace-agent/internal/pglogicaltest"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// completedSpockDiff runs ace.spock_diff() on n1 and returns its result.
func (e *diffEnv) completedSpockDiff() spockdiff.Result {
	e.t.Helper()
	var id uuid.UUID
	require.NoError(e.t, e.Node("n1").Pool.QueryRow(context.Background(), `SELECT ace.spock_diff()`).Scan(&id))
	task := e.Node("n1").Wait(e.t, id)
	require.Equal(e.t, sqlapi.StatusCompleted, task.Status, "task error: %v", task.Error)
	var r spockdiff.Result
	require.NoError(e.t, json.Unmarshal(task.Result, &r))
	return r
}

// TestSpockDiffOnPglogical runs spock-diff on a real pglogical mesh: identical at first, then
// a subscription disabled and a table removed from a set on one node each.
func TestSpockDiffOnPglogical(t *testing.T) {
	t.Parallel()
	c := pglogicaltest.Start(t, 3, "repl", `CREATE TABLE public.acct (id bigint PRIMARY KEY, v text)`)
	var instances []*localpg.Instance
	for _, n := range c.Nodes {
		instances = append(instances, n.Instance)
	}
	e := envOn(t, instances, c.DB)

	r := e.completedSpockDiff()
	require.Equal(t, spockdiff.ProviderPglogical, r.Provider)
	require.False(t, r.Mismatch(), "%+v", r.Diffs)
	n3 := r.SpockConfig["n3"]
	require.Len(t, n3.Subscriptions, 2)
	require.Equal(t, []string{"default"}, n3.TableSets["public.acct"])
	require.Equal(t, "n1", n3.Subscriptions[0].ProviderNode, "%+v", n3.Subscriptions)

	c.DisableSubscription(t, "n3", "n1")
	c.Node("n2").Exec(t, `SELECT pglogical.replication_set_remove_table('default', 'public.acct')`)
	r = e.completedSpockDiff()
	require.True(t, r.Mismatch())

	d13 := r.Diffs["n1/n3"].Details
	require.Len(t, d13.Subscriptions.Different, 1)
	require.True(t, d13.Subscriptions.Different[0].Node1.SubEnabled, "n1's subscription to n3")
	require.False(t, d13.Subscriptions.Different[0].Node2.SubEnabled, "n3's subscription to n1")
	require.Empty(t, d13.ReplicationSets.TablePlacementDiffs)
	require.Empty(t, r.Diffs["n1/n2"].Details.Subscriptions.Different)
	for _, pair := range []string{"n1/n2", "n2/n3"} {
		want := spockdiff.TablePlacement{TableName: "public.acct", Node1RepSet: "default", Node2RepSet: spockdiff.NotInAnySet}
		if pair == "n2/n3" {
			want.Node1RepSet, want.Node2RepSet = spockdiff.NotInAnySet, "default"
		}
		require.Equal(t, []spockdiff.TablePlacement{want}, r.Diffs[pair].Details.ReplicationSets.TablePlacementDiffs, pair)
	}
}
