package agent_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// scheduleSetup is a test database with table t on every node, min_schedule_interval lowered to
// one second on every node, and no agents yet.
func scheduleSetup(t *testing.T) *diffEnv {
	t.Helper()
	e := setupNoAgents(t, `CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 20) g;
		UPDATE ace.settings SET value = '1 second' WHERE name = 'min_schedule_interval'`)
	return e
}

func addSchedule(t *testing.T, n *testcluster.Node, spec sqlapi.ScheduleSpec) {
	t.Helper()
	if spec.TaskType == "" {
		spec.TaskType, spec.Args = "table-diff", []byte(`{"table_name": "public.t"}`)
	}
	_, err := sqlapi.AddSchedule(context.Background(), n.Pool, spec)
	require.NoError(t, err)
}

func schedule(t *testing.T, n *testcluster.Node, name string) sqlapi.Schedule {
	t.Helper()
	all, err := sqlapi.Schedules(context.Background(), n.Pool)
	require.NoError(t, err)
	for _, s := range all {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no schedule %s on %s", name, n.Name)
	return sqlapi.Schedule{}
}

// runDues lists the due times of a schedule's runs on a node, oldest first.
func runDues(t *testing.T, n *testcluster.Node, name string) []time.Time {
	t.Helper()
	rows, err := n.Pool.Query(context.Background(),
		`SELECT (args->>'schedule_due')::timestamptz FROM ace.schedule_runs($1) ORDER BY 1`, name)
	require.NoError(t, err)
	dues, err := pgx.CollectRows(rows, pgx.RowTo[time.Time])
	require.NoError(t, err)
	return dues
}

func eventCount(t *testing.T, n *testcluster.Node, kind, schedule string) int {
	t.Helper()
	var count int
	require.NoError(t, n.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM ace.events WHERE kind = $1 AND detail->>'schedule' = $2`, kind, schedule).Scan(&count))
	return count
}

// TestScheduleFiresOncePerDueTimeWithTwoAgents: a 2-second schedule, watched by two agents of
// one node, starts one run per due time: every run has its own due time, two seconds after the
// one before, and as many schedule_fired events and counted runs as runs.
func TestScheduleFiresOncePerDueTimeWithTwoAgents(t *testing.T) {
	t.Parallel()
	e := scheduleSetup(t)
	n1 := e.Node("n1")
	addSchedule(t, n1, sqlapi.ScheduleSpec{Name: "often", Every: "2 seconds", Overlap: "allow"})
	n1.StartAgent(t)
	n1.StartAgent(t)
	require.Eventually(t, func() bool { return len(runDues(t, n1, "often")) >= 4 }, time.Minute, 100*time.Millisecond)
	require.NoError(t, sqlapi.ChangeSchedule(context.Background(), n1.Pool, "often", sqlapi.PauseSchedule))

	dues := runDues(t, n1, "often")
	for i := 1; i < len(dues); i++ {
		gap := dues[i].Sub(dues[i-1])
		require.Positive(t, gap, "due time %s fired twice", dues[i])
		require.Zero(t, gap%(2*time.Second), "due times are two seconds apart: %v", dues)
	}
	s := schedule(t, n1, "often")
	require.Equal(t, int64(len(dues)), s.Runs)
	require.Equal(t, len(dues), eventCount(t, n1, "schedule_fired", "often"))
	for _, run := range runDuesTasks(t, n1, "often") {
		require.Equal(t, sqlapi.StatusCompleted, n1.Wait(t, run).Status)
	}
}

func runDuesTasks(t *testing.T, n *testcluster.Node, name string) []uuid.UUID {
	t.Helper()
	rows, err := n.Pool.Query(context.Background(), `SELECT task_id FROM ace.schedule_runs($1)`, name)
	require.NoError(t, err)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	require.NoError(t, err)
	return ids
}

// TestScheduleOverlapSkipsWhileARunIsRunning: with overlap skip, a run held up by a locked table
// on a peer keeps every later due time from starting another run: each is skipped, counted and
// recorded, and never are two runs queued or running at once. Once the run ends, the next due time
// starts a run again.
func TestScheduleOverlapSkipsWhileARunIsRunning(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := scheduleSetup(t)
	n1, n2 := e.Node("n1"), e.Node("n2")
	lock, err := n2.Pool.Begin(ctx)
	require.NoError(t, err)
	defer lock.Rollback(ctx)
	_, err = lock.Exec(ctx, `LOCK TABLE t IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)

	addSchedule(t, n1, sqlapi.ScheduleSpec{Name: "slow", Every: "1 second"})
	n1.StartAgent(t)
	require.Eventually(t, func() bool {
		var active int
		require.NoError(t, n1.Pool.QueryRow(ctx, `SELECT count(*) FROM ace.schedule_runs('slow') WHERE status IN ('QUEUED', 'RUNNING')`).Scan(&active))
		require.LessOrEqual(t, active, 1, "two runs of one schedule at once")
		return schedule(t, n1, "slow").Skipped >= 3
	}, time.Minute, 50*time.Millisecond)
	s := schedule(t, n1, "slow")
	require.Equal(t, int64(1), s.Runs)
	require.Len(t, runDues(t, n1, "slow"), 1)
	require.GreaterOrEqual(t, eventCount(t, n1, "schedule_skipped", "slow"), 3)

	require.NoError(t, lock.Rollback(ctx))
	require.Eventually(t, func() bool { return schedule(t, n1, "slow").Runs >= 2 }, time.Minute, 50*time.Millisecond,
		"once the first run ended, a due time starts the next")
}

// TestScheduleCatchesUpOnceAfterDowntime: an hourly schedule whose agent was away for five due
// times starts one run, not five, and is next due at its first due time after now.
func TestScheduleCatchesUpOnceAfterDowntime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := scheduleSetup(t)
	n1 := e.Node("n1")
	addSchedule(t, n1, sqlapi.ScheduleSpec{Name: "hourly", Every: "1 hour", RunNow: new(false), Overlap: "allow"})
	// The agent was away: the schedule's due time is five hours and a bit old.
	var missed time.Time
	require.NoError(t, n1.Pool.QueryRow(ctx, `UPDATE ace.schedules SET next_due = now() - interval '5 hours 10 minutes'
		WHERE schedule_name = 'hourly' RETURNING next_due`).Scan(&missed))
	n1.StartAgent(t)
	require.Eventually(t, func() bool { return schedule(t, n1, "hourly").Runs == 1 }, time.Minute, 50*time.Millisecond)
	runs := runDuesTasks(t, n1, "hourly")
	require.Len(t, runs, 1)
	require.Equal(t, sqlapi.StatusCompleted, n1.Wait(t, runs[0]).Status)
	s := schedule(t, n1, "hourly")
	require.Equal(t, int64(1), s.Runs, "one catch-up run")
	require.Len(t, runDues(t, n1, "hourly"), 1)
	require.Equal(t, missed.Add(6*time.Hour), s.NextDue, "next due at the first due time after now, in step")
	require.Equal(t, missed, runDues(t, n1, "hourly")[0], "the run is for the oldest due time missed")
}

