package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine/repair"
	"github.com/ace-agent/ace-agent/internal/localpg"
	"github.com/ace-agent/ace-agent/internal/pglogicaltest"
	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// submitRepairErr submits ace.table_repair on node and returns the error its validator raised.
func (e *diffEnv) submitRepairErr(node string, diff uuid.UUID, args string) *pgconn.PgError {
	e.t.Helper()
	var id uuid.UUID
	err := e.Node(node).Pool.QueryRow(context.Background(), `SELECT ace.table_repair($1, `+args+`)`, diff).Scan(&id)
	var pg *pgconn.PgError
	require.True(e.t, errors.As(err, &pg), "the repair must be refused at submission, got %v", err)
	return pg
}

// A diff that saw only part of the table (against_origin, until) is repaired only in
// recovery_mode: the rows it did not see are not in sync, and a plain repair of it would treat
// them as such.
func TestRecoveryGuardRefusesScopedDiffsWithoutRecoveryMode(t *testing.T) {
	t.Parallel()
	e := setup(t, `CREATE TABLE g (id int PRIMARY KEY, v text)`)
	e.ExecAll(`INSERT INTO g SELECT g, 'x' FROM generate_series(1, 10) g`)
	e.Node("n2").Exec(t, `UPDATE g SET v = 'y' WHERE id = 1`)

	for name, c := range map[string]struct{ diffArgs, scope string }{
		"until":          {`$1, until => now()`, "until => "},
		"against_origin": {`$1, against_origin => 'n2'`, "against_origin => 'n2'"},
		"both":           {`$1, against_origin => 'n2', until => now()`, "against_origin => 'n2' and until => "},
	} {
		t.Run(name, func(t *testing.T) {
			id, task := e.diff(c.diffArgs, "public.g")
			require.Equal(t, sqlapi.StatusCompleted, task.Status, "diff: %v", task.Error)
			for _, args := range []string{`'n1'`, `'n1', recovery_mode => false`, `strategy => 'latest_commit'`} {
				pg := e.submitRepairErr("n1", id, args)
				require.Equal(t, pgerrcode.ObjectNotInPrerequisiteState, pg.Code, args)
				require.Contains(t, pg.Message, "the diff was made with "+c.scope, args)
				require.Contains(t, pg.Message, "it is repaired only with recovery_mode => true", args)
				require.Contains(t, pg.Hint, "recovery_mode => true", args)
				require.Contains(t, pg.Hint, "diff it again without against_origin and until", args)
			}
			require.Equal(t, "y", e.scalar("n2", `SELECT v FROM g WHERE id = 1`))
		})
	}

	t.Run("recovery_mode with a source of truth repairs", func(t *testing.T) {
		id, task := e.diff(`$1, until => now()`, "public.g")
		require.Equal(t, sqlapi.StatusCompleted, task.Status, "diff: %v", task.Error)
		_, s := e.completedRepair(id, `'n1', recovery_mode => true`)
		require.True(t, s.FullyRepaired, "%+v", s)
		require.Equal(t, "x", e.scalar("n2", `SELECT v FROM g WHERE id = 1`))
	})

	t.Run("recovery_mode without a source of truth needs the failed node", func(t *testing.T) {
		id, task := e.diff(`$1, until => now()`, "public.g")
		require.Equal(t, sqlapi.StatusCompleted, task.Status, "diff: %v", task.Error)
		pg := e.submitRepairErr("n1", id, `recovery_mode => true`)
		require.Equal(t, pgerrcode.InvalidParameterValue, pg.Code)
		require.Contains(t, pg.Message, "this diff names no failed node (it was made without against_origin)")
		require.Contains(t, pg.Hint, "source_of_truth")
	})

	t.Run("no origin LSN fails before any write, naming the nodes", func(t *testing.T) {
		// Nothing replicates here: no survivor has an origin standing for n2.
		id, task := e.diff(`$1, against_origin => 'n2'`, "public.g")
		require.Equal(t, sqlapi.StatusCompleted, task.Status, "diff: %v", task.Error)
		before := e.scalar("n1", `SELECT count(*) FROM g`)
		rid, task := e.repair(id, `recovery_mode => true`)
		require.Equal(t, sqlapi.StatusFailed, task.Status)
		require.Contains(t, *task.Error, "recovery_mode cannot pick a source of truth among n1 and n3: node n1 has no origin LSN for the failed node n2")
		require.Equal(t, before, e.scalar("n1", `SELECT count(*) FROM g`))
		require.Zero(t, e.scalar("n1", `SELECT count(*) FROM ace.repair_rows($1)`, rid))
	})

	t.Run("a whole-table diff needs no recovery_mode", func(t *testing.T) {
		e.Node("n3").Exec(t, `UPDATE g SET v = 'z' WHERE id = 2`)
		_, s := e.completedRepair(e.diffID("public.g"), `'n1'`)
		require.True(t, s.FullyRepaired, "%+v", s)
	})
}

