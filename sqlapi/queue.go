package sqlapi

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// legacyLockClass is the first key of the advisory lock agents before the ace.claims table held
// on a task (with hashtext of its id): the recovery sweep still honours it for their tasks.
const legacyLockClass = 7305

// claimKeyDraws bounds the random keys a claim tries; a session holds a drawn key already only
// if it guessed 64 random bits.
const claimKeyDraws = 8

// ErrLostClaim means the task was taken from this agent (recovered by another agent after this
// one looked dead): its result must be discarded.
var ErrLostClaim = errors.New("task is no longer claimed by this agent")

// Run is a claimed task. Its claim is a session advisory lock, on a random key kept in
// ace.claims, held by one connection, which does nothing else until the task ends: every write
// about the task (progress, results, its end) goes through a connection of its own from db,
// fenced by the claim (agent and attempt). So a write cut short by a cancelled context can break
// only its own connection, never the one that holds the claim or the one that records the
// task's end.
//
// The lock lives exactly as long as the claim's session, so a RUNNING task whose claim session
// no longer holds its key has lost its agent (it died, hung and was ended, or lost the
// connection); once the task is recovered, the claim's fence refuses whatever the agent still
// writes. Nobody can take the key first, since it is drawn at the claim, nor while the claim
// holds it; one taken after the claim's session ended does not count, since the sweep asks for
// the claim's own session (see RecoverOrphans).
type Run struct {
	Task Task
	// MaxRuntime is max_task_runtime of ace.settings when the task was claimed; 0: no limit.
	MaxRuntime time.Duration
	agentID    string
	lock       *pgx.Conn
	lockKey    int64
	db         DB

	mu       sync.Mutex
	rowNo    int64        // last diff_results row number written
	applied  bool         // a repair reported a committed node: this attempt may have changed data
	verdicts verdictTally // what the stored differing rows say of each node (tablestatus.go)
}

// DB hands out connections for a run's writes: a pool.
type DB interface {
	Querier
	Begin(ctx context.Context) (pgx.Tx, error)
}

// claimSQL marks the oldest queued task RUNNING whose login (the session user that submitted
// it, whatever role it set) runs fewer tasks than max_running_tasks_per_role (a parent that only
// waits for its children does not count), skipping rows
// another claim has locked, and returns it with max_task_runtime in seconds. Submitters cannot lock task rows (they may only insert them), so
// a skipped row is always another claim's.
const claimSQL = `
	UPDATE ace.tasks SET status = 'RUNNING', claimed_by = $1, started_at = clock_timestamp(),
	       attempts = attempts + 1, error = NULL, waiting_on_children = false
	WHERE task_id = (
		SELECT q.task_id FROM ace.tasks q
		WHERE q.status = 'QUEUED'
		  AND (SELECT count(*) FROM ace.tasks r WHERE r.status = 'RUNNING' AND NOT r.waiting_on_children AND r.submitted_session_user = q.submitted_session_user)
		      < coalesce(ace.setting('max_running_tasks_per_role')::int, 2147483647)
		ORDER BY q.submitted_at FOR UPDATE SKIP LOCKED LIMIT 1)
	RETURNING ` + taskColumns + `, coalesce(extract(epoch FROM ace.setting('max_task_runtime')::interval), 0)::float8`

