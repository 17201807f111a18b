package shim

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ace-agent/ace-agent/sqlapi"
)

// treeLag is how far one table's Merkle tree on a node trails the node's WAL, as the local
// agent last collected it (ace.mtree_status).
type treeLag struct {
	node, table                    string
	lagBytes, retainedBytes, dirty float64
	warning                        *string // why the tree or its node's change stream is unwell
}

// treeLagSQL reads every node's trees as ace.mtree_status reports them.
const treeLagSQL = `SELECT node_name, table_name, coalesce(lag_bytes, 0)::float8, coalesce(retained_wal_bytes, 0)::float8,
	coalesce(dirty_leaves, 0)::float8, warning FROM ace.mtree_status()`

// metrics serves /metrics in Prometheus' text exposition format (version 0.0.4), written by
// hand: a few gauges and counters do not justify a dependency. Everything but the shim's own
// request counts is read from ace.tasks on the agent's own login, which owns the ace schema
// and so sees every role's tasks (in aggregate only: no task ids, no arguments).
type metrics struct {
	pool    *pgxpool.Pool // the agent's login (ACE_DSN)
	mu      sync.Mutex
	submits map[[2]string]int64 // {task type, outcome} -> count
	rereads atomic.Int64        // re-reads of the tasks by event streams
	streams func() int          // event streams open
	uploads func() int          // uploads of ACE diff files being read or imported
}

// reread counts one re-read of an event stream.
func (m *metrics) reread() { m.rereads.Add(1) }

func (m *metrics) submitted(typ sqlapi.TaskType, err error) {
	outcome := "accepted"
	if err != nil {
		outcome = "refused"
	}
	m.mu.Lock()
	m.submits[[2]string{string(typ), outcome}]++
	m.mu.Unlock()
}

// taskMetricsSQL aggregates ace.tasks by type and status: the count, the run time of the tasks
// that ran to an end, and the rows hashed and differing rows their results report.
const taskMetricsSQL = `SELECT task_type, status, count(*),
	coalesce(sum(extract(epoch FROM finished_at - started_at)) FILTER (WHERE finished_at IS NOT NULL AND started_at IS NOT NULL), 0)::float8,
	count(*) FILTER (WHERE finished_at IS NOT NULL AND started_at IS NOT NULL),
	coalesce(sum((SELECT sum(v::bigint) FROM jsonb_each_text(CASE WHEN jsonb_typeof(result->'rows_per_node') = 'object' THEN result->'rows_per_node' END) x(k, v))), 0)::bigint,
	coalesce(sum(CASE WHEN jsonb_typeof(result->'differing_keys') = 'number' THEN (result->>'differing_keys')::bigint END), 0)::bigint
FROM ace.tasks GROUP BY task_type, status ORDER BY task_type, status`

type taskAgg struct {
	typ, status         string
	count, ended        int64
	seconds             float64
	rowsHashed, differs int64
}

func (m *metrics) handler(w http.ResponseWriter, r *http.Request) {
	aggs, err := m.read(r.Context())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err)
		return
	}
	lags, err := m.readLags(r.Context())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	m.write(w, aggs, lags)
}

