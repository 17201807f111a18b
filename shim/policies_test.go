package shim_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/sqlapi"
)

// TestRepairPoliciesRoute: POST /api/v1/repair-policies makes a policy as the client
// certificate's CN, which the SQL side checks; GET lists the caller's own only with their last
// outcome; POST /api/v1/repair-policies/run runs it as a task; DELETE drops it, the caller's only.
func TestRepairPoliciesRoute(t *testing.T) {
	t.Parallel()
	e := setup(t)
	alice, bob := e.as(t, e.alice), e.as(t, e.bob)
	url := e.url + "/api/v1/repair-policies"

	r := post(t, alice, url, map[string]any{"policy_name": "fix", "table_name": "public.t", "strategy": "source_of_truth",
		"source_of_truth": "n1", "recheck_after": "0 seconds"})
	require.Equal(t, http.StatusCreated, r.code, "body: %s", r.body)
	require.Equal(t, "fix", r.json(t)["policy_name"])
	require.Nil(t, r.json(t)["next_due"], "no timer")

	for _, c := range []struct {
		name string
		body any
		msg  string
	}{
		{"no source of truth", map[string]any{"policy_name": "x", "table_name": "public.t", "strategy": "source_of_truth"},
			"strategy source_of_truth needs a source_of_truth"},
		{"an unknown field", map[string]any{"policy_name": "x", "table_name": "public.t", "strategy": "majority", "evry": "1h"},
			`unknown field "evry"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := post(t, alice, url, c.body)
			require.Equal(t, http.StatusBadRequest, r.code, "body: %s", r.body)
			require.Contains(t, r.json(t)["error"], c.msg)
		})
	}

	list := func(c *http.Client) []sqlapi.RepairPolicy {
		t.Helper()
		r := do(t, c, http.MethodGet, url, "", "")
		require.Equal(t, http.StatusOK, r.code, "body: %s", r.body)
		var body struct {
			Policies []sqlapi.RepairPolicy `json:"repair_policies"`
		}
		require.NoError(t, json.Unmarshal(r.body, &body))
		return body.Policies
	}
	require.Empty(t, list(bob), "bob sees none of alice's policies")

	id := submit(t, alice, url+"/run", map[string]any{"policy_name": "fix"})
	done := waitTask(t, alice, e.url+"/api/v1/tasks/"+id)
	require.Equal(t, "COMPLETED", done["status"], "%v", done)
	mine := list(alice)
	require.Len(t, mine, 1)
	require.Equal(t, "in_sync", *mine[0].LastOutcome)
	require.Equal(t, id, mine[0].LastRun.String())

	r = post(t, bob, url+"/run", map[string]any{"policy_name": "fix"})
	require.Equal(t, http.StatusBadRequest, r.code, "body: %s", r.body)
	require.Contains(t, r.json(t)["error"], `has no repair policy "fix"`)
	r = do(t, bob, http.MethodDelete, url+"?policy_name=fix", "", "")
	require.Equal(t, http.StatusNotFound, r.code, "body: %s", r.body)
	r = do(t, alice, http.MethodDelete, url+"?policy_name=fix", "", "")
	require.Equal(t, http.StatusOK, r.code, "body: %s", r.body)
	require.Empty(t, list(alice))
}
