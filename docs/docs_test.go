// Package docs_test runs the SQL examples of the pages in docs/, so that what the pages show is
// what ace-agent does. Every ```sql block of a page runs, in the page's order, as one
// simple-protocol statement list on n1 of a 3-node database of the page's own, with the ace
// schema installed and an agent on every node. A block that illustrates an error belongs in a
// ```text block instead.
//
// A block whose first line is `-- on every node` runs on every node instead (n1, n2, n3 in turn),
// and one whose first line is `-- on n2` (any node's name) runs on that node only: that is how a
// page creates its example table everywhere and plants drift on one node, since the ace functions
// are called on n1 and the test cluster has no dblink.
package docs_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

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

// blockTimeout bounds one example, so a page whose example waits for a task that never ends fails
// instead of hanging the suite.
const blockTimeout = 3 * time.Minute

// targetNodes returns the nodes a block runs on, from its first line: `-- on every node`, `-- on
// <node>`, or n1 when the block names none.
func targetNodes(sql string) (all bool, node string) {
	first, _, _ := strings.Cut(sql, "\n")
	target, ok := strings.CutPrefix(strings.TrimSpace(first), "-- on ")
	switch {
	case !ok:
		return false, "n1"
	case target == "every node":
		return true, ""
	default:
		return false, target
	}
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
			for i, sql := range blocks {
				nodes := e.Nodes
				if all, name := targetNodes(sql); !all {
					nodes = []*testcluster.Node{e.Node(name)}
				}
				for _, n := range nodes {
					ctx, cancel := context.WithTimeout(context.Background(), blockTimeout)
					_, err := n.Pool.Exec(ctx, sql)
					cancel()
					require.NoError(t, err, "%s, SQL example %d on %s:\n%s", page, i+1, n.Name, sql)
				}
			}
		})
	}
}

func TestSQLExamplesAreFound(t *testing.T) {
	t.Parallel()
	page := []byte("text\n```sql\nSELECT 1;\n```\n```text\nSELECT broken\n```\n```sql\nSELECT 2;\nSELECT 3;\n```\n")
	require.Equal(t, []string{"SELECT 1;\n", "SELECT 2;\nSELECT 3;\n"}, sqlExamples(page))
}

func TestSQLExampleTargets(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, sql string
		all       bool
		node      string
	}{
		{"no marker", "SELECT 1;\n", false, "n1"},
		{"every node", "-- on every node\nCREATE TABLE t (id int PRIMARY KEY);\n", true, ""},
		{"one node", "-- on n2\nDELETE FROM t;\n", false, "n2"},
		{"another comment", "-- Submit a diff\nSELECT 1;\n", false, "n1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			all, node := targetNodes(c.sql)
			require.Equal(t, c.all, all)
			require.Equal(t, c.node, node)
		})
	}
}

// mdLink matches a Markdown link's target; fenceBlock a fenced block, whose text holds no links.
var (
	mdLink     = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	fenceBlock = regexp.MustCompile("(?ms)^```.*?^```")
	heading    = regexp.MustCompile(`(?m)^#+\s+(.*)$`)
	notInSlug  = regexp.MustCompile(`[^\p{L}\p{N}_\- ]`)
)

// anchors returns the anchors GitHub gives a page's headings.
func anchors(page []byte) map[string]bool {
	out := map[string]bool{}
	for _, m := range heading.FindAllSubmatch(fenceBlock.ReplaceAll(page, nil), -1) {
		slug := notInSlug.ReplaceAllString(strings.ToLower(strings.TrimSpace(string(m[1]))), "")
		out[strings.ReplaceAll(slug, " ", "-")] = true
	}
	return out
}

// TestLinksResolve checks that every relative link of the README, ARCHITECTURE.md and the pages
// of docs/ names a file that exists and, for a page, a heading it has: moving a section must
// move its links too.
func TestLinksResolve(t *testing.T) {
	t.Parallel()
	pages, err := filepath.Glob("*.md")
	require.NoError(t, err)
	pages = append(pages, "../README.md", "../ARCHITECTURE.md")
	for _, page := range pages {
		t.Run(filepath.Base(page), func(t *testing.T) {
			text, err := os.ReadFile(page)
			require.NoError(t, err)
			for _, m := range mdLink.FindAllSubmatch(fenceBlock.ReplaceAll(text, nil), -1) {
				link := string(m[1])
				if strings.Contains(link, "://") || strings.HasPrefix(link, "mailto:") {
					continue
				}
				path, anchor, _ := strings.Cut(link, "#")
				target := page
				if path != "" {
					target = filepath.Join(filepath.Dir(page), path)
				}
				targetText, err := os.ReadFile(target)
				require.NoError(t, err, "%s links to %s, which does not exist", page, link)
				if anchor != "" && strings.HasSuffix(target, ".md") {
					require.True(t, anchors(targetText)[anchor], "%s links to %s: %s has no heading with that anchor", page, link, target)
				}
			}
		})
	}
}

func TestAnchors(t *testing.T) {
	t.Parallel()
	page := []byte("# The wall: task sessions log in as the submitter\n```sh\n# not a heading\n```\n## `ace.tasks` and Who\n")
	require.Equal(t, map[string]bool{"the-wall-task-sessions-log-in-as-the-submitter": true, "acetasks-and-who": true}, anchors(page))
}
