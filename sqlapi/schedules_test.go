package sqlapi_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// scheduleEnv is a test database with a table t on every node and min_schedule_interval at one
// second, without agents: the tests fire schedules themselves.
func scheduleEnv(t *testing.T) (*testcluster.Env, *testcluster.Node) {
	t.Helper()
	e := testcluster.New(t)
	e.ExecAll(`CREATE TABLE public.t (id int PRIMARY KEY); INSERT INTO public.t SELECT generate_series(1, 10)`)
	n1 := e.Node("n1")
	n1.Exec(t, `UPDATE ace.settings SET value = '1 second' WHERE name = 'min_schedule_interval'`)
	return e, n1
}

func pgError(t *testing.T, err error) *pgconn.PgError {
	t.Helper()
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	return pgErr
}

// scheduleRow reads a schedule of the superuser's as the schema's owner sees it.
func scheduleRow(t *testing.T, q sqlapi.Querier, name string) sqlapi.Schedule {
	t.Helper()
	all, err := sqlapi.Schedules(context.Background(), q)
	require.NoError(t, err)
	for _, s := range all {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no schedule %s", name)
	return sqlapi.Schedule{}
}

// TestScheduleRefusesWhatCouldNeverRun: each refusal of ace.schedule, with its SQLSTATE and a
// message naming what is wrong; arguments that the task's function refuses are refused with the
// function's own message.
func TestScheduleRefusesWhatCouldNeverRun(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, n1 := scheduleEnv(t)
	_, diffErr := n1.Pool.Exec(ctx, `SELECT ace.table_diff('public.missing')`)
	require.Error(t, diffErr)
	cases := []struct {
		name, sql, state, msg string
	}{
		{"both every and cron", `SELECT ace.schedule('s', 'table-diff', '{"table_name": "public.t"}', every => '1 hour', cron => '0 * * * *')`,
			pgerrcode.InvalidParameterValue, "a schedule needs exactly one of every and cron, got both"},
		{"neither every nor cron", `SELECT ace.schedule('s', 'table-diff', '{"table_name": "public.t"}')`,
			pgerrcode.InvalidParameterValue, "a schedule needs exactly one of every and cron, got neither"},
		{"every below min_schedule_interval", `SELECT ace.schedule('s', 'table-diff', '{"table_name": "public.t"}', every => '500 milliseconds')`,
			pgerrcode.InvalidParameterValue, "every 00:00:00.5 is shorter than min_schedule_interval (1 second)"},
		{"a repair", `SELECT ace.schedule('s', 'table-repair', '{"diff_task": "00000000-0000-0000-0000-000000000000"}', every => '1 hour')`,
			pgerrcode.FeatureNotSupported, "table-repair cannot be scheduled"},
		{"a table that does not exist: the function's own message", `SELECT ace.schedule('s', 'table-diff', '{"table_name": "public.missing"}', every => '1 hour')`,
			pgError(t, diffErr).Code, pgError(t, diffErr).Message},
		{"an unknown task type", `SELECT ace.schedule('s', 'table-sing', '{}', every => '1 hour')`,
			pgerrcode.InvalidParameterValue, `unknown task type "table-sing"`},
		{"an invalid cron field", `SELECT ace.schedule('s', 'table-diff', '{"table_name": "public.t"}', cron => '0 25 * * *')`,
			pgerrcode.InvalidParameterValue, `invalid hour field "25"`},
		{"a cron that never comes", `SELECT ace.schedule('s', 'table-diff', '{"table_name": "public.t"}', cron => '0 0 31 feb *')`,
			pgerrcode.InvalidParameterValue, "never matches"},
		{"an unknown scope", `SELECT ace.schedule('s', 'table-diff', '{"table_name": "public.t"}', every => '1 hour', scope => 'galaxy')`,
			pgerrcode.InvalidParameterValue, `scope must be node or cluster, got "galaxy"`},
		{"an unknown overlap", `SELECT ace.schedule('s', 'table-diff', '{"table_name": "public.t"}', every => '1 hour', overlap => 'queue')`,
			pgerrcode.InvalidParameterValue, `overlap must be skip or allow, got "queue"`},
		{"args that are no object", `SELECT ace.schedule('s', 'table-diff', '[1]', every => '1 hour')`,
			pgerrcode.InvalidParameterValue, "task args must be a JSON object"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := n1.Pool.Exec(ctx, c.sql)
			pgErr := pgError(t, err)
			require.Equal(t, c.state, pgErr.Code, pgErr.Message)
			require.Contains(t, pgErr.Message, c.msg)
		})
	}
	t.Run("nothing was made", func(t *testing.T) {
		all, err := sqlapi.Schedules(ctx, n1.Pool)
		require.NoError(t, err)
		require.Empty(t, all)
	})
	t.Run("the SQL side refuses exactly the registry's types that change data", func(t *testing.T) {
		var refused []string
		require.NoError(t, n1.Pool.QueryRow(ctx, `SELECT ace.unschedulable_task_types()`).Scan(&refused))
		var changing []string
		for _, s := range sqlapi.TaskSpecs {
			if s.ChangesData {
				changing = append(changing, string(s.Type))
			}
		}
		require.ElementsMatch(t, changing, refused)
	})
}

