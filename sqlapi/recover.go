package sqlapi

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Orphan is a RUNNING task whose agent is gone, as found by RecoverOrphans.
type Orphan struct {
	TaskID    uuid.UUID
	ClaimedBy string
	Requeued  bool
}

// claimSessions lists, per RUNNING task, the sessions of its current claim: the one that holds
// the claim's lock key (claim_pid, still logged in as claim_role), and those tagged as writing
// for it (see Run.fenced). Only sessions of the claim's own login count, so a submitter who
// takes the key after the claim's session ended, or tags a session of theirs, is ignored.
const claimSessions = `
	SELECT t.task_id, t.claimed_by, s.pid, h.holds_claim
	FROM ace.tasks t
	JOIN ace.claims c ON c.task_id = t.task_id AND c.agent_id = t.claimed_by AND c.attempt = t.attempts
	JOIN pg_stat_activity s ON s.usesysid = c.claim_role AND s.datname = current_database()
	CROSS JOIN LATERAL (SELECT s.pid = c.claim_pid AND EXISTS (
		SELECT 1 FROM pg_locks l
		WHERE l.pid = c.claim_pid AND l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
		  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND ((l.classid::int8 << 32) | l.objid::int8) = c.lock_key)) h(holds_claim)
	WHERE t.status = 'RUNNING' AND (h.holds_claim OR s.application_name = ace.writer_tag(c.lock_key))`

// RecoverOrphans finds RUNNING tasks whose claim session is gone (their agent's session ended)
// and re-queues them while attempts remain and running them again is harmless, or fails them.
// skip lists tasks the caller runs itself and will end itself. Tasks of agents that still hold
// the claim but stopped heartbeating for longer than staleSeconds have that session, and those
// writing for the task, terminated first; their later writes are refused by the claim's fence
// once the task is recovered.
func RecoverOrphans(ctx context.Context, conn *pgx.Conn, staleSeconds int, skip []uuid.UUID) ([]Orphan, error) {
	if _, err := conn.Exec(ctx, `
		SELECT pg_terminate_backend(s.pid)
		FROM (`+claimSessions+`) s
		JOIN ace.agents a ON a.agent_id = s.claimed_by
		WHERE a.heartbeat_at < clock_timestamp() - make_interval(secs => $1)`, staleSeconds); err != nil {
		return nil, fmt.Errorf("end sessions of hung agents: %w", err)
	}
	if skip == nil {
		skip = []uuid.UUID{}
	}
	rows, err := conn.Query(ctx, `SELECT task_id FROM ace.tasks WHERE status = 'RUNNING' AND task_id <> ALL($1)`, skip)
	if err != nil {
		return nil, fmt.Errorf("list running tasks: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return nil, fmt.Errorf("list running tasks: %w", err)
	}
	var recovered []Orphan
	for _, id := range ids {
		o, err := recoverOne(ctx, conn, id)
		if err != nil {
			return recovered, err
		}
		if o != nil {
			recovered = append(recovered, *o)
		}
	}
	return recovered, nil
}

// recoverOne recovers the task if its claim session is gone, and returns what it did (nil: the
// task's agent is still there, or the task is busy or ended meanwhile).
func recoverOne(ctx context.Context, conn *pgx.Conn, id uuid.UUID) (*Orphan, error) {
	var o *Orphan
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var err error
		o, err = recoverLocked(ctx, tx, id)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("recover task %s: %w", id, err)
	}
	return o, nil
}

// recoverLocked locks the task's row and, if its claim session is gone, re-queues or fails it.
// The row lock waits for no one: a write of its agent in flight (see Run.fenced), or another
// sweep, makes the sweep try again next time; once the row is locked no write of the agent can
// slip in before the decision, and no other sweep can decide too.
func recoverLocked(ctx context.Context, tx pgx.Tx, id uuid.UUID) (*Orphan, error) {
	o := Orphan{TaskID: id}
	var typ string
	var attempts, maxAttempts int
	var dryRun bool
	err := tx.QueryRow(ctx, `SELECT coalesce(claimed_by, ''), task_type, attempts, max_attempts, coalesce(args->'dry_run' = 'true', false)
		FROM ace.tasks WHERE task_id = $1 AND status = 'RUNNING' FOR UPDATE SKIP LOCKED`, id).
		Scan(&o.ClaimedBy, &typ, &attempts, &maxAttempts, &dryRun)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if alive, err := claimAlive(ctx, tx, id); err != nil || alive {
		return nil, err
	}
	harmless, err := rerunIsHarmless(ctx, tx, id, TaskType(typ), attempts, dryRun)
	if err != nil {
		return nil, err
	}
	o.Requeued = harmless && attempts < maxAttempts
	if !o.Requeued {
		_, err = tx.Exec(ctx, `UPDATE ace.tasks SET status = 'FAILED', finished_at = clock_timestamp(),
			error = format('agent %s stopped while running this task (attempt %s of %s)', claimed_by, attempts, max_attempts)
			WHERE task_id = $1`, id)
		return &o, err
	}
	if _, err = tx.Exec(ctx, `UPDATE ace.tasks SET status = 'QUEUED', claimed_by = NULL, progress = NULL,
		error = format('agent %s stopped during attempt %s; re-queued', claimed_by, attempts)
		WHERE task_id = $1`, id); err != nil {
		return nil, err
	}
	return &o, deletePartialResults(ctx, tx, id, attempts)
}

// claimAlive reports whether the session of the task's current claim still holds the claim's
// lock. A task claimed by an agent older than ace.claims has no claim row: its claim is alive
// while the legacy lock on its id is held.
func claimAlive(ctx context.Context, tx pgx.Tx, id uuid.UUID) (bool, error) {
	var alive bool
	err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM (`+claimSessions+`) s WHERE s.task_id = $1 AND s.holds_claim)
		OR (NOT EXISTS (SELECT 1 FROM ace.claims c JOIN ace.tasks t USING (task_id)
		                WHERE c.task_id = $1 AND c.agent_id = t.claimed_by AND c.attempt = t.attempts)
		    AND EXISTS (SELECT 1 FROM pg_locks l
		                WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid = $2
		                  AND l.objid = hashtext($1::text)::oid
		                  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())))`,
		id, legacyLockClass).Scan(&alive)
	if err != nil {
		return false, fmt.Errorf("look for the claim session of task %s: %w", id, err)
	}
	return alive, nil
}

// rerunIsHarmless reports whether running the task again cannot repeat a change: it only reads,
// or it is a repair whose attempt provably changed nothing. A repair records every change it
// makes before it commits any node (each batch's actions are stored before the next, and the
// commits come after the last), so an attempt without a recorded insert, update or delete has
// committed nothing, and never will: once the task is recovered, its agent's next record is
// refused by the claim's fence, so it rolls back. A dry run changes nothing at all.
func rerunIsHarmless(ctx context.Context, tx pgx.Tx, id uuid.UUID, typ TaskType, attempt int, dryRun bool) (bool, error) {
	// A type that changes no table's rows changes nothing when run again (a Merkle tree task
	// only rewrites the ace schema's trees, and does so idempotently).
	spec, known := Spec(typ)
	switch {
	case !typ.ChangesData():
		return true, nil
	case !known || !spec.RecordsChanges:
		return false, nil
	case dryRun:
		return true, nil
	}
	var changed bool
	err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM ace.repair_actions
		WHERE task_id = $1 AND attempt = $2 AND action <> 'skip')`, id, attempt).Scan(&changed)
	if err != nil {
		return false, fmt.Errorf("look for changes recorded by attempt %d: %w", attempt, err)
	}
	return !changed, nil
}
