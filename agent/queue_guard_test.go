package agent_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// The queue guard tests replay the attacks of issue 8 that a submitter could make on the queue:
// stalling it with advisory locks, jumping it with a chosen submitted_at, filling the agents'
// slots, and reading other users' task ids from notifications. Each must now be refused.

// queueEnv is a test database on every node of the certificate-only cluster (no trust), table t
// on every node, and submitting roles that may read it. agent is a pool on n1 logged in as the
// agent's own login (no superuser), which owns the ace schema.
type queueEnv struct {
	*testcluster.Env
	t     *testing.T
	agent *pgxpool.Pool
}

func newQueueEnv(t *testing.T) *queueEnv {
	t.Helper()
	e := testcluster.NewSecure(t)
	e.ExecAll(`CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)`)
	agent, err := pgxpool.New(context.Background(), e.Node("n1").AgentDSN)
	require.NoError(t, err)
	t.Cleanup(agent.Close)
	return &queueEnv{Env: e, t: t, agent: agent}
}

// role creates a submitting role that may read t on every node, named for this test's database,
// that the agent's certificate may log in as.
func (e *queueEnv) role(name string) string {
	role := e.AddSubmitter(name, true)
	e.ExecAll(fmt.Sprintf(`GRANT SELECT ON t TO %s`, pgx.Identifier{role}.Sanitize()))
	return role
}

// connect logs in to the node as role, with the role's own certificate; the connection closes
// when the test ends.
func (e *queueEnv) connect(node, role string) *pgx.Conn {
	e.t.Helper()
	return e.Node(node).ConnectAs(e.t, role)
}

// submit runs a statement that returns a task id.
func (e *queueEnv) submit(conn *pgx.Conn, sql string) uuid.UUID {
	e.t.Helper()
	var id uuid.UUID
	require.NoError(e.t, conn.QueryRow(context.Background(), sql).Scan(&id))
	return id
}

// set changes a row of ace.settings on n1, as the schema's owner (the agent's login).
func (e *queueEnv) set(name, value string) {
	e.t.Helper()
	_, err := e.agent.Exec(context.Background(), `UPDATE ace.settings SET value = $2 WHERE name = $1`, name, value)
	require.NoError(e.t, err)
}

// claim claims a task on n1 as agentID on a connection of its own, logged in as the agent's
// login as an agent claims, which closes when the test ends.
func (e *queueEnv) claim(agentID string) (*sqlapi.Run, *pgx.Conn) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, e.Node("n1").AgentDSN)
	require.NoError(e.t, err)
	e.t.Cleanup(func() { _ = conn.Close(context.Background()) })
	run, err := sqlapi.Claim(ctx, conn, e.agent, agentID)
	require.NoError(e.t, err, "a claim must never wait for a lock a user holds")
	return run, conn
}

// claimKeys lists the keys of the session advisory locks held in the database (by session pid,
// if not 0), as pg_locks shows them to anyone.
func claimKeys(t *testing.T, conn *pgx.Conn, pid uint32) []int64 {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT (classid::int8 << 32) | objid::int8 FROM pg_locks
		WHERE locktype = 'advisory' AND objsubid = 1 AND granted AND (pid = $1 OR $1 = 0)
		  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`, int64(pid))
	require.NoError(t, err)
	keys, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	require.NoError(t, err)
	return keys
}

// lockForever starts pg_advisory_lock(key) on conn, which waits until the key is free; the
// returned channel reports when it got it.
func lockForever(conn *pgx.Conn, key int64) <-chan error {
	got := make(chan error, 1)
	go func() {
		_, err := conn.Exec(context.Background(), `SELECT pg_advisory_lock($1)`, key)
		got <- err
	}()
	return got
}

// waitForLockWaiter waits until some session waits for an advisory lock in the database.
func waitForLockWaiter(t *testing.T, n *testcluster.Node) {
	t.Helper()
	require.Eventually(t, func() bool {
		var waiting bool
		err := n.Pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
			AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))`).Scan(&waiting)
		return err == nil && waiting
	}, 10*time.Second, 20*time.Millisecond)
}

func pgError(t *testing.T, err error) *pgconn.PgError {
	t.Helper()
	var pgErr *pgconn.PgError
	require.True(t, errors.As(err, &pgErr), "want a PostgreSQL error, got %v", err)
	return pgErr
}

