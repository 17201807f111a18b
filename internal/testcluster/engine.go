package testcluster

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/repair"
)

// Helpers for the tests that call the engine's packages directly (engine, engine/diff,
// engine/repair, engine/mtree) rather than through the agent's tasks.

// CreateTable runs ddl (a table's definition, and rows to put in it) on every node.
func (e *Env) CreateTable(ddl string) {
	e.T.Helper()
	e.ExecAll(ddl)
}

// SeedTable creates table (id int PRIMARY KEY, v text) on every node with the same rows
// 1..rows, whose v is 'v' || id: the table most diff and repair tests start from.
func (e *Env) SeedTable(table string, rows int) {
	e.T.Helper()
	e.CreateTable(fmt.Sprintf(`CREATE TABLE %s (id int PRIMARY KEY, v text NOT NULL);
		INSERT INTO %[1]s SELECT g, 'v' || g FROM generate_series(1, %d) g`, table, rows))
}

// EngineNodes opens every node as an engine.Node logged in as the superuser, with at most
// maxConns connections each; they are closed when the test ends.
func (e *Env) EngineNodes(maxConns int32) []*engine.Node {
	e.T.Helper()
	nodes := make([]*engine.Node, 0, len(e.Nodes))
	for _, n := range e.Nodes {
		nodes = append(nodes, n.EngineNode(e.T, maxConns, nil))
	}
	return nodes
}

// EngineNode opens the node as an engine.Node logged in as the superuser, with the given extra
// settings; it is closed when the test ends.
func (n *Node) EngineNode(t testing.TB, maxConns int32, settings map[string]string) *engine.Node {
	t.Helper()
	node, err := engine.OpenNode(context.Background(), engine.NodeOptions{Name: n.Name, ConnInfo: n.DSN, MaxConns: maxConns, Settings: settings})
	require.NoError(t, err)
	t.Cleanup(node.Close)
	return node
}

// Drift is what PlantDrift changed: per node, the keys it updated, inserted and deleted.
type Drift struct {
	Updated, Inserted, Deleted map[string][]int
}

