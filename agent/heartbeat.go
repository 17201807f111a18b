package agent

import (
	"context"
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

func (h *heartbeat) run(ctx context.Context) { every(ctx, h.a.cfg.HeartbeatInterval, false, h.beat) }

func (h *heartbeat) beat(ctx context.Context) {
	if _, err := h.a.pool.Exec(ctx, `UPDATE ace.agents SET heartbeat_at = clock_timestamp(), running = $2 WHERE agent_id = $1`,
		h.a.id, h.a.runningCount()); err != nil && ctx.Err() == nil {
		h.a.log.Warn("heartbeat failed", "err", err)
	}
}
