package engine_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/diff"
	"github.com/ace-agent/ace-agent/engine/repair"
	"github.com/ace-agent/ace-agent/internal/testcluster"
)

// codeEnv gives mallory (not a superuser) tables of her own, each carrying a kind of code, with
// row 1 drifted on n2. Her trigger functions escape to the session's login and create marker.
// The cluster authenticates by certificate only.
func codeEnv(t *testing.T) (e *testcluster.Env, mallory, marker string) {
	e = testcluster.NewSecure(t)
	mallory = e.AddSubmitter("mallory", true)
	marker = markerFile(t, "escaped")
	e.ExecAll(`GRANT CREATE ON SCHEMA public TO ` + mallory + `;
		CREATE TABLE su_owned (id int PRIMARY KEY, v text);
		GRANT SELECT, INSERT, UPDATE, DELETE ON su_owned TO ` + mallory + `;
		SET ROLE ` + mallory + `;
		CREATE FUNCTION public.escape() RETURNS trigger LANGUAGE plpgsql AS $$` + escapeBody(marker) + `$$;
		CREATE FUNCTION public.harmless(text) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT true';
		CREATE DOMAIN public.checked AS text CHECK (public.harmless(VALUE));
		CREATE TABLE always_trigger (id int PRIMARY KEY, v text);
		CREATE TABLE plain_trigger (id int PRIMARY KEY, v text);
		CREATE TABLE replica_trigger (id int PRIMARY KEY, v text);
		CREATE TABLE with_policy (id int PRIMARY KEY, v text);
		CREATE TABLE with_domain (id int PRIMARY KEY, v public.checked);
		CREATE TABLE with_generated (id int PRIMARY KEY, v text, g boolean GENERATED ALWAYS AS (public.harmless(v)) STORED);
		CREATE TABLE with_check (id int PRIMARY KEY, v text);
		RESET ROLE`)
	for _, table := range []string{"su_owned", "always_trigger", "plain_trigger", "replica_trigger", "with_policy", "with_domain", "with_generated", "with_check"} {
		e.ExecAll(`INSERT INTO ` + table + ` (id, v) SELECT g, 'v' FROM generate_series(1, 5) g`)
		e.Node("n2").Exec(t, `UPDATE `+table+` SET v = 'drift' WHERE id = 1`)
	}
	// The code comes after the data, so planting the drift ran none of it.
	e.ExecAll(`SET ROLE ` + mallory + `;
		CREATE TRIGGER t AFTER UPDATE ON always_trigger FOR EACH ROW EXECUTE FUNCTION public.escape();
		ALTER TABLE always_trigger ENABLE ALWAYS TRIGGER t;
		CREATE TRIGGER t AFTER UPDATE ON plain_trigger FOR EACH ROW EXECUTE FUNCTION public.escape();
		CREATE TRIGGER t AFTER UPDATE ON replica_trigger FOR EACH ROW EXECUTE FUNCTION public.escape();
		ALTER TABLE replica_trigger ENABLE REPLICA TRIGGER t;
		ALTER TABLE with_policy ENABLE ROW LEVEL SECURITY; ALTER TABLE with_policy FORCE ROW LEVEL SECURITY;
		CREATE POLICY p ON with_policy USING (true);
		ALTER TABLE with_check ADD CONSTRAINT c CHECK (set_config('ace.test', v, true) IS NOT NULL);
		RESET ROLE;
		CREATE TRIGGER t AFTER UPDATE ON su_owned FOR EACH ROW EXECUTE FUNCTION public.escape()`)
	return e, mallory, marker
}

// diffOf diffs a table as the superuser.
func diffOf(t *testing.T, e *testcluster.Env, table string) (*engine.DiffSummary, *testcluster.DiffSink) {
	t.Helper()
	sink := &testcluster.DiffSink{}
	s, err := diff.TableDiff(context.Background(), nodesAs(t, e, "postgres", loginMode), diff.TableDiffOptions{Table: "public." + table}, sink, nil)
	require.NoError(t, err)
	require.EqualValues(t, 1, s.DifferingKeys)
	return s, sink
}

func TestSetRoleRepairRefusesTablesCarryingNonSuperuserCode(t *testing.T) {
	t.Parallel()
	e, mallory, marker := codeEnv(t)
	// Attack 7: her own ENABLE ALWAYS trigger on her own table ran RESET ROLE during her repair.
	refused := map[string]string{
		"always_trigger":  `trigger t on public.always_trigger (function public.escape()) on node n2 is owned by ` + mallory,
		"plain_trigger":   `trigger t on public.plain_trigger (function public.escape()) on node n2 is owned by ` + mallory, // she writes normally: it fires
		"su_owned":        `trigger t on public.su_owned (function public.escape()) on node n2 is owned by ` + mallory,
		"with_policy":     `row-level security policy p on public.with_policy on node n2 is owned by ` + mallory,
		"with_domain":     `CHECK constraint checked_check of domain public.checked (behind column v) on node n2 is owned by ` + mallory,
		"with_generated":  `generated expression of column g of public.with_generated on node n2 uses function public.harmless(text) owned by ` + mallory,
		"with_check":      `constraint c on public.with_check on node n2 calls set_config(), and its owner ` + mallory + ` is not a superuser`,
		"replica_trigger": "", // an ENABLE REPLICA trigger does not fire when she writes normally
	}
	nodes := nodesAs(t, e, "postgres", loginMode)
	for table, why := range refused {
		t.Run(table, func(t *testing.T) {
			diff, rows := diffOf(t, e, table)
			s, err := repair.Repair(context.Background(), nodes[1:2], repair.Options{
				ID: "t", Diff: diff, Rows: rows.Source(), Role: mallory, SourceOfTruth: "n1", Targets: []string{"n2"}, SetRoleSessions: true,
			}, &testcluster.RepairSink{}, nil)
			if why == "" {
				require.NoError(t, err)
				require.Equal(t, repair.WriteNormal, s.Nodes["n2"].WriteMode)
				return
			}
			require.ErrorContains(t, err, "repair refused: "+why)
			require.ErrorContains(t, err, "ACE_IMPERSONATION=login")
			var v string
			require.NoError(t, e.Node("n2").Pool.QueryRow(context.Background(), `SELECT v FROM `+table+` WHERE id = 1`).Scan(&v))
			require.Equal(t, "drift", v, "nothing was written")
		})
	}
	requireNoFile(t, marker)
}

func TestSetRoleDiffRefusesANonSuperusersPolicy(t *testing.T) {
	t.Parallel()
	e, mallory, _ := codeEnv(t)
	for _, mode := range sessionModes {
		t.Run(mode, func(t *testing.T) {
			_, err := diff.TableDiff(context.Background(), nodesAs(t, e, mallory, mode),
				diff.TableDiffOptions{Table: "public.with_policy", SetRoleSessions: mode == setRoleMode}, &testcluster.DiffSink{}, nil)
			if mode == loginMode {
				require.NoError(t, err, "logged in as herself, her policy runs as her")
				return
			}
			require.ErrorContains(t, err, "row-level security policy p on public.with_policy on node n1 is owned by "+mallory)
		})
	}
}
