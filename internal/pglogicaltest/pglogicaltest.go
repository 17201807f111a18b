// Package pglogicaltest builds a real multi-master pglogical cluster from localpg instances for
// tests: every node runs PostgreSQL 15 with pglogical preloaded, and every node subscribes to every
// other node with forward_origins = '{}', so a change travels exactly one hop, from the node that
// made it to each other node, and nothing loops.
//
// Besides building the cluster it gives tests what they need to plant and observe drift:
// WaitForReplication (a marker round trip through every enabled subscription), Disable/Enable of
// one subscription, and WriteLocalOnly, which changes data on one node without replicating it.
//
// Observed with Debian's postgresql-15-pglogical 2.4.2 (see pglogicaltest_test.go):
//
//   - Disabling a subscription only pauses it: the provider's slot keeps the changes, and enabling
//     the subscription again replays everything written in the meantime. Disabling therefore
//     plants only temporary drift.
//   - A transaction committed in a session that has a replication origin set up
//     (pg_replication_origin_session_setup) carries that origin, and pglogical's output plugin
//     drops every change with an origin when the subscription's forward_origins is empty. That
//     is persistent drift, and it is what WriteLocalOnly does. Ordinary writes made afterwards,
//     even to the drifted rows, replicate as usual; a replicated UPDATE or DELETE of a row the
//     subscriber lacks is skipped ("CONFLICT ... tuple not found. Resolution: skip"), so the
//     drift stays.
//   - forward_origins = '{}' is what keeps the full mesh sane: with '{all}' every change is
//     forwarded by every node to every other node, including back to its origin, and replication
//     ping-pongs for ever (hundreds of thousands of transactions a minute, markers never settle).
//   - pglogical logs "CONFLICT: remote UPDATE ... Resolution: apply_remote" whenever the local row
//     was last written by a different origin, which in a mesh is routine, not an error.
//   - With an ENABLE ALWAYS trigger on a replicated table, pglogical's apply logs "WARNING:
//     relcache reference leak" on commit; the change is still applied correctly.
package pglogicaltest

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/localpg"
)

const (
	// ReplicationSet is the pglogical replication set every node publishes and subscribes to.
	ReplicationSet = "default"
	// MarkerSchema holds the harness's own replicated table; it is kept out of schema public so
	// that diffs of public do not see it.
	MarkerSchema = "pglogicaltest"
	// MarkerTable is the replicated table WaitForReplication bumps: one row per node, written only
	// by that node.
	MarkerTable = MarkerSchema + ".ace_test_marker"
	// LocalOnlyOrigin is the replication origin WriteLocalOnly writes under.
	LocalOnlyOrigin = "ace_test_local_only"

	startTimeout = 60 * time.Second // subscriptions reaching 'replicating'
	waitTimeout  = 60 * time.Second // WaitForReplication, Disable/EnableSubscription
	pollInterval = 50 * time.Millisecond
)

// Cluster is a multi-master pglogical cluster: every node subscribes to every other node.
type Cluster struct {
	Local *localpg.Cluster // the PostgreSQL instances; stopped when the test ends
	DB    string           // the database replicated on every instance
	Nodes []*Node          // n1..nN, in order

	downSince map[string]time.Time // new subscriptions seen down, by node/name (restartIfStuck)
}

// Node is the replicated database on one instance.
type Node struct {
	Name     string            // pglogical node name, equal to the instance name (n1, n2, ...)
	DSN      string            // libpq connection string to DB on this instance
	Instance *localpg.Instance // the server
	Pool     *pgxpool.Pool     // connections to DSN, closed when the test ends

	localOnly sync.Mutex // a replication origin can be active in only one session at a time
}

// Settings are the server settings Start adds to localpg's defaults for n nodes: pglogical
// preloaded, logical WAL, commit timestamps (pglogical's conflict resolution uses them), and
// enough slots, origins, senders and workers for a full mesh.
func Settings(n int) map[string]string {
	slots := strconv.Itoa(max(20, 2*n+10))
	return map[string]string{
		"shared_preload_libraries":     "pglogical",
		"wal_level":                    "logical",
		"track_commit_timestamp":       "on",
		"max_replication_slots":        slots, // also bounds replication origins
		"max_wal_senders":              slots,
		"max_worker_processes":         strconv.Itoa(max(32, 2*n+20)),
		"pglogical.conflict_log_level": "log", // the default, made explicit: conflicts show in the server log
	}
}

