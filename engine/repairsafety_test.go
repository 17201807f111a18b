package engine_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine/diff"
	"github.com/ace-agent/ace-agent/engine/repair"
	"github.com/ace-agent/ace-agent/internal/testcluster"
)

// aceFile writes an ACE diff file for pair n1/n2 of public.<table> (key id) listing the rows.
func aceFile(t *testing.T, table string, n1, n2 []map[string]any) json.RawMessage {
	t.Helper()
	file, err := json.Marshal(map[string]any{
		"diffs":   map[string]any{"n1/n2": map[string]any{"rows": map[string]any{"n1": n1, "n2": n2}}},
		"summary": map[string]any{"schema": "public", "table": table, "nodes": []string{"n1", "n2"}, "primary_key": []string{"id"}},
	})
	require.NoError(t, err)
	return file
}

// repairAs imports file on n1 and repairs n2 from n1 with it, in the sessions a role has in the
// given mode ("" role: the superuser).
func repairAs(t *testing.T, e *testcluster.Env, role, mode string, file json.RawMessage) (*repair.Summary, error) {
	t.Helper()
	ctx := context.Background()
	login, setRole := role, ""
	if role == "" {
		login = "postgres"
	} else if mode == setRoleMode {
		login, setRole = "postgres", role
	}
	nodes := nodesAs(t, e, login, loginMode)
	found := &testcluster.DiffSink{}
	summary, err := diff.ImportACEDiff(ctx, nodes[0], file, found, diff.ImportOptions{SetRoleSessions: mode == setRoleMode})
	require.NoError(t, err)
	return repair.Repair(ctx, nodes[1:2], repair.Options{
		ID: "t", Diff: summary, Rows: found.Source(), Role: setRole, SourceOfTruth: "n1", Targets: []string{"n2"},
		SetRoleSessions: mode == setRoleMode,
	}, &testcluster.RepairSink{}, nil)
}

// keepRulesEnv has child rows that reference parent rows, an audit trigger on child and a rule
// that keeps child 3, all owned by the superuser, and a role that may write child but not set
// session_replication_role. The cluster authenticates by certificate only.
func keepRulesEnv(t *testing.T) (*testcluster.Env, string) {
	e := testcluster.NewSecure(t)
	role := e.AddSubmitter("repairer", true)
	e.ExecAll(`CREATE TABLE parent (id int PRIMARY KEY); INSERT INTO parent VALUES (1), (2);
		CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent, x text);
		CREATE TABLE audit (op text, id int);
		CREATE FUNCTION audit_child() RETURNS trigger LANGUAGE plpgsql AS
			$$ BEGIN INSERT INTO audit VALUES (TG_OP, coalesce(NEW.id, OLD.id)); RETURN NULL; END $$;
		CREATE TRIGGER audit_child AFTER INSERT OR UPDATE OR DELETE ON child FOR EACH ROW EXECUTE FUNCTION audit_child();
		CREATE RULE keep_3 AS ON DELETE TO child WHERE old.id = 3 DO INSTEAD NOTHING;
		GRANT SELECT, INSERT, UPDATE, DELETE ON child TO ` + role + `; GRANT INSERT ON audit TO ` + role)
	resetChild(t, e)
	return e, role
}

// resetChild puts n2's child rows back and empties the audit.
func resetChild(t *testing.T, e *testcluster.Env) {
	e.Node("n2").Exec(t, `TRUNCATE child, audit; INSERT INTO child VALUES (1, 1, 'a'), (2, 1, 'b'), (3, 2, 'keep me'); TRUNCATE audit`)
}

var (
	orphan  = map[string]any{"id": 10, "parent_id": 999, "x": "no such parent"}
	row2New = map[string]any{"id": 2, "parent_id": 1, "x": "B"}
	row2Old = map[string]any{"id": 2, "parent_id": 1, "x": "b"}
	row3    = map[string]any{"id": 3, "parent_id": 2, "x": "keep me"}
	row11   = map[string]any{"id": 11, "parent_id": 1, "x": "new"}
)

