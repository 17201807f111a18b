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
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/localpg"
	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// policyRunResult is what a test reads of a repair-policy-run's result.
type policyRunResult struct {
	PolicyName    string     `json:"policy_name"`
	Owner         string     `json:"owner"`
	Outcome       string     `json:"outcome"`
	Reason        string     `json:"reason"`
	HeldReason    string     `json:"held_reason"`
	SkipReason    string     `json:"skip_reason"`
	DiffType      string     `json:"diff_type"`
	DiffTask      *uuid.UUID `json:"diff_task"`
	DifferingKeys int64      `json:"differing_keys"`
	Transient     int64      `json:"transient_diffs"`
	RepairTask    *uuid.UUID `json:"repair_task"`
	RerunTask     *uuid.UUID `json:"rerun_task"`
	Inserted      int64      `json:"inserted"`
	Updated       int64      `json:"updated"`
	Deleted       int64      `json:"deleted"`
	RemainingKeys int64      `json:"remaining_keys"`
}

// policySetup is a test database with table t (100 rows) on every node and an agent on every
// node.
func policySetup(t *testing.T) *diffEnv {
	t.Helper()
	return setup(t, `CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g;
		UPDATE ace.settings SET value = '1 second' WHERE name = 'min_schedule_interval'`)
}

// runPolicy runs the policy on n1 by hand, waits for it, and returns the task and its result.
func runPolicy(t *testing.T, n *testcluster.Node, name string) (sqlapi.Task, policyRunResult) {
	t.Helper()
	var id uuid.UUID
	require.NoError(t, n.Pool.QueryRow(context.Background(), `SELECT ace.run_repair_policy($1)`, name).Scan(&id))
	task := n.Wait(t, id)
	var r policyRunResult
	if task.Status == sqlapi.StatusCompleted {
		require.NoError(t, json.Unmarshal(task.Result, &r))
	}
	return task, r
}

// policyEvents lists the kinds of the events about a run, oldest first.
func policyEvents(t *testing.T, q sqlapi.Querier, run uuid.UUID) []string {
	t.Helper()
	rows, err := q.Query(context.Background(), `SELECT kind FROM ace.events WHERE task_id = $1 ORDER BY event_id`, run)
	require.NoError(t, err)
	kinds, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return kinds
}

// childTypes lists the task types of a run's children.
func childTypes(t *testing.T, n *testcluster.Node, run uuid.UUID) []string {
	t.Helper()
	rows, err := n.Pool.Query(context.Background(),
		`SELECT task_type FROM ace.tasks WHERE args->>'parent_task' = $1 ORDER BY submitted_at`, run.String())
	require.NoError(t, err)
	types, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return types
}

func requirePgError(t *testing.T, err error, code, message string) *pgconn.PgError {
	t.Helper()
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, code, pgErr.Code, pgErr.Message)
	require.Contains(t, pgErr.Message, message)
	return pgErr
}

// TestRepairPolicyRepairsLateWrites: five writes that reached n1 only are repaired by a run of a
// source_of_truth policy: a diff, a repair with the compare-and-set on, a rerun that finds
// nothing left, and an auto_repair_repaired event naming the owner and the counts.
func TestRepairPolicyRepairsLateWrites(t *testing.T) {
	t.Parallel()
	e := policySetup(t)
	n1 := e.Node("n1")
	n1.Exec(t, `INSERT INTO t SELECT g, 'late' FROM generate_series(101, 103) g; UPDATE t SET v = 'late' WHERE id IN (1, 2)`)
	n1.Exec(t, `SELECT ace.repair_policy('late', 'public.t', 'source_of_truth', source_of_truth => 'n1', recheck_after => '0 seconds')`)

	task, r := runPolicy(t, n1, "late")
	require.Equal(t, sqlapi.StatusCompleted, task.Status, "%v", task.Error)
	require.Equal(t, "repaired", r.Outcome, r.Reason)
	require.EqualValues(t, 5, r.DifferingKeys)
	require.Equal(t, "table-diff", r.DiffType)
	require.EqualValues(t, 6, r.Inserted, "three rows on n2 and n3 each")
	require.EqualValues(t, 4, r.Updated)
	require.Zero(t, r.RemainingKeys)
	require.Equal(t, []string{"table-diff", "table-repair", "table-rerun"}, childTypes(t, n1, task.ID))
	all := `SELECT string_agg(id || ' ' || v, ',' ORDER BY id) FROM t`
	for _, n := range []string{"n2", "n3"} {
		require.Equal(t, e.scalar("n1", all), e.scalar(n, all), "node %s", n)
	}
	var check bool
	require.NoError(t, n1.Pool.QueryRow(t.Context(), `SELECT (args->>'check_unchanged')::boolean FROM ace.tasks WHERE task_id = $1`,
		r.RepairTask).Scan(&check))
	require.True(t, check, "the repair runs with the compare-and-set on")
	require.Equal(t, []string{"auto_repair_started", "auto_repair_repaired"}, policyEvents(t, n1.Pool, task.ID))
	var detail map[string]any
	require.NoError(t, n1.Pool.QueryRow(t.Context(), `SELECT detail FROM ace.events WHERE task_id = $1 AND kind = 'auto_repair_repaired'`,
		task.ID).Scan(&detail))
	require.Equal(t, "late", detail["policy"])
	require.EqualValues(t, 6, detail["inserted"])
	require.NotEmpty(t, detail["owner"])

	t.Run("the next run is in sync", func(t *testing.T) {
		task, r := runPolicy(t, n1, "late")
		require.Equal(t, sqlapi.StatusCompleted, task.Status, "%v", task.Error)
		require.Equal(t, "in_sync", r.Outcome)
		require.Equal(t, []string{"table-diff"}, childTypes(t, n1, task.ID))
		require.Equal(t, []string{"auto_repair_started", "auto_repair_in_sync"}, policyEvents(t, n1.Pool, task.ID))
	})
}

