package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/testcluster"
)

// installEnv is a test database on the certificate-only cluster, installed by the agent's login,
// and mallory: an ordinary login (a submitter) who may create schemas in the database, as the
// docs/merkle-trees.md says tree builders need.
type installEnv struct {
	*testcluster.Env
	mallory string
}

func newInstallEnv(t *testing.T) *installEnv {
	t.Helper()
	e := testcluster.NewSecure(t)
	mallory := e.AddSubmitter("mallory", true) // mapped: doctor has nothing else to report
	e.ExecAll(fmt.Sprintf(`GRANT CREATE ON DATABASE %s TO %s`, pgx.Identifier{e.DB}.Sanitize(), pgx.Identifier{mallory}.Sanitize()))
	return &installEnv{Env: e, mallory: mallory}
}

// scalar reads one value on the node as the superuser.
func scalar[T any](t *testing.T, n *testcluster.Node, sql string) T {
	t.Helper()
	var v T
	require.NoError(t, n.Pool.QueryRow(context.Background(), sql).Scan(&v), sql)
	return v
}

// Issue 16, item 1: mallory made schema ace before the first install, and install filled it: as
// its owner she could then replace the functions the agent and every submitter run.
func TestInstallRefusesASchemaSomeoneElseOwns(t *testing.T) {
	t.Parallel()
	e := newInstallEnv(t)
	n1 := e.Node("n1")
	n1.Exec(t, `DROP SCHEMA ace CASCADE`)
	asMallory := n1.ConnectAs(t, e.mallory)
	_, err := asMallory.Exec(context.Background(), `CREATE SCHEMA ace;
		CREATE FUNCTION ace.validate_table_diff(args jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT args'`)
	require.NoError(t, err)

	r := ace(t, n1.AgentDSN, "install")
	require.Equal(t, exitError, r.code, r)
	require.Contains(t, r.stderr, "schema ace is owned by "+e.mallory+", not ace_agent: ALTER SCHEMA ace OWNER TO ace_agent as a superuser after checking its contents, or DROP SCHEMA ace CASCADE", r)
	require.Contains(t, r.stderr, "function ace.validate_table_diff(jsonb) in schema ace is owned by "+e.mallory, r)
	require.Contains(t, r.stderr, "nothing was changed", r)

	require.Zero(t, scalar[int](t, n1, `SELECT count(*) FROM pg_class WHERE relnamespace = 'ace'::regnamespace`), "install created tables")
	require.Equal(t, 1, scalar[int](t, n1, `SELECT count(*) FROM pg_proc WHERE pronamespace = 'ace'::regnamespace`), "install created functions")
	require.Equal(t, "SELECT args", scalar[string](t, n1, `SELECT prosrc FROM pg_proc WHERE oid = 'ace.validate_table_diff(jsonb)'::regprocedure`))

	r = ace(t, n1.AgentDSN, "doctor")
	require.Equal(t, exitDiffers, r.code, r)
	require.Contains(t, r.stdout, "PROBLEM  the local node: schema ace is owned by "+e.mallory+", not ace_agent", r)
}

// Issue 16, item 1: an object in the agent's schema that another role owns, or a grant that lets
// another role add one, is refused the same way, and doctor finds it on every node.
func TestInstallRefusesObjectsSomeoneElseOwns(t *testing.T) {
	t.Parallel()
	e := newInstallEnv(t)
	mallory := pgx.Identifier{e.mallory}.Sanitize()
	for name, c := range map[string]struct{ setup, undo, want string }{
		"a function": {
			setup: `CREATE FUNCTION ace.validate_evil(args jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT args';
				ALTER FUNCTION ace.validate_evil(jsonb) OWNER TO ` + mallory,
			undo: `DROP FUNCTION ace.validate_evil(jsonb)`,
			want: "function ace.validate_evil(jsonb) in schema ace is owned by " + e.mallory + ", not ace_agent",
		},
		"a view": {
			setup: `CREATE VIEW ace.peek AS SELECT 1 AS x; ALTER VIEW ace.peek OWNER TO ` + mallory,
			undo:  `DROP VIEW ace.peek`,
			want:  "view ace.peek in schema ace is owned by " + e.mallory,
		},
		"a type": {
			setup: `CREATE TYPE ace.mood AS ENUM ('ok'); ALTER TYPE ace.mood OWNER TO ` + mallory,
			undo:  `DROP TYPE ace.mood`,
			want:  "type ace.mood in schema ace is owned by " + e.mallory,
		},
		"a trigger function": {
			setup: `CREATE FUNCTION public.spy() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';
				ALTER FUNCTION public.spy() OWNER TO ` + mallory + `;
				CREATE TRIGGER spy BEFORE INSERT ON ace.tasks FOR EACH ROW EXECUTE FUNCTION public.spy()`,
			undo: `DROP TRIGGER spy ON ace.tasks; DROP FUNCTION public.spy()`,
			want: "trigger function spy() (of trigger spy on ace.tasks) in schema ace is owned by " + e.mallory,
		},
		"CREATE on the schema": {
			setup: `GRANT CREATE ON SCHEMA ace TO ` + mallory,
			undo:  `REVOKE CREATE ON SCHEMA ace FROM ` + mallory,
			want:  "schema ace grants CREATE to " + e.mallory + ", who can add objects to it: REVOKE CREATE ON SCHEMA ace FROM " + e.mallory,
		},
		"TRIGGER on a table": {
			setup: `GRANT TRIGGER ON ace.tasks TO ` + mallory,
			undo:  `REVOKE TRIGGER ON ace.tasks FROM ` + mallory,
			want:  "table ace.tasks grants TRIGGER to " + e.mallory,
		},
	} {
		t.Run(name, func(t *testing.T) {
			n2 := e.Node("n2")
			n2.Exec(t, c.setup)
			defer n2.Exec(t, c.undo)
			before := scalar[string](t, n2, `SELECT string_agg(md5(prosrc), ',' ORDER BY oid) FROM pg_proc WHERE pronamespace = 'ace'::regnamespace`)

			r := ace(t, n2.AgentDSN, "install")
			require.Equal(t, exitError, r.code, r)
			require.Contains(t, r.stderr, c.want, r)
			require.Equal(t, before, scalar[string](t, n2, `SELECT string_agg(md5(prosrc), ',' ORDER BY oid) FROM pg_proc WHERE pronamespace = 'ace'::regnamespace`),
				"install replaced functions")

			r = ace(t, e.Node("n1").AgentDSN, "doctor")
			require.Equal(t, exitDiffers, r.code, r)
			require.Contains(t, r.stdout, "PROBLEM  node n2: "+c.want, r)
			require.Contains(t, r.stdout, "ok       the local node: schema ace and everything in it belong to the agent's login alone", r)
		})
	}
	r := ace(t, e.Node("n2").AgentDSN, "install")
	require.Equal(t, exitOK, r.code, r)
}

