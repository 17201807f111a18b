package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// Each publication owner's trees have a change stream of their own: what alice does to her
// publications can stop only her trees, never bob's, and never fill the disk.

// streamsEnv is a secure cluster where alice builds a tree of public.a (owned by the group role
// app, of which she is a member) and bob one of public.b (his own). dba is a member of app but
// not of alice; carol of nothing.
type streamsEnv struct {
	*wallEnv
	app, dba, carol string
}

// newStreamsEnv starts the agents with heartbeat as their heartbeat interval (0: the tests'
// default). A long one keeps the agents from checking the publications on their own, so that
// what a broken publication does to the stream itself is what the test sees.
func newStreamsEnv(t *testing.T, heartbeat time.Duration) *streamsEnv {
	t.Helper()
	w := &wallEnv{Env: testcluster.NewSecure(t)}
	w.alice, w.bob = w.AddSubmitter("alice", true), w.AddSubmitter("bob", true)
	e := &streamsEnv{wallEnv: w, app: w.DB + "_app", dba: w.AddSubmitter("dba", true), carol: w.AddSubmitter("carol", true)}
	e.ExecAll(fmt.Sprintf(`DO $$ BEGIN CREATE ROLE %[1]s NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
		GRANT %[1]s TO %[2]s; GRANT %[1]s TO %[3]s; GRANT CREATE ON DATABASE %[4]s TO %[2]s, %[5]s;
		CREATE TABLE public.a (id int PRIMARY KEY, v text); INSERT INTO public.a SELECT g, 'v' FROM generate_series(1, 300) g;
		ALTER TABLE public.a OWNER TO %[1]s;
		CREATE TABLE public.b (id int PRIMARY KEY, v text); INSERT INTO public.b SELECT g, 'v' FROM generate_series(1, 300) g;
		ALTER TABLE public.b OWNER TO %[5]s`,
		pgx.Identifier{e.app}.Sanitize(), pgx.Identifier{e.alice}.Sanitize(), pgx.Identifier{e.dba}.Sanitize(),
		pgx.Identifier{e.DB}.Sanitize(), pgx.Identifier{e.bob}.Sanitize()))
	e.DropSlotsAtEnd()
	for _, n := range e.Nodes {
		cfg := n.AgentConfig()
		if heartbeat > 0 {
			cfg.HeartbeatInterval = heartbeat
		}
		n.StartAgentWith(t, cfg)
	}
	return e
}

// completed submits sql as role on n1 and requires the task to complete.
func (e *streamsEnv) completed(t *testing.T, role, sql string, args ...any) sqlapi.Task {
	t.Helper()
	task := e.submit(t, role, sql, args...)
	require.Equal(t, sqlapi.StatusCompleted, task.Status, "%s as %s: %v", sql, role, task.Error)
	return task
}

// differing runs an mtree diff of table as role and returns its differing keys.
func (e *streamsEnv) differing(t *testing.T, role, table string) int64 {
	t.Helper()
	var s engine.DiffSummary
	require.NoError(t, json.Unmarshal(e.completed(t, role, `SELECT ace.mtree_diff($1)`, table).Result, &s))
	return s.DifferingKeys
}

// tree is the row of table's tree on node.
func (e *streamsEnv) tree(t *testing.T, node, table string) (pub, status, failure string) {
	t.Helper()
	require.NoError(t, e.Node(node).Pool.QueryRow(context.Background(), `SELECT publication, status, coalesce(error, '')
		FROM ace.mtrees WHERE table_name = $1`, table).Scan(&pub, &status, &failure))
	return pub, status, failure
}

// slotOf is the slot that streams table's changes on node.
func (e *streamsEnv) slotOf(t *testing.T, node, table string) string {
	t.Helper()
	var slot string
	require.NoError(t, e.Node(node).Pool.QueryRow(context.Background(), `SELECT slot_name FROM ace.mtrees WHERE table_name = $1`, table).Scan(&slot))
	return slot
}