// TestRepairPolicyHoldsTooManyDifferences: 150 differing rows with max_rows 100 hold the run: no
// repair task at all, the rows unchanged, the reason stored and an auto_repair_held event.
func TestRepairPolicyHoldsTooManyDifferences(t *testing.T) {
	t.Parallel()
	e := policySetup(t)
	n1 := e.Node("n1")
	e.Node("n2").Exec(t, `INSERT INTO t SELECT g, 'extra' FROM generate_series(1001, 1150) g`)
	n1.Exec(t, `SELECT ace.repair_policy('careful', 'public.t', 'source_of_truth', source_of_truth => 'n1', max_rows => 100,
		recheck_after => '0 seconds')`)
	before := nodeRows(t, e, "n2", "t")

	task, r := runPolicy(t, n1, "careful")
	require.Equal(t, sqlapi.StatusCompleted, task.Status, "%v", task.Error)
	require.Equal(t, "held", r.Outcome)
	require.Greater(t, r.DifferingKeys, int64(100))
	require.Contains(t, r.HeldReason, "more than max_rows (100)")
	require.Nil(t, r.RepairTask)
	require.Equal(t, []string{"table-diff"}, childTypes(t, n1, task.ID))
	var repairs int
	require.NoError(t, n1.Pool.QueryRow(t.Context(), `SELECT count(*) FROM ace.tasks WHERE task_type = 'table-repair'`).Scan(&repairs))
	require.Zero(t, repairs, "a held run makes no repair task")
	require.Equal(t, before, nodeRows(t, e, "n2", "t"))
	require.Equal(t, []string{"auto_repair_started", "auto_repair_held"}, policyEvents(t, n1.Pool, task.ID))
	var outcome, reason string
	require.NoError(t, n1.Pool.QueryRow(t.Context(), `SELECT last_outcome, last_reason FROM ace.repair_policy_status WHERE policy_name = 'careful'`).
		Scan(&outcome, &reason))
	require.Equal(t, "held", outcome)
	require.Equal(t, r.HeldReason, reason)
}

// TestRepairPolicyLagIsNotDrift: a write that reaches the other nodes while the run's diff waits
// recheck_after ends the run in_sync, and nothing is repaired.
func TestRepairPolicyLagIsNotDrift(t *testing.T) {
	t.Parallel()
	e := policySetup(t)
	n1 := e.Node("n1")
	n1.Exec(t, `UPDATE t SET v = 'in flight' WHERE id BETWEEN 10 AND 14`)
	n1.Exec(t, `SELECT ace.repair_policy('lag', 'public.t', 'source_of_truth', source_of_truth => 'n1', recheck_after => '3 seconds')`)
	var id uuid.UUID
	require.NoError(t, n1.Pool.QueryRow(t.Context(), `SELECT ace.run_repair_policy('lag')`).Scan(&id))
	var diff uuid.UUID
	require.Eventually(t, func() bool {
		return n1.Pool.QueryRow(t.Context(), `SELECT task_id FROM ace.tasks WHERE args->>'parent_task' = $1`, id.String()).Scan(&diff) == nil
	}, time.Minute, 20*time.Millisecond)
	waitForPhase(t, n1, diff, "waiting")
	// Replication delivers the writes while the diff waits.
	e.Node("n2").Exec(t, `UPDATE t SET v = 'in flight' WHERE id BETWEEN 10 AND 14`)
	e.Node("n3").Exec(t, `UPDATE t SET v = 'in flight' WHERE id BETWEEN 10 AND 14`)
	task := n1.Wait(t, id)
	require.Equal(t, sqlapi.StatusCompleted, task.Status, "%v", task.Error)
	var r policyRunResult
	require.NoError(t, json.Unmarshal(task.Result, &r))
	require.Equal(t, "in_sync", r.Outcome)
	require.EqualValues(t, 5, r.Transient)
	require.Equal(t, []string{"table-diff"}, childTypes(t, n1, task.ID))
}