// Issue 16, item 16: install waited forever for an advisory lock that any login can take. It now
// gives up after --lock-timeout, naming the session that holds it.
func TestInstallNamesWhoHoldsTheInstallLock(t *testing.T) {
	t.Parallel()
	e := newInstallEnv(t)
	n1 := e.Node("n1")
	asMallory := n1.ConnectAs(t, e.mallory)
	var pid int
	require.NoError(t, asMallory.QueryRow(context.Background(), `SELECT pg_backend_pid() FROM pg_advisory_lock(7305100001)`).Scan(&pid))

	start := time.Now()
	r := ace(t, n1.AgentDSN, "install", "--lock-timeout", "1s")
	require.Equal(t, exitError, r.code, r)
	require.Less(t, time.Since(start), 30*time.Second)
	require.Contains(t, r.stderr, fmt.Sprintf("another session has held the install lock (advisory lock 7305100001) for longer than the lock timeout: held by pid %d (user %s, application ", pid, e.mallory), r)

	_, err := asMallory.Exec(context.Background(), `SELECT pg_advisory_unlock_all()`)
	require.NoError(t, err)
	r = ace(t, n1.AgentDSN, "install", "--lock-timeout", "1s")
	require.Equal(t, exitOK, r.code, r)
}

// Issue 16, item 16: tern's own advisory key, and a table lock a reader holds, are bounded too.
func TestInstallNamesWhoHoldsAnAceTable(t *testing.T) {
	t.Parallel()
	e := newInstallEnv(t)
	n1 := e.Node("n1")
	ctx := context.Background()
	asMallory := n1.ConnectAs(t, e.mallory)
	var pid int
	require.NoError(t, asMallory.QueryRow(ctx, `SELECT pg_backend_pid() FROM pg_advisory_lock(9628173550095224)`).Scan(&pid))
	r := ace(t, n1.AgentDSN, "install", "--lock-timeout", "1s")
	require.Equal(t, exitError, r.code, r)
	require.Contains(t, r.stderr, fmt.Sprintf("held by pid %d (user %s", pid, e.mallory), r)
	_, err := asMallory.Exec(ctx, `SELECT pg_advisory_unlock_all()`)
	require.NoError(t, err)

	// A reader's open transaction holds ace.settings against the DDL of the code install (which
	// adds the settings' CHECK again once it was dropped).
	n1.Exec(t, `ALTER TABLE ace.settings DROP CONSTRAINT setting_value_valid`)
	tx, err := asMallory.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx)
	_, err = tx.Exec(ctx, `SELECT count(*) FROM ace.settings`)
	require.NoError(t, err)
	r = ace(t, n1.AgentDSN, "install", "--lock-timeout", "1s")
	require.Equal(t, exitError, r.code, r)
	require.Contains(t, r.stderr, "a table of the ace schema stayed locked for longer than the lock timeout, held by pid "+
		fmt.Sprint(pid)+" (user "+e.mallory, r)
	require.NoError(t, tx.Rollback(ctx))
	r = ace(t, n1.AgentDSN, "install", "--lock-timeout", "1s")
	require.Equal(t, exitOK, r.code, r)
}
