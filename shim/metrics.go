package shim

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ace-agent/ace-agent/sqlapi"
)

// metrics serves /metrics through Prometheus' client library. The shim's own counts (submissions,
// event streams, re-reads, uploads) live in a registry of the shim's own, not the process-wide
// default one. What ace.tasks and ace.mtree_status() hold is read afresh at every scrape, on the
// agent's own login, which owns the ace schema and so sees every role's tasks (in aggregate only:
// no task ids, no arguments).
type metrics struct {
	pool    *pgxpool.Pool // the agent's login (ACE_DSN)
	reg     *prometheus.Registry
	submits *prometheus.CounterVec // by task type and outcome
	rereads prometheus.Counter     // re-reads of the tasks by event streams
}

// newMetrics registers the shim's own metrics; streams and uploads count the event streams open
// and the uploads of ACE diff files being read or imported, at scrape time.
func newMetrics(pool *pgxpool.Pool, streams, uploads func() int) *metrics {
	m := &metrics{
		pool: pool,
		reg:  prometheus.NewRegistry(),
		submits: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ace_shim_submissions_total",
			Help: "Tasks submitted through this shim since it started, by type and outcome."}, []string{"type", "outcome"}),
		rereads: prometheus.NewCounter(prometheus.CounterOpts{Name: "ace_shim_event_rereads_total",
			Help: "Re-reads of the tasks by event streams since the shim started (at most one per stream per ACE_SHIM_EVENT_MIN_INTERVAL)."}),
	}
	m.reg.MustRegister(m.submits, m.rereads,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ace_shim_event_streams",
			Help: "Event streams (GET /api/v1/events) open on this shim."}, func() float64 { return float64(streams()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ace_shim_uploads",
			Help: "Requests uploading an ACE diff file that this shim is reading or importing."}, func() float64 { return float64(uploads()) }))
	return m
}

// reread counts one re-read of an event stream.
func (m *metrics) reread() { m.rereads.Inc() }

func (m *metrics) submitted(typ sqlapi.TaskType, err error) {
	outcome := "accepted"
	if err != nil {
		outcome = "refused"
	}
	m.submits.WithLabelValues(string(typ), outcome).Inc()
}

// handler reads the database with the request's context first, so that a scraper that gives up
// cancels the queries and a database that cannot answer gets a 503 with its error, as the rest
// of the shim answers. What it read is then gathered with the shim's own registry, in a registry
// that lives for this scrape only: no reading outlives the request that asked for it.
func (m *metrics) handler(w http.ResponseWriter, r *http.Request) {
	db, err := readDatabaseMetrics(r.Context(), m.pool)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err)
		return
	}
	cluster, err := readClusterMetrics(r.Context(), m.pool)
	schedules, err := readScheduleMetrics(r.Context(), m.pool)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err)
		return
	}
	scrape := prometheus.NewPedanticRegistry()
	for _, c := range []prometheus.Collector{db, cluster, schedules} {
		if err := scrape.Register(c); err != nil {
			writeError(w, http.StatusInternalServerError, fmt.Errorf("register the database's metrics: %w", err))
			return
		}
	}
	promhttp.HandlerFor(prometheus.Gatherers{m.reg, scrape}, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}).ServeHTTP(w, r)
}

// durationBuckets are the upper bounds, in seconds, of ace_task_duration_seconds' buckets: from
// tasks that end within a second (a small table) to those that take hours (a large one).
var durationBuckets = []float64{0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600}

// taskMetricsSQL aggregates ace.tasks by type and status: the count, the run time of the tasks
// that ran to an end (its sum, count and how many ended within each of durationBuckets, $1), and
// the rows hashed and differing rows their results report. One statement, so that the
// histogram's buckets, sum and count come from one snapshot.
var taskMetricsSQL = `SELECT task_type, status, count(*), coalesce(sum(seconds), 0)::float8, count(seconds),
	coalesce(sum(rows_hashed), 0)::bigint, coalesce(sum(differing), 0)::bigint,
	ARRAY[` + bucketCountsSQL(len(durationBuckets)) + `]::bigint[]
FROM (SELECT task_type, status,
	extract(epoch FROM finished_at - started_at)::float8 AS seconds,
	(SELECT sum(v::bigint) FROM jsonb_each_text(CASE WHEN jsonb_typeof(result->'rows_per_node') = 'object' THEN result->'rows_per_node' END) x(k, v)) AS rows_hashed,
	CASE WHEN jsonb_typeof(result->'differing_keys') = 'number' THEN (result->>'differing_keys')::bigint END AS differing
	FROM ace.tasks) t
GROUP BY task_type, status ORDER BY task_type, status`

// bucketCountsSQL counts, for each of n bucket bounds in the parameter $1, the tasks that ended
// within it: cumulative counts, as a Prometheus histogram's buckets are ("le", less or equal).
func bucketCountsSQL(n int) string {
	counts := make([]string, n)
	for i := range counts {
		counts[i] = fmt.Sprintf("count(*) FILTER (WHERE seconds <= ($1::float8[])[%d])", i+1)
	}
	return strings.Join(counts, ", ")
}