// TestRepairPolicySkips: a run is skipped, diffing nothing, while a node of the policy is down,
// when a majority policy has no quorum, and once max_runs_per_hour runs happened in the hour.
func TestRepairPolicySkips(t *testing.T) {
	t.Parallel()
	e := policySetup(t)
	n1 := e.Node("n1")
	n1.Exec(t, `SELECT ace.repair_policy('sot', 'public.t', 'source_of_truth', source_of_truth => 'n1', recheck_after => '0 seconds')`)
	n1.Exec(t, `SELECT ace.repair_policy('vote', 'public.t', 'majority', recheck_after => '0 seconds')`)
	n1.Exec(t, `SELECT ace.repair_policy('twice', 'public.t', 'source_of_truth', source_of_truth => 'n1', max_runs_per_hour => 2,
		recheck_after => '0 seconds')`)

	t.Run("rate limit", func(t *testing.T) {
		for range 2 {
			_, r := runPolicy(t, n1, "twice")
			require.Equal(t, "in_sync", r.Outcome)
		}
		task, r := runPolicy(t, n1, "twice")
		require.Equal(t, "skipped", r.Outcome)
		require.Equal(t, "rate limit: 2 run(s) in the last hour, and max_runs_per_hour is 2", r.SkipReason)
		require.Empty(t, childTypes(t, n1, task.ID))
		require.Equal(t, []string{"auto_repair_started", "auto_repair_skipped"}, policyEvents(t, n1.Pool, task.ID))
		_, r = runPolicy(t, n1, "twice")
		require.Equal(t, "skipped", r.Outcome, "skipped runs do not count, so the limit still holds")
	})

	n1.Exec(t, `SELECT ace.mark_node_down('n3', 'maintenance')`)
	t.Run("a node down", func(t *testing.T) {
		task, r := runPolicy(t, n1, "sot")
		require.Equal(t, "skipped", r.Outcome)
		require.Contains(t, r.SkipReason, "node down: n3 (down)")
		require.Empty(t, childTypes(t, n1, task.ID))
	})
	t.Run("a named node down", func(t *testing.T) {
		n1.Exec(t, `SELECT ace.repair_policy('named', 'public.t', 'source_of_truth', source_of_truth => 'n1', nodes => ARRAY['n1', 'n3'])`)
		task, r := runPolicy(t, n1, "named")
		require.Equal(t, sqlapi.StatusCompleted, task.Status, "%v", task.Error)
		require.Equal(t, "skipped", r.Outcome)
		require.Contains(t, r.SkipReason, "node down: n3 (down)")
	})
	t.Run("no quorum", func(t *testing.T) {
		_, r := runPolicy(t, n1, "vote")
		require.Equal(t, "skipped", r.Outcome)
		require.Contains(t, r.SkipReason, "no quorum: strategy majority needs three or more active nodes, and only 2 of n1, n2, n3 are")
	})
	t.Run("a node unreachable", func(t *testing.T) {
		n1.Exec(t, `SELECT ace.mark_node_up('n3')`)
		n1.Exec(t, `UPDATE ace.nodes SET conninfo = 'host=127.0.0.1 port=1 dbname=gone connect_timeout=2' WHERE node_name = 'n2'`)
		require.Eventually(t, func() bool {
			var reachable bool
			require.NoError(t, n1.Pool.QueryRow(t.Context(), `SELECT reachable FROM ace.node_status WHERE node_name = 'n2'`).Scan(&reachable))
			return !reachable
		}, 30*time.Second, 50*time.Millisecond, "n1's agent finds n2 unreachable")
		task, r := runPolicy(t, n1, "sot")
		require.Equal(t, sqlapi.StatusCompleted, task.Status, "%v", task.Error)
		require.Equal(t, "skipped", r.Outcome)
		require.Contains(t, r.SkipReason, "node unreachable: n2 (")
		require.Empty(t, childTypes(t, n1, task.ID))
	})
}

