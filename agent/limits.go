package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// runtimeLimitError stops a task that ran longer than max_task_runtime; the task fails with it.
type runtimeLimitError struct{ limit time.Duration }

func (e runtimeLimitError) Error() string {
	return fmt.Sprintf("stopped after running for max_task_runtime (%s); the owner of the ace schema can raise the limit: "+
		"UPDATE ace.settings SET value = '24 hours' WHERE name = 'max_task_runtime'", e.limit)
}

// withRuntimeLimit ends ctx with a runtimeLimitError once the task has run for limit (0: never).
func withRuntimeLimit(ctx context.Context, limit time.Duration) (context.Context, context.CancelFunc) {
	if limit <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeoutCause(ctx, limit, runtimeLimitError{limit: limit})
}

// cancelRequested stops the running tasks whose cancel flag is set. The cancel notification
// names no task, so the agent reads the flags of the tasks it runs.
func (a *Agent) cancelRequested(ctx context.Context) {
	ids := a.runningIDs()
	if len(ids) == 0 {
		return
	}
	queryCtx, cancel := context.WithTimeout(ctx, finishTimeout)
	defer cancel()
	rows, err := a.pool.Query(queryCtx, `SELECT task_id FROM ace.tasks WHERE task_id = ANY($1) AND cancel_requested`, ids)
	if err == nil {
		ids, err = pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	}
	if err != nil {
		if ctx.Err() == nil {
			a.log.Warn("could not read the cancel requests of running tasks", "err", err)
		}
		return
	}
	for _, id := range ids {
		a.cancelTask(id)
	}
}
