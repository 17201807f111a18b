package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/ace-agent/ace-agent/sqlapi"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// maxScheduleBody bounds a POST /api/v1/schedules body: a schedule's definition, not a file.
const maxScheduleBody = 1 << 20

// schedulesHandler answers GET /api/v1/schedules with the caller's schedules (ace.schedules,
// which shows a role its own), and POST with ace.schedule run as the caller: the fields are its
// argument names (sqlapi.ScheduleSpec), and the SQL side validates them.
func (s *Server) schedulesHandler(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		s.addSchedule(w, r)
		return
	}
	var all []sqlapi.Schedule
	err := s.asCaller(r.Context(), callerCN(r), func(q sqlapi.Querier) (err error) {
		all, err = sqlapi.Schedules(r.Context(), q)
		return err
	})
	if err != nil {
		dbError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"schedules": all})
}

func (s *Server) addSchedule(w http.ResponseWriter, r *http.Request) {
	var spec sqlapi.ScheduleSpec
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxScheduleBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("read the schedule: %w (fields: schedule_name, task_type, args, every, cron, run_now, scope, overlap, enabled)", err))
		return
	}
	var due time.Time
	err := s.asCaller(r.Context(), callerCN(r), func(q sqlapi.Querier) (err error) {
		due, err = sqlapi.AddSchedule(r.Context(), q, spec)
		return err
	})
	if err != nil {
		dbError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"schedule_name": spec.Name, "next_due": due})
}

// scheduleMetrics is what one scrape read from ace.schedules: each schedule's runs started, due
// times skipped (overlap skip) and runs refused, and when it is next due, on the agent's login,
// which sees every role's schedules.
type scheduleMetrics []sqlapi.Schedule

var (
	scheduleRunsDesc = prometheus.NewDesc("ace_schedule_runs_total", "Runs each schedule started.",
		[]string{"owner", "schedule", "type"}, nil)
	scheduleSkipsDesc = prometheus.NewDesc("ace_schedule_skips_total", "Due times each schedule skipped because its previous run was still queued or running (overlap skip).",
		[]string{"owner", "schedule", "type"}, nil)
	scheduleFailuresDesc = prometheus.NewDesc("ace_schedule_failures_total", "Due times whose run was refused (its arguments no longer valid: a table dropped, a right revoked).",
		[]string{"owner", "schedule", "type"}, nil)
	scheduleNextDueDesc = prometheus.NewDesc("ace_schedule_next_due_timestamp_seconds", "When each enabled schedule is next due, as a Unix time: one long past means no agent fires it.",
		[]string{"owner", "schedule", "type"}, nil)
)

func readScheduleMetrics(ctx context.Context, pool *pgxpool.Pool) (scheduleMetrics, error) {
	all, err := sqlapi.Schedules(ctx, pool)
	if err != nil {
		return nil, fmt.Errorf("read schedule metrics: %w", err)
	}
	return all, nil
}

func (m scheduleMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{scheduleRunsDesc, scheduleSkipsDesc, scheduleFailuresDesc, scheduleNextDueDesc} {
		ch <- d
	}
}

func (m scheduleMetrics) Collect(ch chan<- prometheus.Metric) {
	for _, s := range m {
		constant(ch, scheduleRunsDesc, prometheus.CounterValue, float64(s.Runs), s.Owner, s.Name, s.TaskType)
		constant(ch, scheduleSkipsDesc, prometheus.CounterValue, float64(s.Skipped), s.Owner, s.Name, s.TaskType)
		constant(ch, scheduleFailuresDesc, prometheus.CounterValue, float64(s.Failures), s.Owner, s.Name, s.TaskType)
		if s.Enabled {
			constant(ch, scheduleNextDueDesc, prometheus.GaugeValue, float64(s.NextDue.UnixMilli())/1000, s.Owner, s.Name, s.TaskType)
		}
	}
}