// treeLagSQL reads every node's trees as ace.mtree_status reports them.
const treeLagSQL = `SELECT node_name, table_name, coalesce(lag_bytes, 0)::float8, coalesce(retained_wal_bytes, 0)::float8,
	coalesce(dirty_leaves, 0)::float8, warning FROM ace.mtree_status()`

// tableVerdictsSQL reads every table's sync status per node (ace.table_sync, which the agent's
// login reads whole: it owns the schema) with the age of each verdict.
const tableVerdictsSQL = `SELECT format('%I.%I', schema_name, rel_name), node_name, verdict, differing_keys::float8,
	extract(epoch FROM now() - as_of)::float8 FROM ace.table_sync`

// verdicts are the values ace_table_verdict has a series for, one per table and node.
var verdicts = []string{"in_sync", "out_of_sync", "diverged"}

type tableVerdict struct {
	table, node, verdict string
	differing, age       float64
}

type taskAgg struct {
	typ, status         string
	count, ended        int64
	seconds             float64
	rowsHashed, differs int64
	endedWithin         []int64 // per durationBuckets bound, cumulative
}

// treeLag is how far one table's Merkle tree on a node trails the node's WAL, as the local
// agent last collected it (ace.mtree_status).
type treeLag struct {
	node, table                    string
	lagBytes, retainedBytes, dirty float64
	warning                        *string // why the tree or its node's change stream is unwell
}

// databaseMetrics is what one scrape read from ace.tasks and ace.mtree_status(): a
// prometheus.Collector of const metrics.
type databaseMetrics struct {
	tasks    []taskAgg
	trees    []treeLag
	verdicts []tableVerdict
}

func readDatabaseMetrics(ctx context.Context, pool *pgxpool.Pool) (*databaseMetrics, error) {
	tasks, err := readTasks(ctx, pool)
	if err != nil {
		return nil, err
	}
	trees, err := readLags(ctx, pool)
	if err != nil {
		return nil, err
	}
	verdicts, err := readVerdicts(ctx, pool)
	if err != nil {
		return nil, err
	}
	return &databaseMetrics{tasks: tasks, trees: trees, verdicts: verdicts}, nil
}

func readVerdicts(ctx context.Context, pool *pgxpool.Pool) ([]tableVerdict, error) {
	rows, err := pool.Query(ctx, tableVerdictsSQL)
	if err != nil {
		return nil, fmt.Errorf("read the tables' sync status: %w", err)
	}
	var v tableVerdict
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (tableVerdict, error) {
		return v, r.Scan(&v.table, &v.node, &v.verdict, &v.differing, &v.age)
	})
	if err != nil {
		return nil, fmt.Errorf("read the tables' sync status: %w", err)
	}
	return out, nil
}

