package shim_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// ACE Go's POST /api/v1/schema-diff and the Python API's GET /ace/schema-diff submit schema
// diffs as the caller, whose child table-diffs run in the caller's sessions; skip_file, a path
// on the server, is refused.
func TestSchemaDiffRoutes(t *testing.T) {
	t.Parallel()
	e := setup(t)
	alice := e.as(t, e.alice)
	e.Node("n2").Exec(t, `UPDATE public.t SET v = 'drift' WHERE id = 7`)

	t.Run("ACE Go data diff", func(t *testing.T) {
		id := submit(t, alice, e.url+"/api/v1/schema-diff", map[string]any{"cluster": "default", "schema": "public", "nodes": []string{}})
		task := waitTask(t, alice, e.url+"/api/v1/tasks/"+id)
		require.Equal(t, "COMPLETED", task["status"], "%v", task)
		result := task["task_context"].(map[string]any)["result"].(map[string]any)
		require.Len(t, result["differed"], 1, "%v", result)
		differed := result["differed"].([]any)[0].(map[string]any)
		require.Equal(t, "public.t", differed["table"])
		require.EqualValues(t, 1, differed["differing_keys"])
	})
	t.Run("Python API ddl-only", func(t *testing.T) {
		r := do(t, alice, http.MethodGet, e.url+"/ace/schema-diff?cluster_name=default&schema_name=public&nodes=n1,n2&ddl_only=true", "", "")
		require.Equal(t, http.StatusAccepted, r.code, "body: %s", r.body)
		task := waitTask(t, alice, e.url+"/ace/task-status?task_id="+r.json(t)["task_id"].(string))
		require.Equal(t, "COMPLETED", task["task_status"], "%v", task)
	})
	t.Run("refused", func(t *testing.T) {
		r := post(t, alice, e.url+"/api/v1/schema-diff", map[string]any{"schema": "public", "skip_file": "/etc/passwd"})
		require.Equal(t, http.StatusBadRequest, r.code, "body: %s", r.body)
		require.Contains(t, string(r.body), "skip_file")
		r = do(t, alice, http.MethodGet, e.url+"/ace/schema-diff?schema_name=public&skip_file=/etc/passwd", "", "")
		require.Equal(t, http.StatusBadRequest, r.code, "body: %s", r.body)
		r = post(t, alice, e.url+"/api/v1/schema-diff", map[string]any{"schema": "public", "output": "html"})
		require.Equal(t, http.StatusBadRequest, r.code, "body: %s", r.body)
		require.Contains(t, string(r.body), "output must be json")
	})
}
