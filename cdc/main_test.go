package cdc_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/cdc"
	"github.com/ace-agent/ace-agent/internal/localpg"
)

// shared is the package's PostgreSQL instance; every test makes its own database on it.
var (
	shared *localpg.Cluster
	dbSeq  atomic.Int64
)

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	c, err := localpg.Start(ctx, localpg.Options{Nodes: 1})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cdc tests:", err)
		os.Exit(2)
	}
	shared = c
	code := m.Run()
	ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	if err := c.Stop(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "cdc tests:", err)
	}
	cancel()
	os.Exit(code)
}

// env is one test's database and slot.
type env struct {
	t    *testing.T
	inst *localpg.Instance
	dsn  string
	pool *pgxpool.Pool
	slot string
}

// setup makes a database of its own for the test on inst (the shared instance when nil) and
// names a slot for it; the slot is dropped when the test ends.
func setup(t *testing.T, inst *localpg.Instance) *env {
	t.Helper()
	if inst == nil {
		inst = shared.Nodes[0]
	}
	n := dbSeq.Add(1)
	db := fmt.Sprintf("cdc_%d", n)
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, inst.DSN("postgres"))
	require.NoError(t, err)
	_, err = admin.Exec(ctx, "CREATE DATABASE "+db)
	require.NoError(t, err)
	require.NoError(t, admin.Close(ctx))
	e := &env{t: t, inst: inst, dsn: inst.DSN(db), slot: fmt.Sprintf("cdc_slot_%d", n)}
	e.pool, err = pgxpool.New(ctx, e.dsn)
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = cdc.DropSlot(context.Background(), e.dsn, e.slot)
		e.pool.Close()
	})
	return e
}

// setupPublished is setup with a table t (id int PRIMARY KEY) in a publication p.
func setupPublished(t *testing.T, inst *localpg.Instance) *env {
	t.Helper()
	e := setup(t, inst)
	e.exec(`CREATE TABLE t (id int PRIMARY KEY)`)
	e.exec(`CREATE PUBLICATION p FOR TABLE t`)
	return e
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	_, err := e.pool.Exec(context.Background(), sql, args...)
	require.NoError(e.t, err, sql)
}

func (e *env) ensureSlot() {
	e.t.Helper()
	created, err := cdc.EnsureSlot(context.Background(), e.dsn, e.slot)
	require.NoError(e.t, err)
	require.True(e.t, created)
}

// streamRow streams publication p until it has delivered and confirmed the insert of row id
// into t, then stops.
func (e *env) streamRow(id int) {
	e.t.Helper()
	rec := &recorder{}
	r := e.run(e.options("p"), rec)
	e.exec(`INSERT INTO t VALUES ($1)`, id)
	rec.waitChanges(e.t, 1)
	require.NoError(e.t, r.stop())
}