// recoveryCluster is a 3-node pglogical cluster with the ace schema and an agent on every node.
type recoveryCluster struct {
	*diffEnv
	c      *pglogicaltest.Cluster
	agents map[string]*testcluster.Agent
}

func startRecoveryCluster(t *testing.T) *recoveryCluster {
	c := pglogicaltest.Start(t, 3, "recovery", `CREATE TABLE public.acct (id bigint PRIMARY KEY, v text)`)
	var instances []*localpg.Instance
	for _, n := range c.Nodes {
		instances = append(instances, n.Instance)
	}
	env := testcluster.NewOn(t, instances, c.DB)
	r := &recoveryCluster{diffEnv: &diffEnv{Env: env, t: t}, c: c, agents: map[string]*testcluster.Agent{}}
	for _, n := range env.Nodes {
		r.agents[n.Name] = n.StartAgent(t)
	}
	return r
}

// stop stops a node's agent and server: the node failed.
func (r *recoveryCluster) stop(node string) {
	require.NoError(r.t, r.agents[node].Stop())
	require.NoError(r.t, r.Node(node).Instance.Stop(context.Background()))
}

// originDiff diffs acct on the survivors n2 and n3 (coordinated by n2), only rows whose last
// write came from n1.
func (r *recoveryCluster) originDiff() uuid.UUID {
	r.t.Helper()
	var id uuid.UUID
	require.NoError(r.t, r.Node("n2").Pool.QueryRow(context.Background(),
		`SELECT ace.table_diff('public.acct', nodes => ARRAY['n2', 'n3'], against_origin => 'n1')`).Scan(&id))
	task := r.Node("n2").Wait(r.t, id)
	require.Equal(r.t, sqlapi.StatusCompleted, task.Status, "diff: %v", task.Error)
	return id
}

// repairOn submits a repair on n2 and waits for it.
func (r *recoveryCluster) repairOn(diff uuid.UUID, args string) (uuid.UUID, sqlapi.Task) {
	r.t.Helper()
	var id uuid.UUID
	require.NoError(r.t, r.Node("n2").Pool.QueryRow(context.Background(), `SELECT ace.table_repair($1, `+args+`)`, diff).Scan(&id))
	return id, r.Node("n2").Wait(r.t, id)
}

func (r *recoveryCluster) diffIDs(diff uuid.UUID) []int64 {
	r.t.Helper()
	rows := r.c.Node("n2").QueryRows(r.t, `SELECT (pk->>'id')::bigint FROM ace.diff_rows($1)`, diff)
	ids := make([]int64, len(rows))
	for i, row := range rows {
		ids[i] = row[0].(int64)
	}
	return ids
}

func (r *recoveryCluster) rows(node string) [][]any {
	return r.c.Node(node).QueryRows(r.t, `SELECT id, v, pg_xact_commit_timestamp(xmin) FROM acct ORDER BY id`)
}

func (r *recoveryCluster) values(node string) [][]any {
	return r.c.Node(node).QueryRows(r.t, `SELECT id, v FROM acct ORDER BY id`)
}