func TestRepairKeepsTheOwnersRulesForARoleThatMayNotBypassThem(t *testing.T) {
	t.Parallel()
	e, role := keepRulesEnv(t)
	for _, mode := range sessionModes {
		t.Run(mode, func(t *testing.T) {
			// Attack 4: a crafted file inserts a row whose parent does not exist.
			resetChild(t, e)
			s, err := repairAs(t, e, role, mode, aceFile(t, "child", []map[string]any{row2New, orphan}, []map[string]any{row2Old}))
			require.ErrorContains(t, err, `violates foreign key constraint "child_parent_id_fkey"`)
			require.Equal(t, repair.WriteNormal, s.Nodes["n2"].WriteMode)
			require.Equal(t, []string{"n2"}, s.FailedNodes)
			requireChild(t, e, `1 a, 2 b, 3 keep me`, "the failed repair changed nothing, not even the valid update")

			// ... and deletes a row past a DO INSTEAD NOTHING rule.
			s, err = repairAs(t, e, role, mode, aceFile(t, "child", nil, []map[string]any{row3}))
			require.ErrorContains(t, err, "the table has rules, and this repair writes normally")
			require.Equal(t, repair.WriteNormal, s.Nodes["n2"].WriteMode)
			requireChild(t, e, `1 a, 2 b, 3 keep me`, "the rule kept row 3")

			// A valid repair goes through, and the audit trigger sees it.
			s, err = repairAs(t, e, role, mode, aceFile(t, "child", []map[string]any{row2New, row11}, []map[string]any{row2Old}))
			require.NoError(t, err)
			require.Equal(t, repair.WriteNormal, s.Nodes["n2"].WriteMode)
			require.Contains(t, strings.Join(s.Warnings, "\n"), "wrote normally on n2")
			requireChild(t, e, `1 a, 2 B, 3 keep me, 11 new`, "repaired")
			require.Equal(t, "INSERT 11, UPDATE 2", scalar(t, e, `SELECT string_agg(op || ' ' || id, ', ' ORDER BY op) FROM audit`))
		})
	}
}

func TestRepairWritesAsReplicationForARoleThatMaySetTheReplicationRole(t *testing.T) {
	t.Parallel()
	e, role := keepRulesEnv(t)
	e.ExecAll(`GRANT SET ON PARAMETER session_replication_role TO ` + role + `;
		GRANT EXECUTE ON FUNCTION pg_replication_origin_create(text), pg_replication_origin_oid(text),
		      pg_replication_origin_session_setup(text), pg_replication_origin_session_reset() TO ` + role)
	for _, who := range []struct{ name, role, mode string }{
		{"superuser", "", loginMode}, {"granted/login", role, loginMode}, {"granted/set_role", role, setRoleMode},
	} {
		t.Run(who.name, func(t *testing.T) {
			resetChild(t, e)
			s, err := repairAs(t, e, who.role, who.mode, aceFile(t, "child", []map[string]any{row2New, orphan}, []map[string]any{row2Old, row3}))
			require.NoError(t, err)
			require.Equal(t, repair.WriteReplica, s.Nodes["n2"].WriteMode)
			requireChild(t, e, `1 a, 2 B, 10 no such parent`, "written as replication applies changes")
			require.Equal(t, "0", scalar(t, e, `SELECT count(*)::text FROM audit`))
		})
	}
}

func requireChild(t *testing.T, e *testcluster.Env, want, msg string) {
	t.Helper()
	require.Equal(t, want, scalar(t, e, `SELECT string_agg(id || ' ' || x, ', ' ORDER BY id) FROM child`), msg)
}

func scalar(t *testing.T, e *testcluster.Env, sql string) string {
	t.Helper()
	var out string
	require.NoError(t, e.Node("n2").Pool.QueryRow(context.Background(), sql).Scan(&out))
	return out
}
