package agent_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/testcluster"
)

// The collection of every node's tree status is a service of its own, on the heartbeat interval:
// it runs on a node without trees, and whatever the tree keeper does. With no tree anywhere,
// every node reports none, so what n1's ace.mtree_node_status held of trees since gone is
// deleted: that is how the tests see the collection run.

// setupTreeStatus is a cluster without trees whose n1 holds a stale report of a tree on every
// node, with no agent running yet.
func setupTreeStatus(t *testing.T) *testcluster.Env {
	t.Helper()
	e := testcluster.New(t)
	for _, n := range e.Nodes {
		e.Node("n1").Exec(t, `INSERT INTO ace.mtree_node_status (node_name, table_name, status, reported_at)
			VALUES ($1, 'public.gone', '{"status": "ready"}', now() - interval '1 day')`, n.Name)
	}
	for _, n := range e.Nodes {
		require.Zero(t, countOn(t, n, `SELECT count(*) FROM ace.mtrees`), "no tree on %s", n.Name)
	}
	return e
}

func countOn(t *testing.T, n *testcluster.Node, sql string) int64 {
	t.Helper()
	var c int64
	require.NoError(t, n.Pool.QueryRow(context.Background(), sql).Scan(&c))
	return c
}

// requireStaleReportsDeleted waits for n1's agent to collect every node's status.
func requireStaleReportsDeleted(t *testing.T, e *testcluster.Env) {
	t.Helper()
	require.Eventually(t, func() bool {
		return countOn(t, e.Node("n1"), `SELECT count(*) FROM ace.mtree_node_status`) == 0
	}, 10*time.Second, 50*time.Millisecond, "n1's agent collects every node's status, which holds no tree")
}

func TestTreeStatusIsCollectedWithoutTrees(t *testing.T) {
	t.Parallel()
	t.Run("no tree on any node", func(t *testing.T) {
		t.Parallel()
		e := setupTreeStatus(t)
		e.Node("n1").StartAgent(t)
		requireStaleReportsDeleted(t, e)
	})
	t.Run("while the tree keeper fails", func(t *testing.T) {
		t.Parallel()
		e := setupTreeStatus(t)
		// The keeper starts each round by adopting trees; without the function every round
		// fails, and the keeper only retries.
		e.Node("n1").Exec(t, `ALTER FUNCTION ace.mtree_adopt_trees() RENAME TO mtree_adopt_trees_gone`)
		e.Node("n1").StartAgent(t)
		requireStaleReportsDeleted(t, e)
	})
}