// TestFireScheduleIsOncePerDueTime: the due time's compare-and-set and the run's insert commit
// together. A second firing of the same due time (another agent) finds it gone, also while the
// first is still in its transaction; a crash before the commit leaves the due time to fire again.
func TestFireScheduleIsOncePerDueTime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, n1 := scheduleEnv(t)
	_, err := sqlapi.AddSchedule(ctx, n1.Pool, sqlapi.ScheduleSpec{Name: "s", TaskType: "table-diff",
		Args: []byte(`{"table_name": "public.t"}`), Every: "1 hour", Overlap: "allow"})
	require.NoError(t, err)
	due := scheduleRow(t, n1.Pool, "s").NextDue

	t.Run("a crash between the insert and the commit", func(t *testing.T) {
		conn, err := pgx.Connect(ctx, n1.DSN)
		require.NoError(t, err)
		tx, err := conn.Begin(ctx)
		require.NoError(t, err)
		f, err := sqlapi.FireSchedule(ctx, tx, "s", due, "n1")
		require.NoError(t, err)
		require.Equal(t, sqlapi.FireFired, f.Outcome)
		require.NoError(t, conn.Close(ctx)) // the session ends before COMMIT
		require.Equal(t, due, scheduleRow(t, n1.Pool, "s").NextDue, "the due time is still to fire")
		var runs int
		require.NoError(t, n1.Pool.QueryRow(ctx, `SELECT count(*) FROM ace.schedule_runs('s')`).Scan(&runs))
		require.Zero(t, runs)
	})

	t.Run("two agents at once", func(t *testing.T) {
		first, err := n1.Pool.Begin(ctx)
		require.NoError(t, err)
		defer first.Rollback(ctx)
		f, err := sqlapi.FireSchedule(ctx, first, "s", due, "n1")
		require.NoError(t, err)
		require.Equal(t, sqlapi.FireFired, f.Outcome)
		second := make(chan sqlapi.Firing, 1)
		go func() {
			f, err := sqlapi.FireSchedule(ctx, n1.Pool, "s", due, "n1")
			if err != nil {
				f.Outcome = err.Error()
			}
			second <- f
		}()
		require.Eventually(t, func() bool { // the second waits for the first's row lock
			var waiting bool
			require.NoError(t, n1.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
				WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%fire_schedule%')`).Scan(&waiting))
			return waiting
		}, 10*time.Second, 20*time.Millisecond)
		require.NoError(t, first.Commit(ctx))
		require.Equal(t, sqlapi.FireGone, (<-second).Outcome)
		s := scheduleRow(t, n1.Pool, "s")
		require.Equal(t, int64(1), s.Runs)
		require.Equal(t, due.Add(time.Hour), s.NextDue)
		var runs int
		require.NoError(t, n1.Pool.QueryRow(ctx, `SELECT count(*) FROM ace.schedule_runs('s')`).Scan(&runs))
		require.Equal(t, 1, runs)
	})

	t.Run("a due time not come yet", func(t *testing.T) {
		f, err := sqlapi.FireSchedule(ctx, n1.Pool, "s", due.Add(time.Hour), "n1")
		require.NoError(t, err)
		require.Equal(t, sqlapi.FireGone, f.Outcome)
	})

	t.Run("a run's args cannot be forged", func(t *testing.T) {
		_, err := n1.Pool.Exec(ctx, `INSERT INTO ace.tasks (task_type, args) VALUES ('table-diff',
			jsonb_build_object('table_name', 'public.t', 'schedule', 's', 'schedule_due', ace.schedule_due_text($1)))`, due.Add(time.Hour))
		require.Equal(t, pgerrcode.InsufficientPrivilege, pgError(t, err).Code)
	})
}

