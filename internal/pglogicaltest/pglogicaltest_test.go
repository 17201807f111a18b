package pglogicaltest_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/pglogicaltest"
)

// setupSQL creates the replicated table t and, outside schema public (so it is not replicated),
// an audit table filled by an ENABLE ALWAYS trigger. pglogical's apply worker runs with
// session_replication_role = replica, where only ALWAYS triggers fire, so the audit table records
// every local write and every applied change on its node: an echo or a loop would show up there
// as extra events.
const setupSQL = `
CREATE TABLE t (id int PRIMARY KEY, v text);
CREATE SCHEMA audit;
CREATE TABLE audit.events (seq bigserial PRIMARY KEY, op text NOT NULL, id int NOT NULL, v text,
	applied bool NOT NULL);
CREATE FUNCTION audit.record() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO audit.events (op, id, v, applied)
	VALUES (TG_OP, COALESCE(NEW.id, OLD.id), NEW.v, current_setting('session_replication_role') = 'replica');
	RETURN NULL;
END $$;
CREATE TRIGGER record AFTER INSERT OR UPDATE OR DELETE ON t
	FOR EACH ROW EXECUTE FUNCTION audit.record();
ALTER TABLE t ENABLE ALWAYS TRIGGER record;
`

func rowsOf(t *testing.T, c *pglogicaltest.Cluster, node string) [][]any {
	t.Helper()
	return c.Node(node).QueryRows(t, "SELECT id, v FROM t ORDER BY id")
}

func row(id int32, v string) []any { return []any{id, v} }

// TestMultiMaster: a write on any node reaches every other node exactly once.
func TestMultiMaster(t *testing.T) {
	t.Parallel()
	c := pglogicaltest.Start(t, 3, "app", setupSQL)
	require.Len(t, c.Nodes, 3)

	c.Node("n1").Exec(t, "INSERT INTO t VALUES (1, 'from n1')")
	c.WaitForReplication(t)
	require.Equal(t, [][]any{row(1, "from n1")}, c.RequireSameRows(t, "SELECT id, v FROM t ORDER BY id"))

	c.Node("n2").Exec(t, "UPDATE t SET v = 'updated on n2' WHERE id = 1")
	c.WaitForReplication(t)
	require.Equal(t, [][]any{row(1, "updated on n2")}, c.RequireSameRows(t, "SELECT id, v FROM t ORDER BY id"))

	c.Node("n3").Exec(t, "DELETE FROM t WHERE id = 1")
	c.WaitForReplication(t)
	require.Equal(t, [][]any{}, c.RequireSameRows(t, "SELECT id, v FROM t ORDER BY id"))

	// No echoes: every node saw each change exactly once, locally or applied.
	// Give a loop time to show, then check again.
	time.Sleep(time.Second)
	c.WaitForReplication(t)
	const events = "SELECT op, id, v, applied FROM audit.events ORDER BY seq"
	want := map[string][][]any{
		"n1": {{"INSERT", int32(1), "from n1", false}, {"UPDATE", int32(1), "updated on n2", true}, {"DELETE", int32(1), nil, true}},
		"n2": {{"INSERT", int32(1), "from n1", true}, {"UPDATE", int32(1), "updated on n2", false}, {"DELETE", int32(1), nil, true}},
		"n3": {{"INSERT", int32(1), "from n1", true}, {"UPDATE", int32(1), "updated on n2", true}, {"DELETE", int32(1), nil, false}},
	}
	require.Equal(t, want, c.QueryAll(t, events))

	// The marker row of each node moved only when that node bumped it: nothing loops back.
	markers := c.RequireSameRows(t, "SELECT node, seq FROM "+pglogicaltest.MarkerTable+" ORDER BY node")
	time.Sleep(500 * time.Millisecond)
	require.Equal(t, markers, c.RequireSameRows(t, "SELECT node, seq FROM "+pglogicaltest.MarkerTable+" ORDER BY node"))

	// Every subscription is still healthy and nothing logged an apply error or conflict.
	for _, n := range c.Nodes {
		require.Equal(t, [][]any{{"replicating", int64(2)}},
			n.QueryRows(t, "SELECT status, count(*) FROM pglogical.show_subscription_status() GROUP BY status"), n.Name)
		require.Equal(t, [][]any{{int64(2)}},
			n.QueryRows(t, "SELECT count(*) FROM pg_replication_slots WHERE active AND plugin = 'pglogical_output'"), n.Name)
	}

	// A table created after Start replicates once it is added to the replication set.
	c.ExecAll(t, "CREATE TABLE later (id int PRIMARY KEY)")
	c.AddTable(t, "later")
	c.Node("n3").Exec(t, "INSERT INTO later VALUES (7)")
	c.WaitForReplication(t)
	require.Equal(t, [][]any{{int32(7)}}, c.RequireSameRows(t, "SELECT id FROM later"))
}

