package sqlapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// lockClass is the first key of the session advisory lock an agent holds on each task it runs.
// The lock lives exactly as long as the agent's session, so a free lock on a RUNNING task
// proves that its agent is gone.
const lockClass = 7305

// ErrLostClaim means the task was taken from this agent (recovered by another agent after this
// one looked dead): its result must be discarded.
var ErrLostClaim = errors.New("task is no longer claimed by this agent")

// Run is a claimed task and the connection that holds its claim. Everything the agent writes
// about the task goes through Run, on that one connection, so the writes stop when the claim
// is lost.
type Run struct {
	Task    Task
	agentID string
	mu      sync.Mutex
	conn    *pgx.Conn
	rowNo   int64 // last diff_results row number written
}

// Claim takes the oldest queued task on conn's node, if any, marks it RUNNING for agentID and
// locks it for as long as conn lives. It returns nil when there is nothing to claim.
func Claim(ctx context.Context, conn *pgx.Conn, agentID string) (*Run, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("claim task: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	row := tx.QueryRow(ctx, `
		UPDATE ace.tasks SET status = 'RUNNING', claimed_by = $1, started_at = clock_timestamp(),
		       attempts = attempts + 1, error = NULL
		WHERE task_id = (SELECT task_id FROM ace.tasks WHERE status = 'QUEUED'
		                 ORDER BY submitted_at FOR UPDATE SKIP LOCKED LIMIT 1)
		RETURNING `+taskColumns, agentID)
	task, err := scanTask(row)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("claim task: %w", err)
	}
	var locked bool
	if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, hashtext($2::text))`, lockClass, task.ID).Scan(&locked); err != nil {
		return nil, fmt.Errorf("lock task %s: %w", task.ID, err)
	}
	if !locked {
		// Another session still holds this task: leave it for the recovery sweep.
		return nil, nil
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("commit claim of task %s: %w", task.ID, err)
	}
	return &Run{Task: task, agentID: agentID, conn: conn}, nil
}

// update runs a statement about this run's task, fenced by the claim: it matches only while the
// task is still RUNNING under this agent and attempt.
func (r *Run) update(ctx context.Context, set string, args ...any) (cancelRequested bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(args)
	sql := fmt.Sprintf(`UPDATE ace.tasks SET %s WHERE task_id = $%d AND claimed_by = $%d AND attempts = $%d AND status = 'RUNNING'
		RETURNING cancel_requested`, set, n+1, n+2, n+3)
	args = append(args, r.Task.ID, r.agentID, r.Task.Attempts)
	err = r.conn.QueryRow(ctx, sql, args...).Scan(&cancelRequested)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, ErrLostClaim
	}
	return cancelRequested, err
}

// SetProgress records progress and reports whether someone asked to cancel the task.
func (r *Run) SetProgress(ctx context.Context, progress any) (cancelRequested bool, err error) {
	raw, err := json.Marshal(progress)
	if err != nil {
		return false, fmt.Errorf("encode progress of task %s: %w", r.Task.ID, err)
	}
	cancelRequested, err = r.update(ctx, "progress = $1", raw)
	if err != nil {
		return false, fmt.Errorf("record progress of task %s: %w", r.Task.ID, err)
	}
	return cancelRequested, nil
}

// CancelRequested reports whether someone asked to cancel the task.
func (r *Run) CancelRequested(ctx context.Context) (bool, error) {
	c, err := r.update(ctx, "cancel_requested = cancel_requested")
	if err != nil {
		return false, fmt.Errorf("read cancel flag of task %s: %w", r.Task.ID, err)
	}
	return c, nil
}

// Complete records the result and ends the task as COMPLETED.
func (r *Run) Complete(ctx context.Context, result any) error {
	raw, err := json.Marshal(result)
	if err != nil {
		return fmt.Errorf("encode result of task %s: %w", r.Task.ID, err)
	}
	return r.end(ctx, StatusCompleted, raw, "")
}

// Fail ends the task as FAILED with the error's text. Partial results are kept for inspection.
func (r *Run) Fail(ctx context.Context, cause error) error {
	return r.end(ctx, StatusFailed, nil, cause.Error())
}

// Cancel ends the task as CANCELLED.
func (r *Run) Cancel(ctx context.Context, reason string) error {
	return r.end(ctx, StatusCancelled, nil, reason)
}

func (r *Run) end(ctx context.Context, status Status, result json.RawMessage, errText string) error {
	var errArg *string
	if errText != "" {
		errArg = &errText
	}
	_, err := r.update(ctx, "status = $1, result = $2, error = $3, finished_at = clock_timestamp()", status, result, errArg)
	if err != nil {
		return fmt.Errorf("finish task %s as %s: %w", r.Task.ID, status, err)
	}
	return r.unlock(ctx)
}