// TestScheduleFailsWhenItsTableIsGone: a run whose insert is refused at its due time counts as
// a failure with the error and a schedule_failed event, and the schedule goes on.
func TestScheduleFailsWhenItsTableIsGone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, n1 := scheduleEnv(t)
	n1.Exec(t, `CREATE TABLE public.doomed (id int PRIMARY KEY)`)
	_, err := sqlapi.AddSchedule(ctx, n1.Pool, sqlapi.ScheduleSpec{Name: "doomed", TaskType: "table-diff",
		Args: []byte(`{"table_name": "public.doomed"}`), Every: "1 hour"})
	require.NoError(t, err)
	n1.Exec(t, `DROP TABLE public.doomed`)
	due := scheduleRow(t, n1.Pool, "doomed").NextDue
	f, err := sqlapi.FireSchedule(ctx, n1.Pool, "doomed", due, "n1")
	require.NoError(t, err)
	require.Equal(t, sqlapi.FireFailed, f.Outcome)
	s := scheduleRow(t, n1.Pool, "doomed")
	require.Equal(t, int64(1), s.Failures)
	require.Equal(t, `table "public.doomed" does not exist on this node`, *s.LastError)
	require.Equal(t, due.Add(time.Hour), s.NextDue, "the schedule goes on")
	events, err := sqlapi.EventsSince(ctx, n1.Pool, 0, "schedule_failed")
	require.NoError(t, err)
	require.Len(t, events, 1)
	require.Equal(t, "doomed", events[0].Detail["schedule"])
	require.Equal(t, "n1", events[0].NodeName)
	require.Contains(t, events[0].Detail["error"], "does not exist")
}

// TestScheduledRunsKeepTheirOwnRetention: finished runs of a schedule are deleted after
// scheduled_task_retention, other tasks after task_retention.
func TestScheduledRunsKeepTheirOwnRetention(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, n1 := scheduleEnv(t)
	_, err := sqlapi.AddSchedule(ctx, n1.Pool, sqlapi.ScheduleSpec{Name: "s", TaskType: "table-diff",
		Args: []byte(`{"table_name": "public.t"}`), Every: "1 hour"})
	require.NoError(t, err)
	run, err := sqlapi.RunSchedule(ctx, n1.Pool, "s")
	require.NoError(t, err)
	var plain uuid.UUID
	require.NoError(t, n1.Pool.QueryRow(ctx, `SELECT ace.table_diff('public.t')`).Scan(&plain))
	n1.Exec(t, `UPDATE ace.settings SET value = '30 days' WHERE name = 'task_retention';
		UPDATE ace.settings SET value = '1 day' WHERE name = 'scheduled_task_retention';
		UPDATE ace.tasks SET status = 'COMPLETED', finished_at = now() - interval '2 days'`)
	deleted, err := sqlapi.DeleteExpiredTasks(ctx, n1.Pool, 100)
	require.NoError(t, err)
	require.Equal(t, 1, deleted)
	_, err = sqlapi.GetTask(ctx, n1.Pool, run)
	require.Error(t, err, "the scheduled run is gone")
	_, err = sqlapi.GetTask(ctx, n1.Pool, plain)
	require.NoError(t, err, "the other task is kept")
}