// TestClusterScheduleFiresOnTheLeaderOnly: a cluster schedule made on two nodes runs on the
// leader's agent only; the other moves its due time on without a run. Pinning the other node as
// leader moves the runs there.
func TestClusterScheduleFiresOnTheLeaderOnly(t *testing.T) {
	t.Parallel()
	e := scheduleSetup(t)
	n1, n2 := e.Node("n1"), e.Node("n2")
	for _, n := range []*testcluster.Node{n1, n2} {
		// What the agents' status collection records: both nodes' agents are alive.
		n.Exec(t, `INSERT INTO ace.node_status (node_name, reachable, agent_alive) VALUES ('n1', true, true), ('n2', true, true)
			ON CONFLICT (node_name) DO UPDATE SET agent_alive = true`)
		addSchedule(t, n, sqlapi.ScheduleSpec{Name: "everywhere", Every: "1 second", Scope: "cluster", Overlap: "allow"})
		n.StartAgent(t)
	}
	created := schedule(t, n2, "everywhere").NextDue
	require.Eventually(t, func() bool { return schedule(t, n1, "everywhere").Runs >= 2 }, time.Minute, 50*time.Millisecond)
	require.Eventually(t, func() bool { return schedule(t, n2, "everywhere").NextDue.After(created) }, time.Minute, 50*time.Millisecond,
		"n2 moves its due time on")
	require.Zero(t, schedule(t, n2, "everywhere").Runs, "n2 is not the leader")

	for _, n := range []*testcluster.Node{n1, n2} {
		n.Exec(t, `SELECT ace.set_leader('n2')`)
	}
	pinnedAt := schedule(t, n1, "everywhere").Runs
	require.Eventually(t, func() bool { return schedule(t, n2, "everywhere").Runs >= 2 }, time.Minute, 50*time.Millisecond)
	require.LessOrEqual(t, schedule(t, n1, "everywhere").Runs, pinnedAt+1, "n1 stopped once n2 led (one firing may have been under way)")
}

// TestScheduledSchemaDiffRunsItsChildren: a scheduled parent task's children are ordinary tasks
// (they carry no schedule), and the run completes.
func TestScheduledSchemaDiffRunsItsChildren(t *testing.T) {
	t.Parallel()
	e := scheduleSetup(t)
	n1 := e.Node("n1")
	addSchedule(t, n1, sqlapi.ScheduleSpec{Name: "schema", TaskType: "schema-diff", Args: []byte(`{"schema_name": "public"}`), Every: "1 hour"})
	n1.StartAgent(t)
	require.Eventually(t, func() bool { return len(runDuesTasks(t, n1, "schema")) == 1 }, time.Minute, 50*time.Millisecond)
	run := runDuesTasks(t, n1, "schema")[0]
	require.Equal(t, sqlapi.StatusCompleted, n1.Wait(t, run).Status)
	var children, scheduled int
	require.NoError(t, n1.Pool.QueryRow(context.Background(), `SELECT count(*), count(*) FILTER (WHERE args ? 'schedule')
		FROM ace.tasks WHERE args->>'parent_task' = $1`, run.String()).Scan(&children, &scheduled))
	require.Equal(t, 1, children)
	require.Zero(t, scheduled)
}