// Claim takes the oldest queued task on conn's node that its role's running limit allows, if
// any, marks it RUNNING for agentID and locks it for as long as conn lives. It returns nil when
// there is nothing to claim. conn must run nothing else until the run ends with Unlock; the run
// writes through db. If Claim fails, conn may hold a lock: close it.
func Claim(ctx context.Context, conn *pgx.Conn, db DB, agentID string) (*Run, error) {
	// Claims on a node take turns, so two cannot both see room under a role's running limit.
	// Submitters hold no privilege on ace.claims, so they cannot lock it. The lock is taken by
	// the statement that begins the transaction, in the same round trip.
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{BeginQuery: `BEGIN; LOCK TABLE ace.claims IN EXCLUSIVE MODE`})
	if err != nil {
		return nil, fmt.Errorf("claim task: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var runtimeSecs float64
	task, err := scanTask(tx.QueryRow(ctx, claimSQL, agentID), &runtimeSecs)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("claim task: %w", err)
	}
	key, err := lockClaimKey(ctx, tx)
	if err != nil {
		return nil, fmt.Errorf("lock task %s: %w", task.ID, err)
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO ace.claims (task_id, agent_id, attempt, lock_key, claim_pid, claim_role)
		VALUES ($1, $2, $3, $4, pg_backend_pid(), (SELECT usesysid FROM pg_stat_activity WHERE pid = pg_backend_pid()))
		ON CONFLICT (task_id) DO UPDATE SET agent_id = EXCLUDED.agent_id, attempt = EXCLUDED.attempt,
			lock_key = EXCLUDED.lock_key, claim_pid = EXCLUDED.claim_pid, claim_role = EXCLUDED.claim_role,
			claimed_at = EXCLUDED.claimed_at`, task.ID, agentID, task.Attempts, key); err != nil {
		return nil, fmt.Errorf("record claim of task %s: %w", task.ID, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("commit claim of task %s: %w", task.ID, err)
	}
	run := &Run{Task: task, agentID: agentID, lock: conn, lockKey: key, db: db}
	run.MaxRuntime = time.Duration(runtimeSecs * float64(time.Second))
	return run, nil
}

// lockClaimKey takes a session advisory lock on a random key that nobody holds, and returns the
// key. The lock outlives the transaction.
func lockClaimKey(ctx context.Context, q Querier) (int64, error) {
	for range claimKeyDraws {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return 0, fmt.Errorf("draw a lock key: %w", err)
		}
		key := int64(binary.BigEndian.Uint64(b[:]))
		var locked bool
		if err := q.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&locked); err != nil {
			return 0, err
		}
		if locked {
			return key, nil
		}
	}
	return 0, fmt.Errorf("every one of %d random lock keys was taken", claimKeyDraws)
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
// task's end wait for the transaction, and a write made after them is refused. For as long as
// the transaction lasts, the session's application_name is the claim's writer tag, by which the
// recovery sweep finds the sessions to end when the task's agent hangs. A tag takes no lock, so
// no submitter can make a write wait.
func (r *Run) fenced(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, r.db, func(tx pgx.Tx) error {
		var mine string
		err := tx.QueryRow(ctx, `SELECT set_config('application_name', ace.writer_tag($4), true) FROM ace.tasks
			WHERE `+fence+` FOR SHARE`, append(r.fenceArgs(), r.lockKey)...).Scan(&mine)
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
// In the same transaction, first, the end of a diff, rerun or repair becomes its table's sync
// status; the task's row is updated last, so that its finished_at is close to the commit.
func (r *Run) end(ctx context.Context, status Status, result json.RawMessage, errText string) error {
	var errArg *string
	if errText != "" {
		errArg = &errText
	}
	err := retry(ctx, func() error {
		return pgx.BeginFunc(ctx, r.db, func(tx pgx.Tx) error {
			if err := r.recordTableStatus(ctx, tx, status, result); err != nil {
				return err
			}
			_, err := r.update(ctx, tx, "status = $1, result = $2, error = $3, finished_at = clock_timestamp()", status, result, errArg)
			return err
		})
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
	if _, err := q.Exec(ctx, `DELETE FROM ace.schema_findings WHERE task_id = $1`, id); err != nil {
		return fmt.Errorf("delete schema findings of task %s: %w", id, err)
	}
	if _, err := q.Exec(ctx, `DELETE FROM ace.repair_actions WHERE task_id = $1 AND attempt = $2`, id, attempt); err != nil {
		return fmt.Errorf("delete repair actions of task %s attempt %d: %w", id, attempt, err)
	}
	return nil
}

// Unlock releases the claim lock once the task's end is recorded (or could not be). If it
// fails, the caller must close the connection, which releases the lock too.
func (r *Run) Unlock(ctx context.Context) error {
	if _, err := r.lock.Exec(ctx, `SELECT pg_advisory_unlock($1)`, r.lockKey); err != nil {
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
		return pgerrcode.IsConnectionException(e.Code) ||
			slices.Contains([]string{pgerrcode.AdminShutdown, pgerrcode.CrashShutdown, pgerrcode.CannotConnectNow}, e.Code)
	case *pgconn.ConnectError:
		return true
	case net.Error:
		return err != context.DeadlineExceeded
	}
	return err == io.EOF || err == io.ErrUnexpectedEOF || err == net.ErrClosed || err == pgconn.ErrConnClosed
}
