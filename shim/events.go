package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/sqlapi"
)

// event is one Server-Sent Event about a task of the caller's.
type event struct {
	TaskID   uuid.UUID       `json:"task_id"`
	TaskType sqlapi.TaskType `json:"task_type"`
	Status   sqlapi.Status   `json:"status"`
	Progress json.RawMessage `json:"progress,omitempty"`
	Error    *string         `json:"error,omitempty"`
}

// Event names: a task was queued, moved on (started, progressed), or ended.
const (
	eventQueued   = "queued"
	eventProgress = "progress"
	eventDone     = "done"
)

// eventsHandler streams the caller's own tasks as Server-Sent Events. It LISTENs on the
// caller's own login, so row-level security decides what it can read: the payload-free
// ace_task wakes it for new tasks, each followed task's ace_task_<id> for its changes, and it
// re-reads the rows (a notification is only a wake-up) at least every poll interval.
func (s *Server) eventsHandler(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, fmt.Errorf("this connection cannot stream"))
		return
	}
	ctx := r.Context()
	conn, err := s.logins.connect(ctx, callerCN(r))
	if err != nil {
		dbError(w, err)
		return
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	st := &stream{conn: conn, since: time.Now(), seen: map[uuid.UUID]string{}, listening: map[uuid.UUID]bool{}}
	if err := st.listen(ctx, "ace_task"); err != nil {
		dbError(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	flusher.Flush()
	if err := st.run(ctx, s.cfg.PollInterval, func(name string, e event) error {
		return writeEvent(w, flusher, name, e)
	}); err != nil && ctx.Err() == nil {
		s.log.Warn("event stream ended", "role", callerCN(r), "error", err)
	}
}

func writeEvent(w http.ResponseWriter, f http.Flusher, name string, e event) error {
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, data); err != nil {
		return fmt.Errorf("send event: %w", err)
	}
	f.Flush()
	return nil
}

// stream follows one caller's tasks.
type stream struct {
	conn      *pgx.Conn
	since     time.Time
	seen      map[uuid.UUID]string // task -> what was last sent about it ("" once done)
	listening map[uuid.UUID]bool
}

func (st *stream) listen(ctx context.Context, channel string) error {
	if _, err := st.conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		return fmt.Errorf("listen on %s: %w", channel, err)
	}
	return nil
}

func (st *stream) run(ctx context.Context, poll time.Duration, send func(string, event) error) error {
	for {
		if err := st.scan(ctx, send); err != nil {
			return err
		}
		waitCtx, cancel := context.WithTimeout(ctx, poll)
		_, err := st.conn.WaitForNotification(waitCtx)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil && waitCtx.Err() == nil {
			return fmt.Errorf("wait for task notifications: %w", err)
		}
	}
}

// scan reads the caller's unfinished tasks and those submitted since the stream began, and sends
// what changed. submitted_by = current_user keeps the stream to the caller's own tasks, even
// where row-level security would also show those of roles the caller belongs to.
func (st *stream) scan(ctx context.Context, send func(string, event) error) error {
	rows, err := st.conn.Query(ctx, `SELECT task_id, task_type, status, progress, error FROM ace.tasks
		WHERE submitted_by = current_user AND (status IN ('QUEUED', 'RUNNING') OR submitted_at >= $1)
		ORDER BY submitted_at, task_id`, st.since)
	if err != nil {
		return fmt.Errorf("read tasks: %w", err)
	}
	events, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (event, error) {
		var e event
		err := row.Scan(&e.TaskID, &e.TaskType, &e.Status, &e.Progress, &e.Error)
		return e, err
	})
	if err != nil {
		return fmt.Errorf("read tasks: %w", err)
	}
	for _, e := range events {
		if err := st.update(ctx, e, send); err != nil {
			return err
		}
	}
	return nil
}

// update sends what is new about one task. A task first seen after it was submitted gets its
// queued event first, so every task the stream saw begin reports queued … done.
func (st *stream) update(ctx context.Context, e event, send func(string, event) error) error {
	state := string(e.Status) + string(e.Progress)
	last, known := st.seen[e.TaskID]
	if known && (last == "" || last == state) {
		return nil
	}
	if !st.listening[e.TaskID] && !e.Status.Terminal() {
		if err := st.listen(ctx, sqlapi.TaskChannel(e.TaskID)); err != nil {
			return err
		}
		st.listening[e.TaskID] = true
	}
	if !known && e.Status != sqlapi.StatusQueued {
		queued := event{TaskID: e.TaskID, TaskType: e.TaskType, Status: sqlapi.StatusQueued}
		if err := send(eventQueued, queued); err != nil {
			return err
		}
	}
	name := eventProgress
	switch {
	case e.Status == sqlapi.StatusQueued:
		name = eventQueued
	case e.Status.Terminal():
		name, state = eventDone, ""
		if st.listening[e.TaskID] {
			if _, err := st.conn.Exec(ctx, "UNLISTEN "+pgx.Identifier{sqlapi.TaskChannel(e.TaskID)}.Sanitize()); err != nil {
				return fmt.Errorf("stop listening to task %s: %w", e.TaskID, err)
			}
			delete(st.listening, e.TaskID)
		}
	}
	st.seen[e.TaskID] = state
	return send(name, e)
}
