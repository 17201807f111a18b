package agent

import (
	"context"
	"time"
)

// heartbeat records in ace.agents, every HeartbeatInterval, that the agent is alive and how many
// tasks it runs. Other agents' recovery sweeps take over the tasks of an agent whose heartbeat
// is older than their StaleAfter.
type heartbeat struct {
	startStop
	a *Agent
}

func (h *heartbeat) Name() string { return "heartbeat" }

func (h *heartbeat) Start(ctx context.Context) error { return h.start(ctx, h.run) }

func (h *heartbeat) run(ctx context.Context) {
	t := time.NewTicker(h.a.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := h.a.pool.Exec(ctx, `UPDATE ace.agents SET heartbeat_at = clock_timestamp(), running = $2 WHERE agent_id = $1`,
			h.a.id, h.a.runningCount()); err != nil && ctx.Err() == nil {
			h.a.log.Warn("heartbeat failed", "err", err)
		}
	}
}
