package sqlapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// lockClass is the first key of the session advisory lock an agent holds on each task it runs.
// The lock lives exactly as long as the agent's claim session, so a free lock on a RUNNING task
// proves that the session is gone (the agent died, hung and was ended, or lost the connection);
// once the task is recovered, the claim's fence refuses whatever the agent still writes.
const lockClass = 7305

// writeLockClass is the first key of the shared transaction advisory lock each write about a
// task takes. It shows in pg_locks which sessions write for the task, so that the recovery
// sweep can end them all when the task's agent hangs.
const writeLockClass = 7306

// ErrLostClaim means the task was taken from this agent (recovered by another agent after this
// one looked dead): its result must be discarded.
var ErrLostClaim = errors.New("task is no longer claimed by this agent")

// Run is a claimed task. Its claim is a session advisory lock held by one connection, which
// does nothing else until the task ends: every write about the task (progress, results, its
// end) goes through a connection of its own from db, fenced by the claim (agent and attempt).
// So a write cut short by a cancelled context can break only its own connection, never the
// one that holds the claim or the one that records the task's end.
type Run struct {
	Task    Task
	agentID string
	lock    *pgx.Conn
	db      DB

	mu      sync.Mutex
	rowNo   int64 // last diff_results row number written
	applied bool  // a repair reported a committed node: this attempt may have changed data
}

// DB hands out connections for a run's writes: a pool.
type DB interface {
	Querier
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Claim takes the oldest queued task on conn's node, if any, marks it RUNNING for agentID and
// locks it for as long as conn lives. It returns nil when there is nothing to claim. conn must
// run nothing else until the run ends with Unlock; the run writes through db.
func Claim(ctx context.Context, conn *pgx.Conn, db DB, agentID string) (*Run, error) {
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
	return &Run{Task: task, agentID: agentID, lock: conn, db: db}, nil
}

// fence is the condition under which a write about the run's task is still this run's to make.
const fence = `task_id = $1 AND claimed_by = $2 AND attempts = $3 AND status = 'RUNNING'`

func (r *Run) fenceArgs() []any { return []any{r.Task.ID, r.agentID, r.Task.Attempts} }

// update runs a statement about this run's task, fenced by the claim: it matches only while the
// task is still RUNNING under this agent and attempt.
func (r *Run) update(ctx context.Context, q Querier, set string, args ...any) (cancelRequested bool, err error) {
	n := len(args)
	sql := fmt.Sprintf(`UPDATE ace.tasks SET %s WHERE task_id = $%d AND claimed_by = $%d AND attempts = $%d AND status = 'RUNNING'
		RETURNING cancel_requested`, set, n+1, n+2, n+3)
	err = q.QueryRow(ctx, sql, append(args, r.fenceArgs()...)...).Scan(&cancelRequested)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, ErrLostClaim
	}
	return cancelRequested, err
}

// fenced runs fn in a transaction that first locks the task's row, if it is still this run's
// (else ErrLostClaim). The row lock makes the check hold until the commit: recovery and the
// task's end wait for the transaction, and a write made after them is refused.
func (r *Run) fenced(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, r.db, func(tx pgx.Tx) error {
		var mine bool
		err := tx.QueryRow(ctx, `SELECT true FROM ace.tasks, LATERAL pg_advisory_xact_lock_shared($4, hashtext(tasks.task_id::text))
			WHERE `+fence+` FOR SHARE OF tasks`, append(r.fenceArgs(), writeLockClass)...).Scan(&mine)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrLostClaim
		}
		if err != nil {
			return fmt.Errorf("check claim of task %s: %w", r.Task.ID, err)
		}
		return fn(tx)
	})
}

// SetProgress records progress and reports whether someone asked to cancel the task.
func (r *Run) SetProgress(ctx context.Context, progress any) (cancelRequested bool, err error) {
	raw, err := json.Marshal(progress)
	if err != nil {
		return false, fmt.Errorf("encode progress of task %s: %w", r.Task.ID, err)
	}
	cancelRequested, err = r.update(ctx, r.db, "progress = $1", raw)
	if err != nil {
		return false, fmt.Errorf("record progress of task %s: %w", r.Task.ID, err)
	}
	return cancelRequested, nil
}