// slots counts the test database's slots on node.
func (e *streamsEnv) slots(t *testing.T, node string) int {
	t.Helper()
	var n int
	require.NoError(t, e.Node(node).Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM pg_replication_slots WHERE database = current_database()`).Scan(&n))
	return n
}

func (e *streamsEnv) slotExists(t *testing.T, node, slot string) bool {
	t.Helper()
	var exists bool
	require.NoError(t, e.Node(node).Pool.QueryRow(context.Background(),
		`SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, slot).Scan(&exists))
	return exists
}

// requireRefused submits sql as role on n1 and requires it refused, at once or as a failed
// task, with an error that says each of want.
func (e *streamsEnv) requireRefused(t *testing.T, role, sql string, want ...string) {
	t.Helper()
	var id uuid.UUID
	msg := ""
	if err := e.Node("n1").ConnectAs(t, role).QueryRow(context.Background(), sql).Scan(&id); err != nil {
		msg = err.Error()
	} else {
		task := e.Node("n1").Wait(t, id)
		require.Equal(t, sqlapi.StatusFailed, task.Status, "%s must be refused: %s", sql, task.Result)
		msg = *task.Error
	}
	for _, w := range want {
		require.Contains(t, msg, w)
	}
}

// asOn runs sql on one node as role.
func (e *streamsEnv) asOn(t *testing.T, node, role, sql string) {
	t.Helper()
	_, err := e.Node(node).ConnectAs(t, role).Exec(context.Background(), sql)
	require.NoError(t, err, "on %s as %s", node, role)
}

// A publication its owner drops, or gives a row filter that raises, stops her own trees only:
// her stream fails, her trees fail with an error that names the publication, her slot is
// dropped (no WAL held for a stream nobody can read), the trees' status warns, and bob's tree
// streams and diffs on.
func TestAPublicationStopsOnlyItsOwnersTrees(t *testing.T) {
	t.Parallel()
	e := newStreamsEnv(t, time.Minute)
	e.completed(t, e.bob, `SELECT ace.mtree_build('public.b', leaf_rows => 100)`)
	cases := []struct{ name, sabotage, want string }{
		{"dropped", `DROP PUBLICATION %s`, "publication does not exist"},
		{"row filter that raises", `ALTER PUBLICATION %s SET TABLE public.a WHERE (1 / (id - 5) > 0)`, "division by zero"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.completed(t, e.alice, `SELECT ace.mtree_build('public.a', leaf_rows => 100)`)
			pub, _, _ := e.tree(t, "n1", "public.a")
			slot, bobSlot := e.slotOf(t, "n1", "public.a"), e.slotOf(t, "n1", "public.b")
			require.NotEqual(t, slot, bobSlot, "alice's and bob's trees stream through slots of their own")

			e.asOn(t, "n1", e.alice, fmt.Sprintf(c.sabotage, pub))
			e.Node("n1").Exec(t, `UPDATE public.a SET v = 'x' WHERE id = 5`)
			e.Node("n1").Exec(t, `UPDATE public.b SET v = 'x' WHERE id = 5`)
			require.Eventually(t, func() bool {
				_, status, _ := e.tree(t, "n1", "public.a")
				return status == "failed"
			}, 30*time.Second, 50*time.Millisecond, "alice's tree on n1 fails")
			_, _, failure := e.tree(t, "n1", "public.a")
			require.Contains(t, failure, pub)
			require.Contains(t, failure, c.want)
			require.Contains(t, failure, "build the tree again")
			require.Eventually(t, func() bool { return !e.slotExists(t, "n1", slot) }, 30*time.Second, 50*time.Millisecond,
				"alice's slot on n1 is dropped: it holds no WAL")
			require.True(t, e.slotExists(t, "n1", bobSlot), "bob's slot stays")

			// What ace.mtree_status shows of n1 (its agent collects it every heartbeat).
			var warning, streamErr string
			require.NoError(t, e.Node("n1").Pool.QueryRow(context.Background(), `SELECT warning, stream_error
				FROM ace.mtree_local_status('public.a')`).Scan(&warning, &streamErr))
			require.Contains(t, warning, pub)
			require.Contains(t, warning, c.want)
			require.Contains(t, streamErr, c.want)
			var bobWarning *string
			require.NoError(t, e.Node("n1").Pool.QueryRow(context.Background(), `SELECT warning FROM ace.mtree_local_status('public.b')`).Scan(&bobWarning))
			require.Nil(t, bobWarning, "bob's tree has nothing to warn about")

			// Bob's tree keeps up: every change since is in it, on every node.
			e.Node("n2").Exec(t, fmt.Sprintf(`UPDATE public.b SET v = 'drift' WHERE id = %d`, 100+i))
			e.Node("n1").Exec(t, fmt.Sprintf(`DELETE FROM public.b WHERE id = %d`, 200+i))
			require.EqualValues(t, 1+2*(i+1), e.differing(t, e.bob, "public.b"))

			e.requireRefused(t, e.alice, `SELECT ace.mtree_diff('public.a')`, pub)
			e.completed(t, e.alice, `SELECT ace.mtree_teardown('public.a')`)
		})
	}
}

