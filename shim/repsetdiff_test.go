package shim_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// ACE Go's POST /api/v1/repset-diff and the Python API's GET /ace/repset-diff submit
// replication-set diffs as the caller; skip_file, a path on the server, is refused.
func TestRepsetDiffRoutes(t *testing.T) {
	t.Parallel()
	e := setup(t)
	alice := e.as(t, e.alice)
	for _, n := range []string{"n1", "n2", "n3"} {
		e.Node(n).Exec(t, `CREATE PUBLICATION rd_pub FOR TABLE public.t`)
	}
	e.Node("n2").Exec(t, `UPDATE public.t SET v = 'drift' WHERE id = 7`)

	t.Run("ACE Go", func(t *testing.T) {
		id := submit(t, alice, e.url+"/api/v1/repset-diff", map[string]any{"cluster": "default", "repset": "rd_pub", "nodes": []string{}})
		task := waitTask(t, alice, e.url+"/api/v1/tasks/"+id)
		require.Equal(t, "COMPLETED", task["status"], "%v", task)
		result := task["task_context"].(map[string]any)["result"].(map[string]any)
		require.Len(t, result["differed"], 1, "%v", result)
		require.Equal(t, "public.t", result["differed"].([]any)[0].(map[string]any)["table"])
	})
	t.Run("Python API", func(t *testing.T) {
		r := do(t, alice, http.MethodGet, e.url+"/ace/repset-diff?cluster_name=default&repset_name=rd_pub&nodes=n1,n3&provider=native", "", "")
		require.Equal(t, http.StatusAccepted, r.code, "body: %s", r.body)
		task := waitTask(t, alice, e.url+"/ace/task-status?task_id="+r.json(t)["task_id"].(string))
		require.Equal(t, "COMPLETED", task["task_status"], "%v", task)
	})
	t.Run("refused", func(t *testing.T) {
		r := post(t, alice, e.url+"/api/v1/repset-diff", map[string]any{"repset": "rd_pub", "skip_file": "/etc/passwd"})
		require.Equal(t, http.StatusBadRequest, r.code, "body: %s", r.body)
		require.Contains(t, string(r.body), "skip_file")
		r = post(t, alice, e.url+"/api/v1/repset-diff", map[string]any{"repset": "rd_pub", "provider": "slony"})
		require.Equal(t, http.StatusBadRequest, r.code, "body: %s", r.body)
		require.Contains(t, string(r.body), "provider must be")
	})
}