// TestDisableEnable: a disabled subscription holds changes back, and enabling it replays them.
//
// Observed with pglogical 2.4.2: while sub_n3_n1 is disabled, n1's writes reach n2 but not n3.
// The slot on n1 keeps them, so after alter_subscription_enable n3 receives the writes made
// while it was disabled as well as later ones. Disabling a subscription therefore plants only
// temporary drift; WriteLocalOnly plants lasting drift.
func TestDisableEnable(t *testing.T) {
	t.Parallel()
	c := pglogicaltest.Start(t, 3, "app", setupSQL)

	c.DisableSubscription(t, "n3", "n1")
	c.Node("n1").Exec(t, "INSERT INTO t VALUES (10, 'while disabled')")
	c.Node("n2").Exec(t, "INSERT INTO t VALUES (20, 'n2 still flows')")
	c.WaitForReplication(t) // skips the disabled subscription
	time.Sleep(time.Second) // and a little more, so "not on n3" is not just lag

	require.Equal(t, [][]any{row(10, "while disabled"), row(20, "n2 still flows")}, rowsOf(t, c, "n1"))
	require.Equal(t, [][]any{row(10, "while disabled"), row(20, "n2 still flows")}, rowsOf(t, c, "n2"))
	require.Equal(t, [][]any{row(20, "n2 still flows")}, rowsOf(t, c, "n3"), "drift: n3 misses n1's write")
	require.Equal(t, [][]any{{"sub_n3_n1", "disabled"}, {"sub_n3_n2", "replicating"}},
		c.Node("n3").QueryRows(t, "SELECT subscription_name, status FROM pglogical.show_subscription_status() ORDER BY 1"))

	c.EnableSubscription(t, "n3", "n1")
	c.Node("n1").Exec(t, "INSERT INTO t VALUES (11, 'after enable')")
	c.WaitForReplication(t)
	require.Equal(t,
		[][]any{row(10, "while disabled"), row(11, "after enable"), row(20, "n2 still flows")},
		c.RequireSameRows(t, "SELECT id, v FROM t ORDER BY id"),
		"the write made while disabled is replayed from the slot")
}

// TestWriteLocalOnly: a write under a replication origin stays on its node for good, and later
// ordinary writes still replicate.
func TestWriteLocalOnly(t *testing.T) {
	t.Parallel()
	c := pglogicaltest.Start(t, 3, "app", setupSQL)

	c.Node("n1").Exec(t, "INSERT INTO t VALUES (1, 'one'), (2, 'two'), (3, 'three')")
	c.WaitForReplication(t)

	// Plant drift of every kind on n2: a missing row, an extra row, a changed row.
	c.WriteLocalOnly(t, "n2", "DELETE FROM t WHERE id = 1")
	c.WriteLocalOnly(t, "n2", "INSERT INTO t VALUES ($1, $2)", 4, "only on n2")
	c.WriteLocalOnly(t, "n2", "UPDATE t SET v = 'changed on n2' WHERE id = 3")
	c.WaitForReplication(t)
	time.Sleep(time.Second)

	base := [][]any{row(1, "one"), row(2, "two"), row(3, "three")}
	drifted := [][]any{row(2, "two"), row(3, "changed on n2"), row(4, "only on n2")}
	require.Equal(t, base, rowsOf(t, c, "n1"))
	require.Equal(t, drifted, rowsOf(t, c, "n2"))
	require.Equal(t, base, rowsOf(t, c, "n3"))

	// Ordinary writes on n2 (even on another connection of the same pool) replicate again.
	c.Node("n2").Exec(t, "INSERT INTO t VALUES (5, 'five')")
	c.WaitForReplication(t)
	require.Equal(t, append(base, row(5, "five")), rowsOf(t, c, "n1"))
	require.Equal(t, append(drifted, row(5, "five")), rowsOf(t, c, "n2"))
	require.Equal(t, append(base, row(5, "five")), rowsOf(t, c, "n3"))

	// The drift survives a subscription restart: the skipped changes are not in any slot's future.
	c.DisableSubscription(t, "n1", "n2")
	c.EnableSubscription(t, "n1", "n2")
	c.WaitForReplication(t)
	require.Equal(t, append(base, row(5, "five")), rowsOf(t, c, "n1"))

	// Repairing with WriteLocalOnly on the drifted node converges without echoes.
	const lastEvent = "SELECT coalesce(max(seq), 0) FROM audit.events"
	before := c.QueryAll(t, lastEvent)
	c.WriteLocalOnly(t, "n2", `INSERT INTO t VALUES (1, 'one');
		DELETE FROM t WHERE id = 4;
		UPDATE t SET v = 'three' WHERE id = 3`)
	c.WaitForReplication(t)
	require.Equal(t, append(base, row(5, "five")), c.RequireSameRows(t, "SELECT id, v FROM t ORDER BY id"))
	for _, n := range []string{"n1", "n3"} {
		require.Equal(t, [][]any{{int64(0)}},
			c.Node(n).QueryRows(t, "SELECT count(*) FROM audit.events WHERE seq > $1", before[n][0][0]),
			"%s applied nothing of n2's local-only writes", n)
	}
}