// Keys lists every key the drift touched, sorted, once each.
func (d Drift) Keys() []int {
	seen := map[int]bool{}
	for _, m := range []map[string][]int{d.Updated, d.Inserted, d.Deleted} {
		for _, ks := range m {
			for _, k := range ks {
				seen[k] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

// PlantDrift makes changes random changes to a table made by SeedTable with the given rows, each
// on one random node: an update of an existing key, an insert of a key beyond rows, or a delete.
// A key is changed at most once, so every changed key differs between the nodes afterwards.
func (e *Env) PlantDrift(r *rand.Rand, table string, rows, changes int) Drift {
	e.T.Helper()
	d := Drift{Updated: map[string][]int{}, Inserted: map[string][]int{}, Deleted: map[string][]int{}}
	used := map[int]bool{}
	for i := 0; i < changes; i++ {
		n := e.Nodes[r.IntN(len(e.Nodes))]
		switch r.IntN(3) {
		case 0:
			k := freshKey(r, used, 1, rows)
			n.Exec(e.T, fmt.Sprintf(`UPDATE %s SET v = $1 WHERE id = $2`, table), fmt.Sprintf("drift %d", i), k)
			d.Updated[n.Name] = append(d.Updated[n.Name], k)
		case 1:
			k := freshKey(r, used, rows+1, 2*rows)
			n.Exec(e.T, fmt.Sprintf(`INSERT INTO %s VALUES ($1, $2)`, table), k, fmt.Sprintf("extra %d", i))
			d.Inserted[n.Name] = append(d.Inserted[n.Name], k)
		default:
			k := freshKey(r, used, 1, rows)
			n.Exec(e.T, fmt.Sprintf(`DELETE FROM %s WHERE id = $1`, table), k)
			d.Deleted[n.Name] = append(d.Deleted[n.Name], k)
		}
	}
	return d
}

// freshKey draws a key in [lo, hi] not drawn before.
func freshKey(r *rand.Rand, used map[int]bool, lo, hi int) int {
	for {
		k := lo + r.IntN(hi-lo+1)
		if !used[k] {
			used[k] = true
			return k
		}
	}
}

// DifferingKeys reads table (key column key) on every node with plain SQL and returns, sorted as
// text, the keys whose rows are not identical on every node: the answer a diff must give.
func (e *Env) DifferingKeys(table, key string) []string {
	e.T.Helper()
	rows := map[string]map[string]string{} // key -> node -> row
	for _, n := range e.Nodes {
		got, err := n.Pool.Query(context.Background(), fmt.Sprintf(`SELECT (to_jsonb(t)->>%s), to_jsonb(t)::text FROM %s t`,
			engine.QuoteLiteral(key), table))
		require.NoError(e.T, err)
		for got.Next() {
			var k, row string
			require.NoError(e.T, got.Scan(&k, &row))
			if rows[k] == nil {
				rows[k] = map[string]string{}
			}
			rows[k][n.Name] = row
		}
		require.NoError(e.T, got.Err())
	}
	var out []string
	for k, perNode := range rows {
		first := perNode[e.Nodes[0].Name]
		for _, n := range e.Nodes {
			if row, ok := perNode[n.Name]; !ok || row != first {
				out = append(out, k)
				break
			}
		}
	}
	sort.Strings(out)
	return out
}

// DiffSink keeps a diff's differing rows in memory: an engine.Sink.
type DiffSink struct {
	mu   sync.Mutex
	Rows []engine.DiffRow
}

// WriteDiffRows keeps the rows.
func (s *DiffSink) WriteDiffRows(_ context.Context, rows []engine.DiffRow) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Rows = append(s.Rows, rows...)
	return nil
}

// Keys returns the differing keys as their JSON arrays (DiffRow.PKSort), sorted as text.
func (s *DiffSink) Keys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string // nil when nothing differs, as tests compare it
	for _, r := range s.Rows {
		out = append(out, string(r.PKSort))
	}
	sort.Strings(out)
	return out
}

// ByKey returns the differing rows by their key's JSON array (DiffRow.PKSort), such as "[7]".
func (s *DiffSink) ByKey() map[string]engine.DiffRow {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]engine.DiffRow, len(s.Rows))
	for _, r := range s.Rows {
		out[string(r.PKSort)] = r
	}
	return out
}

// Source streams the rows in key order, as a repair reads a stored diff (a repair.DiffSource).
func (s *DiffSink) Source() func(ctx context.Context, fn func(engine.DiffRow) error) error {
	s.mu.Lock()
	rows := slices.Clone(s.Rows)
	s.mu.Unlock()
	slices.SortFunc(rows, func(a, b engine.DiffRow) int { return strings.Compare(string(a.PKSort), string(b.PKSort)) })
	return func(_ context.Context, fn func(engine.DiffRow) error) error {
		for _, r := range rows {
			if err := fn(r); err != nil {
				return err
			}
		}
		return nil
	}
}

// RowOf decodes a differing row's version on a node; nil where the node lacks the row.
func RowOf(t testing.TB, d engine.DiffRow, node string) map[string]any {
	t.Helper()
	var row map[string]any
	require.NoError(t, json.Unmarshal(d.Rows[node], &row))
	return row
}

// RepairSink keeps a repair's actions in memory, and the nodes it committed.
type RepairSink struct {
	mu      sync.Mutex
	Actions []repair.Action
	Applied []string
}

// WriteRepairActions keeps the actions.
func (s *RepairSink) WriteRepairActions(_ context.Context, a []repair.Action) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Actions = append(s.Actions, a...)
	return nil
}

// MarkApplied records that the node committed.
func (s *RepairSink) MarkApplied(_ context.Context, node string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Applied = append(s.Applied, node)
	return nil
}
