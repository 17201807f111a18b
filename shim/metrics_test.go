package shim_test

import (
	"math"
	"net/http"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
)

// scrape reads the shim's /metrics through Prometheus' text-format parser, which refuses what a
// Prometheus server would refuse (a malformed line, a sample of a family it saw typed otherwise).
func scrape(t *testing.T, metricsURL string) map[string]*dto.MetricFamily {
	t.Helper()
	r := do(t, http.DefaultClient, http.MethodGet, metricsURL+"/metrics", "", "")
	require.Equal(t, http.StatusOK, r.code, "body: %s", r.body)
	require.True(t, strings.HasPrefix(r.header.Get("Content-Type"), "text/plain; version=0.0.4"), "Content-Type %q", r.header.Get("Content-Type"))
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(r.body)))
	require.NoError(t, err, "body: %s", r.body)
	return families
}

// family is the family called name, of type typ and with a HELP text.
func family(t *testing.T, families map[string]*dto.MetricFamily, name string, typ dto.MetricType) *dto.MetricFamily {
	t.Helper()
	f := families[name]
	require.NotNil(t, f, "no family %s", name)
	require.Equal(t, typ, f.GetType(), "type of %s", name)
	require.NotEmpty(t, f.GetHelp(), "help of %s", name)
	return f
}

// series is the sample of f whose labels are exactly labels (name, value pairs), nil if none is.
func series(f *dto.MetricFamily, labels ...string) *dto.Metric {
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		if len(got) == len(want) && func() bool {
			for k, v := range want {
				if got[k] != v {
					return false
				}
			}
			return true
		}() {
			return m
		}
	}
	return nil
}

