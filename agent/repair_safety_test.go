package agent_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine/repair"
	"github.com/ace-agent/ace-agent/internal/localpg"
	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

const smallDDL = `CREATE TABLE public.v (id int PRIMARY KEY, x text)`

// failureEnv has drift on n2 (row 1) and n3 (rows 2 and 3), and a CHECK constraint on n3 that
// refuses n1's version of row 2, so repairing n3 from n1 fails there.
func failureEnv(t *testing.T) (*diffEnv, uuid.UUID) {
	e := setup(t, smallDDL)
	e.ExecAll(`INSERT INTO v SELECT g, 'x' || g FROM generate_series(1, 100) g`)
	e.Node("n2").Exec(t, `UPDATE v SET x = 'bad2' WHERE id = 1`)
	e.Node("n3").Exec(t, `UPDATE v SET x = 'bad3' WHERE id = 2; DELETE FROM v WHERE id = 3`)
	diff := e.diffID("public.v")
	e.Node("n3").Exec(t, `ALTER TABLE v ADD CONSTRAINT refuse_x2 CHECK (x <> 'x2') NOT VALID`)
	return e, diff
}

func TestRepairFailureOnOneNodeLeavesThatNodeUntouched(t *testing.T) {
	t.Parallel()
	e, diff := failureEnv(t)
	id, task := e.repair(diff, `'n1'`)
	require.Equal(t, sqlapi.StatusFailed, task.Status)
	require.Contains(t, *task.Error, "repair of public.v failed on n3: ")
	require.Contains(t, *task.Error, `violates check constraint "refuse_x2"`)
	require.Contains(t, *task.Error, "n2 repaired (0 inserted, 1 updated, 0 deleted, 0 skipped)")
	require.Equal(t, "x1", e.scalar("n2", `SELECT x FROM v WHERE id = 1`))
	require.Equal(t, "bad3", e.scalar("n3", `SELECT x FROM v WHERE id = 2`))
	require.EqualValues(t, 0, e.scalar("n3", `SELECT count(*) FROM v WHERE id = 3`))
	rep := e.report(id)
	require.True(t, rep[`n2 {"id": 1}`].Applied)
	for k, r := range rep {
		if r.Node == "n3" {
			require.False(t, r.Applied, k)
		}
	}
}

func TestRepairAtomicFailureLeavesEveryNodeUnchanged(t *testing.T) {
	t.Parallel()
	e, diff := failureEnv(t)
	id, task := e.repair(diff, `'n1', atomic => true`)
	require.Equal(t, sqlapi.StatusFailed, task.Status)
	require.Contains(t, *task.Error, "atomic repair of public.v failed on n3: ")
	require.Contains(t, *task.Error, "every node was left unchanged")
	require.Contains(t, *task.Error, "n2 rolled back, unchanged")
	require.Equal(t, "bad2", e.scalar("n2", `SELECT x FROM v WHERE id = 1`))
	require.Equal(t, "bad3", e.scalar("n3", `SELECT x FROM v WHERE id = 2`))
	for _, n := range e.Nodes {
		require.EqualValues(t, 0, e.scalar(n.Name, `SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE '%' || $1::text || '%'`, id.String()), n.Name)
	}
	for k, r := range e.report(id) {
		require.False(t, r.Applied, k)
	}

	// Without the obstacle the atomic repair commits everywhere.
	e.Node("n3").Exec(t, `ALTER TABLE v DROP CONSTRAINT refuse_x2`)
	_, s := e.completedRepair(diff, `'n1', atomic => true`)
	require.True(t, s.FullyRepaired, "%+v", s)
	require.Equal(t, []string{"n2", "n3"}, s.RepairedNodes)
	e.requireInSync("public.v")
}