// TestSchedulesBelongToTheirOwners: on the certificate-only cluster, each role sees and changes
// only its own schedules (two may have one name), cannot act for another through the functions
// that take an owner, and cannot write ace.schedules; a run is the owner's task.
func TestSchedulesBelongToTheirOwners(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := testcluster.NewSecure(t)
	alice, bob := e.AddSubmitter("alice", true), e.AddSubmitter("bob", true)
	e.ExecAll(`CREATE TABLE public.t (id int PRIMARY KEY); GRANT SELECT ON public.t TO ` + pgx.Identifier{alice}.Sanitize() + `, ` + pgx.Identifier{bob}.Sanitize())
	n1 := e.Node("n1")
	asAlice, asBob := n1.ConnectAs(t, alice), n1.ConnectAs(t, bob)
	for _, c := range []*pgx.Conn{asAlice, asBob} {
		_, err := sqlapi.AddSchedule(ctx, c, sqlapi.ScheduleSpec{Name: "nightly", TaskType: "table-diff",
			Args: []byte(`{"table_name": "public.t"}`), Cron: "0 3 * * *", RunNow: new(false)})
		require.NoError(t, err)
	}
	t.Run("each sees its own", func(t *testing.T) {
		for role, c := range map[string]*pgx.Conn{alice: asAlice, bob: asBob} {
			all, err := sqlapi.Schedules(ctx, c)
			require.NoError(t, err)
			require.Len(t, all, 1)
			require.Equal(t, role, all[0].Owner)
		}
	})
	t.Run("changes act on the caller's own", func(t *testing.T) {
		require.NoError(t, sqlapi.ChangeSchedule(ctx, asBob, "nightly", sqlapi.PauseSchedule))
		require.True(t, scheduleOf(t, asAlice).Enabled, "pausing bob's nightly leaves alice's")
		require.False(t, scheduleOf(t, asBob).Enabled)
	})
	t.Run("no acting for another owner", func(t *testing.T) {
		for _, sql := range []string{
			`SELECT * FROM ace.change_schedule_row($1, 'nightly', 'remove')`,
			`SELECT * FROM ace.claim_schedule_row($1, 'nightly', NULL, NULL)`,
			`SELECT ace.save_schedule_row($1, 'nightly', 'table-diff', '{}', '1 hour', NULL, true, 'node', 'skip', true)`,
		} {
			_, err := asBob.Exec(ctx, sql, alice)
			require.Equal(t, pgerrcode.InsufficientPrivilege, pgError(t, err).Code, sql)
		}
		_, err := asBob.Exec(ctx, `UPDATE ace.schedules SET enabled = false`)
		require.Equal(t, pgerrcode.InsufficientPrivilege, pgError(t, err).Code)
		_, err = asBob.Exec(ctx, `INSERT INTO ace.schedules (owner, schedule_name, task_type, every, next_due) VALUES ($1, 'x', 'table-diff', '1 hour', now())`, alice)
		require.Equal(t, pgerrcode.InsufficientPrivilege, pgError(t, err).Code)
		require.True(t, scheduleOf(t, asAlice).Enabled)
	})
	t.Run("a run is the owner's task, seen by the owner only", func(t *testing.T) {
		id, err := sqlapi.RunSchedule(ctx, asAlice, "nightly")
		require.NoError(t, err)
		var by, login string
		require.NoError(t, n1.Pool.QueryRow(ctx, `SELECT submitted_by, submitted_session_user FROM ace.tasks WHERE task_id = $1`, id).Scan(&by, &login))
		require.Equal(t, alice, by)
		require.Equal(t, alice, login)
		var seen int
		require.NoError(t, asBob.QueryRow(ctx, `SELECT count(*) FROM ace.schedule_runs('nightly')`).Scan(&seen))
		require.Zero(t, seen, "bob's nightly has no runs, and alice's are not his")
		require.NoError(t, asAlice.QueryRow(ctx, `SELECT count(*) FROM ace.schedule_runs('nightly')`).Scan(&seen))
		require.Equal(t, 1, seen)
	})
	t.Run("the agent fires a run in a session logged in as the owner", func(t *testing.T) {
		_, err := sqlapi.AddSchedule(ctx, asAlice, sqlapi.ScheduleSpec{Name: "at-once", TaskType: "table-diff",
			Args: []byte(`{"table_name": "public.t"}`), Every: "1 hour"})
		require.NoError(t, err)
		n1.StartAgent(t)
		var by, login string
		require.Eventually(t, func() bool {
			err := n1.Pool.QueryRow(ctx, `SELECT submitted_by, submitted_session_user FROM ace.tasks
				WHERE args->>'schedule' = 'at-once'`).Scan(&by, &login)
			return err == nil
		}, time.Minute, 50*time.Millisecond)
		require.Equal(t, alice, by)
		require.Equal(t, alice, login, "logged in as alice, not the agent's login with SET ROLE")
	})
	t.Run("removal", func(t *testing.T) {
		require.NoError(t, sqlapi.ChangeSchedule(ctx, asBob, "nightly", sqlapi.RemoveSchedule))
		err := sqlapi.ChangeSchedule(ctx, asBob, "nightly", sqlapi.RemoveSchedule)
		require.Equal(t, pgerrcode.NoDataFound, pgError(t, errors.Unwrap(err)).Code)
		all, err := sqlapi.Schedules(ctx, asAlice)
		require.NoError(t, err)
		require.NotEmpty(t, all, "alice's schedules stay")
	})
}

// scheduleOf reads the session's only schedule.
func scheduleOf(t *testing.T, q sqlapi.Querier) sqlapi.Schedule {
	t.Helper()
	all, err := sqlapi.Schedules(context.Background(), q)
	require.NoError(t, err)
	require.Len(t, all, 1)
	return all[0]
}
