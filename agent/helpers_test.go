package agent_test

import (
	"context"
	"encoding/json"
	"slices"
	"sort"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// diffEnv is a test database on three nodes with an agent on every node.
type diffEnv struct {
	*testcluster.Env
	t *testing.T
}

func setup(t *testing.T, ddl string) *diffEnv {
	t.Helper()
	e := setupNoAgents(t, ddl)
	for _, n := range e.Nodes {
		n.StartAgent(t)
	}
	return e
}

// setupNoAgents is setup without the agents.
func setupNoAgents(t *testing.T, ddl string) *diffEnv {
	t.Helper()
	e := testcluster.New(t)
	if ddl != "" {
		e.ExecAll(ddl)
	}
	return &diffEnv{Env: e, t: t}
}

// diff submits ace.table_diff on n1 with the given SQL arguments and waits for it.
func (e *diffEnv) diff(args string, params ...any) (uuid.UUID, sqlapi.Task) {
	e.t.Helper()
	n1 := e.Node("n1")
	var id uuid.UUID
	require.NoError(e.t, n1.Pool.QueryRow(context.Background(), `SELECT ace.table_diff(`+args+`)`, params...).Scan(&id))
	return id, n1.Wait(e.t, id)
}

// completedDiff runs a diff that must complete, and returns its summary and rows by key.
func (e *diffEnv) completedDiff(args string, params ...any) (*engine.DiffSummary, map[string]diffRow) {
	e.t.Helper()
	id, task := e.diff(args, params...)
	require.Equal(e.t, sqlapi.StatusCompleted, task.Status, "task error: %v", task.Error)
	var s engine.DiffSummary
	require.NoError(e.t, json.Unmarshal(task.Result, &s))
	return &s, e.diffRows(id)
}

type diffRow struct {
	Kind string
	Rows map[string]map[string]any // node -> row, nil where absent
}

// diffRows reads ace.diff_rows keyed by the key's JSON text.
func (e *diffEnv) diffRows(id uuid.UUID) map[string]diffRow {
	e.t.Helper()
	rows, err := e.Node("n1").Pool.Query(context.Background(), `SELECT pk::text, kind, rows FROM ace.diff_rows($1)`, id)
	require.NoError(e.t, err)
	out := map[string]diffRow{}
	for rows.Next() {
		var pk string
		var r diffRow
		require.NoError(e.t, rows.Scan(&pk, &r.Kind, &r.Rows))
		out[pk] = r
	}
	require.NoError(e.t, rows.Err())
	return out
}

func keys(m map[string]diffRow) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// connectWithNotices connects to dsn and collects the session's NOTICE messages, which notices
// returns in the order they came.
func connectWithNotices(t *testing.T, dsn string) (conn *pgx.Conn, notices func() []string) {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	require.NoError(t, err)
	var mu sync.Mutex
	var got []string
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, n.Message)
	}
	conn, err = pgx.ConnectConfig(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

// last is the nth message from the end of messages (1: the last).
func last(messages []string, nth int) string { return messages[len(messages)-nth] }
