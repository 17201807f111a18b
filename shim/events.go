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
	eventCluster  = "cluster" // payload-free: an event of the cluster was recorded
)

// eventsHandler streams the caller's own tasks as Server-Sent Events. It holds no database
// connection: the shared hub wakes it (the payload-free ace_task for new tasks, each followed
// task's ace_task_<id> for its changes), and it re-reads the rows on the caller's own login, so
// row-level security decides what it can read, at most once per ACE_SHIM_EVENT_MIN_INTERVAL and
// at least every poll interval. A CN may hold ACE_SHIM_MAX_STREAMS_PER_CN streams at once.
//
// With ?after=ID it is no stream but the list of the cluster's events after ID (eventList).
// The stream also sends a payload-free "cluster" event whenever an event is recorded
// (ace_event): the caller reads what it may see with ?after=.
func (s *Server) eventsHandler(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Has("after") {
		s.eventList(w, r)
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, fmt.Errorf("this connection cannot stream"))
		return
	}
	ctx, role := r.Context(), callerCN(r)
	release, err := s.streams.take(role)
	if err != nil {
		writeError(w, http.StatusTooManyRequests, err)
		return
	}
	defer release()
	st := &stream{s: s, role: role, sub: newSubscriber(), cluster: newSubscriber(), since: time.Now(), seen: map[uuid.UUID]string{}, following: map[uuid.UUID]bool{}}
	s.hub.subscribe(newTaskChannel, st.sub)
	s.hub.subscribe(sqlapi.EventChannel, st.cluster)
	defer st.close()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	flusher.Flush()
	if err := st.run(ctx, func(name string, e any) error {
		return writeEvent(w, flusher, name, e)
	}); err != nil && ctx.Err() == nil {
		s.log.Warn("event stream ended", "role", role, "error", err)
	}
}

// newTaskChannel is notified (without a payload) when any task is inserted.
const newTaskChannel = "ace_task"

func writeEvent(w http.ResponseWriter, f http.Flusher, name string, e any) error {
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
	s         *Server
	role      string
	sub       *subscriber
	cluster   *subscriber // woken by ace_event: an event of the cluster was recorded
	since     time.Time
	seen      map[uuid.UUID]string // task -> what was last sent about it ("" once done)
	following map[uuid.UUID]bool   // tasks whose channel wakes the stream
}

func (st *stream) close() {
	st.s.hub.unsubscribe(newTaskChannel, st.sub)
	st.s.hub.unsubscribe(sqlapi.EventChannel, st.cluster)
	for id := range st.following {
		st.s.hub.unsubscribe(sqlapi.TaskChannel(id), st.sub)
	}
}

// run re-reads the tasks, then waits for a wake-up or the poll interval, and never re-reads
// sooner than the minimum interval after the last re-read: a flood of notifications, which any
// role may send, costs one re-read per interval. A cluster event is passed on as it comes, with
// nothing in it (the caller reads the events it may see), at most once per minimum interval too.
func (st *stream) run(ctx context.Context, send func(string, any) error) error {
	var last, lastCluster time.Time
	for {
		if err := sleep(ctx, time.Until(last.Add(st.s.cfg.EventMinInterval))); err != nil {
			return err
		}
		last = time.Now()
		if err := st.scan(ctx, func(name string, e event) error { return send(name, e) }); err != nil {
			return err
		}
		if err := st.wait(ctx, send, &lastCluster); err != nil {
			return err
		}
	}
}

// wait returns when the tasks are to be read again (a wake-up or the poll interval), passing
// on the cluster's events meanwhile.
func (st *stream) wait(ctx context.Context, send func(string, any) error, lastCluster *time.Time) error {
	poll := time.NewTimer(st.s.cfg.PollInterval)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-st.sub.wake:
			return nil
		case <-poll.C:
			return nil
		case <-st.cluster.wake:
			if err := sleep(ctx, time.Until(lastCluster.Add(st.s.cfg.EventMinInterval))); err != nil {
				return err
			}
			*lastCluster = time.Now()
			if err := send(eventCluster, struct{}{}); err != nil {
				return err
			}
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// scan reads the caller's unfinished tasks and those submitted since the stream began, and sends
// what changed. submitted_by = current_user keeps the stream to the caller's own tasks, even
// where row-level security would also show those of roles the caller belongs to.
func (st *stream) scan(ctx context.Context, send func(string, event) error) error {
	st.s.metrics.reread()
	conn, err := st.s.logins.acquire(ctx, st.role)
	if err != nil {
		return err
	}
	events, err := readEvents(ctx, conn.Conn(), st.since)
	conn.Release()
	if err != nil {
		return err
	}
	for _, e := range events {
		st.update(e)
		if err := st.send(e, send); err != nil {
			return err
		}
	}
	return nil
}

// readEvents reads, on the caller's connection, the tasks a scan reports.
func readEvents(ctx context.Context, conn *pgx.Conn, since time.Time) ([]event, error) {
	rows, err := conn.Query(ctx, `SELECT task_id, task_type, status, progress, error FROM ace.tasks
		WHERE submitted_by = current_user AND (status IN ('QUEUED', 'RUNNING') OR submitted_at >= $1)
		ORDER BY submitted_at, task_id`, since)
	if err != nil {
		return nil, fmt.Errorf("read tasks: %w", err)
	}
	events, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (event, error) {
		var e event
		err := row.Scan(&e.TaskID, &e.TaskType, &e.Status, &e.Progress, &e.Error)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("read tasks: %w", err)
	}
	return events, nil
}

// update follows the channel of a task the caller's own read returned while it runs, and
// stops once it ended: the stream never subscribes to a task it could not read.
func (st *stream) update(e event) {
	ch := sqlapi.TaskChannel(e.TaskID)
	switch {
	case !e.Status.Terminal() && !st.following[e.TaskID]:
		st.s.hub.subscribe(ch, st.sub)
		st.following[e.TaskID] = true
	case e.Status.Terminal() && st.following[e.TaskID]:
		st.s.hub.unsubscribe(ch, st.sub)
		delete(st.following, e.TaskID)
	}
}

// send sends what is new about one task. A task first seen after it was submitted gets its
// queued event first, so every task the stream saw begin reports queued … done.
func (st *stream) send(e event, send func(string, event) error) error {
	state := string(e.Status) + string(e.Progress)
	last, known := st.seen[e.TaskID]
	if known && (last == "" || last == state) {
		return nil
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
	}
	st.seen[e.TaskID] = state
	return send(name, e)
}
