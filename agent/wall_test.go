package agent_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// The wall is the login: on a cluster that authenticates by certificate (no trust), task
// sessions log in as the submitting role, so code that runs in them can reach nothing the
// submitter could not.

// wallEnv is a secure cluster with agents in the default login mode and two submitters, alice
// (who submits) and bob (another submitter she must not become).
type wallEnv struct {
	*testcluster.Env
	alice, bob string
}

func newWallEnv(t *testing.T) *wallEnv {
	t.Helper()
	e := &wallEnv{Env: testcluster.NewSecure(t)}
	e.alice, e.bob = e.AddSubmitter("alice", true), e.AddSubmitter("bob", true)
	e.ExecAll(fmt.Sprintf(`GRANT CREATE ON SCHEMA public TO %s`, e.alice))
	e.DropSlotsAtEnd()
	for _, n := range e.Nodes {
		n.StartAgent(t)
	}
	return e
}

// submit runs sql on n1 as role, with the role's own certificate, and waits for the task.
func (e *wallEnv) submit(t *testing.T, role, sql string, args ...any) sqlapi.Task {
	t.Helper()
	conn := e.Node("n1").ConnectAs(t, role)
	var id uuid.UUID
	require.NoError(t, conn.QueryRow(context.Background(), sql, args...).Scan(&id))
	return e.Node("n1").Wait(t, id)
}

// asAll runs sql on every node as role.
func (e *wallEnv) asAll(t *testing.T, role, sql string) {
	t.Helper()
	for _, n := range e.Nodes {
		_, err := n.ConnectAs(t, role).Exec(context.Background(), sql)
		require.NoError(t, err, "on %s as %s", n.Name, role)
	}
}

func TestTaskSessionsLogInAsTheSubmitter(t *testing.T) {
	t.Parallel()
	e := newWallEnv(t)
	e.asAll(t, e.alice, `CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' FROM generate_series(1, 50) g`)
	e.Node("n2").Exec(t, `UPDATE public.t SET v = 'drift' WHERE id = 7`)

	diff := e.submit(t, e.alice, `SELECT ace.table_diff('public.t')`)
	require.Equal(t, sqlapi.StatusCompleted, diff.Status, "%v", diff.Error)
	require.Contains(t, string(diff.Result), `"differing_keys": 1`)
	repair := e.submit(t, e.alice, `SELECT ace.table_repair($1, source_of_truth => 'n1')`, diff.ID)
	require.Equal(t, sqlapi.StatusCompleted, repair.Status, "%v", repair.Error)
	again := e.submit(t, e.alice, `SELECT ace.table_diff('public.t')`)
	require.Contains(t, string(again.Result), `"differing_keys": 0`)
}

// probeSQL defines, as alice, a function that tries to leave her role (RESET ROLE, then SET ROLE
// to bob and to the agent) and then raises what it became, so the task's error shows it.
func probeSQL(bob string) string {
	return fmt.Sprintf(`CREATE FUNCTION probe(v int) RETURNS boolean LANGUAGE plpgsql AS $$
		DECLARE became text := 'none';
		BEGIN
			RESET ROLE;
			BEGIN EXECUTE 'SET ROLE %s'; became := 'bob'; EXCEPTION WHEN insufficient_privilege THEN NULL; END;
			BEGIN EXECUTE 'SET ROLE %s'; became := 'agent'; EXCEPTION WHEN insufficient_privilege THEN NULL; END;
			RAISE EXCEPTION 'probe: session_user=%% current_user=%% became=%%', session_user, current_user, became;
		END $$`, bob, testcluster.AgentRole)
}

func TestCodeInTaskSessionsCannotLeaveTheSubmitter(t *testing.T) {
	t.Parallel()
	e := newWallEnv(t)
	// The trigger and the domain probe only in alice's own sessions, so the superuser can plant
	// the drift without running them.
	e.asAll(t, e.alice, probeSQL(e.bob)+fmt.Sprintf(`;
		CREATE FUNCTION mine() RETURNS boolean LANGUAGE sql AS $$ SELECT session_user = %s $$;
		CREATE TABLE plain (id int PRIMARY KEY, v int);
		CREATE TABLE policed (id int PRIMARY KEY);
		ALTER TABLE policed ENABLE ROW LEVEL SECURITY; ALTER TABLE policed FORCE ROW LEVEL SECURITY;
		CREATE POLICY p ON policed USING (probe(id));
		CREATE TABLE triggered (id int PRIMARY KEY, v int);
		CREATE FUNCTION fire() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF mine() THEN PERFORM probe(NEW.id); END IF; RETURN NEW; END $$;
		CREATE TRIGGER t BEFORE UPDATE ON triggered FOR EACH ROW EXECUTE FUNCTION fire();
		ALTER TABLE triggered ENABLE ALWAYS TRIGGER t;
		CREATE DOMAIN probed AS int CHECK (NOT mine() OR probe(VALUE));
		CREATE TABLE checked (id int PRIMARY KEY, v probed)`, engine.QuoteLiteral(e.alice)))
	e.ExecAll(`INSERT INTO public.plain SELECT g, g FROM generate_series(1, 10) g; INSERT INTO public.policed VALUES (1);
		INSERT INTO public.triggered SELECT g, g FROM generate_series(1, 10) g; INSERT INTO public.checked SELECT g, g FROM generate_series(1, 10) g`)
	e.Node("n2").Exec(t, `UPDATE public.triggered SET v = -v WHERE id = 3; UPDATE public.checked SET v = -v WHERE id = 3`)
	requireProbe := func(t *testing.T, task sqlapi.Task) {
		t.Helper()
		require.Equal(t, sqlapi.StatusFailed, task.Status)
		require.NotNil(t, task.Error)
		want := fmt.Sprintf("probe: session_user=%s current_user=%s became=none", e.alice, e.alice)
		require.Contains(t, *task.Error, want, "the code stayed alice: it reached neither bob nor the agent")
	}
	repairOf := func(t *testing.T, table string) sqlapi.Task {
		diff := e.submit(t, e.alice, `SELECT ace.table_diff($1)`, table)
		require.Equal(t, sqlapi.StatusCompleted, diff.Status, "%v", diff.Error)
		return e.submit(t, e.alice, `SELECT ace.table_repair($1, source_of_truth => 'n1', target_nodes => ARRAY['n2'])`, diff.ID)
	}
	t.Run("filter", func(t *testing.T) {
		// A filter may call only built-in functions that run no SQL, in either mode: the probe
		// never runs.
		task := e.submit(t, e.alice, `SELECT ace.table_diff('public.plain', table_filter => 'probe(id)')`)
		require.Equal(t, sqlapi.StatusFailed, task.Status)
		require.Contains(t, *task.Error, "probe")
		require.NotContains(t, *task.Error, "probe: session_user")
	})
	t.Run("row-level security policy", func(t *testing.T) {
		requireProbe(t, e.submit(t, e.alice, `SELECT ace.table_diff('public.policed')`))
	})
	t.Run("trigger", func(t *testing.T) {
		requireProbe(t, repairOf(t, "public.triggered"))
		require.Equal(t, -3, e.scalarOn(t, "n2", `SELECT v FROM public.triggered WHERE id = 3`), "nothing was written")
	})
	t.Run("domain", func(t *testing.T) {
		requireProbe(t, repairOf(t, "public.checked"))
		require.Equal(t, -3, e.scalarOn(t, "n2", `SELECT v FROM public.checked WHERE id = 3`), "nothing was written")
	})
}

