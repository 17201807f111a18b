package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/report"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// taskStatus is the task-status answer of both route sets: ACE Go's fields, plus the Python
// seed's task_status. Timestamps are RFC 3339 with nanoseconds, time_taken is in seconds.
type taskStatus struct {
	TaskID     uuid.UUID      `json:"task_id"`
	TaskType   string         `json:"task_type"`
	Status     sqlapi.Status  `json:"status"`
	TaskStatus sqlapi.Status  `json:"task_status,omitempty"`
	Schema     string         `json:"schema,omitempty"`
	Table      string         `json:"table,omitempty"`
	StartedAt  *time.Time     `json:"started_at,omitempty"`
	FinishedAt *time.Time     `json:"finished_at,omitempty"`
	TimeTaken  float64        `json:"time_taken,omitempty"`
	Context    map[string]any `json:"task_context,omitempty"`
}

// statusOf describes a task the ACE Go way (task_type TABLE_DIFF) or the seed's (table-diff,
// with task_status).
func statusOf(t sqlapi.Task, python bool) taskStatus {
	st := taskStatus{TaskID: t.ID, TaskType: strings.ToUpper(strings.ReplaceAll(string(t.Type), "-", "_")),
		Status: t.Status, StartedAt: t.StartedAt, FinishedAt: t.FinishedAt}
	if python {
		st.TaskType, st.TaskStatus = string(t.Type), t.Status
	}
	var args struct {
		Table string `json:"table_name"`
	}
	if json.Unmarshal(t.Args, &args) == nil && args.Table != "" {
		st.Schema, st.Table, _ = strings.Cut(args.Table, ".")
	}
	if t.StartedAt != nil && t.FinishedAt != nil {
		st.TimeTaken = t.FinishedAt.Sub(*t.StartedAt).Seconds()
	}
	st.Context = taskContext(t)
	return st
}

// taskContext holds the result under ACE's name for it (diff_summary, repair_report), the
// progress while the task runs, and the error of a task that failed.
func taskContext(t sqlapi.Task) map[string]any {
	c := map[string]any{}
	if len(t.Result) > 0 {
		key := "result"
		switch spec, _ := sqlapi.Spec(t.Type); spec.Result {
		case sqlapi.ResultDiff:
			key = "diff_summary"
		case sqlapi.ResultRepair:
			key = "repair_report"
		}
		c[key] = t.Result
	}
	if len(t.Progress) > 0 && !t.Status.Terminal() {
		c["progress"] = t.Progress
	}
	if t.Error != nil {
		c["error"] = *t.Error
	}
	if len(c) == 0 {
		return nil
	}
	return c
}

// taskStatusHandler answers GET /api/v1/tasks/{task_id} and the seed's /ace/task-status (the id
// in the path or as ?task_id=).
func (s *Server) taskStatusHandler(python bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, ok := taskID(w, r)
		if !ok {
			return
		}
		var task sqlapi.Task
		err := s.asCaller(r.Context(), callerCN(r), func(q sqlapi.Querier) (err error) {
			task, err = sqlapi.GetTask(r.Context(), q, id)
			return err
		})
		if err != nil {
			taskError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, statusOf(task, python))
	}
}

// taskID reads the task id from the path, or from ?task_id= (the seed's form).
func taskID(w http.ResponseWriter, r *http.Request) (uuid.UUID, bool) {
	raw := r.PathValue("task_id")
	if raw == "" {
		raw = r.URL.Query().Get("task_id")
	}
	if raw == "" {
		writeError(w, http.StatusBadRequest, errors.New("task_id is required"))
		return uuid.Nil, false
	}
	id, err := uuid.Parse(raw)
	if err != nil {
		// ace-agent's task ids are UUIDs: anything else names no task.
		writeError(w, http.StatusNotFound, fmt.Errorf("task %q not found", raw))
		return uuid.Nil, false
	}
	return id, true
}

// taskError answers an error of reading a task: one the caller cannot see is as unknown as one
// that does not exist (row-level security), so both are 404.
func taskError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, sqlapi.ErrNoTask):
		writeError(w, http.StatusNotFound, err)
	case errors.Is(err, sqlapi.ErrNotCompletedDiff):
		writeError(w, http.StatusConflict, err)
	default:
		dbError(w, err)
	}
}

// asCaller runs fn on a connection logged in as role.
func (s *Server) asCaller(ctx context.Context, role string, fn func(sqlapi.Querier) error) error {
	conn, err := s.logins.acquire(ctx, role)
	if err != nil {
		return err
	}
	defer conn.Release()
	return fn(conn)
}

// diffFormats maps media types onto report formats.
var diffFormats = map[string]string{"application/json": "json", "text/html": "html", "text/csv": "csv"}

// diffHandler answers GET /api/v1/tasks/{task_id}/diff with the diff as an ACE diff file (JSON),
// HTML or CSV, chosen by ?format= or Accept; the rendering is engine/report's, the one the CLI's
// diff export uses.
func (s *Server) diffHandler(w http.ResponseWriter, r *http.Request) {
	id, ok := taskID(w, r)
	if !ok {
		return
	}
	format := diffFormat(r)
	if format == "" {
		code := http.StatusNotAcceptable
		if r.URL.Query().Has("format") {
			code = http.StatusBadRequest
		}
		writeError(w, code, errors.New("unsupported format: use json, html or csv (?format= or Accept: application/json, text/html, text/csv)"))
		return
	}
	conn, err := s.logins.acquire(r.Context(), callerCN(r))
	if err != nil {
		dbError(w, err)
		return
	}
	defer conn.Release()
	// One snapshot for the report's several passes over the rows.
	tx, err := conn.BeginTx(r.Context(), pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		dbError(w, fmt.Errorf("read the diff of task %s: %w", id, err))
		return
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(r.Context())) }()
	_, summary, err := sqlapi.CompletedDiff(r.Context(), tx, id)
	if err != nil {
		taskError(w, err)
		return
	}
	for mt, f := range diffFormats {
		if f == format {
			w.Header().Set("Content-Type", mt+"; charset=utf-8")
		}
	}
	rows := func(fn func(engine.DiffRow) error) error { return sqlapi.ReadDiffRows(r.Context(), tx, id, fn) }
	if err := report.Write(r.Context(), w, format, summary, rows); err != nil {
		// The status line is sent; all that is left is to cut the body short.
		s.log.Warn("writing a diff failed", "task", id, "error", err)
		panic(http.ErrAbortHandler)
	}
}

// diffFormat is ?format=, else the first supported type of Accept, else json; "" if ?format= or
// every type of Accept is unsupported.
func diffFormat(r *http.Request) string {
	if f := r.URL.Query().Get("format"); f != "" {
		for _, known := range diffFormats {
			if f == known {
				return f
			}
		}
		return ""
	}
	accept := r.Header.Get("Accept")
	if accept == "" {
		return "json"
	}
	for _, part := range strings.Split(accept, ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		if f, ok := diffFormats[mt]; ok {
			return f
		}
		if mt == "*/*" || mt == "application/*" {
			return "json"
		}
	}
	return ""
}
