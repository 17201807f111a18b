package agent

import (
	"cmp"
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/mtree"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// listen holds one connection that LISTENs for new and cancelled tasks. NOTIFY is only a
// wake-up, without a payload: if the connection drops, the poll interval still finds the work,
// and a cancel request is also seen at the task's next progress update.
func (a *Agent) listen(ctx context.Context, wake chan struct{}) {
	for ctx.Err() == nil {
		if err := a.listenOnce(ctx, wake); err != nil && ctx.Err() == nil {
			a.log.Warn("listen connection lost; polling until it is back", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(a.cfg.PollInterval):
			}
		}
	}
}

func (a *Agent) listenOnce(ctx context.Context, wake chan struct{}) error {
	pcfg, err := engine.ParsePoolConfig(a.cfg.DSN)
	if err != nil {
		return err
	}
	conn, err := pgx.ConnectConfig(ctx, pcfg.ConnConfig)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, ch := range []string{"ace_task", "ace_task_cancel", mtree.Channel} {
		if _, err := conn.Exec(ctx, "LISTEN "+ch); err != nil {
			return err
		}
	}
	// Anything queued, or any cancel asked for, before LISTEN took effect is found now.
	notify(wake)
	select {
	case a.treeSignal <- "trees":
	default:
	}
	a.cancelRequested(ctx)
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		switch n.Channel {
		case "ace_task":
			notify(wake)
		case "ace_task_cancel":
			a.cancelRequested(ctx)
		case mtree.Channel:
			select {
			case a.treeSignal <- n.Payload:
			default: // the keeper has signals queued; it reconciles with the tables anyway
			}
		}
	}
}

// heartbeatLoop records that the agent is alive and recovers tasks whose agents are not.
func (a *Agent) heartbeatLoop(ctx context.Context) {
	a.recover(ctx)
	t := time.NewTicker(a.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := a.pool.Exec(ctx, `UPDATE ace.agents SET heartbeat_at = clock_timestamp(), running = $2 WHERE agent_id = $1`,
			a.id, a.runningCount()); err != nil && ctx.Err() == nil {
			a.log.Warn("heartbeat failed", "err", err)
		}
		a.recover(ctx)
	}
}

func (a *Agent) recover(ctx context.Context) {
	conn, err := a.pool.Acquire(ctx)
	if err != nil {
		return
	}
	defer conn.Release()
	// The agent's own tasks are left alone: even one whose claim connection broke is still being
	// run, and this agent ends it itself (see execute).
	orphans, err := sqlapi.RecoverOrphans(ctx, conn.Conn(), int(a.cfg.StaleAfter.Seconds()), a.runningIDs())
	if err != nil {
		if ctx.Err() == nil {
			a.log.Warn("recovery sweep failed", "err", err)
		}
		return
	}
	for _, o := range orphans {
		a.log.Warn("recovered task of a stopped agent", "task", o.TaskID, "agent", o.ClaimedBy, "requeued", o.Requeued)
	}
}

// Retention: finished tasks and their results are deleted once they are older than the
// task_retention setting, in batches of retentionBatch rows, so that each transaction stays short
// and holds few locks. Several agents on one node share the work (the batches skip rows another
// has locked).
const (
	retentionBatch           = 500
	defaultRetentionInterval = 10 * time.Minute
)

// retentionLoop deletes expired tasks at start and then every RetentionInterval.
func (a *Agent) retentionLoop(ctx context.Context) {
	every := cmp.Or(a.cfg.RetentionInterval, defaultRetentionInterval)
	for {
		a.deleteExpiredTasks(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// deleteExpiredTasks deletes batches until none is full. A failure is logged and the next round
// tries again: nothing is lost by deleting later.
func (a *Agent) deleteExpiredTasks(ctx context.Context) {
	total := 0
	for ctx.Err() == nil {
		var n int
		if err := a.pool.QueryRow(ctx, `SELECT ace.delete_expired_tasks($1)`, retentionBatch).Scan(&n); err != nil {
			if ctx.Err() == nil {
				a.log.Warn("deleting finished tasks older than task_retention failed; trying again later", "err", err)
			}
			return
		}
		total += n
		if n < retentionBatch {
			break
		}
	}
	if total > 0 {
		a.log.Info("deleted finished tasks older than task_retention", "count", total)
	}
}