// TestRecoveryModeOnPglogical is ACE's catastrophic single node failure on a real pglogical
// cluster: n3's subscription to n1 is disabled, n1 writes (n2 gets it, n3 does not), and n1
// stops. The survivors' diff against n1's origin finds the rows, a plain repair is refused, and
// recovery_mode picks n2, which received more of n1's WAL, and converges n3. Before that, with
// both survivors at the same LSN, recovery_mode refuses to guess and changes nothing.
func TestRecoveryModeOnPglogical(t *testing.T) {
	t.Parallel()
	r := startRecoveryCluster(t)
	r.c.Node("n1").Exec(t, `INSERT INTO acct SELECT g, 'v' || g FROM generate_series(1, 100) g`)
	r.c.WaitForReplication(t)

	t.Run("equal LSNs fail and change nothing", func(t *testing.T) {
		// n3 loses a row of n1's without replicating it: both survivors applied n1's WAL equally far.
		r.c.WriteLocalOnly(t, "n3", `DELETE FROM acct WHERE id = 50`)
		diff := r.originDiff()
		require.Equal(t, []int64{50}, r.diffIDs(diff))
		before := r.rows("n3")
		id, task := r.repairOn(diff, `recovery_mode => true`)
		require.Equal(t, sqlapi.StatusFailed, task.Status)
		require.Contains(t, *task.Error, "recovery_mode cannot pick a source of truth: nodes n2 and n3 both received the failed node n1's changes up to LSN")
		require.Equal(t, before, r.rows("n3"))
		require.Zero(t, r.scalar("n2", `SELECT count(*) FROM ace.repair_rows($1)`, id))
	})

	r.c.DisableSubscription(t, "n3", "n1")
	r.c.Node("n1").Exec(t, `INSERT INTO acct SELECT g, 'late ' || g FROM generate_series(101, 110) g`)
	r.c.Node("n1").Exec(t, `UPDATE acct SET v = 'edited' WHERE id IN (1, 2, 3)`)
	r.c.WaitForReplication(t)
	r.stop("n1")

	diff := r.originDiff()
	t.Run("the origin-scoped diff finds the rows", func(t *testing.T) {
		require.Equal(t, []int64{1, 2, 3, 50, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110}, r.diffIDs(diff))
	})

	t.Run("a plain repair is refused", func(t *testing.T) {
		pg := r.submitRepairErr("n2", diff, `'n2'`)
		require.Equal(t, pgerrcode.ObjectNotInPrerequisiteState, pg.Code)
		require.Contains(t, pg.Message, "the diff was made with against_origin => 'n1'")
	})

	t.Run("recovery_mode picks the survivor that received more and converges", func(t *testing.T) {
		_, task := r.repairOn(diff, `recovery_mode => true, generate_report => true`)
		require.Equal(t, sqlapi.StatusCompleted, task.Status, "repair: %v", task.Error)
		var s repair.Summary
		require.NoError(t, json.Unmarshal(task.Result, &s))
		require.True(t, s.FullyRepaired, "%+v", s)
		require.Equal(t, "n2", s.SourceOfTruth)
		var report struct {
			SuppliedArgs map[string]any `json:"supplied_args"`
			Auto         struct {
				Selected   string `json:"selected"`
				FailedNode string `json:"failed_node"`
			} `json:"auto_source_of_truth"`
		}
		require.NoError(t, json.Unmarshal(s.RepairReport, &report))
		require.Equal(t, true, report.SuppliedArgs["recovery_mode"])
		require.Equal(t, "n2", report.SuppliedArgs["source_of_truth"])
		require.Equal(t, "n2", report.Auto.Selected)
		require.Equal(t, "n1", report.Auto.FailedNode)
		require.Equal(t, []string{"n3"}, s.RepairedNodes)
		auto := s.AutoSourceOfTruth
		require.NotNil(t, auto)
		require.Equal(t, "n2", auto.Selected)
		require.Equal(t, "n1", auto.FailedNode)
		n2, err := pglogrepl.ParseLSN(auto.LSNProbe["n2"].OriginLSN)
		require.NoError(t, err)
		n3, err := pglogrepl.ParseLSN(auto.LSNProbe["n3"].OriginLSN)
		require.NoError(t, err)
		require.Greater(t, n2, n3)
		require.NotEmpty(t, auto.LSNProbe["n2"].SlotLSN, "n1's subscription slot on n2")
		require.NotEmpty(t, auto.LSNProbe["n2"].Origins)
		require.Equal(t, r.values("n2"), r.values("n3"))
		require.Len(t, r.values("n3"), 110)
	})
}

