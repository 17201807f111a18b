package shim_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
)

// TestClusterRoutes: the map, status, health and leader probes, node state changes for the
// roles granted them, the event log and the stream's cluster event, and the cluster's metrics.
func TestClusterRoutes(t *testing.T) {
	t.Parallel()
	e := setup(t)
	alice, bob := e.as(t, e.alice), e.as(t, e.bob)
	n1 := e.Node("n1")
	get := func(c *http.Client, path string) response { return do(t, c, http.MethodGet, e.url+path, "", "") }
	require.Eventually(t, func() bool {
		r := get(alice, "/api/v1/cluster/health")
		return r.code == http.StatusOK && r.json(t)["health"] == "healthy"
	}, time.Minute, 50*time.Millisecond, "the cluster becomes healthy")

	t.Run("the map and the status", func(t *testing.T) {
		r := get(alice, "/api/v1/cluster")
		require.Equal(t, http.StatusOK, r.code, "body: %s", r.body)
		m := r.json(t)
		require.Equal(t, "n1", m["leader"])
		nodes := m["nodes"].([]any)
		require.Len(t, nodes, 3)
		for _, n := range nodes {
			require.Equal(t, true, n.(map[string]any)["live"])
			require.Equal(t, "active", n.(map[string]any)["state"])
		}
		r = get(bob, "/api/v1/cluster/status")
		require.Equal(t, http.StatusOK, r.code, "body: %s", r.body)
		require.Contains(t, string(r.body), `"node_name":"n3"`)
		require.Contains(t, string(r.body), `"same_config":true`)
	})

	t.Run("is-leader answers 200 on the leader only", func(t *testing.T) {
		require.Equal(t, http.StatusOK, get(alice, "/api/v1/is-leader").code)
		n1.Exec(t, `SELECT ace.set_leader('n2')`)
		r := get(alice, "/api/v1/is-leader")
		require.Equal(t, http.StatusConflict, r.code, "body: %s", r.body)
		require.Equal(t, "n2", r.json(t)["leader"])
		n1.Exec(t, `SELECT ace.set_leader(NULL)`)
		require.Equal(t, http.StatusOK, get(alice, "/api/v1/is-leader").code)
	})

	t.Run("node state changes, for the roles granted them, wake the stream and are in the log", func(t *testing.T) {
		stream := openEvents(t, alice, e.url)
		r := post(t, alice, e.url+"/api/v1/nodes/n3/down", map[string]any{"reason": "disk"})
		require.Equal(t, http.StatusForbidden, r.code, "not granted: body: %s", r.body)
		n1.Exec(t, `GRANT EXECUTE ON FUNCTION ace.mark_node_down(text, text), ace.mark_node_up(text) TO `+pgx.Identifier{e.alice}.Sanitize())
		r = post(t, alice, e.url+"/api/v1/nodes/n3/down", map[string]any{"reason": "disk"})
		require.Equal(t, http.StatusOK, r.code, "body: %s", r.body)
		require.Equal(t, "down", r.json(t)["state"])
		require.Equal(t, http.StatusNotFound, post(t, alice, e.url+"/api/v1/nodes/n9/down", map[string]any{}).code)
		require.Equal(t, http.StatusForbidden, post(t, alice, e.url+"/api/v1/nodes/n3/promote", nil).code)

		waitForCluster(t, stream)
		r = get(bob, "/api/v1/events?after=0&kind=node_down")
		require.Equal(t, http.StatusOK, r.code, "body: %s", r.body)
		events := r.json(t)["events"].([]any)
		require.Len(t, events, 1)
		ev := events[0].(map[string]any)
		require.Equal(t, "n3", ev["node_name"])
		require.Equal(t, e.alice, ev["actor"])
		require.Equal(t, map[string]any{"reason": "disk"}, ev["detail"])
		require.Equal(t, http.StatusBadRequest, get(bob, "/api/v1/events?after=x").code)

		r = get(alice, "/api/v1/cluster/health")
		require.Equal(t, http.StatusOK, r.code, "degraded in quorum is ready: body: %s", r.body)
		require.Equal(t, "degraded", r.json(t)["health"])
		r = post(t, alice, e.url+"/api/v1/nodes/n3/up", nil)
		require.Equal(t, http.StatusOK, r.code, "body: %s", r.body)
		require.Equal(t, "active", r.json(t)["state"])
	})

	t.Run("metrics: node liveness and the leader", func(t *testing.T) {
		families := scrape(t, e.metricsURL)
		for _, n := range []string{"n1", "n2", "n3"} {
			require.Equal(t, 1.0, sample(t, families, "ace_node_live", dto.MetricType_GAUGE, "node", n, "state", "active"), n)
		}
		require.Equal(t, 1.0, sample(t, families, "ace_leader", dto.MetricType_GAUGE, "node", "n1"))
		require.Equal(t, 0.0, sample(t, families, "ace_leader", dto.MetricType_GAUGE, "node", "n2"))
		require.Equal(t, 1.0, sample(t, families, "ace_cluster_in_quorum", dto.MetricType_GAUGE))
		require.Equal(t, 1.0, sample(t, families, "ace_cluster_health", dto.MetricType_GAUGE, "health", "healthy"))
	})
}

// waitForCluster waits for the stream's payload-free cluster event.
func waitForCluster(t *testing.T, s *sse) {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case ev, ok := <-s.events:
			require.True(t, ok, "the stream ended")
			if ev.name == "cluster" {
				require.Empty(t, ev.data, "a cluster event carries nothing")
				return
			}
		case <-timeout:
			t.Fatal("no cluster event")
		}
	}
}