// SubscriptionName is the name of the subscription on node `to` that receives node from's changes.
func SubscriptionName(to, from string) string { return "sub_" + to + "_" + from }

// Start starts n fresh localpg instances with pglogical, creates database db on each, makes each
// a pglogical node, runs setupSQL (DDL such as CREATE TABLE with primary keys) on every node, adds
// all tables of schema public to the 'default' replication set, and subscribes every node to
// every other node (subscription sub_<to>_<from>, no data or structure sync, forward_origins
// '{}'). It returns once every subscription is 'replicating' and a write on every node has
// arrived on every other node. The cluster is stopped when the test ends.
func Start(t testing.TB, n int, db string, setupSQL string) *Cluster {
	t.Helper()
	require.GreaterOrEqual(t, n, 2, "pglogicaltest: a multi-master cluster needs at least 2 nodes")
	begin := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	local := localpg.StartT(t, localpg.Options{Nodes: n, Settings: Settings(n)})
	started := time.Now()
	c := &Cluster{Local: local, DB: db}
	for _, inst := range local.Nodes {
		c.Nodes = append(c.Nodes, &Node{Name: inst.Name, DSN: inst.DSN(db), Instance: inst})
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for k, node := range c.Nodes {
		wg.Go(func() { errs[k] = node.setup(ctx, c, setupSQL) })
	}
	wg.Wait()
	for _, node := range c.Nodes {
		if node.Pool != nil {
			t.Cleanup(node.Pool.Close) // cleanups run last-in first-out: before localpg's stop
		}
	}
	for _, err := range errs {
		if err != nil {
			t.Fatalf("pglogicaltest: %v\n%s", err, c.logTails())
		}
	}
	for _, to := range c.Nodes {
		for _, from := range c.Nodes {
			if to == from {
				continue
			}
			_, err := to.Pool.Exec(ctx, `SELECT pglogical.create_subscription(
				subscription_name := $1, provider_dsn := $2, replication_sets := ARRAY[$3],
				synchronize_structure := false, synchronize_data := false, forward_origins := '{}')`,
				SubscriptionName(to.Name, from.Name), from.DSN, ReplicationSet)
			if err != nil {
				t.Fatalf("pglogicaltest: create subscription %s: %v\n%s", SubscriptionName(to.Name, from.Name), err, c.logTails())
			}
		}
	}
	subscribed := time.Now()
	c.waitStatus(t, startTimeout, "after creating the subscriptions", func(sub subStatus) bool {
		if sub.status == "down" && sub.enabled {
			c.restartIfStuck(sub)
		}
		return sub.status == "replicating"
	})
	replicating := time.Now()
	c.WaitForReplication(t)
	ms := func(a, b time.Time) time.Duration { return b.Sub(a).Round(time.Millisecond) }
	t.Logf("pglogicaltest: %d-node pglogical cluster (database %s) ready in %v: instances %v, nodes and schema %v, subscriptions replicating %v, first round trip %v",
		n, db, ms(begin, time.Now()), ms(begin, started), ms(started, subscribed), ms(subscribed, replicating), ms(replicating, time.Now()))
	return c
}

// setup creates the database, the pglogical node, the marker table and the caller's schema.
func (n *Node) setup(ctx context.Context, c *Cluster, setupSQL string) error {
	admin, err := pgx.Connect(ctx, n.Instance.DSN("postgres"))
	if err != nil {
		return fmt.Errorf("connect to %s: %w", n.Name, err)
	}
	_, err = admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{c.DB}.Sanitize())
	admin.Close(ctx)
	if err != nil {
		return fmt.Errorf("create database %s on %s: %w", c.DB, n.Name, err)
	}
	if n.Pool, err = pgxpool.New(ctx, n.DSN); err != nil {
		return fmt.Errorf("pool for %s: %w", n.Name, err)
	}
	var values []string
	for _, peer := range c.Nodes {
		values = append(values, "("+quoteLiteral(peer.Name)+", 0)")
	}
	steps := []struct{ what, sql string }{
		{"create extension pglogical", "CREATE EXTENSION pglogical"},
		{"create pglogical node", fmt.Sprintf("SELECT pglogical.create_node(node_name := %s, dsn := %s)",
			quoteLiteral(n.Name), quoteLiteral(n.DSN))},
		{"create replication origin", fmt.Sprintf("SELECT pg_replication_origin_create(%s)", quoteLiteral(LocalOnlyOrigin))},
		{"create marker table", fmt.Sprintf(`CREATE SCHEMA %s;
			CREATE TABLE %s (node text PRIMARY KEY, seq bigint NOT NULL);
			INSERT INTO %s VALUES %s`, MarkerSchema, MarkerTable, MarkerTable, strings.Join(values, ", "))},
		{"run setup SQL", setupSQL},
		{"add tables to replication set", fmt.Sprintf(`SELECT pglogical.replication_set_add_all_tables(%s, ARRAY['public']);
			SELECT pglogical.replication_set_add_table(%s, %s)`,
			quoteLiteral(ReplicationSet), quoteLiteral(ReplicationSet), quoteLiteral(MarkerTable))},
	}
	for _, s := range steps {
		if strings.TrimSpace(s.sql) == "" {
			continue
		}
		// Exec without arguments uses the simple protocol, so multi-statement SQL works.
		if _, err := n.Pool.Exec(ctx, s.sql); err != nil {
			return fmt.Errorf("%s on %s: %w", s.what, n.Name, err)
		}
	}
	return nil
}