// HandBack returns the task to the queue without counting the attempt, for a graceful shutdown.
func (r *Run) HandBack(ctx context.Context) error {
	_, err := r.update(ctx, "status = 'QUEUED', claimed_by = NULL, started_at = NULL, attempts = attempts - 1, progress = NULL")
	if err != nil {
		return fmt.Errorf("hand back task %s: %w", r.Task.ID, err)
	}
	return r.unlock(ctx)
}

func (r *Run) unlock(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := r.conn.Exec(ctx, `SELECT pg_advisory_unlock($1, hashtext($2::text))`, lockClass, r.Task.ID); err != nil {
		return fmt.Errorf("unlock task %s: %w", r.Task.ID, err)
	}
	return nil
}

// withConn runs fn on the claim's connection, serialised with the run's other writes.
func (r *Run) withConn(fn func(conn *pgx.Conn) error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fn(r.conn)
}

// Orphan is a RUNNING task whose agent is gone, as found by RecoverOrphans.
type Orphan struct {
	TaskID    uuid.UUID
	ClaimedBy string
	Requeued  bool
}

// RecoverOrphans finds RUNNING tasks whose claim lock is free (their agent's session ended) and
// re-queues them while attempts remain, or fails them. Tasks of agents that still hold the lock
// but stopped heartbeating for longer than staleAfter have that session terminated first, so a
// hung agent cannot go on writing. Only read-only task types are re-queued.
func RecoverOrphans(ctx context.Context, conn *pgx.Conn, staleSeconds int) ([]Orphan, error) {
	if _, err := conn.Exec(ctx, `
		SELECT pg_terminate_backend(l.pid)
		FROM ace.tasks t
		JOIN ace.agents a ON a.agent_id = t.claimed_by
		JOIN pg_locks l ON l.locktype = 'advisory' AND l.classid = $1 AND l.objid = hashtext(t.task_id::text)::oid
		                AND l.objsubid = 2 AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
		WHERE t.status = 'RUNNING' AND a.heartbeat_at < clock_timestamp() - make_interval(secs => $2)`,
		lockClass, staleSeconds); err != nil {
		return nil, fmt.Errorf("end sessions of hung agents: %w", err)
	}
	rows, err := conn.Query(ctx, `SELECT task_id, coalesce(claimed_by, ''), attempts < max_attempts AND task_type = ANY($1)
		FROM ace.tasks WHERE status = 'RUNNING'`, rerunnableTypes)
	if err != nil {
		return nil, fmt.Errorf("list running tasks: %w", err)
	}
	candidates, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Orphan, error) {
		var o Orphan
		err := row.Scan(&o.TaskID, &o.ClaimedBy, &o.Requeued)
		return o, err
	})
	if err != nil {
		return nil, fmt.Errorf("list running tasks: %w", err)
	}
	var recovered []Orphan
	for _, o := range candidates {
		ok, err := recoverOne(ctx, conn, o)
		if err != nil {
			return recovered, err
		}
		if ok {
			recovered = append(recovered, o)
		}
	}
	return recovered, nil
}

// rerunnableTypes are read-only, so running them again after a crash changes nothing.
var rerunnableTypes = []string{string(TypeTableDiff), string(TypeTableRerun), string(TypeDiffImport)}

func recoverOne(ctx context.Context, conn *pgx.Conn, o Orphan) (bool, error) {
	var locked bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, hashtext($2::text))`, lockClass, o.TaskID).Scan(&locked); err != nil {
		return false, fmt.Errorf("probe lock of task %s: %w", o.TaskID, err)
	}
	if !locked {
		return false, nil
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1, hashtext($2::text))`, lockClass, o.TaskID)
	var sql string
	if o.Requeued {
		sql = `UPDATE ace.tasks SET status = 'QUEUED', claimed_by = NULL, progress = NULL,
		       error = format('agent %s stopped during attempt %s; re-queued', claimed_by, attempts)
		       WHERE task_id = $1 AND status = 'RUNNING'`
	} else {
		sql = `UPDATE ace.tasks SET status = 'FAILED', finished_at = clock_timestamp(),
		       error = format('agent %s stopped while running this task (attempt %s of %s)', claimed_by, attempts, max_attempts)
		       WHERE task_id = $1 AND status = 'RUNNING'`
	}
	tag, err := conn.Exec(ctx, sql, o.TaskID)
	if err != nil {
		return false, fmt.Errorf("recover task %s: %w", o.TaskID, err)
	}
	return tag.RowsAffected() == 1, nil
}
