package shim_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSpockDiffRoutes submits spock-diff through ACE Go's POST route and the Python API's GET
// route, as a submitter of the certificate-only cluster; both compare the nodes' native
// publications.
func TestSpockDiffRoutes(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.Node("n1").Exec(t, `CREATE PUBLICATION pub_t FOR TABLE public.t`)
	alice := e.as(t, e.alice)

	id := submit(t, alice, e.url+"/api/v1/spock-diff", map[string]any{"cluster": "c", "nodes": []string{"n1", "n2"}, "output": "json"})
	task := waitTask(t, alice, e.url+"/api/v1/tasks/"+id)
	require.Equal(t, "COMPLETED", task["status"], "%v", task)
	require.Equal(t, "SPOCK_DIFF", task["task_type"])
	result := task["task_context"].(map[string]any)["result"].(map[string]any)
	require.Equal(t, "native", result["provider"])
	placement := result["diffs"].(map[string]any)["n1/n2"].(map[string]any)["details"].(map[string]any)["replication_sets"]
	require.Equal(t, map[string]any{"table_placement_differences": []any{
		map[string]any{"table_name": "public.t", "node1_repset": "pub_t", "node2_repset": "Not in any repset"}}}, placement)

	r := do(t, alice, http.MethodGet, e.url+"/ace/spock-diff?cluster_name=c&nodes=n2,n3&quiet=true", "", "")
	require.Equal(t, http.StatusAccepted, r.code, "body: %s", r.body)
	task = waitTask(t, alice, e.url+"/ace/task-status/"+r.json(t)["task_id"].(string))
	require.Equal(t, "COMPLETED", task["status"], "%v", task)
	result = task["task_context"].(map[string]any)["result"].(map[string]any)
	require.ElementsMatch(t, []string{"n2", "n3"}, keysOf(result["spock_config"].(map[string]any)))

	r = do(t, alice, http.MethodGet, e.url+"/ace/spock-diff?table=public.t", "", "")
	require.Equal(t, http.StatusBadRequest, r.code, "an unknown field is refused: %s", r.body)
}

func keysOf(m map[string]any) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}