// sample is the value of the gauge or counter sample of name whose labels are exactly labels.
func sample(t *testing.T, families map[string]*dto.MetricFamily, name string, typ dto.MetricType, labels ...string) float64 {
	t.Helper()
	m := series(family(t, families, name, typ), labels...)
	require.NotNil(t, m, "no %s%v among %v", name, labels, families[name].GetMetric())
	if typ == dto.MetricType_COUNTER {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

// metric reads one gauge or counter sample without labels from the shim's /metrics.
func metric(t *testing.T, metricsURL, name string) float64 {
	t.Helper()
	families := scrape(t, metricsURL)
	require.NotNil(t, families[name], "no %s in /metrics", name)
	return sample(t, families, name, families[name].GetType())
}

// finishedTasks records, in one transaction (so no agent claims them), table-diff tasks that ran
// 0.2 s, 2 s and 2 h to COMPLETED with the rows they hashed and the keys they found differing,
// one that FAILED after exactly 1 s (a bucket's bound: "le" counts it) and one CANCELLED before
// it started.
const finishedTasks = `BEGIN;
CREATE TEMP TABLE finished (duration interval, status text, result jsonb);
INSERT INTO finished VALUES
	('0.2 s', 'COMPLETED', '{"rows_per_node": {"n1": 200, "n2": 199}, "differing_keys": 1}'),
	('2 s', 'COMPLETED', '{"rows_per_node": {"n1": 200, "n2": 200}, "differing_keys": 0}'),
	('2 h', 'COMPLETED', '{"rows_per_node": {"n1": 200, "n3": 190}, "differing_keys": 10}'),
	('1 s', 'FAILED', NULL),
	(NULL, 'CANCELLED', NULL);
INSERT INTO ace.tasks (task_type, args) SELECT 'table-diff', '{"cluster_name": "default", "table_name": "public.t"}' FROM finished;
UPDATE ace.tasks t SET status = f.status, result = f.result, finished_at = now(), started_at = now() - f.duration
FROM (SELECT task_id, row_number() OVER (ORDER BY task_id) n FROM ace.tasks) i,
     (SELECT *, row_number() OVER () n FROM finished) f
WHERE t.task_id = i.task_id AND i.n = f.n;
COMMIT`

// /metrics, read as a Prometheus server reads it: every family keeps its name, type and labels,
// ace.tasks is counted by type and status, durations fill the histogram's cumulative buckets,
// results are summed by type, and the shim's own counters and gauges start at zero.
func TestMetricsExposition(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.Node("n1").Exec(t, finishedTasks)
	refused := post(t, e.as(t, e.alice), e.url+"/ace/table-diff", map[string]any{"cluster_name": "default", "table_name": "public.nosuch"})
	require.Equal(t, http.StatusBadRequest, refused.code, "body: %s", refused.body)
	families := scrape(t, e.metricsURL)

	t.Run("tasks by type and status", func(t *testing.T) {
		for status, n := range map[string]float64{"COMPLETED": 3, "FAILED": 1, "CANCELLED": 1} {
			require.Equal(t, n, sample(t, families, "ace_tasks", dto.MetricType_GAUGE, "type", "table-diff", "status", status), status)
		}
	})
	t.Run("durations", func(t *testing.T) {
		f := family(t, families, "ace_task_duration_seconds", dto.MetricType_HISTOGRAM)
		completed := series(f, "type", "table-diff", "status", "COMPLETED").GetHistogram()
		require.EqualValues(t, 3, completed.GetSampleCount())
		require.InDelta(t, 7202.2, completed.GetSampleSum(), 1e-6)
		require.Equal(t, map[float64]uint64{0.1: 0, 0.5: 1, 1: 1, 5: 2, 15: 2, 60: 2, 300: 2, 900: 2, 3600: 2, 14400: 3, math.Inf(1): 3}, buckets(completed))
		failed := series(f, "type", "table-diff", "status", "FAILED").GetHistogram()
		require.EqualValues(t, 1, failed.GetSampleCount())
		require.InDelta(t, 1, failed.GetSampleSum(), 1e-9)
		require.Equal(t, uint64(0), buckets(failed)[0.5])
		require.Equal(t, uint64(1), buckets(failed)[1], "a run of exactly a bound is within it")
		require.Nil(t, series(f, "type", "table-diff", "status", "CANCELLED"), "a task that never started has no run time")
	})
	t.Run("results by type", func(t *testing.T) {
		require.Equal(t, 1189.0, sample(t, families, "ace_rows_hashed_total", dto.MetricType_COUNTER, "type", "table-diff"))
		require.Equal(t, 11.0, sample(t, families, "ace_differing_rows_total", dto.MetricType_COUNTER, "type", "table-diff"))
	})
	t.Run("the shim's own", func(t *testing.T) {
		require.Equal(t, 1.0, sample(t, families, "ace_shim_submissions_total", dto.MetricType_COUNTER, "type", "table-diff", "outcome", "refused"))
		require.Nil(t, series(families["ace_shim_submissions_total"], "type", "table-diff", "outcome", "accepted"))
		require.Zero(t, sample(t, families, "ace_shim_event_streams", dto.MetricType_GAUGE))
		require.Zero(t, sample(t, families, "ace_shim_uploads", dto.MetricType_GAUGE))
		require.Zero(t, sample(t, families, "ace_shim_event_rereads_total", dto.MetricType_COUNTER))
	})
}

// buckets is a histogram's cumulative counts by upper bound.
func buckets(h *dto.Histogram) map[float64]uint64 {
	out := map[float64]uint64{}
	for _, b := range h.GetBucket() {
		out[b.GetUpperBound()] = b.GetCumulativeCount()
	}
	return out
}

// /metrics shows each tree's lag and warning (a failing change stream, a lost slot), the warning
// as a label that reads back as it was written, quotes, newline and backslash included.
func TestMetricsShowTreeWarnings(t *testing.T) {
	t.Parallel()
	e := setup(t)
	warning := "the stream failed: \"pub\" is gone\nC:\\wal"
	e.Node("n1").Exec(t, `INSERT INTO ace.mtree_node_status (node_name, table_name, status) VALUES ('n9', 'public.t', jsonb_build_object('warning', $1::text, 'lag_bytes', 4096, 'retained_wal_bytes', 8192, 'dirty_leaves', 3))`, warning)
	families := scrape(t, e.metricsURL)
	require.Equal(t, 1.0, sample(t, families, "ace_mtree_warning", dto.MetricType_GAUGE, "node", "n9", "table", "public.t", "warning", warning))
	require.Equal(t, 4096.0, sample(t, families, "ace_mtree_lag_bytes", dto.MetricType_GAUGE, "node", "n9", "table", "public.t"))
	require.Equal(t, 8192.0, sample(t, families, "ace_mtree_retained_wal_bytes", dto.MetricType_GAUGE, "node", "n9", "table", "public.t"))
	require.Equal(t, 3.0, sample(t, families, "ace_mtree_stale_leaves", dto.MetricType_GAUGE, "node", "n9", "table", "public.t"))
}

// /metrics shows each table's verdict per node (one series per verdict, 1 for the current one),
// its differing keys and its age, from ace.table_sync, whoever may read the table.
func TestMetricsShowTableVerdicts(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.Node("n1").Exec(t, `INSERT INTO ace.table_sync (schema_name, rel_name, node_name, verdict, differing_keys, as_of, as_of_task) VALUES
		('public', 't', 'n1', 'in_sync', 0, now() - interval '1 hour', gen_random_uuid()),
		('public', 't', 'n2', 'out_of_sync', 7, now() - interval '1 hour', gen_random_uuid())`)
	families := scrape(t, e.metricsURL)
	require.Equal(t, 1.0, sample(t, families, "ace_table_verdict", dto.MetricType_GAUGE, "table", "public.t", "node", "n2", "verdict", "out_of_sync"))
	require.Equal(t, 0.0, sample(t, families, "ace_table_verdict", dto.MetricType_GAUGE, "table", "public.t", "node", "n2", "verdict", "in_sync"))
	require.Equal(t, 1.0, sample(t, families, "ace_table_verdict", dto.MetricType_GAUGE, "table", "public.t", "node", "n1", "verdict", "in_sync"))
	require.Equal(t, 7.0, sample(t, families, "ace_table_differing_keys", dto.MetricType_GAUGE, "table", "public.t", "node", "n2"))
	require.InDelta(t, 3600, sample(t, families, "ace_table_verdict_age_seconds", dto.MetricType_GAUGE, "table", "public.t", "node", "n1"), 60)
}
