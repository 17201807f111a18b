package shim_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
)

// Both route sets, end to end: a diff, its status, its export in every format, a repair by
// task id (ACE Go's routes) and by an uploaded ACE diff file (the seed's), and a rerun.
func TestDiffAndRepairOverBothRouteSets(t *testing.T) {
	t.Parallel()
	e := setup(t)
	alice := e.as(t, e.alice)
	e.Node("n2").Exec(t, `UPDATE public.t SET v = 'drift' WHERE id = 7`)
	e.Node("n3").Exec(t, `DELETE FROM public.t WHERE id = 9`)

	var diffID string
	t.Run("ACE Go diff", func(t *testing.T) {
		diffID = submit(t, alice, e.url+"/api/v1/table-diff", map[string]any{"cluster": "default", "table": "public.t", "nodes": []string{}})
		task := waitTask(t, alice, e.url+"/api/v1/tasks/"+diffID)
		require.Equal(t, "COMPLETED", task["status"], "%v", task)
		require.Equal(t, "TABLE_DIFF", task["task_type"])
		require.Equal(t, "public", task["schema"])
		require.Equal(t, "t", task["table"])
		require.EqualValues(t, 2, task["task_context"].(map[string]any)["diff_summary"].(map[string]any)["differing_keys"])
	})
	t.Run("export", func(t *testing.T) {
		r := do(t, alice, http.MethodGet, e.url+"/api/v1/tasks/"+diffID+"/diff", "", "")
		require.Equal(t, http.StatusOK, r.code, "body: %s", r.body)
		require.Contains(t, r.json(t), "diffs")
		require.Contains(t, compact(t, r.body), `"v":"drift"`)
		r = do(t, alice, http.MethodGet, e.url+"/api/v1/tasks/"+diffID+"/diff?format=csv", "", "")
		require.Equal(t, http.StatusOK, r.code)
		require.True(t, strings.HasPrefix(r.header.Get("Content-Type"), "text/csv"))
		require.Contains(t, string(r.body), "drift")
		req, err := http.NewRequest(http.MethodGet, e.url+"/api/v1/tasks/"+diffID+"/diff", nil)
		require.NoError(t, err)
		req.Header.Set("Accept", "text/html")
		resp, err := alice.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.True(t, strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html"))
	})
	t.Run("ACE Go repair by task id", func(t *testing.T) {
		id := submit(t, alice, e.url+"/api/v1/table-repair", map[string]any{"table": "public.t", "diff_file": diffID, "source_of_truth": "n1"})
		task := waitTask(t, alice, e.url+"/api/v1/tasks/"+id)
		require.Equal(t, "COMPLETED", task["status"], "%v", task)
		require.Contains(t, task["task_context"], "repair_report")
	})
	t.Run("ACE Go repair with a plan object", func(t *testing.T) {
		plan := map[string]any{"tables": map[string]any{"public.t": map[string]any{"default_action": map[string]any{"type": "keep", "node": "n1"}}}}
		id := submit(t, alice, e.url+"/api/v1/table-repair", map[string]any{"table": "public.t", "diff_file": diffID, "repair_plan": plan, "dry_run": true})
		task := waitTask(t, alice, e.url+"/api/v1/tasks/"+id)
		require.Equal(t, "COMPLETED", task["status"], "%v", task)
	})

	e.Node("n2").Exec(t, `UPDATE public.t SET v = 'drift again' WHERE id = 11`)
	var seedDiff string
	t.Run("seed diff", func(t *testing.T) {
		seedDiff = submit(t, alice, e.url+"/ace/table-diff", map[string]any{"cluster_name": "default", "table_name": "public.t", "nodes": "all", "quiet": true})
		task := waitTask(t, alice, e.url+"/ace/task-status?task_id="+seedDiff)
		require.Equal(t, "COMPLETED", task["task_status"], "%v", task)
		require.Equal(t, "table-diff", task["task_type"])
	})
	t.Run("seed repair of an uploaded diff file", func(t *testing.T) {
		r := do(t, alice, http.MethodGet, e.url+"/api/v1/tasks/"+seedDiff+"/diff?format=json", "", "")
		require.Equal(t, http.StatusOK, r.code, "body: %s", r.body)
		id := submit(t, alice, e.url+"/ace/table-repair", map[string]any{"cluster_name": "default", "table_name": "public.t",
			"diff_file": json.RawMessage(r.body), "source_of_truth": "n1"})
		task := waitTask(t, alice, e.url+"/ace/task-status/"+id)
		require.Equal(t, "COMPLETED", task["task_status"], "%v", task)
	})
	t.Run("seed rerun", func(t *testing.T) {
		id := submit(t, alice, e.url+"/ace/table-rerun", map[string]any{"cluster_name": "default", "table_name": "public.t", "diff_file": seedDiff})
		task := waitTask(t, alice, e.url+"/ace/task-status?task_id="+id)
		require.Equal(t, "COMPLETED", task["task_status"], "%v", task)
		require.EqualValues(t, 0, task["task_context"].(map[string]any)["diff_summary"].(map[string]any)["differing_keys"])
	})
	t.Run("metrics and health", func(t *testing.T) {
		families := scrape(t, e.metricsURL)
		require.Equal(t, 2.0, sample(t, families, "ace_tasks", dto.MetricType_GAUGE, "type", "table-diff", "status", "COMPLETED"))
		require.Equal(t, 3.0, sample(t, families, "ace_differing_rows_total", dto.MetricType_COUNTER, "type", "table-diff"))
		durations := series(family(t, families, "ace_task_duration_seconds", dto.MetricType_HISTOGRAM), "type", "table-diff", "status", "COMPLETED")
		require.EqualValues(t, 2, durations.GetHistogram().GetSampleCount())
		require.Equal(t, 3.0, sample(t, families, "ace_shim_submissions_total", dto.MetricType_COUNTER, "type", "table-repair", "outcome", "accepted"), "two repairs and a dry run with a plan")
		r := do(t, http.DefaultClient, http.MethodGet, e.metricsURL+"/healthz", "", "")
		require.Equal(t, http.StatusOK, r.code)
		require.Equal(t, "ok", r.json(t)["database"])
		r = do(t, alice, http.MethodGet, e.url+"/healthz", "", "")
		require.Equal(t, http.StatusOK, r.code)
	})
}

// sse is an open event stream.
type sse struct {
	events chan sseEvent
}

type sseEvent struct {
	name string
	data map[string]any
}

// openEvents opens GET /api/v1/events as the client and reads its events until the test ends.
func openEvents(t *testing.T, c *http.Client, url string) *sse {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/api/v1/events", nil)
	require.NoError(t, err)
	resp, err := c.Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	s := &sse{events: make(chan sseEvent, 100)}
	go func() {
		defer resp.Body.Close()
		defer close(s.events)
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				_ = json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev.data)
			case line == "":
				s.events <- ev
				ev = sseEvent{}
			}
		}
	}()
	return s
}

