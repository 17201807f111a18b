package agent_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/localpg"
	"github.com/ace-agent/ace-agent/internal/pglogicaltest"
)

// TestRepairConvergesAPglogicalCluster plants drift in a real 3-node multi-master pglogical
// cluster (writes that do not replicate, and writes made while a subscription was disabled),
// repairs it from one node, and shows that every node converges, stays converged, and that the
// repair was not echoed back to the source of truth.
func TestRepairConvergesAPglogicalCluster(t *testing.T) {
	t.Parallel()
	c := pglogicaltest.Start(t, 3, "repl", `CREATE TABLE public.acct (id bigint PRIMARY KEY, v text, n numeric(12,2), j jsonb)`)
	c.Node("n1").Exec(t, `INSERT INTO acct SELECT g, 'v' || g, g * 1.5, jsonb_build_object('g', g) FROM generate_series(1, 2000) g`)
	c.WaitForReplication(t)

	c.WriteLocalOnly(t, "n2", `UPDATE acct SET v = 'drift n2' WHERE id IN (10, 11); DELETE FROM acct WHERE id = 12;
		INSERT INTO acct VALUES (9002, 'only n2', 0, '{}')`)
	c.WriteLocalOnly(t, "n3", `UPDATE acct SET n = -1, j = '{"x": 1}' WHERE id = 20; INSERT INTO acct VALUES (9003, 'only n3', 0, NULL)`)
	c.DisableSubscription(t, "n3", "n1")
	c.Node("n1").Exec(t, `INSERT INTO acct VALUES (3000, 'while n3 was cut off', 1, NULL); UPDATE acct SET v = 'edited' WHERE id = 30`)
	c.WaitForReplication(t)

	var instances []*localpg.Instance
	for _, n := range c.Nodes {
		instances = append(instances, n.Instance)
	}
	e := envOn(t, instances, c.DB)
	diff := e.diffID("public.acct")
	require.Equal(t, []int64{10, 11, 12, 20, 30, 3000, 9002, 9003}, e.idsOf(diff))

	before := xmins(t, c, "n1")
	_, s := e.completedRepair(diff, `'n1'`)
	require.True(t, s.FullyRepaired, "%+v", s)
	c.WaitForReplication(t)
	for _, n := range []string{"n1", "n2", "n3"} {
		e.requireInSyncFrom(n, "public.acct")
	}
	require.Equal(t, before, xmins(t, c, "n1"), "nothing the repair wrote came back to n1")
	require.Equal(t, "ace_repair", e.scalar("n2", `SELECT roname FROM pg_replication_origin
		WHERE roident = (SELECT roident FROM pg_xact_commit_timestamp_origin((SELECT xmin FROM acct WHERE id = 10)))`))

	// n3 catches up on what it missed: the rows are already there, and everything stays in sync.
	c.EnableSubscription(t, "n3", "n1")
	c.WaitForReplication(t)
	c.Node("n1").Exec(t, `UPDATE acct SET v = 'after the repair' WHERE id = 40`)
	c.WaitForReplication(t)
	time.Sleep(500 * time.Millisecond)
	c.WaitForReplication(t)
	for _, n := range []string{"n1", "n2", "n3"} {
		e.requireInSyncFrom(n, "public.acct")
	}
	c.RequireSameRows(t, `SELECT id, v, n, j FROM acct ORDER BY id`)
}

// xmins is every row's id and xmin on a node: a row rewritten by replication gets a new xmin.
func xmins(t *testing.T, c *pglogicaltest.Cluster, node string) [][]any {
	return c.Node(node).QueryRows(t, `SELECT id, xmin::text FROM acct ORDER BY id`)
}
