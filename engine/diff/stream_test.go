package diff_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine/diff"
)

// A node that lost every row of a range: the range is streamed (its rows read directly, not
// narrowed by hashes), and each key still carries each node's version.
func TestTableDiffStreamsARangeEmptyOnANode(t *testing.T) {
	t.Parallel()
	e, nodes := diffSetup(t, 3000)
	e.Node("n3").Exec(t, `DELETE FROM public.t WHERE id BETWEEN 1001 AND 2500`)
	e.Node("n2").Exec(t, `UPDATE public.t SET v = 'n2 only' WHERE id IN (1500, 2800)`)

	t.Run("every row of the range, with each node's version", func(t *testing.T) {
		s, sink := tableDiff(t, nodes, diff.TableDiffOptions{})
		rows := sink.ByKey()
		require.Len(t, rows, 1500+1)
		require.EqualValues(t, 1501, s.DifferingKeys)
		for id := 1001; id <= 2500; id++ {
			d, ok := rows[fmt.Sprintf("[%d]", id)]
			require.True(t, ok, "key %d", id)
			require.Equal(t, "missing", d.Kind)
			require.Equal(t, "null", string(d.Rows["n3"]))
			if id == 1500 {
				require.Equal(t, map[string]int{"n1": 1, "n2": 2}, d.Versions, "n1 and n2 disagree on key 1500")
				continue
			}
			require.Equal(t, map[string]int{"n1": 1, "n2": 1}, d.Versions, "key %d", id)
		}
		d := rows["[2800]"]
		require.Equal(t, map[string]int{"n1": 1, "n2": 2, "n3": 1}, d.Versions, "outside the range: narrowed as before")
	})

	t.Run("a filter naming the table, and each row's commit timestamp", func(t *testing.T) {
		s, sink := tableDiff(t, nodes, diff.TableDiffOptions{TableFilter: "t.id <> 1500"})
		require.EqualValues(t, 1500, s.DifferingKeys)
		rows := sink.ByKey()
		require.NotContains(t, rows, "[1500]")
		d := rows["[1200]"]
		require.NotNil(t, d.Meta["n1"].CommitTS, "the streamed row carries its commit timestamp")
		require.Equal(t, "local", *d.Meta["n1"].NodeOrigin)
	})

	t.Run("max_diff_rows still bounds it", func(t *testing.T) {
		s, sink := tableDiff(t, nodes, diff.TableDiffOptions{MaxDiffRows: 40})
		require.True(t, s.DiffRowLimitReached)
		require.LessOrEqual(t, len(sink.Rows), 3*40)
		require.LessOrEqual(t, s.DiffRowsCount["n1/n3"], int64(40))
	})
}