// until collects events until one is the done event of task id.
func (s *sse) until(t *testing.T, id string) []sseEvent {
	t.Helper()
	var got []sseEvent
	timeout := time.After(2 * time.Minute)
	for {
		select {
		case ev, ok := <-s.events:
			require.True(t, ok, "the stream ended; got %v", got)
			got = append(got, ev)
			if ev.name == "done" && ev.data["task_id"] == id {
				return got
			}
		case <-timeout:
			t.Fatalf("no done event for task %s; got %v", id, got)
		}
	}
}

func names(events []sseEvent, id string) []string {
	var out []string
	for _, ev := range events {
		if ev.data["task_id"] == id {
			out = append(out, ev.name)
		}
	}
	return out
}

// Each caller's event stream carries its own tasks, from queued to done, and nothing of another
// caller's; nor can another caller read, export or repair them.
func TestEventsAndIsolation(t *testing.T) {
	t.Parallel()
	e := setup(t)
	alice, bob := e.as(t, e.alice), e.as(t, e.bob)
	aliceEvents, bobEvents := openEvents(t, alice, e.url), openEvents(t, bob, e.url)
	e.Node("n2").Exec(t, `UPDATE public.t SET v = 'drift' WHERE id = 7`)

	aliceTask := submit(t, alice, e.url+"/api/v1/table-diff", map[string]any{"table": "public.t"})
	got := names(aliceEvents.until(t, aliceTask), aliceTask)
	require.Equal(t, "queued", got[0], "%v", got)
	require.Equal(t, "done", got[len(got)-1], "%v", got)

	t.Run("bob cannot read, export or repair alice's task", func(t *testing.T) {
		r := do(t, bob, http.MethodGet, e.url+"/api/v1/tasks/"+aliceTask, "", "")
		require.Equal(t, http.StatusNotFound, r.code, "body: %s", r.body)
		r = do(t, bob, http.MethodGet, e.url+"/api/v1/tasks/"+aliceTask+"/diff", "", "")
		require.Equal(t, http.StatusNotFound, r.code, "body: %s", r.body)
		r = post(t, bob, e.url+"/api/v1/table-repair", map[string]any{"table": "public.t", "diff_file": aliceTask, "source_of_truth": "n1"})
		require.Equal(t, http.StatusBadRequest, r.code, "body: %s", r.body)
		require.Contains(t, r.json(t)["error"], "does not exist")
	})
	t.Run("bob's stream carries only his own tasks", func(t *testing.T) {
		bobTask := submit(t, bob, e.url+"/api/v1/table-diff", map[string]any{"table": "public.t"})
		events := bobEvents.until(t, bobTask)
		require.Empty(t, names(events, aliceTask), "bob's stream leaked alice's task")
		require.Equal(t, "queued", names(events, bobTask)[0])
	})
}