// TestRepairPolicyDefinitions: creation checks everything it can up front, and each error says
// what to do; a redefinition keeps one policy; drop removes it with its schedule.
func TestRepairPolicyDefinitions(t *testing.T) {
	t.Parallel()
	e := setupNoAgents(t, `CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE nokey (v text)`)
	n1 := e.Node("n1")
	for _, c := range []struct{ args, code, message string }{
		{`'p', 'public.nope', 'majority'`, pgerrcode.UndefinedTable, `table "public.nope" does not exist`},
		{`'p', 'public.nokey', 'majority'`, pgerrcode.InvalidTableDefinition, `has no primary key`},
		{`'p', 'public.t', 'newest'`, pgerrcode.InvalidParameterValue, `unknown strategy "newest"`},
		{`'p', 'public.t', 'source_of_truth'`, pgerrcode.InvalidParameterValue, `strategy source_of_truth needs a source_of_truth`},
		{`'p', 'public.t', 'majority', source_of_truth => 'n1'`, pgerrcode.InvalidParameterValue, `source_of_truth is given only with strategy source_of_truth`},
		{`'p', 'public.t', 'source_of_truth', source_of_truth => 'n9'`, pgerrcode.InvalidParameterValue, `source_of_truth n9 is not one of the policy's nodes`},
		{`'p', 'public.t', 'plan'`, pgerrcode.InvalidParameterValue, `strategy plan needs a repair_plan`},
		{`'p', 'public.t', 'plan', repair_plan => 'none'`, pgerrcode.InvalidParameterValue, `repair plan "none" does not exist`},
		{`'p', 'public.t', 'majority', nodes => ARRAY['n1', 'n2']`, pgerrcode.InvalidParameterValue, `strategy majority needs three or more active nodes; the policy's nodes have 2`},
		{`'p', 'public.t', 'majority', nodes => ARRAY['n1', 'n9']`, pgerrcode.InvalidParameterValue, `unknown node(s): n9`},
		{`'p', 'public.t', 'majority', trigger => 'sometimes'`, pgerrcode.InvalidParameterValue, `trigger must be schedule or spock_exceptions`},
		{`'p', 'public.t', 'majority', max_rows => 0`, pgerrcode.InvalidParameterValue, `max_rows and max_runs_per_hour must be 1 or more`},
		{`'p', 'public.t', 'majority', every => '1 second'`, pgerrcode.InvalidParameterValue, `shorter than min_schedule_interval`},
		{`'p', 'public.t', 'majority', every => '1 hour', cron => '0 3 * * *'`, pgerrcode.InvalidParameterValue, `exactly one of every and cron`},
		{`'p', 'public.t', 'majority', recheck_after => '-1 second'`, pgerrcode.InvalidParameterValue, `recheck_after must be an interval of 0 or more`},
		{`'', 'public.t', 'majority'`, pgerrcode.InvalidParameterValue, `policy_name is required`},
	} {
		t.Run(c.message, func(t *testing.T) {
			_, err := n1.Pool.Exec(t.Context(), `SELECT ace.repair_policy(`+c.args+`)`)
			requirePgError(t, err, c.code, c.message)
		})
	}

	t.Run("latest_commit is accepted where commit timestamps are tracked", func(t *testing.T) {
		// The test instances run with track_commit_timestamp on (a restart would turn it off).
		var on string
		require.NoError(t, n1.Pool.QueryRow(t.Context(), `SHOW track_commit_timestamp`).Scan(&on))
		require.Equal(t, "on", on)
		n1.Exec(t, `SELECT ace.repair_policy('newest', 'public.t', 'latest_commit')`)
	})

	t.Run("a redefinition and its schedule", func(t *testing.T) {
		var due time.Time
		require.NoError(t, n1.Pool.QueryRow(t.Context(),
			`SELECT ace.repair_policy('nightly', 'public.t', 'majority', cron => '0 3 * * *', scope => 'cluster')`).Scan(&due))
		require.Equal(t, 3, due.UTC().Hour())
		var taskType, scope string
		require.NoError(t, n1.Pool.QueryRow(t.Context(), `SELECT task_type, scope FROM ace.schedules WHERE schedule_name = 'repair_policy:nightly'`).
			Scan(&taskType, &scope))
		require.Equal(t, "repair-policy-run", taskType)
		require.Equal(t, "cluster", scope)

		_, err := n1.Pool.Exec(t.Context(), `SELECT ace.unschedule('repair_policy:nightly')`)
		requirePgError(t, err, pgerrcode.ObjectNotInPrerequisiteState, `belongs to a repair policy`)
		_, err = n1.Pool.Exec(t.Context(), `SELECT ace.schedule('repair_policy:nightly', 'table-diff', '{"table_name": "public.t"}', every => '1 hour')`)
		requirePgError(t, err, pgerrcode.ObjectNotInPrerequisiteState, `belongs to a repair policy`)
		_, err = n1.Pool.Exec(t.Context(), `SELECT ace.schedule('mine', 'repair-policy-run', '{"policy_name": "nightly"}', every => '1 hour')`)
		requirePgError(t, err, pgerrcode.ObjectNotInPrerequisiteState, `belongs to a repair policy`)

		n1.Exec(t, `SELECT ace.pause_repair_policy('nightly')`)
		require.Equal(t, "false", e.scalar("n1", `SELECT enabled::text FROM ace.repair_policy_status WHERE policy_name = 'nightly'`))
		n1.Exec(t, `SELECT ace.resume_repair_policy('nightly')`)
		require.Equal(t, "true", e.scalar("n1", `SELECT enabled::text FROM ace.repair_policy_status WHERE policy_name = 'nightly'`))

		// Redefined without a timer: the schedule goes, the policy stays.
		require.NoError(t, n1.Pool.QueryRow(t.Context(), `SELECT ace.repair_policy('nightly', 'public.t', 'source_of_truth', source_of_truth => 'n2')`).
			Scan(new(*time.Time)))
		require.Equal(t, "0", e.scalar("n1", `SELECT count(*)::text FROM ace.schedules`))
		require.Equal(t, "source_of_truth n2", e.scalar("n1", `SELECT strategy || ' ' || source_of_truth FROM ace.repair_policies WHERE policy_name = 'nightly'`))

		n1.Exec(t, `SELECT ace.repair_policy('nightly', 'public.t', 'majority', every => '1 hour')`)
		require.Equal(t, "true", e.scalar("n1", `SELECT ace.drop_repair_policy('nightly')::text`))
		require.Equal(t, "false", e.scalar("n1", `SELECT ace.drop_repair_policy('nightly')::text`))
		require.Equal(t, "0", e.scalar("n1", `SELECT count(*)::text FROM ace.schedules`))
		_, err = n1.Pool.Exec(t.Context(), `SELECT ace.run_repair_policy('nightly')`)
		requirePgError(t, err, pgerrcode.NoDataFound, `has no repair policy "nightly"`)
	})
}

