package diff_test

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/diff"
	"github.com/ace-agent/ace-agent/internal/testcluster"
)

// A table that fits in one block still shows progress before the block is done: rows hashed
// while each node's hashing runs (the ordered summary's leaves stream back as they are hashed,
// the lanes hash a long block in parts), then the differing keys found while it is narrowed.
func TestProgressMovesWithinOneBlock(t *testing.T) {
	t.Parallel()
	e, nodes := diffSetup(t, 3000)
	e.Node("n2").Exec(t, `UPDATE public.t SET v = 'changed' WHERE id IN (10, 1500, 2990)`)
	for _, kind := range summaries {
		t.Run(string(kind), func(t *testing.T) {
			var mu sync.Mutex
			var seen []engine.Progress
			progress := func(p engine.Progress) {
				mu.Lock()
				defer mu.Unlock()
				seen = append(seen, p)
			}
			opts := diff.TableDiffOptions{Table: "public.t", BlockSize: 10_000, CompareUnitSize: 100, ForceSummary: kind}
			s, err := diff.TableDiff(t.Context(), nodes, opts, &testcluster.DiffSink{}, progress)
			require.NoError(t, err)
			require.Equal(t, 1, s.InitialRangesCount, "the table fits in one block")

			var hashedBeforeDone, withinANodesQuery, keysBeforeDone bool
			for _, p := range seen {
				if p.BlocksDone == 0 && p.BlocksTotal == 1 {
					hashedBeforeDone = hashedBeforeDone || p.RowsHashed > 0
					// Each node holds 3,000 rows: a count that is no multiple of it was reported
					// before some node's hashing of the block had ended.
					withinANodesQuery = withinANodesQuery || p.RowsHashed%3000 != 0
					keysBeforeDone = keysBeforeDone || p.DifferingKeys > 0
				}
			}
			require.True(t, hashedBeforeDone, "rows hashed are reported before the block is done: %+v", seen)
			require.True(t, withinANodesQuery, "rows hashed are reported while a node's hashing runs: %+v", seen)
			require.True(t, keysBeforeDone, "differing keys are reported while the block is narrowed: %+v", seen)
			last := seen[len(seen)-1]
			require.Equal(t, engine.Progress{Phase: "hashing", BlocksTotal: 1, BlocksDone: 1, RowsHashed: 9000, DifferingKeys: 3}, last)
		})
	}
}
