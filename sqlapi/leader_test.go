package sqlapi_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/testcluster"
)

// TestLeaderIsTheFirstLiveActiveNodeUnlessPinned: the leader follows node states and agent
// liveness as ace.node_status records them, and the pin while its node is live and active.
func TestLeaderIsTheFirstLiveActiveNodeUnlessPinned(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := testcluster.New(t)
	n1 := e.Node("n1")
	leader := func() *string {
		var l *string
		require.NoError(t, n1.Pool.QueryRow(ctx, `SELECT ace.leader()`).Scan(&l))
		return l
	}
	alive := func(node string, yes bool) {
		n1.Exec(t, `INSERT INTO ace.node_status (node_name, reachable, agent_alive) VALUES ($1, true, $2)
			ON CONFLICT (node_name) DO UPDATE SET agent_alive = EXCLUDED.agent_alive`, node, yes)
	}
	require.Nil(t, leader(), "no live agent anywhere: no leader")
	for _, n := range []string{"n1", "n2", "n3"} {
		alive(n, true)
	}
	steps := []struct {
		name, sql string
		want      string
	}{
		{"the first by name", ``, "n1"},
		{"its agent lost", `UPDATE ace.node_status SET agent_alive = false WHERE node_name = 'n1'`, "n2"},
		{"pinned", `SELECT ace.set_leader('n3')`, "n3"},
		{"the pinned node down", `UPDATE ace.nodes SET state = 'down' WHERE node_name = 'n3'`, "n2"},
		{"the pinned node back", `UPDATE ace.nodes SET state = 'active' WHERE node_name = 'n3'`, "n3"},
		{"unpinned", `SELECT ace.set_leader(NULL)`, "n2"},
		{"the leader marked down", `SELECT ace.mark_node_down('n2', 'maintenance')`, "n3"},
		{"a stale reading of the next one", `UPDATE ace.node_status SET stale_at = now() - interval '1 second' WHERE node_name = 'n3'`, ""},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if s.sql != "" {
				n1.Exec(t, s.sql)
			}
			if s.want == "" {
				require.Nil(t, leader())
				return
			}
			require.Equal(t, s.want, *leader())
		})
	}
	t.Run("an unknown node cannot be pinned", func(t *testing.T) {
		_, err := n1.Pool.Exec(ctx, `SELECT ace.set_leader('n9')`)
		require.ErrorContains(t, err, "node n9 is not in ace.nodes")
	})
}
