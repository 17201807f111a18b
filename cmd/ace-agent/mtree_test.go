package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// runTask submits a task with SQL on n and waits for it to end.
func runTask(t *testing.T, n *testcluster.Node, expr string, args ...any) sqlapi.Task {
	t.Helper()
	var id uuid.UUID
	require.NoError(t, n.Pool.QueryRow(context.Background(), `SELECT `+expr, args...).Scan(&id))
	return n.Wait(t, id)
}

// diffedKeys runs a diff task and returns its differing keys.
func diffedKeys(t *testing.T, n *testcluster.Node, expr string) []string {
	t.Helper()
	task := runTask(t, n, expr)
	require.Equal(t, sqlapi.StatusCompleted, task.Status, "%s: %v", expr, task.Error)
	var s engine.DiffSummary
	require.NoError(t, json.Unmarshal(task.Result, &s))
	rows, err := n.Pool.Query(context.Background(), `SELECT pk::text FROM ace.diff_rows($1)`, task.ID)
	require.NoError(t, err)
	var keys []string
	for rows.Next() {
		var k string
		require.NoError(t, rows.Scan(&k))
		keys = append(keys, k)
	}
	require.NoError(t, rows.Err())
	sort.Strings(keys)
	require.EqualValues(t, len(keys), s.DifferingKeys)
	return keys
}

func TestMtreeSurvivesAKilledAgent(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	createTable(e, 20000)
	e.DropSlotsAtEnd()
	n1, n2, n3 := e.Node("n1"), e.Node("n2"), e.Node("n3")
	startAgentProc(t, n1)
	startAgentProc(t, n3)
	victim := startAgentProc(t, n2)
	built := runTask(t, n1, `ace.mtree_build('public.t', leaf_rows => 500)`)
	require.Equal(t, sqlapi.StatusCompleted, built.Status, "build: %v", built.Error)

	// Changes stream from n2 (and nowhere else) while its agent is killed and restarted.
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
		for i := 0; ctx.Err() == nil; i++ {
			k := 1 + r.IntN(25000)
			sql := []string{
				fmt.Sprintf(`UPDATE t SET v = 'w%d' WHERE id = %d`, i, k),
				fmt.Sprintf(`INSERT INTO t VALUES (%d, 'w%d') ON CONFLICT (id) DO UPDATE SET v = excluded.v`, k, i),
				fmt.Sprintf(`DELETE FROM t WHERE id = %d`, k),
				fmt.Sprintf(`UPDATE t SET id = id + 100000 WHERE id = %d`, k),
			}[r.IntN(4)]
			_, _ = n2.Pool.Exec(context.Background(), sql)
		}
	}()
	time.Sleep(700 * time.Millisecond)
	victim.signal(t, syscall.SIGKILL)
	victim.wait(t, 30*time.Second)
	time.Sleep(500 * time.Millisecond)
	startAgentProc(t, n2)
	time.Sleep(700 * time.Millisecond)
	stop()
	wg.Wait()

	got := diffedKeys(t, n1, `ace.mtree_diff('public.t')`)
	want := diffedKeys(t, n1, `ace.table_diff('public.t')`)
	require.NotEmpty(t, want)
	require.Equal(t, want, got, "the tree diff finds every change made around the kill")
}