// A publication altered so that it silently misses changes (a row filter that hides them, or
// fewer operations) fails its tree: the diff refuses it instead of calling differing rows in
// sync.
func TestAnAlteredPublicationFailsItsTree(t *testing.T) {
	t.Parallel()
	e := newStreamsEnv(t, 0)
	cases := []struct{ name, alter, want string }{
		{"row filter", `ALTER PUBLICATION %s SET TABLE public.a WHERE (id > 1000)`, "has a row filter (WHERE (id > 1000))"},
		{"inserts only", `ALTER PUBLICATION %s SET (publish = 'insert')`, "no longer publishes every insert, update, delete and truncate"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.completed(t, e.alice, `SELECT ace.mtree_build('public.a', leaf_rows => 100)`)
			require.Zero(t, e.differing(t, e.alice, "public.a"))
			pub, _, _ := e.tree(t, "n2", "public.a")
			e.asOn(t, "n2", e.alice, fmt.Sprintf(c.alter, pub))
			e.Node("n2").Exec(t, fmt.Sprintf(`UPDATE public.a SET v = 'hidden' WHERE id = %d`, 10+i))

			e.requireRefused(t, e.alice, `SELECT ace.mtree_diff('public.a')`, pub, c.want)
			_, status, failure := e.tree(t, "n2", "public.a")
			require.Equal(t, "failed", status)
			require.Contains(t, failure, c.want)
			require.Eventually(t, func() bool {
				var warning *string
				err := e.Node("n1").Pool.QueryRow(context.Background(), `SELECT warning FROM ace.mtree_status('public.a') WHERE node_name = 'n2'`).Scan(&warning)
				return err == nil && warning != nil && strings.Contains(*warning, c.want)
			}, 10*time.Second, 50*time.Millisecond, "ace.mtree_status warns about the tree on n2")
			e.Node("n2").Exec(t, fmt.Sprintf(`UPDATE public.a SET v = 'v' WHERE id = %d`, 10+i))
		})
	}
}