func (e *wallEnv) scalarOn(t *testing.T, node, sql string) int {
	t.Helper()
	var v int
	require.NoError(t, e.Node(node).Pool.QueryRow(context.Background(), sql).Scan(&v))
	return v
}

func TestUnmappedSubmitterGetsTheFix(t *testing.T) {
	t.Parallel()
	e := newWallEnv(t)
	carol := e.AddSubmitter("carol", false)
	e.ExecAll(fmt.Sprintf(`CREATE TABLE t (id int PRIMARY KEY); GRANT SELECT ON t TO %s`, carol))
	task := e.submit(t, carol, `SELECT ace.table_diff('public.t')`)
	require.Equal(t, sqlapi.StatusFailed, task.Status)
	require.Contains(t, *task.Error, "log in as "+carol)
	require.Contains(t, *task.Error, "pg_ident.conf")
}

// Merkle trees keep the wall: the table is read and published by the submitter's own login, and
// only the agent's login writes trees.
func TestMtreeRunsAsTheSubmitter(t *testing.T) {
	t.Parallel()
	e := newWallEnv(t)
	e.asAll(t, e.alice, `CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' FROM generate_series(1, 500) g`)

	t.Run("publishing needs CREATE on the database", func(t *testing.T) {
		conn := e.Node("n1").ConnectAs(t, e.alice)
		_, err := conn.Exec(context.Background(), `SELECT ace.mtree_build('public.t')`)
		require.ErrorContains(t, err, "cannot create publications")
	})
	e.ExecAll(fmt.Sprintf(`GRANT CREATE ON DATABASE %s TO %s`, e.DB, e.alice))

	t.Run("only the owner may track a table", func(t *testing.T) {
		e.asAll(t, e.alice, fmt.Sprintf(`GRANT SELECT ON t TO %s`, e.bob))
		e.ExecAll(fmt.Sprintf(`GRANT CREATE ON DATABASE %s TO %s`, e.DB, e.bob))
		conn := e.Node("n1").ConnectAs(t, e.bob)
		_, err := conn.Exec(context.Background(), `SELECT ace.mtree_build('public.t')`)
		require.ErrorContains(t, err, "only the owner of public.t")
	})

	built := e.submit(t, e.alice, `SELECT ace.mtree_build('public.t', leaf_rows => 100)`)
	require.Equal(t, sqlapi.StatusCompleted, built.Status, "build: %v", built.Error)
	e.Node("n2").Exec(t, `UPDATE public.t SET v = 'drift' WHERE id = 7`)
	for _, role := range []string{e.alice, e.bob} {
		task := e.submit(t, role, `SELECT ace.mtree_diff('public.t')`)
		require.Equal(t, sqlapi.StatusCompleted, task.Status, "%s's diff: %v", role, task.Error)
		require.Contains(t, string(task.Result), `"differing_keys": 1`)
	}

	t.Run("submitters cannot write trees", func(t *testing.T) {
		conn := e.Node("n1").ConnectAs(t, e.bob)
		_, err := conn.Exec(context.Background(), `UPDATE ace.mtree_leaves SET row_count = 0`)
		require.ErrorContains(t, err, "permission denied")
		_, err = conn.Exec(context.Background(), `INSERT INTO ace.mtree_pending (tree_id, xid, lsn) VALUES (1, '1', '0/0')`)
		require.ErrorContains(t, err, "permission denied")
	})
	t.Run("only the builder, the table owner or the ace owner may tear it down", func(t *testing.T) {
		task := e.submit(t, e.bob, `SELECT ace.mtree_teardown('public.t')`)
		require.Equal(t, sqlapi.StatusFailed, task.Status)
		require.Contains(t, *task.Error, "only its builder ("+e.alice+")")
		task = e.submit(t, e.alice, `SELECT ace.mtree_teardown('public.t')`)
		require.Equal(t, sqlapi.StatusCompleted, task.Status, "teardown: %v", task.Error)
	})
}