// commits is, for each row of acct on a node, its commit timestamp (to the microsecond, as
// text) and the name of its replication origin.
func (r *recoveryCluster) commits(node string) map[int64][2]string {
	r.t.Helper()
	out := map[int64][2]string{}
	for _, row := range r.c.Node(node).QueryRows(r.t, `SELECT id, to_char(c.timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'),
			coalesce(ro.roname, 'local') FROM acct, pg_xact_commit_timestamp_origin(acct.xmin) c
			LEFT JOIN pg_replication_origin ro ON ro.roident = c.roident`) {
		out[row[0].(int64)] = [2]string{row[1].(string), row[2].(string)}
	}
	return out
}

// TestRecoveryPreserveOriginOnPglogical repairs the survivors of a failed node with
// preserve_origin: the rows copied to n3 keep the commit timestamps n1 gave them (to the
// microsecond) and the origin that stands for n1 there, so a later against_origin diff still
// sees them as n1's, and finds nothing. atomic is refused with it.
func TestRecoveryPreserveOriginOnPglogical(t *testing.T) {
	t.Parallel()
	r := startRecoveryCluster(t)
	r.c.Node("n1").Exec(t, `INSERT INTO acct SELECT g, 'v' || g FROM generate_series(1, 100) g`)
	r.c.WaitForReplication(t)
	r.c.DisableSubscription(t, "n3", "n1")
	r.c.Node("n1").Exec(t, `INSERT INTO acct SELECT g, 'late ' || g FROM generate_series(101, 110) g`)
	r.c.Node("n1").Exec(t, `UPDATE acct SET v = 'edited' WHERE id IN (1, 2, 3)`)
	r.c.Node("n1").Exec(t, `INSERT INTO acct VALUES (111, 'alone')`)
	r.c.WaitForReplication(t)
	r.stop("n1")
	diff := r.originDiff()
	require.Equal(t, []int64{1, 2, 3, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111}, r.diffIDs(diff))

	t.Run("atomic is refused", func(t *testing.T) {
		pg := r.submitRepairErr("n2", diff, `recovery_mode => true, preserve_origin => true, atomic => true`)
		require.Equal(t, pgerrcode.InvalidParameterValue, pg.Code)
		require.Contains(t, pg.Message, "preserve_origin and atomic cannot be combined")
		require.NotEmpty(t, pg.Hint)
	})

	t.Run("the rows keep n1's commit timestamps and origin", func(t *testing.T) {
		_, task := r.repairOn(diff, `recovery_mode => true, preserve_origin => true`)
		require.Equal(t, sqlapi.StatusCompleted, task.Status, "repair: %v", task.Error)
		var s repair.Summary
		require.NoError(t, json.Unmarshal(task.Result, &s))
		require.True(t, s.FullyRepaired, "%+v", s)
		require.Equal(t, "n2", s.AutoSourceOfTruth.Selected)
		require.EqualValues(t, 11, s.Nodes["n3"].Inserted)
		require.EqualValues(t, 3, s.Nodes["n3"].Updated)
		require.Equal(t, r.values("n2"), r.values("n3"))

		n2, n3 := r.commits("n2"), r.commits("n3")
		n1Origin := n3[50][1] // a row n3 received from n1 before its subscription was disabled
		require.NotEqual(t, "local", n1Origin)
		require.NotEqual(t, "ace_repair", n1Origin)
		stamps := map[string]bool{}
		for _, id := range r.diffIDs(diff) {
			require.Equal(t, n2[id][0], n3[id][0], "row %d: n3's commit timestamp is n1's", id)
			require.Equal(t, n1Origin, n3[id][1], "row %d: n3 holds it under n1's origin", id)
			stamps[n3[id][0]] = true
		}
		require.Len(t, stamps, 3, "three commits of n1, three commit timestamps")
	})

	t.Run("a later against_origin diff is clean", func(t *testing.T) {
		require.Empty(t, r.diffIDs(r.originDiff()))
	})
}