// A DBA who is a member of the table's owner role, but not of the builder, tears the tree down:
// the publication she may not drop is left to its owner, reported, and read by no stream. A
// role that is none of builder, table owner and ace owner is refused.
func TestTeardownByTheTablesOwnerRole(t *testing.T) {
	t.Parallel()
	e := newStreamsEnv(t, 0)
	e.completed(t, e.alice, `SELECT ace.mtree_build('public.a', leaf_rows => 100)`)
	pub, _, _ := e.tree(t, "n1", "public.a")

	t.Run("others are refused", func(t *testing.T) {
		e.ExecAll(fmt.Sprintf(`GRANT SELECT ON public.a TO %s`, pgx.Identifier{e.carol}.Sanitize()))
		task := e.submit(t, e.carol, `SELECT ace.mtree_teardown('public.a')`)
		require.Equal(t, sqlapi.StatusFailed, task.Status)
		require.Contains(t, *task.Error, "permission denied")
		require.Contains(t, *task.Error, pgerrcode.InsufficientPrivilege)
		require.Contains(t, *task.Error, "only its builder ("+e.alice+")")
	})

	task := e.completed(t, e.dba, `SELECT ace.mtree_teardown('public.a')`)
	var res struct {
		PublicationsLeft map[string][]string `json:"publications_left"`
		Notices          []string            `json:"notices"`
	}
	require.NoError(t, json.Unmarshal(task.Result, &res))
	require.Equal(t, []string{pub}, res.PublicationsLeft["n1"])
	require.Len(t, res.Notices, len(e.Nodes))
	require.Contains(t, strings.Join(res.Notices, "\n"), fmt.Sprintf("publication %s belongs to %s; she or a superuser can DROP PUBLICATION %s", pub, e.alice, pgx.Identifier{pub}.Sanitize()))
	for _, n := range e.Nodes {
		var trees int
		require.NoError(t, n.Pool.QueryRow(context.Background(), `SELECT count(*) FROM ace.mtrees`).Scan(&trees))
		require.Zero(t, trees, "on %s", n.Name)
		require.Eventually(t, func() bool { return e.slots(t, n.Name) == 0 }, 20*time.Second, 50*time.Millisecond, "slot on %s", n.Name)
	}
	// The publication left behind stops nothing, and alice's next build replaces it.
	e.completed(t, e.alice, `SELECT ace.mtree_build('public.a', leaf_rows => 100)`)
	require.Zero(t, e.differing(t, e.alice, "public.a"))
}

