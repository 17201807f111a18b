package agent_test

import (
	"context"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/agent"
	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// TestNonSuperuserAgent runs the agent in the set_role mode (ACE_IMPERSONATION=set_role) the way
// docs/security.md ("The wall") sets it up: a login without superuser that owns the ace schema,
// may SET ROLE to the submitters, and holds only the grants a repair needs. Code that escapes the
// submitter's role then lands on that login, not on a superuser.
func TestNonSuperuserAgent(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	agentRole, alice := e.DB+"_agent", e.DB+"_alice"
	e.ExecAll(`DROP SCHEMA ace CASCADE;
		CREATE ROLE ` + agentRole + ` LOGIN; CREATE ROLE ` + alice + `; GRANT ` + alice + ` TO ` + agentRole + `;
		GRANT CREATE ON DATABASE ` + e.DB + ` TO ` + agentRole + `;
		GRANT SET ON PARAMETER session_replication_role TO ` + agentRole + `;
		GRANT EXECUTE ON FUNCTION pg_replication_origin_create(text), pg_replication_origin_oid(text),
		      pg_replication_origin_session_setup(text), pg_replication_origin_session_reset() TO ` + agentRole + `;
		CREATE TABLE t (id int PRIMARY KEY, v text);
		GRANT SELECT, INSERT, UPDATE, DELETE ON t TO ` + alice + `; GRANT CREATE ON SCHEMA public TO ` + alice + `;
		CREATE TABLE secret (s text); INSERT INTO secret VALUES ('superuser eyes only');
		CREATE TABLE owned (id int PRIMARY KEY); ALTER TABLE owned OWNER TO ` + alice + `;
		INSERT INTO owned VALUES (1);`)
	// alice owns a table whose row-level-security policy escapes her role and reads secret.
	e.ExecAll(`SET ROLE ` + alice + `;
		CREATE FUNCTION escape() RETURNS boolean LANGUAGE plpgsql AS $$
		BEGIN RESET ROLE; PERFORM * FROM secret; RETURN true; END $$;
		ALTER TABLE owned ENABLE ROW LEVEL SECURITY; ALTER TABLE owned FORCE ROW LEVEL SECURITY;
		CREATE POLICY p ON owned USING (escape());
		RESET ROLE`)
	ctx := context.Background()
	for _, n := range e.Nodes {
		dsn := strings.Replace(n.DSN, "user=postgres", "user="+agentRole, 1)
		conn, err := pgx.Connect(ctx, dsn)
		require.NoError(t, err)
		_, err = sqlapi.Install(ctx, conn)
		require.NoError(t, err)
		for _, peer := range e.Nodes {
			require.NoError(t, sqlapi.AddNode(ctx, conn, sqlapi.RegisteredNode{Name: peer.Name,
				ConnInfo: strings.Replace(peer.DSN, "user=postgres", "user="+agentRole, 1)}))
		}
		require.NoError(t, conn.Close(ctx))
		cfg := n.AgentConfig()
		cfg.DSN, cfg.Impersonation = dsn, agent.ImpersonateSetRole
		n.StartAgentWith(t, cfg)
	}
	e.ExecAll(`INSERT INTO t SELECT g, 'v' FROM generate_series(1, 100) g`)
	e.Node("n2").Exec(t, `UPDATE t SET v = 'drift' WHERE id = 7`)

	asAlice := func(sql string, args ...any) sqlapi.Task {
		conn, err := pgx.Connect(ctx, e.Node("n1").DSN)
		require.NoError(t, err)
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, "SET ROLE "+alice)
		require.NoError(t, err)
		var id uuid.UUID
		require.NoError(t, conn.QueryRow(ctx, sql, args...).Scan(&id))
		return e.Node("n1").Wait(t, id)
	}
	diff := asAlice(`SELECT ace.table_diff('public.t')`)
	require.Equal(t, sqlapi.StatusCompleted, diff.Status, "%v", diff.Error)
	repair := asAlice(`SELECT ace.table_repair($1, source_of_truth => 'n1')`, diff.ID)
	require.Equal(t, sqlapi.StatusCompleted, repair.Status, "%v", repair.Error)
	again := asAlice(`SELECT ace.table_diff('public.t')`)
	require.Equal(t, sqlapi.StatusCompleted, again.Status, "%v", again.Error)
	require.Contains(t, string(again.Result), `"differing_keys": 0`)

	// A repair plan's when runs as the submitter too, not as the agent's login.
	e.Node("n2").Exec(t, `UPDATE t SET v = 'drift' WHERE id = 8`)
	diff = asAlice(`SELECT ace.table_diff('public.t')`)
	require.Equal(t, sqlapi.StatusCompleted, diff.Status, "%v", diff.Error)
	planned := asAlice(`SELECT ace.table_repair($1, plan => $2::jsonb)`, diff.ID, `{"tables": {"public.t": {
		"rules": [{"name": "as_alice", "when": "current_user = '`+alice+`'", "action": {"type": "keep", "node": "n1"}}],
		"default_action": {"type": "skip"}}}}`)
	require.Equal(t, sqlapi.StatusCompleted, planned.Status, "%v", planned.Error)
	require.Contains(t, string(planned.Result), `"rule_matches": {"as_alice": 1}`)

	escaped := asAlice(`SELECT ace.table_diff('public.owned')`)
	require.Equal(t, sqlapi.StatusFailed, escaped.Status)
	require.Contains(t, *escaped.Error, "row-level security policy p on public.owned on node n1 is owned by "+alice,
		"in the set_role mode a policy a submitter owns is refused before it can RESET ROLE to the agent's login")
}