// ACE Go's mtree routes, end to end: build, a diff that finds drift, its export, and the
// teardown of the table's tree, as the CN's role, who owns the table.
func TestMtreeRoutes(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.ExecAll(fmt.Sprintf(`ALTER TABLE public.t OWNER TO %s; GRANT CREATE ON DATABASE %s TO %[1]s`, e.alice, e.DB))
	alice := e.as(t, e.alice)
	id := submit(t, alice, e.url+"/api/v1/mtree/build", map[string]any{"table": "public.t", "block_size": 100})
	task := waitTask(t, alice, e.url+"/api/v1/tasks/"+id)
	require.Equal(t, "COMPLETED", task["status"], "%v", task)
	require.Equal(t, "MTREE_BUILD", task["task_type"])

	e.Node("n3").Exec(t, `UPDATE public.t SET v = 'drift' WHERE id = 3`)
	id = submit(t, alice, e.url+"/api/v1/mtree/diff", map[string]any{"table": "public.t"})
	task = waitTask(t, alice, e.url+"/api/v1/tasks/"+id)
	require.Equal(t, "COMPLETED", task["status"], "%v", task)
	require.Equal(t, "MTREE_DIFF", task["task_type"])
	require.EqualValues(t, 1, task["task_context"].(map[string]any)["diff_summary"].(map[string]any)["differing_keys"])
	r := do(t, alice, http.MethodGet, e.url+"/api/v1/tasks/"+id+"/diff", "", "")
	require.Equal(t, http.StatusOK, r.code, "body: %s", r.body)
	require.Contains(t, compact(t, r.body), `"v":"drift"`)

	id = submit(t, alice, e.url+"/api/v1/mtree/teardown-table", map[string]any{"table": "public.t"})
	task = waitTask(t, alice, e.url+"/api/v1/tasks/"+id)
	require.Equal(t, "COMPLETED", task["status"], "%v", task)
	var trees int
	require.NoError(t, e.Node("n1").Pool.QueryRow(context.Background(), `SELECT count(*) FROM ace.mtrees`).Scan(&trees))
	require.Zero(t, trees)
}