// A table in a schema the agent's login has no USAGE on is built, diffed and torn down: the
// agent never resolves a user's table name itself.
func TestMtreeInASchemaTheAgentCannotUse(t *testing.T) {
	t.Parallel()
	e := newStreamsEnv(t, 0)
	e.ExecAll(fmt.Sprintf(`CREATE SCHEMA private AUTHORIZATION %[1]s; REVOKE ALL ON SCHEMA private FROM PUBLIC;
		CREATE TABLE private.t (id int PRIMARY KEY, v text); INSERT INTO private.t SELECT g, 'v' FROM generate_series(1, 300) g;
		ALTER TABLE private.t OWNER TO %[1]s`, pgx.Identifier{e.alice}.Sanitize()))
	var usage bool
	require.NoError(t, e.Node("n1").Pool.QueryRow(context.Background(), `SELECT has_schema_privilege($1, 'private', 'USAGE')`, testcluster.AgentRole).Scan(&usage))
	require.False(t, usage)

	e.completed(t, e.alice, `SELECT ace.mtree_build('private.t', leaf_rows => 100)`)
	e.Node("n3").Exec(t, `UPDATE private.t SET v = 'drift' WHERE id = 3`)
	require.EqualValues(t, 1, e.differing(t, e.alice, "private.t"))
	e.completed(t, e.alice, `SELECT ace.mtree_build('private.t', leaf_rows => 100)`) // replaces the tree: a teardown first
	e.completed(t, e.alice, `SELECT ace.mtree_teardown('private.t')`)
	for _, n := range e.Nodes {
		var left int
		require.NoError(t, n.Pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM ace.mtrees) + (SELECT count(*) FROM pg_publication WHERE pubname LIKE 'ace_mtree%')`).Scan(&left))
		require.Zero(t, left, "on %s", n.Name)
	}
}

// A transaction larger than a chunk of the stream (10,000 changes) is recorded in parts, and the
// tree finds exactly the rows it left different.
func TestMtreeAfterALargeTransaction(t *testing.T) {
	t.Parallel()
	e := treeSetup(t, `CREATE TABLE public.t (id int PRIMARY KEY, v text); INSERT INTO public.t SELECT g, 'v' FROM generate_series(1, 1000) g`)
	var built map[string]any
	e.completed(&built, `ace.mtree_build('public.t', leaf_rows => 1000)`)
	e.ExecAll(`INSERT INTO public.t SELECT g, repeat('x', 200) FROM generate_series(1001, 26000) g`)
	e.Node("n2").Exec(t, `BEGIN; UPDATE public.t SET v = 'big' WHERE id > 1000; UPDATE public.t SET v = repeat('x', 200) WHERE id > 1001; COMMIT`)
	var s engine.DiffSummary
	e.completed(&s, `ace.mtree_diff('public.t')`)
	require.EqualValues(t, 1, s.DifferingKeys, "%+v", s)
	_, want := e.completedDiff(`'public.t'`)
	require.Len(t, want, 1)
}

// A node of the release with one slot for every tree moves its trees onto their owner's slot
// without losing a change: the owner's slot starts as a copy of the old one, which is dropped.
func TestSingleSlotTreesMoveToTheirOwnersSlot(t *testing.T) {
	t.Parallel()
	e := setupNoAgents(t, `CREATE TABLE public.t (id int PRIMARY KEY, v text); INSERT INTO public.t SELECT g, 'v' FROM generate_series(1, 500) g`)
	e.DropSlotsAtEnd()
	agents := make([]*testcluster.Agent, len(e.Nodes))
	for i, n := range e.Nodes {
		agents[i] = n.StartAgent(t)
	}
	var built map[string]any
	e.completed(&built, `ace.mtree_build('public.t', leaf_rows => 100)`)
	for _, a := range agents {
		require.NoError(t, a.Stop())
	}
	// Make each node what the single-slot release left: one slot ace_mtree_<database oid>
	// where the trees' changes were confirmed, and trees with no owner or slot of their own.
	legacy := map[string]string{}
	for _, n := range e.Nodes {
		var slot string
		require.NoError(t, n.Pool.QueryRow(context.Background(), `SELECT 'ace_mtree_' || oid FROM pg_database WHERE datname = current_database()`).Scan(&slot))
		legacy[n.Name] = slot
		n.Exec(t, `SELECT pg_copy_logical_replication_slot(m.slot_name, $1) FROM ace.mtrees m`, slot)
		n.Exec(t, `SELECT pg_drop_replication_slot(m.slot_name) FROM ace.mtrees m`)
		n.Exec(t, `UPDATE ace.cdc_state SET slot_name = $1`, slot)
		n.Exec(t, `UPDATE ace.mtrees SET pub_owner = NULL, slot_name = NULL, pub_xmin = NULL, pubrel_xmin = NULL, pub_columns = NULL`)
	}
	// A change while no agent runs: only the old slot still has it.
	e.Node("n2").Exec(t, `UPDATE public.t SET v = 'drift' WHERE id = 7`)
	// The diff is submitted before n2's and n3's agents start: it waits for them to take their
	// trees' streams on, as it waits for a stream to catch up, rather than failing at once.
	n1 := e.Node("n1")
	n1.StartAgent(t)
	var id uuid.UUID
	require.NoError(t, n1.Pool.QueryRow(context.Background(), `SELECT ace.mtree_diff('public.t')`).Scan(&id))
	require.Eventually(t, func() bool {
		var status string
		require.NoError(t, n1.Pool.QueryRow(context.Background(), `SELECT status FROM ace.tasks WHERE task_id = $1`, id).Scan(&status))
		return status != string(sqlapi.StatusQueued)
	}, 30*time.Second, 10*time.Millisecond, "n1's agent takes the diff on")
	time.Sleep(300 * time.Millisecond) // the diff is waiting for n2's and n3's streams
	e.Node("n2").StartAgent(t)
	e.Node("n3").StartAgent(t)
	task := n1.Wait(t, id)
	if task.Error != nil {
		require.Failf(t, "the diff failed", "%s", *task.Error)
	}
	require.Equal(t, sqlapi.StatusCompleted, task.Status)
	var s engine.DiffSummary
	require.NoError(t, json.Unmarshal(task.Result, &s))
	require.EqualValues(t, 1, s.DifferingKeys, "the change made before the move is in the tree")
	for _, n := range e.Nodes {
		require.Eventually(t, func() bool {
			var old, adopted int
			require.NoError(t, n.Pool.QueryRow(context.Background(), `SELECT
				(SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1),
				(SELECT count(*) FROM ace.mtrees m JOIN pg_replication_slots r ON r.slot_name = m.slot_name)`, legacy[n.Name]).Scan(&old, &adopted))
			return old == 0 && adopted == 1
		}, 20*time.Second, 50*time.Millisecond, "on %s the tree streams through its owner's slot, and the old slot is gone", n.Name)
	}
}