// confirmedFlush is the slot's confirmed_flush_lsn.
func (e *env) confirmedFlush() pglogrepl.LSN {
	e.t.Helper()
	var lsn pglogrepl.LSN
	require.NoError(e.t, e.pool.QueryRow(context.Background(),
		`SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, e.slot).Scan(&lsn))
	return lsn
}

func (e *env) options(pubs ...string) cdc.Options {
	return cdc.Options{ConnString: e.dsn, Slot: e.slot, Publications: pubs,
		StatusInterval: time.Second, BatchDelay: 20 * time.Millisecond}
}

// running is a Stream's Run in the background.
type running struct {
	*cdc.Stream
	cancel context.CancelFunc
	done   chan error
}

// run starts Run; stop (or the test's end) cancels it.
func (e *env) run(opts cdc.Options, h cdc.Handler) *running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Stream: cdc.NewStream(opts, h), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- r.Run(ctx) }()
	e.t.Cleanup(func() { _ = r.stop() })
	return r
}

// stop cancels Run and returns what it returned.
func (r *running) stop() error {
	r.cancel()
	err, ok := <-r.done
	if ok {
		close(r.done)
	}
	return err
}

// waitConnected waits until the stream is streaming.
func (r *running) waitConnected(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool { return r.Status().Connected }, 10*time.Second, 10*time.Millisecond)
}

// wait returns what Run returned, failing after a while.
func (r *running) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		close(r.done)
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
		return nil
	}
}

// apply is one call of Handler.Apply.
type apply struct {
	txns []cdc.Txn
	upTo pglogrepl.LSN
}

// recorder is a Handler that keeps every Apply, failing with fail when it is set.
type recorder struct {
	mu      sync.Mutex
	applies []apply
	calls   int
	fail    error
	block   bool // Apply waits for its context to end
}

func (r *recorder) Apply(ctx context.Context, txns []cdc.Txn, upTo pglogrepl.LSN) error {
	r.mu.Lock()
	r.calls++
	fail, block := r.fail, r.block
	r.mu.Unlock()
	if block {
		<-ctx.Done()
		return ctx.Err()
	}
	if fail != nil {
		return fail
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// upTo grows with every Apply, except one that hands over part of a transaction.
	partial := len(txns) > 0 && txns[len(txns)-1].Partial
	if n := len(r.applies); n > 0 && (upTo < r.applies[n-1].upTo || upTo == r.applies[n-1].upTo && !partial) {
		return fmt.Errorf("upTo went from %s to %s", r.applies[n-1].upTo, upTo)
	}
	r.applies = append(r.applies, apply{txns: txns, upTo: upTo})
	return nil
}

// called reports how many times Apply was called.
func (r *recorder) called() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// txns is every transaction delivered so far.
func (r *recorder) txns() []cdc.Txn {
	r.mu.Lock()
	defer r.mu.Unlock()
	var all []cdc.Txn
	for _, a := range r.applies {
		all = append(all, a.txns...)
	}
	return all
}

// changes is every change delivered so far, in order.
func (r *recorder) changes() []cdc.RowChange {
	var all []cdc.RowChange
	for _, t := range r.txns() {
		all = append(all, t.Changes...)
	}
	return all
}

// waitChanges waits until n changes have been delivered and returns them.
func (r *recorder) waitChanges(t *testing.T, n int) []cdc.RowChange {
	t.Helper()
	require.Eventually(t, func() bool { return len(r.changes()) >= n }, 15*time.Second, 10*time.Millisecond,
		"waiting for %d changes", n)
	return r.changes()
}

// waitIdle waits for an Apply without transactions up to at least lsn.
func (r *recorder) waitIdle(t *testing.T, lsn pglogrepl.LSN, within time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return slices.ContainsFunc(r.applies, func(a apply) bool { return len(a.txns) == 0 && a.upTo >= lsn })
	}, within, 10*time.Millisecond, "waiting for an idle Apply up to %s", lsn)
}

// text, null, unchanged make expected values.
func text(s string) cdc.Value { return cdc.Value{Text: s} }

var (
	null      = cdc.Value{Null: true}
	unchanged = cdc.Value{Unchanged: true}
)

// localpgStart starts an instance of the test's own with extra settings.
func localpgStart(t *testing.T, settings map[string]string) *localpg.Instance {
	t.Helper()
	return localpg.StartT(t, localpg.Options{Nodes: 1, Settings: settings}).Nodes[0]
}

// startReplication starts streaming the env's slot without the stream's own checks, and returns
// the server's error as the stream classifies it.
func startReplication(t *testing.T, e *env) error {
	t.Helper()
	ctx := context.Background()
	conn, err := pgconn.Connect(ctx, e.dsn+" replication=database")
	require.NoError(t, err)
	defer conn.Close(ctx)
	err = pglogrepl.StartReplication(ctx, conn, e.slot, 0, pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication, PluginArgs: []string{"proto_version '1'", "publication_names 'p'"}})
	require.Error(t, err)
	return cdc.Classify(err)
}
