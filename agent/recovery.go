package agent

import (
	"context"

	"github.com/ace-agent/ace-agent/sqlapi"
)

// recoverySweep takes over, at start and every HeartbeatInterval, the tasks whose agents stopped
// (sqlapi.RecoverOrphans): it requeues them, or fails those that may have changed data.
type recoverySweep struct {
	startStop
	a *Agent
}

func (r *recoverySweep) Name() string { return "recovery sweep" }

func (r *recoverySweep) Start(ctx context.Context) error { return r.start(ctx, r.run) }

func (r *recoverySweep) run(ctx context.Context) {
	every(ctx, r.a.cfg.HeartbeatInterval, true, r.sweep)
}

func (r *recoverySweep) sweep(ctx context.Context) {
	conn, err := r.a.pool.Acquire(ctx)
	if err != nil {
		return
	}
	defer conn.Release()
	// The agent's own tasks are left alone: even one whose claim connection broke is still being
	// run, and this agent ends it itself (see execute).
	orphans, err := sqlapi.RecoverOrphans(ctx, conn.Conn(), int(r.a.cfg.StaleAfter.Seconds()), r.a.runningIDs())
	if err != nil {
		if ctx.Err() == nil {
			r.a.log.Warn("recovery sweep failed", "err", err)
		}
		return
	}
	for _, o := range orphans {
		r.a.log.Warn("recovered task of a stopped agent", "task", o.TaskID, "agent", o.ClaimedBy, "requeued", o.Requeued)
	}
}