// Attack 5: a user held the advisory lock keys derived from task ids, and the claim gave up on
// the oldest task instead of skipping it; the queue stalled. Now no key a user can take before
// a claim matters, the claim's own key cannot be taken, and writes never wait for a user.
func TestUserLocksCannotStallTheQueue(t *testing.T) {
	t.Parallel()
	e := newQueueEnv(t)
	ctx := context.Background()
	alice, mallory := e.role("alice"), e.role("mallory")
	asAlice, asMallory, mallorysWaiter := e.connect("n1", alice), e.connect("n1", mallory), e.connect("n1", mallory)
	first := e.submit(asAlice, `SELECT ace.table_diff('public.t')`)
	second := e.submit(asAlice, `SELECT ace.table_diff('public.t')`)

	for _, id := range []uuid.UUID{first, second} {
		_, err := asMallory.Exec(ctx, `SELECT pg_advisory_lock(k, hashtext($1::text)) FROM unnest(ARRAY[7305, 7306]) k`, id)
		require.NoError(t, err)
	}
	t.Run("users cannot lock task rows or the claims", func(t *testing.T) {
		for _, sql := range []string{`SELECT 1 FROM ace.tasks FOR KEY SHARE`, `LOCK TABLE ace.tasks IN SHARE MODE`,
			`LOCK TABLE ace.claims IN ACCESS SHARE MODE`, `SELECT * FROM ace.claims`} {
			err := pgx.BeginFunc(ctx, asMallory, func(tx pgx.Tx) error { _, err := tx.Exec(ctx, sql); return err })
			require.Equal(t, pgerrcode.InsufficientPrivilege, pgError(t, err).Code, sql)
		}
	})

	// A row another claim holds is skipped, never waited for.
	busy, err := e.Node("n1").Pool.Begin(ctx)
	require.NoError(t, err)
	_, err = busy.Exec(ctx, `SELECT 1 FROM ace.tasks WHERE task_id = $1 FOR UPDATE`, first)
	require.NoError(t, err)
	run, _ := e.claim("agent-a")
	require.NotNil(t, run)
	require.Equal(t, second, run.Task.ID)
	require.NoError(t, busy.Rollback(ctx))

	run, claimConn := e.claim("agent-b")
	require.NotNil(t, run, "the oldest task is claimed whatever keys a user holds")
	require.Equal(t, first, run.Task.ID)

	keys := claimKeys(t, asMallory, 0)
	require.Len(t, keys, 2, "the two claims' keys, which pg_locks shows to anyone")
	for _, k := range keys {
		var took bool
		require.NoError(t, asMallory.QueryRow(ctx, `SELECT pg_try_advisory_lock($1) OR pg_try_advisory_lock_shared($1)`, k).Scan(&took))
		require.False(t, took, "a user took the key %d held by a claim", k)
	}
	// Queued for the claim's key, a user holds up none of the run's writes.
	got := lockForever(mallorysWaiter, claimKeys(t, asMallory, claimConn.PgConn().PID())[0])
	waitForLockWaiter(t, e.Node("n1"))
	writeCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	require.NoError(t, run.ResetResults(writeCtx))
	_, err = run.SetProgress(writeCtx, map[string]string{"phase": "hashing"})
	require.NoError(t, err)
	require.NoError(t, run.Complete(writeCtx, map[string]string{}))
	require.NoError(t, run.Unlock(writeCtx))
	select {
	case err := <-got:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting user never got the key back; it was not a claim's")
	}
}

