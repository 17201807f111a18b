package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/testcluster"
)

// TestSpockDiffCommand: exit 0 when the nodes replicate alike, 1 with ACE's spock_diffs file
// when a table is published on one node only, 2 on an unknown node.
func TestSpockDiffCommand(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	e.ExecAll(`CREATE TABLE public.t (id int PRIMARY KEY)`)
	n1, n2, n3 := e.Node("n1"), e.Node("n2"), e.Node("n3")
	n1.StartAgent(t)
	// n2 and n3 replicate both ways; n1 takes no part.
	n2.Exec(t, `CREATE PUBLICATION pub_t FOR TABLE public.t`)
	n3.Exec(t, `CREATE PUBLICATION pub_t FOR TABLE public.t`)
	for _, s := range [][2]*testcluster.Node{{n2, n3}, {n3, n2}} {
		on, from := s[0], s[1]
		name := "sub_" + on.Name + "_" + e.DB
		on.Exec(t, `CREATE SUBSCRIPTION `+name+` CONNECTION '`+from.DSN+`' PUBLICATION pub_t WITH (copy_data = false)`)
		t.Cleanup(func() { _, _ = on.Pool.Exec(context.Background(), `DROP SUBSCRIPTION `+name) })
	}

	dir := t.TempDir()
	r := aceIn(t, dir, n1.DSN, "spock-diff", "-q", "--nodes", "n2,n3")
	require.Equal(t, exitOK, r.code, r)
	require.Contains(t, r.stdout, "✔ n2/n3: n2 and n3 replicate alike")

	n2.Exec(t, `CREATE PUBLICATION pub_more FOR TABLE public.t`)
	r = aceIn(t, dir, n1.DSN, "spock-diff", "-q")
	require.Equal(t, exitDiffers, r.code, r)
	require.Contains(t, r.stdout, "✘ n1/n2: n1 and n2 replicate differently")
	require.Contains(t, r.stdout, "table public.t: Not in any repset vs pub_more, pub_t")
	require.Contains(t, r.stdout, "table public.t: pub_more, pub_t vs pub_t", "n2/n3: every set of the table")

	files, err := filepath.Glob(filepath.Join(dir, "spock_diffs-*.json"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	require.Regexp(t, regexp.MustCompile(`^spock_diffs-\d{14}\.json$`), filepath.Base(files[len(files)-1]))
	raw, err := os.ReadFile(files[len(files)-1])
	require.NoError(t, err)
	var file struct {
		Provider    string                    `json:"provider"`
		SpockConfig map[string]map[string]any `json:"spock_config"`
		Diffs       map[string]map[string]any `json:"diffs"`
	}
	require.NoError(t, json.Unmarshal(raw, &file))
	require.Equal(t, "native", file.Provider)
	require.ElementsMatch(t, []string{"n1", "n2", "n3"}, keysOf(file.SpockConfig))
	for _, key := range []string{"node_name", "subscriptions", "rep_set_info", "hints"} {
		require.Contains(t, file.SpockConfig["n2"], key)
	}
	require.Equal(t, []any{map[string]any{"SetName": "pub_more", "RelName": []any{"public.t"}}, map[string]any{"SetName": "pub_t", "RelName": []any{"public.t"}}},
		file.SpockConfig["n2"]["rep_set_info"])
	require.Equal(t, true, file.Diffs["n1/n2"]["mismatch"])
	details := file.Diffs["n1/n2"]["details"].(map[string]any)
	require.Equal(t, map[string]any{"missing_on_node1": []any{"a subscription on n1 to n2"}, "missing_on_node2": []any{"a subscription on n2 to n1"}, "different": []any{}},
		details["subscriptions"])

	r = aceIn(t, dir, n1.DSN, "spock-diff", "-q", "--nodes", "n1,n9")
	require.Equal(t, exitError, r.code, r)
	require.Contains(t, r.stderr, "unknown node(s): n9")
}

func keysOf[V any](m map[string]V) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}
