// Package docs_test runs the SQL examples of the pages in docs/, so that what the pages show is
// what ace-agent does. Every ```sql block of a page runs, in the page's order, as one
// simple-protocol statement list on n1 of a 3-node database of the page's own, with the ace
// schema installed and an agent on every node. A block that illustrates an error belongs in a
// ```text block instead.
package docs_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/testcluster"
)

func TestMain(m *testing.M) { testcluster.Main(m) }

// sqlBlock matches a fenced ```sql block; its first group is the SQL.
var sqlBlock = regexp.MustCompile("(?ms)^```sql[ \t]*\n(.*?)^```[ \t]*$")

// sqlExamples returns the SQL blocks of a page, in order.
func sqlExamples(page []byte) []string {
	var out []string
	for _, m := range sqlBlock.FindAllSubmatch(page, -1) {
		out = append(out, string(m[1]))
	}
	return out
}

func TestSQLExamplesRun(t *testing.T) {
	t.Parallel()
	pages, err := filepath.Glob("*.md")
	require.NoError(t, err)
	require.NotEmpty(t, pages, "docs/ has pages")
	for _, page := range pages {
		t.Run(page, func(t *testing.T) {
			t.Parallel()
			text, err := os.ReadFile(page)
			require.NoError(t, err)
			blocks := sqlExamples(text)
			if len(blocks) == 0 {
				t.Skipf("%s has no SQL examples", page)
			}
			e := testcluster.New(t)
			for _, n := range e.Nodes {
				n.StartAgent(t)
			}
			n1 := e.Node("n1")
			for i, sql := range blocks {
				_, err := n1.Pool.Exec(context.Background(), sql)
				require.NoError(t, err, "%s, SQL example %d:\n%s", page, i+1, sql)
			}
		})
	}
}

func TestSQLExamplesAreFound(t *testing.T) {
	t.Parallel()
	page := []byte("text\n```sql\nSELECT 1;\n```\n```text\nSELECT broken\n```\n```sql\nSELECT 2;\nSELECT 3;\n```\n")
	require.Equal(t, []string{"SELECT 1;\n", "SELECT 2;\nSELECT 3;\n"}, sqlExamples(page))
}