// Attack 5, continued: a user who sees a claim's key in pg_locks and waits for it gets it when
// the claim's session ends. The recovery sweep asks for the claim's own session, so the task is
// recovered anyway; and a user session tagged like the claim's writers is never ended.
func TestRecoveryIgnoresAUserHoldingTheClaimKey(t *testing.T) {
	t.Parallel()
	e := newQueueEnv(t)
	ctx := context.Background()
	alice, mallory := e.role("alice"), e.role("mallory")
	asMallory, mallorysWaiter, mallorysTagged := e.connect("n1", mallory), e.connect("n1", mallory), e.connect("n1", mallory)
	id := e.submit(e.connect("n1", alice), `SELECT ace.table_diff('public.t')`)
	e.Node("n1").Exec(t, `INSERT INTO ace.agents (agent_id, node_name, hostname, os_pid, version, max_tasks, heartbeat_at)
		VALUES ('hung-agent', 'n1', 'h', 1, 'test', 1, now() - interval '1 hour')`)
	run, claimConn := e.claim("hung-agent")
	require.NotNil(t, run)
	sweeper, err := pgx.Connect(ctx, e.Node("n1").AgentDSN)
	require.NoError(t, err)
	defer sweeper.Close(ctx)

	orphans, err := sqlapi.RecoverOrphans(ctx, sweeper, 7200, nil)
	require.NoError(t, err)
	require.Empty(t, orphans, "a claim whose session holds its key is alive")

	keys := claimKeys(t, asMallory, 0)
	require.Len(t, keys, 1)
	got := lockForever(mallorysWaiter, keys[0])
	waitForLockWaiter(t, e.Node("n1"))
	_, err = mallorysTagged.Exec(ctx, `SELECT set_config('application_name', ace.writer_tag($1), false)`, keys[0])
	require.NoError(t, err)

	// The agent's heartbeat is an hour old: the sweep ends its claim session, the user gets the
	// key, and the task is recovered all the same.
	var recovered []sqlapi.Orphan
	for deadline := time.Now().Add(20 * time.Second); len(recovered) == 0 && time.Now().Before(deadline); {
		orphans, err := sqlapi.RecoverOrphans(ctx, sweeper, 60, nil)
		require.NoError(t, err)
		recovered = append(recovered, orphans...)
		time.Sleep(50 * time.Millisecond)
	}
	require.Equal(t, []sqlapi.Orphan{{TaskID: id, ClaimedBy: "hung-agent", Requeued: true}}, recovered)
	select {
	case err := <-got:
		require.NoError(t, err, "the user holds the claim's old key now")
	case <-time.After(10 * time.Second):
		t.Fatal("the claim session was not ended")
	}
	require.Error(t, claimConn.Ping(ctx), "the hung agent's claim session was ended")
	require.NoError(t, mallorysTagged.Ping(ctx), "a user's session is never ended, whatever its application_name")
	task, err := sqlapi.GetTask(ctx, e.Node("n1").Pool, id)
	require.NoError(t, err)
	require.Equal(t, sqlapi.StatusQueued, task.Status)
}