// TestRepairPolicyFiresOncePerDueTimeWithTwoAgents: a policy every 2 seconds, watched by two
// agents of one node, starts one run per due time, each a run of the policy.
func TestRepairPolicyFiresOncePerDueTimeWithTwoAgents(t *testing.T) {
	t.Parallel()
	e := setupNoAgents(t, `CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 20) g;
		UPDATE ace.settings SET value = '1 second' WHERE name = 'min_schedule_interval'`)
	n1 := e.Node("n1")
	n1.Exec(t, `SELECT ace.repair_policy('often', 'public.t', 'source_of_truth', source_of_truth => 'n1', every => '2 seconds',
		run_now => true, max_runs_per_hour => 100, recheck_after => '0 seconds')`)
	for _, n := range e.Nodes {
		n.StartAgent(t)
	}
	n1.StartAgent(t)
	require.Eventually(t, func() bool { return len(runDues(t, n1, "repair_policy:often")) >= 3 }, time.Minute, 100*time.Millisecond)
	n1.Exec(t, `SELECT ace.pause_repair_policy('often')`)
	dues := runDues(t, n1, "repair_policy:often")
	for i := 1; i < len(dues); i++ {
		gap := dues[i].Sub(dues[i-1])
		require.Positive(t, gap, "due time %s fired twice", dues[i])
		require.Zero(t, gap%(2*time.Second), "due times are two seconds apart: %v", dues)
	}
	rows, err := n1.Pool.Query(t.Context(), `SELECT task_id FROM ace.repair_policy_runs('often')`)
	require.NoError(t, err)
	runs, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	require.NoError(t, err)
	require.Len(t, runs, len(dues), "every run of the schedule is a run of the policy")
	for _, id := range runs {
		task := n1.Wait(t, id)
		require.Equal(t, sqlapi.StatusCompleted, task.Status, "%v", task.Error)
		require.Contains(t, []string{"in_sync", "skipped"}, outcomeOf(t, task))
	}
}

func outcomeOf(t *testing.T, task sqlapi.Task) string {
	t.Helper()
	var r policyRunResult
	require.NoError(t, json.Unmarshal(task.Result, &r))
	return r.Outcome
}

// TestRepairPolicyBelongsToItsOwner: a role sees, runs and drops only its own policies, its
// runs and their events; its policy's repairs run as it; and a policy that would repair needs
// the privileges to write the table.
func TestRepairPolicyBelongsToItsOwner(t *testing.T) {
	t.Parallel()
	e := testcluster.NewSecure(t)
	e.ExecAll(`CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 20) g`)
	alice, bob := e.AddSubmitter("alice", true), e.AddSubmitter("bob", true)
	e.ExecAll(fmt.Sprintf(`GRANT SELECT, INSERT, UPDATE, DELETE ON t TO %s; GRANT SELECT ON t TO %s`,
		pgx.Identifier{alice}.Sanitize(), pgx.Identifier{bob}.Sanitize()))
	for _, n := range e.Nodes {
		n.StartAgent(t)
	}
	e.Node("n2").Exec(t, `UPDATE t SET v = 'drift' WHERE id = 3`)
	n1 := e.Node("n1")
	a, b := n1.ConnectAs(t, alice), n1.ConnectAs(t, bob)
	ctx := t.Context()

	_, err := b.Exec(ctx, `SELECT ace.repair_policy('fix', 'public.t', 'source_of_truth', source_of_truth => 'n1')`)
	requirePgError(t, err, pgerrcode.InsufficientPrivilege, "lacks DELETE, INSERT, UPDATE on table public.t, which the policy's repairs need")
	_, err = b.Exec(ctx, `SELECT ace.repair_policy('look', 'public.t', 'source_of_truth', source_of_truth => 'n1', dry_run => true,
		recheck_after => '0 seconds')`)
	require.NoError(t, err, "a dry run needs SELECT only")
	_, err = a.Exec(ctx, `SELECT ace.repair_policy('fix', 'public.t', 'source_of_truth', source_of_truth => 'n1', recheck_after => '0 seconds')`)
	require.NoError(t, err)

	var id uuid.UUID
	require.NoError(t, a.QueryRow(ctx, `SELECT ace.run_repair_policy('fix')`).Scan(&id))
	task := n1.Wait(t, id)
	require.Equal(t, sqlapi.StatusCompleted, task.Status, "%v", task.Error)
	require.Equal(t, "repaired", outcomeOf(t, task))
	var v3 string
	require.NoError(t, e.Node("n2").Pool.QueryRow(ctx, `SELECT v FROM t WHERE id = 3`).Scan(&v3))
	require.Equal(t, "v3", v3)
	var repairedBy string
	require.NoError(t, n1.Pool.QueryRow(ctx, `SELECT submitted_by FROM ace.tasks WHERE task_type = 'table-repair'`).Scan(&repairedBy))
	require.Equal(t, alice, repairedBy, "the repair is the owner's task, logged in as the owner")

	var n int
	require.NoError(t, b.QueryRow(ctx, `SELECT count(*) FROM ace.repair_policies`).Scan(&n))
	require.Equal(t, 1, n, "bob sees his own policy only")
	require.NoError(t, b.QueryRow(ctx, `SELECT count(*) FROM ace.repair_policy_runs('fix')`).Scan(&n))
	require.Zero(t, n)
	require.NoError(t, b.QueryRow(ctx, `SELECT count(*) FROM ace.events WHERE kind LIKE 'auto_repair_%'`).Scan(&n))
	require.Zero(t, n, "bob sees none of alice's events")
	require.NoError(t, a.QueryRow(ctx, `SELECT count(*) FROM ace.events WHERE kind LIKE 'auto_repair_%'`).Scan(&n))
	require.Equal(t, 2, n)
	_, err = b.Exec(ctx, `SELECT ace.run_repair_policy('fix')`)
	requirePgError(t, err, pgerrcode.NoDataFound, `has no repair policy "fix"`)
	var dropped bool
	require.NoError(t, b.QueryRow(ctx, `SELECT ace.drop_repair_policy('fix')`).Scan(&dropped))
	require.False(t, dropped, "bob cannot drop alice's policy")
	_, err = b.Exec(ctx, `SELECT ace.drop_repair_policy_row($1, 'fix')`, alice)
	requirePgError(t, err, pgerrcode.InsufficientPrivilege, "may not act for role")

	t.Run("a dry run writes nothing", func(t *testing.T) {
		e.Node("n2").Exec(t, `UPDATE t SET v = 'drift again' WHERE id = 4`)
		var id uuid.UUID
		require.NoError(t, b.QueryRow(ctx, `SELECT ace.run_repair_policy('look')`).Scan(&id))
		task := n1.Wait(t, id)
		require.Equal(t, sqlapi.StatusCompleted, task.Status, "%v", task.Error)
		var r policyRunResult
		require.NoError(t, json.Unmarshal(task.Result, &r))
		require.Equal(t, "dry_run", r.Outcome)
		require.EqualValues(t, 1, r.Updated, "what the repair would do")
		require.Nil(t, r.RerunTask)
		var v string
		require.NoError(t, e.Node("n2").Pool.QueryRow(ctx, `SELECT v FROM t WHERE id = 4`).Scan(&v))
		require.Equal(t, "drift again", v)
	})
}