func readTasks(ctx context.Context, pool *pgxpool.Pool) ([]taskAgg, error) {
	rows, err := pool.Query(ctx, taskMetricsSQL, durationBuckets)
	if err != nil {
		return nil, fmt.Errorf("read task metrics: %w", err)
	}
	var out []taskAgg
	var a taskAgg
	_, err = pgx.ForEachRow(rows, []any{&a.typ, &a.status, &a.count, &a.seconds, &a.ended, &a.rowsHashed, &a.differs, &a.endedWithin}, func() error {
		out = append(out, a)
		a.endedWithin = nil // a fresh slice for the next row, not one shared with this one
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read task metrics: %w", err)
	}
	return out, nil
}

func readLags(ctx context.Context, pool *pgxpool.Pool) ([]treeLag, error) {
	rows, err := pool.Query(ctx, treeLagSQL)
	if err != nil {
		return nil, fmt.Errorf("read the Merkle trees' lag: %w", err)
	}
	var out []treeLag
	var l treeLag
	_, err = pgx.ForEachRow(rows, []any{&l.node, &l.table, &l.lagBytes, &l.retainedBytes, &l.dirty, &l.warning}, func() error {
		out = append(out, l)
		l.warning = nil // a fresh string for the next row, not one shared with this one
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the Merkle trees' lag: %w", err)
	}
	return out, nil
}

var (
	tasksDesc = prometheus.NewDesc("ace_tasks", "Tasks in ace.tasks by type and status.",
		[]string{"type", "status"}, nil)
	durationDesc = prometheus.NewDesc("ace_task_duration_seconds", "Run time of the tasks that ended (started_at to finished_at), by type and status.",
		[]string{"type", "status"}, nil)
	rowsHashedDesc = prometheus.NewDesc("ace_rows_hashed_total", "Rows hashed by diffs, summed over their nodes, as their results report.",
		[]string{"type"}, nil)
	differingDesc = prometheus.NewDesc("ace_differing_rows_total", "Differing keys found by diffs, as their results report.",
		[]string{"type"}, nil)
	lagDesc = prometheus.NewDesc("ace_mtree_lag_bytes", "How far each node's change stream, and so each Merkle tree, trails the node's WAL.",
		[]string{"node", "table"}, nil)
	retainedDesc = prometheus.NewDesc("ace_mtree_retained_wal_bytes", "WAL each node's slot holds back.",
		[]string{"node", "table"}, nil)
	staleDesc = prometheus.NewDesc("ace_mtree_stale_leaves", "Leaves of each tree whose hashes wait for the next diff to be refreshed.",
		[]string{"node", "table"}, nil)
	verdictDesc = prometheus.NewDesc("ace_table_verdict", "1 for each table and node's verdict of its last diff, rerun or repair (in_sync, out_of_sync or diverged), 0 for the others (ace.table_status).",
		[]string{"table", "node", "verdict"}, nil)
	verdictKeysDesc = prometheus.NewDesc("ace_table_differing_keys", "Keys on which each node disagreed with the majority (or had none) at its table's last verdict.",
		[]string{"table", "node"}, nil)
	verdictAgeDesc = prometheus.NewDesc("ace_table_verdict_age_seconds", "Age of each table and node's last verdict; stale in ace.table_status beyond the table_status_max_age setting.",
		[]string{"table", "node"}, nil)
	warningDesc = prometheus.NewDesc("ace_mtree_warning", "1 for each tree whose node reports a warning (a failing change stream, a lost slot), the warning as a label.",
		[]string{"node", "table", "warning"}, nil)
)

func (d *databaseMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, desc := range []*prometheus.Desc{tasksDesc, durationDesc, rowsHashedDesc, differingDesc, lagDesc, retainedDesc, staleDesc, warningDesc,
		verdictDesc, verdictKeysDesc, verdictAgeDesc} {
		ch <- desc
	}
}

func (d *databaseMetrics) Collect(ch chan<- prometheus.Metric) {
	for _, a := range d.tasks {
		constant(ch, tasksDesc, prometheus.GaugeValue, float64(a.count), a.typ, a.status)
		if a.ended > 0 {
			h, err := prometheus.NewConstHistogram(durationDesc, uint64(a.ended), a.seconds, bucketCounts(a.endedWithin), a.typ, a.status)
			send(ch, durationDesc, h, err)
		}
	}
	for _, a := range sumByType(d.tasks) {
		constant(ch, rowsHashedDesc, prometheus.CounterValue, float64(a.rowsHashed), a.typ)
		constant(ch, differingDesc, prometheus.CounterValue, float64(a.differs), a.typ)
	}
	for _, l := range d.trees {
		constant(ch, lagDesc, prometheus.GaugeValue, l.lagBytes, l.node, l.table)
		constant(ch, retainedDesc, prometheus.GaugeValue, l.retainedBytes, l.node, l.table)
		constant(ch, staleDesc, prometheus.GaugeValue, l.dirty, l.node, l.table)
		if l.warning != nil {
			constant(ch, warningDesc, prometheus.GaugeValue, 1, l.node, l.table, *l.warning)
		}
	}
	for _, v := range d.verdicts {
		for _, verdict := range verdicts {
			constant(ch, verdictDesc, prometheus.GaugeValue, boolValue(v.verdict == verdict), v.table, v.node, verdict)
		}
		constant(ch, verdictKeysDesc, prometheus.GaugeValue, v.differing, v.table, v.node)
		constant(ch, verdictAgeDesc, prometheus.GaugeValue, v.age, v.table, v.node)
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// constant sends one sample of a gauge or counter.
func constant(ch chan<- prometheus.Metric, desc *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
	m, err := prometheus.NewConstMetric(desc, t, v, labels...)
	send(ch, desc, m, err)
}

// send sends m, or when it could not be made (a label value that is not UTF-8, say) a metric
// that fails the scrape with err.
func send(ch chan<- prometheus.Metric, desc *prometheus.Desc, m prometheus.Metric, err error) {
	if err != nil {
		m = prometheus.NewInvalidMetric(desc, err)
	}
	ch <- m
}

// bucketCounts pairs durationBuckets' bounds with the cumulative counts taskMetricsSQL read.
func bucketCounts(endedWithin []int64) map[float64]uint64 {
	out := make(map[float64]uint64, len(durationBuckets))
	for i, le := range durationBuckets {
		out[le] = uint64(endedWithin[i])
	}
	return out
}

func sumByType(aggs []taskAgg) []taskAgg {
	byType := map[string]*taskAgg{}
	var out []taskAgg
	for _, a := range aggs {
		if byType[a.typ] == nil {
			byType[a.typ] = &taskAgg{typ: a.typ}
		}
		byType[a.typ].rowsHashed += a.rowsHashed
		byType[a.typ].differs += a.differs
	}
	for _, a := range byType {
		out = append(out, *a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].typ < out[j].typ })
	return out
}