// Attack 5, the queue jump: a direct INSERT kept a user-chosen submitted_at. Users may now write
// only task_type and args, and the server sets every other column for anyone who inserts.
func TestServerSetsTheTaskColumns(t *testing.T) {
	t.Parallel()
	e := newQueueEnv(t)
	ctx := context.Background()
	mallory := e.role("mallory")
	asMallory := e.connect("n1", mallory)
	values := map[string]string{
		"task_id": `'00000000-0000-0000-0000-000000000001'`, "status": `'COMPLETED'`, "submitted_by": `'postgres'`,
		"submitted_at": `'2000-01-01'`, "started_at": `now()`, "finished_at": `now()`, "claimed_by": `'me'`,
		"attempts": `-5`, "max_attempts": `1000`, "cancel_requested": `true`, "progress": `'{}'`, "result": `'{"differing_keys": 0}'`,
		"error": `'none'`,
	}
	for col, v := range values {
		t.Run(col, func(t *testing.T) {
			_, err := asMallory.Exec(ctx, `INSERT INTO ace.tasks (task_type, args, `+col+`)
				VALUES ('table-diff', '{"table_name": "public.t"}', `+v+`)`)
			require.Equal(t, pgerrcode.InsufficientPrivilege, pgError(t, err).Code, "a user wrote %s", col)
		})
	}
	t.Run("a direct insert of task_type and args works", func(t *testing.T) {
		id := e.submit(asMallory, `INSERT INTO ace.tasks (task_type, args) VALUES ('table-diff', '{"table_name": "public.t"}') RETURNING task_id`)
		task, err := sqlapi.GetTask(ctx, asMallory, id)
		require.NoError(t, err)
		require.Equal(t, sqlapi.StatusQueued, task.Status)
		require.Equal(t, mallory, task.SubmittedBy)
	})
	t.Run("every submitting function runs as a user", func(t *testing.T) {
		// Privileges are checked before the insert triggers run: a validator's error shows that
		// the function's insert was allowed.
		for sql, code := range map[string]string{
			`SELECT ace.table_repair(gen_random_uuid(), 'n1')`: pgerrcode.NoDataFound,
			`SELECT ace.table_rerun(gen_random_uuid())`:        pgerrcode.NoDataFound,
			`SELECT ace.diff_import('{}')`:                     pgerrcode.InvalidParameterValue,
		} {
			_, err := asMallory.Exec(ctx, sql)
			require.Equal(t, code, pgError(t, err).Code, "%s: %v", sql, err)
		}
		e.submit(asMallory, `SELECT ace.table_diff('public.t')`)
	})
	t.Run("whoever inserts, the server's values win", func(t *testing.T) {
		cols, vals := []string{"task_type", "args"}, []string{`'table-diff'`, `'{"table_name": "public.t"}'`}
		for col, v := range values {
			cols, vals = append(cols, col), append(vals, v)
		}
		var before time.Time
		require.NoError(t, e.Node("n1").Pool.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&before))
		var got uuid.UUID
		require.NoError(t, e.Node("n1").Pool.QueryRow(ctx, `INSERT INTO ace.tasks (`+strings.Join(cols, ", ")+`)
			VALUES (`+strings.Join(vals, ", ")+`) RETURNING task_id`).Scan(&got))
		task, err := sqlapi.GetTask(ctx, e.Node("n1").Pool, got)
		require.NoError(t, err)
		require.NotEqual(t, "00000000-0000-0000-0000-000000000001", task.ID.String())
		require.Equal(t, sqlapi.StatusQueued, task.Status)
		require.Equal(t, "postgres", task.SubmittedBy)
		require.False(t, task.SubmittedAt.Before(before), "submitted_at is the server's clock: %v", task.SubmittedAt)
		require.Nil(t, task.StartedAt)
		require.Nil(t, task.FinishedAt)
		require.Nil(t, task.ClaimedBy)
		require.Zero(t, task.Attempts)
		require.Equal(t, 3, task.MaxAttempts)
		require.False(t, task.CancelRequested)
		require.Nil(t, task.Progress)
		require.Nil(t, task.Result)
		require.Nil(t, task.Error)
	})
}

// Attack 6: one role filled every task slot. A role may have max_queued_tasks_per_role tasks
// queued; more are refused with an error naming the limit.
func TestQueuedTasksPerRoleAreLimited(t *testing.T) {
	t.Parallel()
	e := newQueueEnv(t)
	ctx := context.Background()
	e.set("max_queued_tasks_per_role", "2")
	asBob, asCarol := e.connect("n1", e.role("bob")), e.connect("n1", e.role("carol"))
	bobs := []uuid.UUID{e.submit(asBob, `SELECT ace.table_diff('public.t')`), e.submit(asBob, `SELECT ace.table_diff('public.t')`)}
	for name, sql := range map[string]string{
		"ace.table_diff": `SELECT ace.table_diff('public.t')`,
		"direct insert":  `INSERT INTO ace.tasks (task_type, args) VALUES ('table-diff', '{"table_name": "public.t"}')`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := asBob.Exec(ctx, sql)
			pgErr := pgError(t, err)
			require.Contains(t, pgErr.Message, "already has 2 queued tasks, as many as max_queued_tasks_per_role allows")
			require.Contains(t, pgErr.Hint, "UPDATE ace.settings SET value = '4' WHERE name = 'max_queued_tasks_per_role'")
		})
	}
	e.submit(asCarol, `SELECT ace.table_diff('public.t')`)
	_, err := asBob.Exec(ctx, `SELECT ace.cancel($1)`, bobs[0])
	require.NoError(t, err)
	e.submit(asBob, `SELECT ace.table_diff('public.t')`)
}

