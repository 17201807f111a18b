package sqlapi_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// Tests of the queue's life cycle through sqlapi's own functions, with no agent running: the
// test plays the agents.

// queueEnv is a test database whose n1 has public.t to diff.
type queueEnv struct {
	*testcluster.Env
	n1 *testcluster.Node
}

func queueSetup(t *testing.T) *queueEnv {
	t.Helper()
	e := testcluster.New(t)
	e.SeedTable("public.t", 10)
	return &queueEnv{Env: e, n1: e.Node("n1")}
}

// submit queues a table-diff of public.t on n1.
func (e *queueEnv) submit() uuid.UUID {
	e.T.Helper()
	id, err := sqlapi.Submit(context.Background(), e.n1.Pool, sqlapi.TypeTableDiff, map[string]any{"table_name": "public.t"})
	require.NoError(e.T, err)
	return id
}

// claimConn is a connection of its own for a claim, as an agent holds one; closed when the test
// ends (closing it earlier is how a test makes an agent vanish).
func (e *queueEnv) claimConn() *pgx.Conn {
	e.T.Helper()
	conn, err := pgx.Connect(context.Background(), e.n1.DSN)
	require.NoError(e.T, err)
	e.T.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// claim claims the oldest queued task as agent, which must find one.
func (e *queueEnv) claim(agent string) (*sqlapi.Run, *pgx.Conn) {
	e.T.Helper()
	conn := e.claimConn()
	run, err := sqlapi.Claim(context.Background(), conn, e.n1.Pool, agent)
	require.NoError(e.T, err)
	require.NotNil(e.T, run, "%s found no task to claim", agent)
	return run, conn
}

// vanish closes an agent's claim connection and waits until its session is gone from the
// server, as after the agent died.
func (e *queueEnv) vanish(conn *pgx.Conn) {
	e.T.Helper()
	pid := conn.PgConn().PID()
	require.NoError(e.T, conn.Close(context.Background()))
	require.Eventually(e.T, func() bool {
		var alive bool
		require.NoError(e.T, e.n1.Pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)`, pid).Scan(&alive))
		return !alive
	}, 10*time.Second, 20*time.Millisecond, "the claim session %d ends", pid)
}

func (e *queueEnv) task(id uuid.UUID) sqlapi.Task {
	e.T.Helper()
	task, err := sqlapi.GetTask(context.Background(), e.n1.Pool, id)
	require.NoError(e.T, err)
	return task
}

// storedKeys lists the keys of the differing rows stored for a task.
func (e *queueEnv) storedKeys(id uuid.UUID) []string {
	e.T.Helper()
	var keys []string
	require.NoError(e.T, sqlapi.ReadDiffRows(context.Background(), e.n1.Pool, id, func(d engine.DiffRow) error {
		keys = append(keys, string(d.PKSort))
		return nil
	}))
	return keys
}

// diffRow is key id, present on n1 only.
func diffRow(id int) []engine.DiffRow {
	pk, _ := json.Marshal(map[string]int{"id": id})
	row, _ := json.Marshal(map[string]any{"id": id, "v": "x"})
	sort, _ := json.Marshal([]int{id})
	return []engine.DiffRow{{PK: pk, PKSort: sort, Kind: engine.KindMissing,
		Rows: map[string]json.RawMessage{"n1": row, "n2": engine.NullRow}, Versions: map[string]int{"n1": 1}}}
}

func TestClaimRunAndFinish(t *testing.T) {
	t.Parallel()
	e := queueSetup(t)
	ctx := t.Context()
	id := e.submit()
	queued := e.task(id)
	require.Equal(t, sqlapi.StatusQueued, queued.Status)
	require.Zero(t, queued.Attempts)

	run, _ := e.claim("agent-a")
	require.Equal(t, id, run.Task.ID)
	require.Equal(t, sqlapi.StatusRunning, run.Task.Status)
	require.Equal(t, 1, run.Task.Attempts)
	require.Equal(t, "agent-a", *run.Task.ClaimedBy)
	again, err := sqlapi.Claim(ctx, e.claimConn(), e.n1.Pool, "agent-b")
	require.NoError(t, err)
	require.Nil(t, again, "a running task is not claimed twice")

	cancel, err := run.SetProgress(ctx, engine.Progress{Phase: "hashing", BlocksDone: 1})
	require.NoError(t, err)
	require.False(t, cancel)
	require.NoError(t, run.WriteDiffRows(ctx, diffRow(7)))
	require.NoError(t, run.Complete(ctx, map[string]int{"differing_keys": 1}))
	require.NoError(t, run.Unlock(ctx))

	done := e.task(id)
	require.Equal(t, sqlapi.StatusCompleted, done.Status)
	require.JSONEq(t, `{"differing_keys": 1}`, string(done.Result))
	require.JSONEq(t, `{"phase": "hashing", "blocks_total": 0, "blocks_done": 1, "rows_hashed": 0, "differing_keys": 0}`, string(done.Progress))
	require.Equal(t, []string{"[7]"}, e.storedKeys(id))

	t.Run("a finished task cannot be finished again", func(t *testing.T) {
		require.ErrorIs(t, run.Complete(ctx, map[string]int{"differing_keys": 2}), sqlapi.ErrLostClaim)
		require.ErrorIs(t, run.Fail(ctx, context.Canceled), sqlapi.ErrLostClaim)
		require.ErrorIs(t, run.HandBack(ctx), sqlapi.ErrLostClaim)
		require.ErrorIs(t, run.WriteDiffRows(ctx, diffRow(8)), sqlapi.ErrLostClaim)
		after := e.task(id)
		require.Equal(t, sqlapi.StatusCompleted, after.Status)
		require.JSONEq(t, `{"differing_keys": 1}`, string(after.Result))
		require.Equal(t, []string{"[7]"}, e.storedKeys(id))
	})
}

// An agent that lost its claim session has its task re-queued by the recovery sweep; once
// another agent claimed it, every write of the first is refused by the claim's fence.
func TestWritesOfATakenOverTaskAreFenced(t *testing.T) {
	t.Parallel()
	e := queueSetup(t)
	ctx := t.Context()
	id := e.submit()
	a, aConn := e.claim("agent-a")
	require.NoError(t, a.WriteDiffRows(ctx, diffRow(1)))

	sweep := e.claimConn()
	orphans, err := sqlapi.RecoverOrphans(ctx, sweep, 60, nil)
	require.NoError(t, err)
	require.Empty(t, orphans, "agent-a's claim session is alive")

	e.vanish(aConn)
	orphans, err = sqlapi.RecoverOrphans(ctx, sweep, 60, nil)
	require.NoError(t, err)
	require.Equal(t, []sqlapi.Orphan{{TaskID: id, ClaimedBy: "agent-a", Requeued: true}}, orphans, "a diff only reads: it runs again")
	requeued := e.task(id)
	require.Equal(t, sqlapi.StatusQueued, requeued.Status)
	require.Equal(t, "agent agent-a stopped during attempt 1; re-queued", *requeued.Error)
	require.Empty(t, e.storedKeys(id), "the lost attempt's rows are deleted")

	b, _ := e.claim("agent-b")
	require.Equal(t, 2, b.Task.Attempts)
	require.NoError(t, b.WriteDiffRows(ctx, diffRow(2)))

	t.Run("every write of the old claim is refused", func(t *testing.T) {
		_, err := a.SetProgress(ctx, engine.Progress{Phase: "late"})
		require.ErrorIs(t, err, sqlapi.ErrLostClaim)
		require.ErrorIs(t, a.WriteDiffRows(ctx, diffRow(3)), sqlapi.ErrLostClaim)
		// A first attempt has nothing to reset (a recovery or hand-back deletes its rows), so
		// the old claim's reset writes nothing at all: agent-b's rows stay.
		require.NoError(t, a.ResetResults(ctx))
		require.Equal(t, []string{"[2]"}, e.storedKeys(id), "agent-b's rows stay")
		require.ErrorIs(t, a.Complete(ctx, "agent-a's result"), sqlapi.ErrLostClaim)
		require.ErrorIs(t, a.HandBack(ctx), sqlapi.ErrLostClaim)
	})
	require.NoError(t, b.Complete(ctx, "agent-b's result"))
	done := e.task(id)
	require.Equal(t, sqlapi.StatusCompleted, done.Status)
	require.Equal(t, "agent-b", *done.ClaimedBy)
	require.JSONEq(t, `"agent-b's result"`, string(done.Result))
	require.Equal(t, []string{"[2]"}, e.storedKeys(id), "only the current claim's rows are stored")
}

// A task whose agents keep vanishing is failed once its attempts are used up.
func TestRecoveryFailsATaskWithoutAttemptsLeft(t *testing.T) {
	t.Parallel()
	e := queueSetup(t)
	ctx := t.Context()
	id := e.submit()
	sweep := e.claimConn()
	max := e.task(id).MaxAttempts
	require.Equal(t, 3, max)
	for attempt := 1; attempt <= max; attempt++ {
		run, conn := e.claim("agent-a")
		require.Equal(t, attempt, run.Task.Attempts)
		e.vanish(conn)
		orphans, err := sqlapi.RecoverOrphans(ctx, sweep, 60, nil)
		require.NoError(t, err)
		require.Equal(t, []sqlapi.Orphan{{TaskID: id, ClaimedBy: "agent-a", Requeued: attempt < max}}, orphans, "attempt %d", attempt)
	}
	failed := e.task(id)
	require.Equal(t, sqlapi.StatusFailed, failed.Status)
	require.Equal(t, "agent agent-a stopped while running this task (attempt 3 of 3)", *failed.Error)
	none, err := sqlapi.Claim(ctx, e.claimConn(), e.n1.Pool, "agent-b")
	require.NoError(t, err)
	require.Nil(t, none, "a failed task is not claimed")
}

// The recovery sweep leaves alone the tasks its caller runs itself.
func TestRecoverySkipsTheCallersOwnTasks(t *testing.T) {
	t.Parallel()
	e := queueSetup(t)
	ctx := t.Context()
	id := e.submit()
	_, conn := e.claim("agent-a")
	e.vanish(conn)
	sweep := e.claimConn()
	orphans, err := sqlapi.RecoverOrphans(ctx, sweep, 60, []uuid.UUID{id})
	require.NoError(t, err)
	require.Empty(t, orphans)
	require.Equal(t, sqlapi.StatusRunning, e.task(id).Status)
	orphans, err = sqlapi.RecoverOrphans(ctx, sweep, 60, nil)
	require.NoError(t, err)
	require.Equal(t, []sqlapi.Orphan{{TaskID: id, ClaimedBy: "agent-a", Requeued: true}}, orphans, "not skipped, it is recovered")
}

// A hand-back (graceful shutdown) re-queues the task without counting the attempt, and deletes
// what the attempt stored.
func TestHandBackRequeuesWithoutCountingTheAttempt(t *testing.T) {
	t.Parallel()
	e := queueSetup(t)
	ctx := t.Context()
	id := e.submit()
	run, _ := e.claim("agent-a")
	require.NoError(t, run.WriteDiffRows(ctx, diffRow(1)))
	_, err := run.SetProgress(ctx, engine.Progress{Phase: "hashing"})
	require.NoError(t, err)

	require.NoError(t, run.HandBack(ctx))
	require.NoError(t, run.Unlock(ctx))
	back := e.task(id)
	require.Equal(t, sqlapi.StatusQueued, back.Status)
	require.Zero(t, back.Attempts, "the handed-back attempt does not count")
	require.Nil(t, back.ClaimedBy)
	require.Nil(t, back.StartedAt)
	require.Empty(t, back.Progress)
	require.Empty(t, e.storedKeys(id), "the attempt's rows are deleted")
	require.ErrorIs(t, run.Complete(ctx, "late"), sqlapi.ErrLostClaim, "the handed-back run writes nothing more")

	again, _ := e.claim("agent-b")
	require.Equal(t, id, again.Task.ID)
	require.Equal(t, 1, again.Task.Attempts)
}
