package agent

import (
	"cmp"
	"context"
	"time"

	"github.com/ace-agent/ace-agent/sqlapi"
)

// Retention: finished tasks and their results are deleted once they are older than the
// task_retention setting, in batches of retentionBatch rows, so that each transaction stays short
// and holds few locks. Several agents on one node share the work (the batches skip rows another
// has locked).
const (
	retentionBatch           = 500
	defaultRetentionInterval = 10 * time.Minute
)

// retention deletes expired tasks and events at start and then every RetentionInterval.
type retention struct {
	startStop
	a *Agent
}

func (r *retention) Name() string { return "retention job" }

func (r *retention) Start(ctx context.Context) error { return r.start(ctx, r.run) }

func (r *retention) run(ctx context.Context) {
	every(ctx, cmp.Or(r.a.cfg.RetentionInterval, defaultRetentionInterval), true, func(ctx context.Context) {
		r.deleteExpiredTasks(ctx)
		r.deleteExpiredEvents(ctx)
	})
}

// deleteExpiredEvents deletes the events older than the event_retention setting, in batches, as
// deleteExpiredTasks does the tasks.
func (r *retention) deleteExpiredEvents(ctx context.Context) {
	total := 0
	for ctx.Err() == nil {
		n, err := sqlapi.DeleteExpiredEvents(ctx, r.a.pool, retentionBatch)
		if err != nil {
			if ctx.Err() == nil {
				r.a.log.Warn("deleting old events failed; trying again later", "err", err)
			}
			return
		}
		total += n
		if n < retentionBatch {
			break
		}
	}
	if total > 0 {
		r.a.log.Info("deleted events older than event_retention", "count", total)
	}
}

// deleteExpiredTasks deletes batches until none is full. A failure is logged and the next round
// tries again: nothing is lost by deleting later.
func (r *retention) deleteExpiredTasks(ctx context.Context) {
	total := 0
	for ctx.Err() == nil {
		n, err := sqlapi.DeleteExpiredTasks(ctx, r.a.pool, retentionBatch)
		if err != nil {
			if ctx.Err() == nil {
				r.a.log.Warn("deleting finished tasks failed; trying again later", "err", err)
			}
			return
		}
		total += n
		if n < retentionBatch {
			break
		}
	}
	if total > 0 {
		r.a.log.Info("deleted finished tasks older than task_retention", "count", total)
	}
}