// Attack 6: four slow diffs of one role held every slot. A claim now skips the tasks of a role
// that runs max_running_tasks_per_role tasks already, and takes another role's.
func TestRunningTasksPerRoleAreLimited(t *testing.T) {
	t.Parallel()
	e := newQueueEnv(t)
	e.set("max_running_tasks_per_role", "1")
	asBob, asCarol := e.connect("n1", e.role("bob")), e.connect("n1", e.role("carol"))
	bob1 := e.submit(asBob, `SELECT ace.table_diff('public.t')`)
	bob2 := e.submit(asBob, `SELECT ace.table_diff('public.t')`)
	carol := e.submit(asCarol, `SELECT ace.table_diff('public.t')`)

	run, _ := e.claim("agent")
	require.Equal(t, bob1, run.Task.ID)
	next, _ := e.claim("agent")
	require.Equal(t, carol, next.Task.ID, "bob runs his limit: his second task waits, carol's runs")
	none, _ := e.claim("agent")
	require.Nil(t, none)

	require.NoError(t, run.Complete(context.Background(), map[string]string{}))
	require.NoError(t, run.Unlock(context.Background()))
	last, _ := e.claim("agent")
	require.Equal(t, bob2, last.Task.ID)
}

// Attack 6: a diff whose filter sleeps held its slot for as long as it liked. The agent now
// stops a task that runs longer than max_task_runtime and fails it naming the limit. (The diff
// here waits for a lock on n2, which a filter allow-list cannot refuse.)
func TestTaskRuntimeIsLimited(t *testing.T) {
	t.Parallel()
	e := newQueueEnv(t)
	e.set("max_task_runtime", "1 second")
	lock, err := e.Node("n2").Pool.Begin(context.Background())
	require.NoError(t, err)
	defer lock.Rollback(context.Background())
	_, err = lock.Exec(context.Background(), `LOCK TABLE t IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)
	e.Node("n1").StartAgent(t)

	task := e.Node("n1").Wait(t, e.submit(e.connect("n1", e.role("bob")), `SELECT ace.table_diff('public.t')`))
	require.Equal(t, sqlapi.StatusFailed, task.Status)
	require.Contains(t, *task.Error, "max_task_runtime (1s)")
	require.Contains(t, *task.Error, "UPDATE ace.settings SET value = '24 hours' WHERE name = 'max_task_runtime'")
}

// Attack 6: one recheck_after => '100 years' held a slot for a century. recheck_after is now
// capped by max_recheck_after.
func TestRecheckAfterIsCapped(t *testing.T) {
	t.Parallel()
	e := newQueueEnv(t)
	asBob := e.connect("n1", e.role("bob"))
	for name, sql := range map[string]string{
		"interval":         `SELECT ace.table_diff('public.t', recheck_after => '100 years')`,
		"seconds in args":  `INSERT INTO ace.tasks (task_type, args) VALUES ('table-diff', '{"table_name": "public.t", "recheck_after": 3601}')`,
		"interval in args": `INSERT INTO ace.tasks (task_type, args) VALUES ('table-diff', '{"table_name": "public.t", "recheck_after": "61 minutes"}')`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := asBob.Exec(context.Background(), sql)
			pgErr := pgError(t, err)
			require.Contains(t, pgErr.Message, "is longer than max_recheck_after (1 hour)")
			require.Contains(t, pgErr.Hint, "WHERE name = 'max_recheck_after'")
		})
	}
	e.submit(asBob, `SELECT ace.table_diff('public.t', recheck_after => '1 hour')`)
}

// ace.settings is readable by everyone and writable by the schema's owner only, who cannot
// store a value its limit cannot use.
func TestSettingsAreTheOwners(t *testing.T) {
	t.Parallel()
	e := newQueueEnv(t)
	ctx := context.Background()
	asBob := e.connect("n1", e.role("bob"))
	var settings map[string]string
	rows, err := asBob.Query(ctx, `SELECT name, value FROM ace.settings`)
	require.NoError(t, err)
	settings = map[string]string{}
	for rows.Next() {
		var k, v string
		require.NoError(t, rows.Scan(&k, &v))
		settings[k] = v
	}
	require.NoError(t, rows.Err())
	require.Equal(t, map[string]string{"max_queued_tasks_per_role": "50", "max_running_tasks_per_role": "2",
		"max_task_runtime": "12 hours", "max_recheck_after": "1 hour", "max_cdc_timeout": "10 minutes",
		"task_retention": "30 days", "scheduled_task_retention": "7 days", "event_retention": "30 days",
		"min_schedule_interval": "1 minute", "schedule_timezone": "UTC", "table_status_max_age": "1 day"}, settings)
	for _, sql := range []string{`UPDATE ace.settings SET value = '1000'`, `DELETE FROM ace.settings`,
		`INSERT INTO ace.settings VALUES ('max_task_runtime', '1 year', '')`} {
		_, err := asBob.Exec(ctx, sql)
		require.Equal(t, pgerrcode.InsufficientPrivilege, pgError(t, err).Code, sql)
	}
	for value, msg := range map[string]string{
		`max_running_tasks_per_role = '0'`:   `setting max_running_tasks_per_role must be a whole number of at least 1, got "0"`,
		`max_queued_tasks_per_role = 'lots'`: `setting max_queued_tasks_per_role must be a whole number of at least 1, got "lots"`,
		`max_task_runtime = 'soon'`:          `setting max_task_runtime must be a positive interval`,
		`max_recheck_after = '-1 hour'`:      `setting max_recheck_after must be a positive interval`,
		`max_cdc_timeout = '0'`:              `setting max_cdc_timeout must be a positive interval`,
		`task_retention = 'forever'`:         `setting task_retention must be a positive interval`,
		`schedule_timezone = 'Mars/Olympus'`: `setting schedule_timezone must be a time zone name`,
	} {
		t.Run(value, func(t *testing.T) {
			name, v, _ := strings.Cut(value, " = ")
			_, err := e.Node("n1").Pool.Exec(ctx, `UPDATE ace.settings SET value = `+v+` WHERE name = $1`, name)
			require.Contains(t, pgError(t, err).Message, msg)
		})
	}
}

// Attack 8: LISTEN ace_task showed every user's task ids. Now the shared channels carry no
// payload, and a task's own channel is named from its id, which only its submitter knows.
func TestNotificationsRevealNoTaskIDs(t *testing.T) {
	t.Parallel()
	e := newQueueEnv(t)
	ctx := context.Background()
	e.ExecAll(`CREATE TABLE slow (id int PRIMARY KEY)`)
	alice, mallory := e.role("alice"), e.role("mallory")
	e.ExecAll(`GRANT SELECT ON slow TO ` + alice)
	asAlice, asMallory := e.connect("n1", alice), e.connect("n1", mallory)
	for _, ch := range []string{"ace_task", "ace_task_done", "ace_task_progress", "ace_task_cancel"} {
		_, err := asMallory.Exec(ctx, "LISTEN "+ch)
		require.NoError(t, err)
	}
	lock, err := e.Node("n2").Pool.Begin(ctx)
	require.NoError(t, err)
	defer lock.Rollback(ctx)
	_, err = lock.Exec(ctx, `LOCK TABLE slow IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)
	e.Node("n1").StartAgent(t)

	done := e.submit(asAlice, `SELECT ace.table_diff('public.t')`)
	task, err := sqlapi.Wait(ctx, asAlice, done, time.Minute, nil)
	require.NoError(t, err, "the submitter is woken on her task's channel")
	require.Equal(t, sqlapi.StatusCompleted, task.Status)

	// A cancel wake-up names no task: the agent finds the flag on the tasks it runs.
	blocked := e.submit(asAlice, `SELECT ace.table_diff('public.slow')`)
	require.Eventually(t, func() bool {
		task, err := sqlapi.GetTask(ctx, asAlice, blocked)
		return err == nil && task.Status == sqlapi.StatusRunning
	}, time.Minute, 20*time.Millisecond)
	_, err = asAlice.Exec(ctx, `SELECT ace.cancel($1)`, blocked)
	require.NoError(t, err)
	task, err = sqlapi.Wait(ctx, asAlice, blocked, time.Minute, nil)
	require.NoError(t, err)
	require.Equal(t, sqlapi.StatusCancelled, task.Status)

	seen := map[string]int{}
	for {
		waitCtx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		n, err := asMallory.WaitForNotification(waitCtx)
		cancel()
		if err != nil {
			break
		}
		seen[n.Channel]++
		require.Empty(t, n.Payload, "a notification on %s carried a payload", n.Channel)
		for _, id := range []uuid.UUID{done, blocked} {
			require.NotContains(t, n.Channel, strings.ReplaceAll(id.String(), "-", ""))
		}
	}
	require.Positive(t, seen["ace_task"], "the agents' wake-up still comes")
	require.Positive(t, seen["ace_task_cancel"], "the cancel wake-up still comes")
	require.Zero(t, seen["ace_task_done"]+seen["ace_task_progress"], "no shared channel tells when a task ends")
}
