package main

import (
	"context"
	"encoding/json"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// lockTable holds an ACCESS EXCLUSIVE lock on public.t on the node, so a diff reading it there
// waits. The returned function releases it; the test's end does too.
func lockTable(t *testing.T, n *testcluster.Node) (release func()) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, n.DSN)
	require.NoError(t, err)
	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `LOCK TABLE t IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)
	released := false
	release = func() {
		if !released {
			released = true
			require.NoError(t, tx.Rollback(ctx))
			require.NoError(t, conn.Close(ctx))
		}
	}
	t.Cleanup(release)
	return release
}

// waitBlocked waits until the task runs and a query waits for the lock on t on the locked node.
func waitBlocked(t *testing.T, coordinator, locked *testcluster.Node, id uuid.UUID) {
	t.Helper()
	require.Eventually(t, func() bool {
		return getTask(t, coordinator, id).Status == sqlapi.StatusRunning
	}, time.Minute, 50*time.Millisecond, "task never started")
	require.Eventually(t, func() bool {
		var waiting bool
		err := locked.Pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_locks
			WHERE locktype = 'relation' AND relation = 'public.t'::regclass AND NOT granted)`).Scan(&waiting)
		return err == nil && waiting
	}, time.Minute, 50*time.Millisecond, "the diff never waited for the lock")
}

// requireDiffResult checks that the task completed and found exactly id 500 differing between
// n1 and n2.
func requireDiffResult(t *testing.T, task sqlapi.Task) {
	t.Helper()
	require.Equal(t, sqlapi.StatusCompleted, task.Status, "error: %v", task.Error)
	var s engine.DiffSummary
	require.NoError(t, json.Unmarshal(task.Result, &s))
	require.EqualValues(t, 1, s.DifferingKeys)
	require.Equal(t, map[string]int64{"n1/n2": 1, "n1/n3": 0, "n2/n3": 1}, s.DiffRowsCount)
}

func TestAgentKilledTaskIsRecovered(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	createTable(e, 1000)
	n1, n2 := e.Node("n1"), e.Node("n2")
	n2.Exec(t, `UPDATE t SET v = 'changed' WHERE id = 500`)
	release := lockTable(t, n2)
	first := startAgentProc(t, n1)
	id := submitDiff(t, n1, "public.t")
	waitBlocked(t, n1, n2, id)

	first.signal(t, syscall.SIGKILL)
	require.Equal(t, -1, first.wait(t, 30*time.Second), "killed by the signal")
	release()
	startAgentProc(t, n1)

	task := n1.Wait(t, id)
	requireDiffResult(t, task)
	require.Equal(t, 2, task.Attempts, "the killed attempt counts")
	require.Nil(t, task.Error)
}

func TestAgentSIGTERMHandsTaskBack(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	createTable(e, 1000)
	n1, n2 := e.Node("n1"), e.Node("n2")
	n2.Exec(t, `UPDATE t SET v = 'changed' WHERE id = 500`)
	release := lockTable(t, n2)
	first := startAgentProc(t, n1, "ACE_SHUTDOWN_GRACE=1s")
	id := submitDiff(t, n1, "public.t")
	waitBlocked(t, n1, n2, id)

	first.signal(t, syscall.SIGTERM)
	require.Equal(t, exitOK, first.wait(t, 30*time.Second), first.out.String())
	require.Contains(t, first.out.String(), "task handed back")
	task := getTask(t, n1, id)
	require.Equal(t, sqlapi.StatusQueued, task.Status)
	require.Equal(t, 0, task.Attempts, "a handed-back attempt does not count")
	require.Nil(t, task.ClaimedBy)

	release()
	startAgentProc(t, n1)
	task = n1.Wait(t, id)
	requireDiffResult(t, task)
	require.Equal(t, 1, task.Attempts)
}