// TestRepairPolicyResolvesSpockExceptions: a spock_exceptions policy repairs the keys of the
// table's PENDING exceptions only (7, 8 and 9; the drift at key 50 is no exception's and stays),
// and marks every exception of both nodes RESOLVED with the repair's task id. The next run finds
// no PENDING exception and does nothing.
func TestRepairPolicyResolvesSpockExceptions(t *testing.T) {
	t.Parallel()
	e := policySetup(t)
	n1, n2 := e.Node("n1"), e.Node("n2")
	plantSpockExceptions(t, n1)
	plantSpockExceptions(t, n2)
	// On n1, trio A has a third command, about another table: it stays PENDING, and so does
	// trio A's transaction.
	n1.Exec(t, fmt.Sprintf(`INSERT INTO spock.exception_log (remote_origin, remote_commit_ts, remote_xid, command_counter,
			retry_errored_at, table_schema, table_name, operation, remote_new_tup, error_message) VALUES
		(%s, 3, '2026-01-02 03:05:00+00', 'public', 'other', 'INSERT', '[{"attname": "id", "value": 1}]', 'duplicate key')`, trioA))
	n2.Exec(t, `DELETE FROM t WHERE id = 7; UPDATE t SET v = 'stale' WHERE id IN (9, 50)`)
	n1.Exec(t, `SELECT ace.repair_policy('exceptions', 'public.t', 'source_of_truth', source_of_truth => 'n1',
		trigger => 'spock_exceptions', nodes => ARRAY['n1', 'n2'], recheck_after => '0 seconds')`)

	task, r := runPolicy(t, n1, "exceptions")
	require.Equal(t, sqlapi.StatusCompleted, task.Status, "%v", task.Error)
	require.Equal(t, "repaired", r.Outcome, r.Reason)
	require.EqualValues(t, 2, r.DifferingKeys, "keys 7 and 9; 8 is in sync")
	require.Zero(t, r.RemainingKeys)
	var filter string
	require.NoError(t, n1.Pool.QueryRow(t.Context(), `SELECT args->>'table_filter' FROM ace.tasks WHERE task_id = $1`, r.DiffTask).Scan(&filter))
	require.Equal(t, `"id" IN ('7', '8', '9')`, filter)
	require.Equal(t, "v7", e.scalar("n2", `SELECT v FROM t WHERE id = 7`))
	require.Equal(t, "v9", e.scalar("n2", `SELECT v FROM t WHERE id = 9`))
	require.Equal(t, "stale", e.scalar("n2", `SELECT v FROM t WHERE id = 50`), "key 50 is no exception's")
	var tasks []string
	require.NoError(t, n2.Pool.QueryRow(t.Context(), `SELECT array_agg(DISTINCT resolution_details->>'task_id')
		FROM (SELECT resolution_details FROM spock.exception_status UNION ALL SELECT resolution_details FROM spock.exception_status_detail) s`).
		Scan(&tasks))
	require.Equal(t, []string{r.RepairTask.String()}, tasks, "every exception of n2 names the repair")
	resolved := map[string]string{
		"status 500/00": "RESOLVED", "detail 500/00/1": "RESOLVED", "detail 500/00/2": "RESOLVED",
		"status 501/01": "RESOLVED", "detail 501/01/1": "RESOLVED", "status 501/02": "RESOLVED", "detail 501/02/1": "RESOLVED",
	}
	require.Equal(t, resolved, statusesOnly(statuses(t, n2)))
	resolved["status 500/00"], resolved["detail 500/00/3"] = "PENDING", "PENDING"
	require.Equal(t, resolved, statusesOnly(statuses(t, n1)))

	task, r = runPolicy(t, n1, "exceptions")
	require.Equal(t, sqlapi.StatusCompleted, task.Status, "%v", task.Error)
	require.Equal(t, "in_sync", r.Outcome)
	require.Contains(t, r.Reason, "no PENDING Spock exception")
	require.Empty(t, childTypes(t, n1, task.ID))
}