// preserve_origin calls replication origin functions as the submitter: a submitter without
// EXECUTE on them is refused before anything is written, with the GRANTs to run; with them the
// rows keep the origin's commit timestamps under an origin named after it (there is no
// subscription from it here), which a later against_origin diff resolves.
func TestRecoveryPreserveOriginNeedsTheOriginFunctions(t *testing.T) {
	t.Parallel()
	e := testcluster.NewSecure(t)
	alice := e.AddSubmitter("alice", true)
	e.ExecAll(`CREATE TABLE p (id int PRIMARY KEY, v text); GRANT SELECT, INSERT, UPDATE, DELETE ON p TO ` + alice)
	e.DropSlotsAtEnd()
	for _, n := range e.Nodes {
		n.StartAgent(t)
	}
	e.Node("n2").Exec(t, `INSERT INTO p SELECT g, 'from n2' FROM generate_series(1, 5) g`)
	ctx := context.Background()
	conn := e.Node("n1").ConnectAs(t, alice)
	submit := func(sql string, args ...any) sqlapi.Task {
		var id uuid.UUID
		require.NoError(t, conn.QueryRow(ctx, sql, args...).Scan(&id))
		return e.Node("n1").Wait(t, id)
	}
	diffTask := submit(`SELECT ace.table_diff('public.p', against_origin => 'n2')`)
	require.Equal(t, sqlapi.StatusCompleted, diffTask.Status, "diff: %v", diffTask.Error)
	repairArgs := `SELECT ace.table_repair($1, 'n2', recovery_mode => true, preserve_origin => true)`

	task := submit(repairArgs, diffTask.ID)
	require.Equal(t, sqlapi.StatusFailed, task.Status)
	require.Contains(t, *task.Error, "role "+alice+" may not execute pg_replication_origin_session_setup(text), pg_replication_origin_session_reset(), "+
		"pg_replication_origin_xact_setup(pg_lsn, timestamp with time zone), pg_replication_origin_create(text) on node n1")
	require.Contains(t, *task.Error, "GRANT EXECUTE ON FUNCTION pg_replication_origin_xact_setup(pg_lsn, timestamp with time zone) TO "+pgx.Identifier{alice}.Sanitize()+";")
	require.Contains(t, *task.Error, "nothing was written")
	for _, n := range []string{"n1", "n3"} {
		require.EqualValues(t, 0, scalarOn(t, e, n, `SELECT count(*) FROM p`))
	}

	e.ExecAll(`GRANT EXECUTE ON FUNCTION pg_replication_origin_session_setup(text), pg_replication_origin_session_reset(),
		pg_replication_origin_xact_setup(pg_lsn, timestamptz), pg_replication_origin_create(text) TO ` + alice)
	task = submit(repairArgs, diffTask.ID)
	require.Equal(t, sqlapi.StatusCompleted, task.Status, "repair: %v", task.Error)
	stamp := `SELECT string_agg(format('%s %s %s', id, c.timestamp, coalesce(ro.roname, 'local')), ', ' ORDER BY id)
		FROM p, pg_xact_commit_timestamp_origin(p.xmin) c LEFT JOIN pg_replication_origin ro ON ro.roident = c.roident`
	fromN2 := scalarOn(t, e, "n2", stamp).(string)
	for _, n := range []string{"n1", "n3"} {
		require.Equal(t, strings.ReplaceAll(fromN2, "local", "n2"), scalarOn(t, e, n, stamp), "node %s", n)
	}
	later := submit(`SELECT ace.table_diff('public.p', against_origin => 'n2')`)
	require.Equal(t, sqlapi.StatusCompleted, later.Status, "diff: %v", later.Error)
	require.EqualValues(t, 0, scalarOn(t, e, "n1", `SELECT count(*) FROM ace.diff_rows($1)`, later.ID))
}

func scalarOn(t *testing.T, e *testcluster.Env, node, sql string, args ...any) any {
	t.Helper()
	var v any
	require.NoError(t, e.Node(node).Pool.QueryRow(context.Background(), sql, args...).Scan(&v))
	return v
}
