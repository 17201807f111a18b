// Package testcluster gives tests a real PostgreSQL cluster: one set of localpg instances per
// test package, and for each test its own database on every node with the ace schema installed
// and the nodes registered.
package testcluster

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/agent"
	"github.com/ace-agent/ace-agent/internal/localpg"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// NodeCount is the size of the shared cluster.
const NodeCount = 3

var (
	shared *localpg.Cluster
	dbSeq  atomic.Int64
)

// Main starts the package's cluster, runs the tests and stops it. Call it from TestMain.
func Main(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	c, err := localpg.Start(ctx, localpg.Options{Nodes: NodeCount})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testcluster:", err)
		os.Exit(2)
	}
	shared = c
	code := m.Run()
	ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	for _, c := range []*localpg.Cluster{c, secure.cluster} {
		if c == nil {
			continue
		}
		if err := c.Stop(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "testcluster:", err)
		}
	}
	cancel()
	os.Exit(code)
}

// Env is one test's database on every node.
type Env struct {
	T     testing.TB
	DB    string
	Nodes []*Node
}

// Node is a test database on one instance.
type Node struct {
	Name     string
	DSN      string // the superuser's
	AgentDSN string // the agent's own login: DSN, except on a secure cluster
	Instance *localpg.Instance
	Pool     *pgxpool.Pool // the superuser's
}

var unsafeChars = regexp.MustCompile(`[^a-z0-9_]+`)

// New creates the test's database on every node, installs the ace schema there, and registers
// every node on every node.
func New(t testing.TB) *Env {
	t.Helper()
	require.NotNil(t, shared, "testcluster.Main was not called from TestMain")
	return NewOn(t, shared.Nodes, testDBName(t))
}

// testDBName is a database name for the test, unique in the process.
func testDBName(t testing.TB) string {
	name := unsafeChars.ReplaceAllString(strings.ToLower(t.Name()), "_")
	db := fmt.Sprintf("t%d_%s", dbSeq.Add(1), name)
	return db[:min(len(db), 40)] // room for role names made from it
}

// NewOn makes database db ready on the given instances (a cluster of a test's own): it creates
// the database where it is missing, installs the ace schema and registers every node on every
// node.
func NewOn(t testing.TB, instances []*localpg.Instance, db string) *Env {
	t.Helper()
	ctx := context.Background()
	e := &Env{T: t, DB: db}
	for _, inst := range instances {
		admin, err := pgx.Connect(ctx, inst.DSN("postgres"))
		require.NoError(t, err)
		var exists bool
		require.NoError(t, admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, db).Scan(&exists))
		if !exists {
			_, err = admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{db}.Sanitize())
			require.NoError(t, err)
		}
		require.NoError(t, admin.Close(ctx))
		n := &Node{Name: inst.Name, DSN: inst.DSN(db), AgentDSN: inst.DSN(db), Instance: inst}
		n.Pool, err = pgxpool.New(ctx, n.DSN)
		require.NoError(t, err)
		t.Cleanup(n.Pool.Close)
		e.Nodes = append(e.Nodes, n)
	}
	for _, n := range e.Nodes {
		conn, err := n.Pool.Acquire(ctx)
		require.NoError(t, err)
		_, err = sqlapi.Install(ctx, conn.Conn())
		conn.Release()
		require.NoError(t, err)
		for _, peer := range e.Nodes {
			require.NoError(t, sqlapi.AddNode(ctx, n.Pool, sqlapi.RegisteredNode{Name: peer.Name, ConnInfo: peer.DSN}))
		}
	}
	return e
}

// Node returns the named node.
func (e *Env) Node(name string) *Node {
	for _, n := range e.Nodes {
		if n.Name == name {
			return n
		}
	}
	e.T.Fatalf("no node %s", name)
	return nil
}

// ExecAll runs sql on every node.
func (e *Env) ExecAll(sql string, args ...any) {
	e.T.Helper()
	for _, n := range e.Nodes {
		n.Exec(e.T, sql, args...)
	}
}

// DropSlotsAtEnd drops the test database's replication slots (the Merkle trees' change
// streams) when the test ends: a slot left behind holds WAL on the shared cluster. Call it
// before starting agents, so that it runs after they stop and their slots are idle.
func (e *Env) DropSlotsAtEnd() {
	e.T.Cleanup(func() {
		for _, n := range e.Nodes {
			_, _ = n.Pool.Exec(context.Background(), `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
				WHERE database = current_database() AND NOT active`)
		}
	})
}

// Exec runs sql on the node.
func (n *Node) Exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	_, err := n.Pool.Exec(context.Background(), sql, args...)
	require.NoError(t, err, "on %s: %s", n.Name, sql)
}

// Agent is an agent running inside the test process.
type Agent struct {
	*agent.Agent
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// AgentConfig is the configuration tests run agents with: short intervals so recovery and
// polling happen within a test's patience.
func (n *Node) AgentConfig() agent.Config {
	return agent.Config{
		DSN: cmp.Or(n.AgentDSN, n.DSN), Node: n.Name, MaxTasks: 4, DiffWorkers: 2,
		PollInterval: 200 * time.Millisecond, HeartbeatInterval: 200 * time.Millisecond,
		StaleAfter: 5 * time.Second, ShutdownGrace: 5 * time.Second, ProgressInterval: 50 * time.Millisecond,
		ScheduleInterval: 100 * time.Millisecond,
		ReportDir:        filepath.Join(os.TempDir(), "ace-agent-test-reports"),
	}
}

// StartAgent runs an agent for the node until the test ends (or Stop).
func (n *Node) StartAgent(t testing.TB) *Agent {
	return n.StartAgentWith(t, n.AgentConfig())
}

// StartAgentWith runs an agent with the given configuration.
func (n *Node) StartAgentWith(t testing.TB, cfg agent.Config) *Agent {
	t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithCancel(context.Background())
	a := &Agent{Agent: agent.New(cfg, log), cancel: cancel, done: make(chan error, 1)}
	go func() { a.done <- a.Run(ctx) }()
	t.Cleanup(func() { _ = a.Stop() })
	return a
}

// Stop shuts the agent down gracefully and returns what Run returned.
func (a *Agent) Stop() error {
	a.once.Do(func() {
		a.cancel()
		a.err = <-a.done
	})
	return a.err
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Wait waits for a task with ace.wait, as a DBA would, and returns it.
func (n *Node) Wait(t testing.TB, id uuid.UUID) sqlapi.Task {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := n.Pool.Exec(ctx, `SELECT ace.wait($1, '2 minutes')`, id)
	require.NoError(t, err)
	task, err := sqlapi.GetTask(ctx, n.Pool, id)
	require.NoError(t, err)
	return task
}