// Node returns the named node; it panics on an unknown name, which is a bug in the test.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	panic(fmt.Sprintf("pglogicaltest: no node %q", name))
}

// DisableSubscription stops node on from applying node from's changes
// (pglogical.alter_subscription_disable with immediate := true) and waits until the subscription
// reports 'disabled'. The provider keeps the changes in its slot: EnableSubscription replays them.
func (c *Cluster) DisableSubscription(t testing.TB, on, from string) {
	t.Helper()
	c.alterSubscription(t, on, from, "alter_subscription_disable", "disabled")
}

// EnableSubscription resumes a subscription disabled by DisableSubscription and waits until it
// reports 'replicating'. It does not wait for the backlog: call WaitForReplication for that.
func (c *Cluster) EnableSubscription(t testing.TB, on, from string) {
	t.Helper()
	c.alterSubscription(t, on, from, "alter_subscription_enable", "replicating")
}

func (c *Cluster) alterSubscription(t testing.TB, on, from, fn, want string) {
	t.Helper()
	name := SubscriptionName(on, from)
	node := c.Node(on)
	var ok bool
	err := node.Pool.QueryRow(context.Background(),
		"SELECT pglogical."+fn+"(subscription_name := $1, immediate := true)", name).Scan(&ok)
	require.NoError(t, err, "pglogicaltest: %s(%s) on %s", fn, name, on)
	c.waitStatus(t, waitTimeout, fmt.Sprintf("after %s(%s)", fn, name), func(sub subStatus) bool {
		return sub.node != on || sub.name != name || sub.status == want
	})
}

// WaitForReplication waits until every node has applied everything every other node committed
// before the call, through every enabled subscription. It bumps each node's row in MarkerTable
// and waits for the new values to arrive on the other nodes; pglogical applies a provider's
// transactions in commit order, so a marker's arrival means everything before it arrived too.
// Disabled subscriptions are skipped. It fails the test after a minute, showing what is still
// missing, the subscription status and the server log tails.
func (c *Cluster) WaitForReplication(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	want := map[string]int64{}
	for _, n := range c.Nodes {
		var seq int64
		err := n.Pool.QueryRow(context.Background(), "UPDATE "+MarkerTable+" SET seq = seq + 1 WHERE node = $1 RETURNING seq", n.Name).Scan(&seq)
		require.NoError(t, err, "pglogicaltest: bump marker on %s", n.Name)
		want[n.Name] = seq
	}
	var lagging []string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		lag, err := c.lagging(ctx, want)
		cancel()
		if err == nil && len(lag) == 0 {
			return
		}
		if err == nil {
			lagging = lag
		}
		if time.Now().After(deadline) {
			if err != nil {
				lagging = append(lagging, err.Error())
			}
			t.Fatalf("pglogicaltest: replication did not catch up within %v:\n  %s\n%s",
				waitTimeout, strings.Join(lagging, "\n  "), c.diagnostics())
		}
		time.Sleep(pollInterval)
	}
}