func (m *metrics) readLags(ctx context.Context) ([]treeLag, error) {
	rows, err := m.pool.Query(ctx, treeLagSQL)
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

func (m *metrics) read(ctx context.Context) ([]taskAgg, error) {
	rows, err := m.pool.Query(ctx, taskMetricsSQL)
	if err != nil {
		return nil, fmt.Errorf("read task metrics: %w", err)
	}
	defer rows.Close()
	var out []taskAgg
	for rows.Next() {
		var a taskAgg
		if err := rows.Scan(&a.typ, &a.status, &a.count, &a.seconds, &a.ended, &a.rowsHashed, &a.differs); err != nil {
			return nil, fmt.Errorf("read task metrics: %w", err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read task metrics: %w", err)
	}
	return out, nil
}

func (m *metrics) write(w io.Writer, aggs []taskAgg, lags []treeLag) {
	e := &exposition{w: w}
	e.family("ace_tasks", "gauge", "Tasks in ace.tasks by type and status.")
	for _, a := range aggs {
		e.sample("ace_tasks", float64(a.count), "type", a.typ, "status", a.status)
	}
	e.family("ace_task_duration_seconds", "summary", "Run time of the tasks that ended (started_at to finished_at), by type and status.")
	for _, a := range aggs {
		if a.ended > 0 {
			e.sample("ace_task_duration_seconds_sum", a.seconds, "type", a.typ, "status", a.status)
			e.sample("ace_task_duration_seconds_count", float64(a.ended), "type", a.typ, "status", a.status)
		}
	}
	e.family("ace_rows_hashed_total", "counter", "Rows hashed by diffs, summed over their nodes, as their results report.")
	e.family("ace_differing_rows_total", "counter", "Differing keys found by diffs, as their results report.")
	for _, a := range sumByType(aggs) {
		e.sample("ace_rows_hashed_total", float64(a.rowsHashed), "type", a.typ)
		e.sample("ace_differing_rows_total", float64(a.differs), "type", a.typ)
	}
	e.family("ace_shim_submissions_total", "counter", "Tasks submitted through this shim since it started, by type and outcome.")
	m.mu.Lock()
	for _, k := range sortedKeys(m.submits) {
		e.sample("ace_shim_submissions_total", float64(m.submits[k]), "type", k[0], "outcome", k[1])
	}
	m.mu.Unlock()
	e.family("ace_shim_event_streams", "gauge", "Event streams (GET /api/v1/events) open on this shim.")
	e.sample("ace_shim_event_streams", float64(m.streams()))
	e.family("ace_shim_event_rereads_total", "counter", "Re-reads of the tasks by event streams since the shim started (at most one per stream per ACE_SHIM_EVENT_MIN_INTERVAL).")
	e.sample("ace_shim_event_rereads_total", float64(m.rereads.Load()))
	e.family("ace_shim_uploads", "gauge", "Requests uploading an ACE diff file that this shim is reading or importing.")
	e.sample("ace_shim_uploads", float64(m.uploads()))
	e.family("ace_mtree_lag_bytes", "gauge", "How far each node's change stream, and so each Merkle tree, trails the node's WAL.")
	for _, l := range lags {
		e.sample("ace_mtree_lag_bytes", l.lagBytes, "node", l.node, "table", l.table)
	}
	e.family("ace_mtree_retained_wal_bytes", "gauge", "WAL each node's slot holds back.")
	for _, l := range lags {
		e.sample("ace_mtree_retained_wal_bytes", l.retainedBytes, "node", l.node, "table", l.table)
	}
	e.family("ace_mtree_stale_leaves", "gauge", "Leaves of each tree whose hashes wait for the next diff to be refreshed.")
	for _, l := range lags {
		e.sample("ace_mtree_stale_leaves", l.dirty, "node", l.node, "table", l.table)
	}
	e.family("ace_mtree_warning", "gauge", "1 for each tree whose node reports a warning (a failing change stream, a lost slot), the warning as a label.")
	for _, l := range lags {
		if l.warning != nil {
			e.sample("ace_mtree_warning", 1, "node", l.node, "table", l.table, "warning", *l.warning)
		}
	}
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

func sortedKeys(m map[[2]string]int64) [][2]string {
	keys := make([][2]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i][0]+"\x00"+keys[i][1] < keys[j][0]+"\x00"+keys[j][1] })
	return keys
}

// exposition writes Prometheus' text format.
type exposition struct{ w io.Writer }

func (e *exposition) family(name, typ, help string) {
	fmt.Fprintf(e.w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}

// sample writes one sample; labels are name, value pairs.
func (e *exposition) sample(name string, v float64, labels ...string) {
	var b strings.Builder
	b.WriteString(name)
	if len(labels) > 0 {
		b.WriteByte('{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(labels[i] + `="` + labelEscaper.Replace(labels[i+1]) + `"`)
		}
		b.WriteByte('}')
	}
	fmt.Fprintf(e.w, "%s %s\n", b.String(), strconv.FormatFloat(v, 'g', -1, 64))
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