func TestRepairAtomicFailsWhenARoleMayNotWriteOnOneNode(t *testing.T) {
	t.Parallel()
	e := setup(t, smallDDL)
	e.ExecAll(`INSERT INTO v SELECT g, 'x' || g FROM generate_series(1, 10) g`)
	role := "ace_test_repairer"
	e.ExecAll(`DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '` + role + `') THEN CREATE ROLE ` + role + ` LOGIN; END IF; END $$`)
	e.ExecAll(`GRANT SELECT, INSERT, UPDATE, DELETE ON v TO ` + role)
	e.Node("n3").Exec(t, `REVOKE UPDATE ON v FROM `+role)
	e.Node("n2").Exec(t, `UPDATE v SET x = 'bad' WHERE id = 1`)
	e.Node("n3").Exec(t, `UPDATE v SET x = 'bad' WHERE id = 2`)

	ctx := context.Background()
	conn, err := e.Node("n1").Pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	asRole := func(sql string, args ...any) string {
		var out string
		require.NoError(t, pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SET LOCAL ROLE `+role); err != nil {
				return err
			}
			return tx.QueryRow(ctx, sql, args...).Scan(&out)
		}))
		return out
	}
	diff := asRole(`SELECT ace.table_diff('public.v')`)
	require.Equal(t, "COMPLETED", asRole(`SELECT status FROM ace.wait($1)`, diff))
	id := asRole(`SELECT ace.table_repair($1, 'n1', atomic => true)`, diff)
	require.Equal(t, "FAILED", asRole(`SELECT status FROM ace.wait($1)`, id))
	msg := asRole(`SELECT error FROM ace.tasks WHERE task_id = $1`, id)
	require.Contains(t, msg, "failed on n3: ")
	require.Contains(t, msg, "permission denied for table v")
	require.Equal(t, "bad", e.scalar("n2", `SELECT x FROM v WHERE id = 1`))
	require.Equal(t, "bad", e.scalar("n3", `SELECT x FROM v WHERE id = 2`))
}

func TestRepairTriggersFireOnlyWhenAsked(t *testing.T) {
	t.Parallel()
	e := setup(t, smallDDL+`;
		CREATE TABLE public.audit (id int, x text);
		CREATE FUNCTION public.audit_v() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN INSERT INTO public.audit VALUES (NEW.id, NEW.x); RETURN NEW; END $$;
		CREATE TRIGGER audit_v AFTER INSERT OR UPDATE ON public.v FOR EACH ROW EXECUTE FUNCTION public.audit_v()`)
	e.ExecAll(`INSERT INTO v SELECT g, 'x' || g FROM generate_series(1, 10) g; TRUNCATE audit`)
	e.Node("n2").Exec(t, `UPDATE v SET x = 'bad' WHERE id IN (1, 2); TRUNCATE audit`)

	e.completedRepair(e.diffID("public.v"), `'n1', target_nodes => ARRAY['n2']`)
	require.EqualValues(t, 0, e.scalar("n2", `SELECT count(*) FROM audit`), "session_replication_role = replica")

	e.Node("n2").Exec(t, `UPDATE v SET x = 'bad' WHERE id IN (1, 2); TRUNCATE audit`)
	_, s := e.completedRepair(e.diffID("public.v"), `'n1', fire_triggers => true`)
	require.True(t, s.FireTriggers)
	require.EqualValues(t, 2, e.scalar("n2", `SELECT count(*) FROM audit`))
	e.requireInSync("public.v")
}

func TestRepairLargeBigintKeysKeepTheirPrecision(t *testing.T) {
	t.Parallel()
	e := setup(t, `CREATE TABLE public.big (id bigint PRIMARY KEY, v text)`)
	e.ExecAll(`INSERT INTO big VALUES (9007199254740992, 'a'), (9007199254740993, 'b'), (9223372036854775807, 'max'),
		(-9223372036854775808, 'min'), (9223372036854775806, 'near max')`)
	e.Node("n2").Exec(t, `UPDATE big SET v = 'drift' WHERE id IN (9007199254740993, 9223372036854775807)`)
	e.Node("n2").Exec(t, `DELETE FROM big WHERE id = -9223372036854775808`)
	e.Node("n3").Exec(t, `INSERT INTO big VALUES (9223372036854775805, 'only n3')`)
	e.Node("n3").Exec(t, `UPDATE big SET v = 'drift' WHERE id = 9007199254740993`)

	id, s := e.completedRepair(e.diffID("public.big"), `'n1'`)
	require.True(t, s.FullyRepaired, "%+v", s)
	e.requireInSync("public.big")
	require.Equal(t, "b", e.scalar("n2", `SELECT v FROM big WHERE id = 9007199254740993`))
	require.Equal(t, "a", e.scalar("n2", `SELECT v FROM big WHERE id = 9007199254740992`))
	require.Equal(t, "min", e.scalar("n2", `SELECT v FROM big WHERE id = -9223372036854775808`))
	require.EqualValues(t, 0, e.scalar("n3", `SELECT count(*) FROM big WHERE id = 9223372036854775805`))
	require.Equal(t, repair.ActionUpdate, e.report(id)[`n2 {"id": 9223372036854775807}`].Action)
}

func TestRepairCompositeAndTextKeys(t *testing.T) {
	t.Parallel()
	e := setup(t, `CREATE TABLE public.c (region text, seq numeric, at date, v text, PRIMARY KEY (region, seq, at))`)
	e.ExecAll(`INSERT INTO c SELECT r, s, date '2024-01-01' + s::int, r || s FROM unnest(ARRAY['eu', 'a,b', 'q"x', 'É']) r, generate_series(1, 50) s`)
	e.Node("n2").Exec(t, `UPDATE c SET v = 'changed' WHERE region = 'a,b' AND seq = 10`)
	e.Node("n3").Exec(t, `DELETE FROM c WHERE region = 'q"x' AND seq = 50`)
	e.Node("n2").Exec(t, `INSERT INTO c VALUES ('zz', 1.50, '2030-01-01', 'only n2')`)
	_, s := e.completedRepair(e.diffID("public.c"), `'n1'`)
	require.True(t, s.FullyRepaired, "%+v", s)
	e.requireInSync("public.c")
}

func TestRerunRechecksTheKeysAndCanBeRepaired(t *testing.T) {
	t.Parallel()
	e := wideEnv(t)
	plantWideDrift(e)
	diff := e.diffID("public.w")
	e.Node("n2").Exec(t, `UPDATE w SET t = 'text 10', n = 12.50, nf = 10 / 7.0, ts = '2024-01-01 00:10:15+00', tsn = '2024-01-01 20:00:00' WHERE id = 10`)
	e.Node("n1").Exec(t, `UPDATE w SET t = 'not in the diff' WHERE id = 300`)

	rerun, s := e.completedRerun(diff)
	require.EqualValues(t, 9, s.DifferingKeys, "row 10 was fixed by hand; 300 is not one of the diff's keys")
	require.Equal(t, []string{"n1", "n2", "n3"}, s.Nodes)
	rows := e.diffRows(rerun)
	require.NotContains(t, rows, `{"id": 10}`)
	require.Contains(t, rows, `{"id": 9000}`)

	_, rs := e.completedRepair(rerun, `'n1'`)
	require.True(t, rs.FullyRepaired, "%+v", rs)
	_, s = e.completedRerun(rerun)
	require.True(t, s.InSync())
	require.Equal(t, []int64{300}, e.differingIDs())
}

func TestRepairAtomicNeedsPreparedTransactions(t *testing.T) {
	t.Parallel()
	e := ownCluster(t, map[string]string{"max_prepared_transactions": "0"})
	e.ExecAll(smallDDL)
	e.ExecAll(`INSERT INTO v SELECT g, 'x' FROM generate_series(1, 10) g`)
	e.Node("n2").Exec(t, `UPDATE v SET x = 'y' WHERE id = 1`)
	_, task := e.repair(e.diffID("public.v"), `'n1', atomic => true`)
	require.Equal(t, sqlapi.StatusFailed, task.Status)
	require.Contains(t, *task.Error, "an atomic repair needs two-phase commit, but max_prepared_transactions is 0 on node n2")
	require.Equal(t, "y", e.scalar("n2", `SELECT x FROM v WHERE id = 1`))
}

// ownCluster starts a 2-node cluster of its own with extra settings, with the ace schema, the
// nodes registered and an agent on each node.
func ownCluster(t *testing.T, settings map[string]string) *diffEnv {
	c := localpg.StartT(t, localpg.Options{Nodes: 2, Settings: settings})
	return envOn(t, c.Nodes, "repair")
}

// envOn makes database db ready on the instances and starts an agent on each.
func envOn(t *testing.T, instances []*localpg.Instance, db string) *diffEnv {
	env := testcluster.NewOn(t, instances, db)
	for _, n := range env.Nodes {
		n.StartAgent(t)
	}
	return &diffEnv{Env: env, t: t}
}

// TestRepairAndDownNodes: a node marked down after the diff is left out of a repair's default
// targets (with a NOTICE naming it, and its rows untouched), and refused when named as a target
// or as the source of truth; once marked up it is repaired from the same diff.
func TestRepairAndDownNodes(t *testing.T) {
	t.Parallel()
	e := setup(t, smallDDL)
	e.ExecAll(`INSERT INTO v SELECT g, 'x' || g FROM generate_series(1, 10) g`)
	e.Node("n2").Exec(t, `UPDATE v SET x = 'bad2' WHERE id = 1`)
	e.Node("n3").Exec(t, `UPDATE v SET x = 'bad3' WHERE id = 2`)
	diff := e.diffID("public.v")
	n1 := e.Node("n1")
	n1.Exec(t, `SELECT ace.mark_node_down('n3', 'disk failure')`)

	refused := func(t *testing.T, args string, message string) {
		t.Helper()
		_, err := n1.Pool.Exec(t.Context(), `SELECT ace.table_repair($1, `+args+`)`, diff)
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr)
		require.Equal(t, pgerrcode.ObjectNotInPrerequisiteState, pgErr.Code)
		require.Equal(t, message, pgErr.Message)
	}
	const n3Down = "node n3 is marked down (disk failure); mark it up with ace.mark_node_up('n3') or leave it out"
	t.Run("named as a target", func(t *testing.T) {
		refused(t, `source_of_truth => 'n1', target_nodes => ARRAY['n2', 'n3']`, n3Down)
	})
	t.Run("named as the source of truth", func(t *testing.T) {
		refused(t, `source_of_truth => 'n3'`, n3Down)
	})
	t.Run("left out of the default targets", func(t *testing.T) {
		conn, notices := connectWithNotices(t, n1.DSN)
		var id uuid.UUID
		require.NoError(t, conn.QueryRow(t.Context(), `SELECT ace.table_repair($1, source_of_truth => 'n1')`, diff).Scan(&id))
		require.Contains(t, notices(), "nodes left out of the repair: n3 (down: disk failure)")
		task := n1.Wait(t, id)
		require.Equal(t, sqlapi.StatusCompleted, task.Status, "repair error: %v", task.Error)
		require.Equal(t, "x1", e.scalar("n2", `SELECT x FROM v WHERE id = 1`))
		require.Equal(t, "bad3", e.scalar("n3", `SELECT x FROM v WHERE id = 2`), "a down node is not written")
	})
	t.Run("repaired from the same diff once up", func(t *testing.T) {
		n1.Exec(t, `SELECT ace.mark_node_up('n3')`)
		e.completedRepair(diff, `source_of_truth => 'n1', target_nodes => ARRAY['n3']`)
		e.requireInSync("public.v")
	})
	t.Run("a repair with every target down is refused", func(t *testing.T) {
		n1.Exec(t, `SELECT ace.mark_node_down('n2', NULL), ace.mark_node_down('n3', NULL)`)
		defer n1.Exec(t, `SELECT ace.mark_node_up('n2'), ace.mark_node_up('n3')`)
		refused(t, `source_of_truth => 'n1'`, "every node this repair would write is marked down: n2 (down), n3 (down)")
	})
}
