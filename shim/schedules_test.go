package shim_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/sqlapi"
)

// TestSchedulesRoute: POST /api/v1/schedules makes a schedule as the client certificate's CN,
// which the SQL side validates; GET lists the caller's own only; the agent's runs show in
// /metrics.
func TestSchedulesRoute(t *testing.T) {
	t.Parallel()
	e := setup(t)
	alice, bob := e.as(t, e.alice), e.as(t, e.bob)
	url := e.url + "/api/v1/schedules"

	r := post(t, alice, url, map[string]any{"schedule_name": "hourly", "task_type": "table-diff",
		"args": map[string]any{"table_name": "public.t"}, "every": "1 hour"})
	require.Equal(t, http.StatusCreated, r.code, "body: %s", r.body)
	require.Equal(t, "hourly", r.json(t)["schedule_name"])

	cases := []struct {
		name string
		body any
		msg  string
	}{
		{"every and cron", map[string]any{"schedule_name": "x", "task_type": "table-diff", "args": map[string]any{"table_name": "public.t"},
			"every": "1 hour", "cron": "0 * * * *"}, "a schedule needs exactly one of every and cron, got both"},
		{"an unknown field", map[string]any{"schedule_name": "x", "task_type": "table-diff", "evry": "1 hour"}, `unknown field "evry"`},
		{"a repair", map[string]any{"schedule_name": "x", "task_type": "table-repair", "every": "1 hour"}, "table-repair cannot be scheduled"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := post(t, alice, url, c.body)
			require.Equal(t, http.StatusBadRequest, r.code, "body: %s", r.body)
			require.Contains(t, r.json(t)["error"], c.msg)
		})
	}

	list := func(c *http.Client) []sqlapi.Schedule {
		t.Helper()
		r := do(t, c, http.MethodGet, url, "", "")
		require.Equal(t, http.StatusOK, r.code, "body: %s", r.body)
		var body struct{ Schedules []sqlapi.Schedule }
		require.NoError(t, json.Unmarshal(r.body, &body))
		return body.Schedules
	}
	require.Empty(t, list(bob), "bob sees none of alice's schedules")
	require.Eventually(t, func() bool {
		mine := list(alice)
		require.Len(t, mine, 1)
		require.Equal(t, e.alice, mine[0].Owner)
		return mine[0].Runs == 1
	}, time.Minute, 100*time.Millisecond, "the agent runs it at once")

	families := scrape(t, e.metricsURL)
	runs := series(family(t, families, "ace_schedule_runs_total", dto.MetricType_COUNTER), "owner", e.alice, "schedule", "hourly", "type", "table-diff")
	require.NotNil(t, runs)
	require.Equal(t, 1.0, runs.GetCounter().GetValue())
	skips := series(family(t, families, "ace_schedule_skips_total", dto.MetricType_COUNTER), "owner", e.alice, "schedule", "hourly", "type", "table-diff")
	require.NotNil(t, skips)
	require.Zero(t, skips.GetCounter().GetValue())
	next := series(family(t, families, "ace_schedule_next_due_timestamp_seconds", dto.MetricType_GAUGE), "owner", e.alice, "schedule", "hourly", "type", "table-diff")
	require.InDelta(t, float64(time.Now().Add(time.Hour).Unix()), next.GetGauge().GetValue(), 120)
}