// TestRepairPolicyStrategies: each strategy reaches table-repair as its own option, with
// upsert_only: majority fixes the minority node, latest_commit keeps the newest commit, a plan's
// rules decide (here: keep n2's version, which the repair copies to n1 and n3), and upsert_only
// leaves an extra row, which the rerun still counts.
func TestRepairPolicyStrategies(t *testing.T) {
	t.Parallel()
	e := policySetup(t)
	n1 := e.Node("n1")
	all := `SELECT string_agg(id || ' ' || v, ',' ORDER BY id) FROM t`
	converged := func(t *testing.T) {
		t.Helper()
		for _, n := range []string{"n2", "n3"} {
			require.Equal(t, e.scalar("n1", all), e.scalar(n, all), "node %s", n)
		}
	}

	t.Run("majority", func(t *testing.T) {
		e.Node("n3").Exec(t, `UPDATE t SET v = 'minority' WHERE id = 1`)
		n1.Exec(t, `SELECT ace.repair_policy('vote', 'public.t', 'majority', recheck_after => '0 seconds')`)
		task, r := runPolicy(t, n1, "vote")
		require.Equal(t, sqlapi.StatusCompleted, task.Status, "%v", task.Error)
		require.Equal(t, "repaired", r.Outcome, r.Reason)
		require.EqualValues(t, 1, r.Updated)
		require.Equal(t, "v1", e.scalar("n3", `SELECT v FROM t WHERE id = 1`))
		converged(t)
	})

	t.Run("latest_commit", func(t *testing.T) {
		e.Node("n1").Exec(t, `UPDATE t SET v = 'older' WHERE id = 2`)
		e.Node("n2").Exec(t, `UPDATE t SET v = 'newest' WHERE id = 2`)
		n1.Exec(t, `SELECT ace.repair_policy('newest', 'public.t', 'latest_commit', recheck_after => '0 seconds')`)
		task, r := runPolicy(t, n1, "newest")
		require.Equal(t, sqlapi.StatusCompleted, task.Status, "%v", task.Error)
		require.Equal(t, "repaired", r.Outcome, r.Reason)
		require.Equal(t, "newest", e.scalar("n1", `SELECT v FROM t WHERE id = 2`))
		converged(t)
	})

	t.Run("plan", func(t *testing.T) {
		e.Node("n2").Exec(t, `UPDATE t SET v = 'n2 knows' WHERE id = 3`)
		n1.Exec(t, `SELECT ace.save_repair_plan('trust_n2', '{"version": 1, "tables": {"public.t": {
			"default_action": {"type": "keep", "node": "n2"}}}}')`)
		n1.Exec(t, `SELECT ace.repair_policy('planned', 'public.t', 'plan', repair_plan => 'trust_n2', recheck_after => '0 seconds')`)
		task, r := runPolicy(t, n1, "planned")
		require.Equal(t, sqlapi.StatusCompleted, task.Status, "%v", task.Error)
		require.Equal(t, "repaired", r.Outcome, r.Reason)
		require.Equal(t, "n2 knows", e.scalar("n1", `SELECT v FROM t WHERE id = 3`))
		converged(t)
	})

	t.Run("upsert_only", func(t *testing.T) {
		e.Node("n2").Exec(t, `INSERT INTO t VALUES (500, 'extra')`)
		e.Node("n2").Exec(t, `UPDATE t SET v = 'drift' WHERE id = 4`)
		n1.Exec(t, `SELECT ace.repair_policy('keep', 'public.t', 'source_of_truth', source_of_truth => 'n1', upsert_only => true,
			recheck_after => '0 seconds')`)
		task, r := runPolicy(t, n1, "keep")
		require.Equal(t, sqlapi.StatusCompleted, task.Status, "%v", task.Error)
		require.Equal(t, "repaired", r.Outcome, r.Reason)
		require.EqualValues(t, 1, r.Updated)
		require.Zero(t, r.Deleted)
		require.EqualValues(t, 1, r.RemainingKeys, "the extra row stays")
		require.Contains(t, r.Reason, "1 key(s) still differ after the repair")
		require.Equal(t, "extra", e.scalar("n2", `SELECT v FROM t WHERE id = 500`))
	})
}

// TestRepairPolicyRunFailsLoudly: a repair that fails on a node fails the run, naming the child,
// with an auto_repair_failed event carrying the error.
func TestRepairPolicyRunFailsLoudly(t *testing.T) {
	t.Parallel()
	e := policySetup(t)
	n1 := e.Node("n1")
	e.Node("n2").Exec(t, `UPDATE t SET v = 'drift' WHERE id = 5;
		CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'n2 refuses writes'; END $$;
		CREATE TRIGGER refuse BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION refuse();
		ALTER TABLE t ENABLE ALWAYS TRIGGER refuse`)
	n1.Exec(t, `SELECT ace.repair_policy('fix', 'public.t', 'source_of_truth', source_of_truth => 'n1', recheck_after => '0 seconds')`)
	task, _ := runPolicy(t, n1, "fix")
	require.Equal(t, sqlapi.StatusFailed, task.Status)
	require.Contains(t, *task.Error, "the policy's table-repair task")
	require.Equal(t, []string{"auto_repair_started", "auto_repair_failed"}, policyEvents(t, n1.Pool, task.ID))
	var msg string
	require.NoError(t, n1.Pool.QueryRow(t.Context(), `SELECT detail->>'error' FROM ace.events WHERE task_id = $1 AND kind = 'auto_repair_failed'`,
		task.ID).Scan(&msg))
	require.Equal(t, *task.Error, msg)
	var outcome string
	require.NoError(t, n1.Pool.QueryRow(t.Context(), `SELECT last_outcome FROM ace.repair_policy_status WHERE policy_name = 'fix'`).Scan(&outcome))
	require.Equal(t, "failed", outcome)
}