// lagging lists the enabled subscriptions whose provider's marker has not yet reached want.
func (c *Cluster) lagging(ctx context.Context, want map[string]int64) ([]string, error) {
	subs, err := c.subscriptions(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, sub := range subs {
		if !sub.enabled {
			continue
		}
		var seq int64
		err := c.Node(sub.node).Pool.QueryRow(ctx, "SELECT seq FROM "+MarkerTable+" WHERE node = $1", sub.provider).Scan(&seq)
		if err != nil {
			return nil, fmt.Errorf("read marker of %s on %s: %w", sub.provider, sub.node, err)
		}
		if seq < want[sub.provider] {
			out = append(out, fmt.Sprintf("%s (%s): marker of %s is %d on %s, want %d",
				sub.name, sub.status, sub.provider, seq, sub.node, want[sub.provider]))
		}
	}
	return out, nil
}

// WriteLocalOnly runs sql in one transaction on the named node so that it does not replicate: the
// session first sets up the replication origin LocalOnlyOrigin, so the commit carries an origin,
// and subscriptions with forward_origins '{}' (all of this cluster's) skip such changes. Later
// ordinary writes replicate as before. This is how tests plant lasting drift.
func (c *Cluster) WriteLocalOnly(t testing.TB, node string, sql string, args ...any) {
	t.Helper()
	n := c.Node(node)
	n.localOnly.Lock()
	defer n.localOnly.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	// A connection of its own, so the origin never leaks into the pool's sessions.
	conn, err := pgx.Connect(ctx, n.DSN)
	require.NoError(t, err, "pglogicaltest: connect to %s", node)
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, "SELECT pg_replication_origin_session_setup($1)", LocalOnlyOrigin)
	require.NoError(t, err, "pglogicaltest: set up origin %s on %s", LocalOnlyOrigin, node)
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, sql, args...)
		return err
	})
	require.NoError(t, err, "pglogicaltest: local-only write on %s: %s", node, sql)
	_, err = conn.Exec(ctx, "SELECT pg_replication_origin_session_reset()")
	require.NoError(t, err, "pglogicaltest: reset origin on %s", node)
}

// ExecAll runs sql on every node, e.g. DDL for a table created after Start (see AddTable).
func (c *Cluster) ExecAll(t testing.TB, sql string, args ...any) {
	t.Helper()
	for _, n := range c.Nodes {
		n.Exec(t, sql, args...)
	}
}

// AddTable adds a table that exists on every node to the replication set on every node, without
// copying data. Start already added the tables of schema public that setupSQL created.
func (c *Cluster) AddTable(t testing.TB, table string) {
	t.Helper()
	c.ExecAll(t, "SELECT pglogical.replication_set_add_table($1, $2::regclass, false)", ReplicationSet, table)
}

// QueryAll runs a query on every node and returns the rows by node name.
func (c *Cluster) QueryAll(t testing.TB, sql string, args ...any) map[string][][]any {
	t.Helper()
	out := map[string][][]any{}
	for _, n := range c.Nodes {
		out[n.Name] = n.QueryRows(t, sql, args...)
	}
	return out
}

// RequireSameRows fails the test unless the query returns the same rows on every node. Give it
// an ORDER BY.
func (c *Cluster) RequireSameRows(t testing.TB, sql string, args ...any) [][]any {
	t.Helper()
	all := c.QueryAll(t, sql, args...)
	first := c.Nodes[0].Name
	for _, n := range c.Nodes[1:] {
		require.Equal(t, all[first], all[n.Name], "rows of %s and %s differ: %s", first, n.Name, sql)
	}
	return all[first]
}

// Exec runs sql on the node (several statements are fine when there are no args).
func (n *Node) Exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	_, err := n.Pool.Exec(context.Background(), sql, args...)
	require.NoError(t, err, "on %s: %s", n.Name, sql)
}

// QueryRows runs a query on the node and returns every row's values as pgx decodes them (int32
// for int, string for text, nil for NULL, ...); an empty result is an empty, non-nil slice, so
// results of different nodes compare with require.Equal.
func (n *Node) QueryRows(t testing.TB, sql string, args ...any) [][]any {
	t.Helper()
	rows, err := n.Pool.Query(context.Background(), sql, args...)
	require.NoError(t, err, "on %s: %s", n.Name, sql)
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([]any, error) { return r.Values() })
	require.NoError(t, err, "on %s: %s", n.Name, sql)
	if out == nil {
		out = [][]any{}
	}
	return out
}

// subStatus is one subscription as its subscriber sees it.
type subStatus struct {
	node, name, provider, status string
	enabled                      bool
}

