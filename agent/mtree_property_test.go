package agent_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/internal/testcluster"
)

// propertySeed is ACE_PROPERTY_SEED, or a fixed seed so a failure reproduces.
func propertySeed(t *testing.T) uint64 {
	if s := os.Getenv("ACE_PROPERTY_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err)
		return seed
	}
	return 20261130
}

// mutation is one random change: SQL for one node, or for every node (a replicated write).
type mutation struct {
	nodes []string
	sql   string
}

// randomMutations returns a round of writes: inserts (beyond the key range too), updates,
// deletes, key-changing updates, and now and then a TRUNCATE, on single nodes or on all.
func randomMutations(r *rand.Rand, keyExpr func(int) string, round int) []mutation {
	all := []string{"n1", "n2", "n3"}
	var out []mutation
	for i := 0; i < 12; i++ {
		nodes := all
		if r.IntN(3) > 0 {
			nodes = []string{all[r.IntN(3)]}
		}
		k := r.IntN(2500)
		var sql string
		switch r.IntN(9) {
		case 0, 1:
			sql = fmt.Sprintf(`INSERT INTO t VALUES (%s, 'new %d-%d', %d.%02d) ON CONFLICT DO NOTHING`, keyExpr(k), round, i, r.IntN(1000), r.IntN(100))
		case 2, 3:
			sql = fmt.Sprintf(`UPDATE t SET v = 'upd %d-%d' WHERE k = %s`, round, i, keyExpr(k))
		case 4:
			sql = fmt.Sprintf(`UPDATE t SET n = -n WHERE k = %s`, keyExpr(k))
		case 5, 6:
			sql = fmt.Sprintf(`DELETE FROM t WHERE k = %s`, keyExpr(k))
		case 7:
			sql = fmt.Sprintf(`UPDATE t SET k = %s WHERE k = %s AND NOT EXISTS (SELECT 1 FROM t WHERE k = %s)`, keyExpr(k+5000), keyExpr(k), keyExpr(k+5000))
		case 8:
			if r.IntN(4) == 0 {
				sql = fmt.Sprintf(`TRUNCATE t; INSERT INTO t SELECT %s, 'refill', g FROM generate_series(1, 300) g`, keyExpr(0)[:0]+keyGen(keyExpr))
			} else {
				sql = fmt.Sprintf(`INSERT INTO t SELECT %s, 'bulk', g FROM generate_series(%d, %d) g ON CONFLICT DO NOTHING`, keyGen(keyExpr), 3000+k, 3000+k+150)
			}
		}
		out = append(out, mutation{nodes: nodes, sql: sql})
	}
	return out
}

// keyGen is keyExpr over the generate_series column g.
func keyGen(keyExpr func(int) string) string { return keyExpr(-1) }

func TestMtreeAgreesWithTableDiff(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		keyType string
		keyExpr func(int) string // -1 means the column g of generate_series
	}{
		{"bigint key", "bigint", func(k int) string {
			if k < 0 {
				return "g"
			}
			return strconv.Itoa(k)
		}},
		{"text key", "text", func(k int) string {
			if k < 0 {
				return "'k' || lpad(g::text, 6, '0')"
			}
			return fmt.Sprintf("'k%06d'", k)
		}},
	}
	// Analysed, a table stored in key order gets ordered leaf digests; never analysed, lanes.
	leaves := []struct{ summary, ddl string }{
		{"lanes", "ALTER TABLE t SET (autovacuum_enabled = off)"},
		{"ordered", "ANALYZE t"},
	}
	for _, c := range cases {
		for _, l := range leaves {
			t.Run(c.name+", "+l.summary, func(t *testing.T) {
				t.Parallel()
				seed := propertySeed(t)
				r := rand.New(rand.NewPCG(seed, 7))
				e := treeSetup(t, fmt.Sprintf(`CREATE TABLE t (k %s PRIMARY KEY, v text, n numeric);
				INSERT INTO t SELECT %s, 'v' || g, g FROM generate_series(1, 2000) g; %s`, c.keyType, keyGen(c.keyExpr), l.ddl))
				var built map[string]any
				e.completed(&built, `ace.mtree_build('public.t', leaf_rows => 100)`)
				require.Equal(t, l.summary, built["leaf_summary"])
				for _, n := range e.Nodes {
					var shown string
					require.NoError(t, n.Pool.QueryRow(context.Background(), `SELECT leaf_summary FROM ace.mtree_local_status('public.t')`).Scan(&shown))
					require.Equal(t, l.summary, shown, "ace.mtree_local_status on %s", n.Name)
				}
				for round := 0; round < 6; round++ {
					applyMutations(t, e.Env, randomMutations(r, c.keyExpr, round))
					var tree engine.DiffSummary
					id := e.completed(&tree, `ace.mtree_diff('public.t')`)
					_, want := e.completedDiff(`'public.t'`)
					require.Equal(t, keys(want), keys(e.diffRows(id)), "seed %d, round %d", seed, round)
					requireBalancedLeaves(t, e.Env, 100)
				}
			})
		}
	}
}

func applyMutations(t *testing.T, e *testcluster.Env, ms []mutation) {
	t.Helper()
	for _, m := range ms {
		for _, n := range m.nodes {
			e.Node(n).Exec(t, m.sql)
		}
	}
}

// requireBalancedLeaves checks that every node has the same leaves, none over twice
// leafRows on any node.
func requireBalancedLeaves(t *testing.T, e *testcluster.Env, leafRows int64) {
	t.Helper()
	var first string
	for i, n := range e.Nodes {
		var bounds string
		var largest int64
		require.NoError(t, n.Pool.QueryRow(context.Background(), `SELECT string_agg(leaf_id || ':' || coalesce(lo::text, '-') || ':' || coalesce(hi::text, '+'), ' ' ORDER BY leaf_id),
			max(row_count) FROM ace.mtree_leaves`).Scan(&bounds, &largest))
		require.LessOrEqual(t, largest, 2*leafRows, "largest leaf on %s", n.Name)
		if i == 0 {
			first = bounds
		}
		require.Equal(t, first, bounds, "leaves of %s and n1", n.Name)
	}
}