// TestRepairPolicyUsesTheTree: a table with a ready Merkle tree is diffed with mtree-diff, and
// the repair and rerun follow as for a table-diff.
func TestRepairPolicyUsesTheTree(t *testing.T) {
	t.Parallel()
	e := policySetup(t)
	e.DropSlotsAtEnd()
	n1 := e.Node("n1")
	build := runTask(t, n1, `SELECT ace.mtree_build('public.t')`)
	require.Equal(t, sqlapi.StatusCompleted, build.Status, "%v", build.Error)
	e.Node("n3").Exec(t, `DELETE FROM t WHERE id = 6`)
	n1.Exec(t, `SELECT ace.repair_policy('tree', 'public.t', 'source_of_truth', source_of_truth => 'n1', recheck_after => '0 seconds')`)
	task, r := runPolicy(t, n1, "tree")
	require.Equal(t, sqlapi.StatusCompleted, task.Status, "%v", task.Error)
	require.Equal(t, "repaired", r.Outcome, r.Reason)
	require.Equal(t, "mtree-diff", r.DiffType)
	require.EqualValues(t, 1, r.Inserted)
	require.Equal(t, []string{"mtree-diff", "table-repair", "table-rerun"}, childTypes(t, n1, task.ID))
	require.Equal(t, "v6", e.scalar("n3", `SELECT v FROM t WHERE id = 6`))
}

// TestClusterRepairPolicyRunsOnTheLeaderOnly: a cluster-scope policy made on two nodes runs on
// the leader's agent only.
func TestClusterRepairPolicyRunsOnTheLeaderOnly(t *testing.T) {
	t.Parallel()
	e := setupNoAgents(t, `CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 20) g;
		UPDATE ace.settings SET value = '1 second' WHERE name = 'min_schedule_interval'`)
	n1, n2 := e.Node("n1"), e.Node("n2")
	for _, n := range []*testcluster.Node{n1, n2} {
		n.Exec(t, `INSERT INTO ace.node_status (node_name, reachable, agent_alive) VALUES ('n1', true, true), ('n2', true, true)
			ON CONFLICT (node_name) DO UPDATE SET agent_alive = true`)
		n.Exec(t, `SELECT ace.repair_policy('everywhere', 'public.t', 'source_of_truth', source_of_truth => 'n1', every => '1 second',
			scope => 'cluster', run_now => true, max_runs_per_hour => 1000, recheck_after => '0 seconds')`)
		n.StartAgent(t)
	}
	e.Node("n3").StartAgent(t)
	created := schedule(t, n2, "repair_policy:everywhere").NextDue
	require.Eventually(t, func() bool { return schedule(t, n1, "repair_policy:everywhere").Runs >= 2 }, time.Minute, 50*time.Millisecond)
	require.Eventually(t, func() bool { return schedule(t, n2, "repair_policy:everywhere").NextDue.After(created) }, time.Minute,
		50*time.Millisecond, "n2 moves its due time on")
	require.Zero(t, schedule(t, n2, "repair_policy:everywhere").Runs, "n2 is not the leader")
	var runs int
	require.NoError(t, n2.Pool.QueryRow(t.Context(), `SELECT count(*) FROM ace.repair_policy_runs('everywhere')`).Scan(&runs))
	require.Zero(t, runs)
}

// TestRepairPolicyLatestCommitChecksEveryNode: a latest_commit policy, made while every node
// tracked commit timestamps, fails its run before diffing once a node stops tracking them,
// naming that node; and on a node that does not track them, creation is refused.
func TestRepairPolicyLatestCommitChecksEveryNode(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := localpg.StartT(t, localpg.Options{Nodes: 2})
	e := &diffEnv{Env: testcluster.NewOn(t, c.Nodes, "policy"), t: t}
	e.ExecAll(`CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 20) g`)
	n1, n2 := e.Node("n1"), e.Node("n2")
	n1.Exec(t, `SELECT ace.repair_policy('newest', 'public.t', 'latest_commit', recheck_after => '0 seconds')`)
	n2.Exec(t, `ALTER SYSTEM SET track_commit_timestamp = off`)
	n2.Pool.Reset()
	require.NoError(t, c.Nodes[1].Stop(ctx))
	require.NoError(t, c.Nodes[1].Start(ctx))
	n1.StartAgent(t)

	task, _ := runPolicy(t, n1, "newest")
	require.Equal(t, sqlapi.StatusFailed, task.Status)
	require.Contains(t, *task.Error, "strategy latest_commit needs track_commit_timestamp = on on every node, and it is off on n2")
	require.Empty(t, childTypes(t, n1, task.ID), "nothing was diffed")

	_, err := n2.Pool.Exec(ctx, `SELECT ace.repair_policy('newest', 'public.t', 'latest_commit')`)
	requirePgError(t, err, pgerrcode.ObjectNotInPrerequisiteState, "strategy latest_commit needs track_commit_timestamp = on on every node; it is off here")
}

// statusesOnly drops the resolution details' why from statuses' values.
func statusesOnly(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k], _, _ = strings.Cut(v, " ")
	}
	return out
}
