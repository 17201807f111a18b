package sqlapi

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
)

// This file is the one place where a parent task (a schema or replication-set diff) runs child
// tasks: it inserts one child per unit of work in the submitter's own session, so the insert
// trigger validates each and applies the submitter's limits and row-level security; it marks
// the parent as waiting, so that it holds no slot of max_running_tasks_per_role while its
// children run; and it waits for them. ace.cancel(parent) cancels the children (in SQL); a
// parent stopped for another reason cancels them here.

// ParentTaskArg is the args key that names a child's parent task.
const ParentTaskArg = "parent_task"

// Child is one child task to run.
type Child struct {
	Key  string // what the child is for, a table say; the parent's result names it
	Type TaskType
	Args map[string]any // parent_task is added
}

// ChildOutcome is how one child ended. Err is set when it could not be submitted (the insert
// trigger refused it: no primary key, no privilege, ...); Task is its row once it ended.
type ChildOutcome struct {
	Child
	TaskID uuid.UUID
	Task   Task
	Err    error
}

// childPollInterval is how often a waiting parent reads its children's statuses when nothing
// woke it: children that another agent of the node runs end without telling it.
const childPollInterval = 100 * time.Millisecond

// RunChildren submits the children through submitter (a session logged in as the parent's
// submitter, on the parent's node), and waits until every one has ended. When the submitter's
// max_queued_tasks_per_role is reached, it submits the rest as earlier ones start. A receive
// from ended (may be nil) says a child ended, so that the parent reads its children at once
// instead of at the next poll. progress is called as children end. If ctx ends first, the
// children still queued or running are cancelled and ctx's error returned.
func (r *Run) RunChildren(ctx context.Context, submitter Querier, children []Child, ended <-chan struct{},
	progress func(ended, total int)) ([]ChildOutcome, error) {
	if err := r.setWaiting(ctx); err != nil {
		return nil, err
	}
	outcomes := make([]ChildOutcome, len(children))
	pending := map[uuid.UUID]int{} // submitted, not yet ended
	next, done := 0, 0
	for {
		var err error
		if next, err = r.submitChildren(ctx, submitter, children, outcomes, next, pending, &done); err != nil {
			return nil, r.stopChildren(submitter, pending, err)
		}
		if next == len(children) && len(pending) == 0 {
			return outcomes, nil
		}
		select {
		case <-ctx.Done():
			return nil, r.stopChildren(submitter, pending, context.Cause(ctx))
		case <-ended:
		case <-time.After(childPollInterval):
		}
		before := done
		if err := collectChildren(ctx, submitter, outcomes, pending, &done); err != nil {
			return nil, r.stopChildren(submitter, pending, err)
		}
		if progress != nil && done != before {
			progress(done, len(children))
		}
	}
}

// setWaiting marks the parent as one that only waits for its children.
func (r *Run) setWaiting(ctx context.Context) error {
	if _, err := r.update(ctx, r.db, "waiting_on_children = $1", true); err != nil {
		return fmt.Errorf("mark task %s as waiting for its children: %w", r.Task.ID, err)
	}
	return nil
}

// submitChildren inserts children from next on until the submitter's queued limit refuses one,
// and returns the first one not yet submitted.
func (r *Run) submitChildren(ctx context.Context, submitter Querier, children []Child, outcomes []ChildOutcome,
	next int, pending map[uuid.UUID]int, ended *int) (int, error) {
	for ; next < len(children); next++ {
		c := children[next]
		args := maps.Clone(c.Args)
		args[ParentTaskArg] = r.Task.ID.String()
		id, err := Submit(ctx, submitter, c.Type, args)
		outcomes[next] = ChildOutcome{Child: c, TaskID: id, Err: err}
		var pgErr *pgconn.PgError
		switch {
		case errors.As(err, &pgErr) && pgErr.Code == pgerrcode.ConfigurationLimitExceeded:
			return next, nil // room comes as the earlier children start
		case ctx.Err() != nil:
			return next, context.Cause(ctx)
		case err != nil:
			*ended++
		default:
			pending[id] = next
		}
	}
	return next, nil
}

// collectChildren reads the pending children's rows and records those that ended.
func collectChildren(ctx context.Context, q Querier, outcomes []ChildOutcome, pending map[uuid.UUID]int, ended *int) error {
	if len(pending) == 0 {
		return nil
	}
	ids := make([]uuid.UUID, 0, len(pending))
	for id := range pending {
		ids = append(ids, id)
	}
	rows, err := q.Query(ctx, `SELECT `+taskColumns+` FROM ace.tasks WHERE task_id = ANY($1)
		AND status IN ('COMPLETED', 'FAILED', 'CANCELLED')`, ids)
	if err != nil {
		return fmt.Errorf("read child tasks: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		t, err := scanTask(rows)
		if err != nil {
			return fmt.Errorf("read child tasks: %w", err)
		}
		outcomes[pending[t.ID]].Task = t
		delete(pending, t.ID)
		*ended++
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read child tasks: %w", err)
	}
	return nil
}

// stopChildren cancels the children still queued or running, and returns cause.
func (r *Run) stopChildren(submitter Querier, pending map[uuid.UUID]int, cause error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for id := range pending {
		if _, err := Cancel(ctx, submitter, id); err != nil {
			return fmt.Errorf("%w (and cancelling child task %s failed: %v)", cause, id, err)
		}
	}
	return cause
}