// CancelRequested reports whether someone asked to cancel the task.
func (r *Run) CancelRequested(ctx context.Context) (bool, error) {
	c, err := r.update(ctx, r.db, "cancel_requested = cancel_requested")
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

// end records the task's end on a fresh connection, trying again while connections are lost.
func (r *Run) end(ctx context.Context, status Status, result json.RawMessage, errText string) error {
	var errArg *string
	if errText != "" {
		errArg = &errText
	}
	err := retry(ctx, func() error {
		_, err := r.update(ctx, r.db, "status = $1, result = $2, error = $3, finished_at = clock_timestamp()", status, result, errArg)
		return err
	})
	if err != nil {
		return fmt.Errorf("finish task %s as %s: %w", r.Task.ID, status, err)
	}
	return nil
}

// HandBack returns the task to the queue without counting the attempt, and deletes what the
// attempt stored (differing rows; repair actions, which were never committed when a repair is
// handed back). It runs on a fresh connection, trying again while connections are lost.
func (r *Run) HandBack(ctx context.Context) error {
	err := retry(ctx, func() error {
		return pgx.BeginFunc(ctx, r.db, func(tx pgx.Tx) error {
			_, err := r.update(ctx, tx, "status = 'QUEUED', claimed_by = NULL, started_at = NULL, attempts = attempts - 1, progress = NULL")
			if err != nil {
				return err
			}
			return deletePartialResults(ctx, tx, r.Task.ID, r.Task.Attempts)
		})
	})
	if err != nil {
		return fmt.Errorf("hand back task %s: %w", r.Task.ID, err)
	}
	return nil
}

// deletePartialResults deletes the differing rows of a task and the repair actions of one of
// its attempts.
func deletePartialResults(ctx context.Context, q Querier, id uuid.UUID, attempt int) error {
	if _, err := q.Exec(ctx, `DELETE FROM ace.diff_results WHERE task_id = $1`, id); err != nil {
		return fmt.Errorf("delete differing rows of task %s: %w", id, err)
	}
	if _, err := q.Exec(ctx, `DELETE FROM ace.repair_actions WHERE task_id = $1 AND attempt = $2`, id, attempt); err != nil {
		return fmt.Errorf("delete repair actions of task %s attempt %d: %w", id, attempt, err)
	}
	return nil
}

// Unlock releases the claim lock once the task's end is recorded (or could not be). If it
// fails, the caller must close the connection, which releases the lock too.
func (r *Run) Unlock(ctx context.Context) error {
	if _, err := r.lock.Exec(ctx, `SELECT pg_advisory_unlock($1, hashtext($2::text))`, lockClass, r.Task.ID); err != nil {
		return fmt.Errorf("unlock task %s: %w", r.Task.ID, err)
	}
	return nil
}

// MayHaveChangedData reports whether a repair of this run reported a committed node, so that
// running it again is not known to be harmless.
func (r *Run) MayHaveChangedData() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.applied
}

// retry runs fn until it succeeds, fails for another reason than a lost connection, or ctx ends.
// fn must be safe to run again: every write about a task is fenced by its claim.
func retry(ctx context.Context, fn func() error) error {
	for {
		err := fn()
		if err == nil || !ConnectionLost(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ConnectionLost reports whether err, or any error it joins, means that a connection to
// PostgreSQL broke or was refused (a server restart, a terminated session, a network failure),
// rather than that a statement failed.
func ConnectionLost(err error) bool {
	for err != nil {
		if joined, ok := err.(interface{ Unwrap() []error }); ok {
			return slices.ContainsFunc(joined.Unwrap(), ConnectionLost)
		}
		if connectionLostHere(err) {
			return true
		}
		err = errors.Unwrap(err)
	}
	return false
}

// connectionLostHere looks at one error of a chain, not at those it wraps.
func connectionLostHere(err error) bool {
	switch e := err.(type) {
	case *pgconn.PgError:
		// Class 08: connection exception; 57P01-57P03: the server ended the session, or is
		// stopping or starting.
		return strings.HasPrefix(e.Code, "08") || slices.Contains([]string{"57P01", "57P02", "57P03"}, e.Code)
	case *pgconn.ConnectError:
		return true
	case net.Error:
		return err != context.DeadlineExceeded
	}
	return err == io.EOF || err == io.ErrUnexpectedEOF || err == net.ErrClosed || err == pgconn.ErrConnClosed
}