func (s subStatus) String() string {
	return fmt.Sprintf("%s on %s from %s: %s (enabled=%t)", s.name, s.node, s.provider, s.status, s.enabled)
}

// subscriptions lists every node's subscriptions with their status.
func (c *Cluster) subscriptions(ctx context.Context) ([]subStatus, error) {
	var out []subStatus
	for _, n := range c.Nodes {
		rows, err := n.Pool.Query(ctx, `SELECT s.subscription_name, s.provider_node, s.status, sub.sub_enabled
			FROM pglogical.show_subscription_status() s
			JOIN pglogical.subscription sub ON sub.sub_name = s.subscription_name
			ORDER BY 1`)
		if err != nil {
			return nil, fmt.Errorf("subscription status on %s: %w", n.Name, err)
		}
		subs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (subStatus, error) {
			s := subStatus{node: n.Name}
			return s, r.Scan(&s.name, &s.provider, &s.status, &s.enabled)
		})
		if err != nil {
			return nil, fmt.Errorf("subscription status on %s: %w", n.Name, err)
		}
		out = append(out, subs...)
	}
	return out, nil
}

// waitStatus waits until the full mesh of subscriptions exists and ok holds for each of them.
func (c *Cluster) waitStatus(t testing.TB, timeout time.Duration, when string, ok func(subStatus) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	want := len(c.Nodes) * (len(c.Nodes) - 1)
	for {
		subs, err := c.subscriptions(ctx)
		if err == nil && len(subs) == want && !slices.ContainsFunc(subs, func(s subStatus) bool { return !ok(s) }) {
			return
		}
		if ctx.Err() != nil {
			msg := fmt.Sprintf("%d subscriptions, want %d", len(subs), want)
			if err != nil {
				msg = err.Error()
			}
			t.Fatalf("pglogicaltest: subscriptions not in the expected state within %v %s: %s\n%s",
				timeout, when, msg, c.diagnostics())
		}
		time.Sleep(pollInterval)
	}
}

// stuckAfter is how long a new subscription may stay down before restartIfStuck restarts it.
const stuckAfter = 10 * time.Second

// restartIfStuck disables and enables again a new subscription that has been down for
// stuckAfter. Under load, pglogical's manager can start a second apply worker for a
// subscription whose first is still starting; the second fails on the replication origin the
// first holds ("replication origin with ID … is already active"), and the subscription can then
// stay down.
func (c *Cluster) restartIfStuck(sub subStatus) {
	key := sub.node + "/" + sub.name
	if c.downSince == nil {
		c.downSince = map[string]time.Time{}
	}
	since, seen := c.downSince[key]
	if !seen {
		c.downSince[key] = time.Now()
		return
	}
	if time.Since(since) < stuckAfter {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Errors are left to the wait, which reports the subscriptions as they end up.
	_, _ = c.Node(sub.node).Pool.Exec(ctx, `SELECT pglogical.alter_subscription_disable($1, true)`, sub.name)
	_, _ = c.Node(sub.node).Pool.Exec(ctx, `SELECT pglogical.alter_subscription_enable($1, true)`, sub.name)
	delete(c.downSince, key)
}

// diagnostics describes the subscriptions and shows the end of every server log.
func (c *Cluster) diagnostics() string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var b strings.Builder
	b.WriteString("subscriptions:\n")
	subs, err := c.subscriptions(ctx)
	if err != nil {
		fmt.Fprintf(&b, "  (%v)\n", err)
	}
	for _, s := range subs {
		fmt.Fprintf(&b, "  %s\n", s)
	}
	b.WriteString(c.logTails())
	return b.String()
}

// logTails returns the last few kilobytes of every server log.
func (c *Cluster) logTails() string {
	var b strings.Builder
	for _, n := range c.Nodes {
		fmt.Fprintf(&b, "--- %s (%s), end of log:\n%s\n", n.Name, n.Instance.LogFile(), tail(n.Instance.LogFile()))
	}
	return b.String()
}

// tail returns the last lines of a file, each cut to a readable length.
func tail(path string) string {
	const maxLines, maxLine = 40, 400
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > 256<<10 {
		_, _ = f.Seek(-256<<10, io.SeekEnd)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	lines = lines[max(0, len(lines)-maxLines):]
	for k, l := range lines {
		if len(l) > maxLine {
			lines[k] = l[:maxLine] + " …"
		}
	}
	return strings.Join(lines, "\n")
}

func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
