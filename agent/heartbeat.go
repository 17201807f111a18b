package agent

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"
)

// heartbeat records in ace.agents, every HeartbeatInterval, that the agent is alive and how many
// tasks it runs. Other agents' recovery sweeps take over the tasks of an agent whose heartbeat
// is older than their StaleAfter. It beats on a connection of its own, whose backend it records:
// when the agent dies, that backend goes at once, and the status collectors see the agent dead
// without waiting for StaleAfter (ace.local_status).
type heartbeat struct {
	startStop
	a    *Agent
	conn *pgxpool.Conn // the loop's own; nil until acquired and after it failed
}

func (h *heartbeat) Name() string { return "heartbeat" }

func (h *heartbeat) Start(ctx context.Context) error { return h.start(ctx, h.run) }

func (h *heartbeat) run(ctx context.Context) {
	defer h.release()
	every(ctx, h.a.cfg.HeartbeatInterval, true, h.beat)
}

func (h *heartbeat) beat(ctx context.Context) {
	if h.conn == nil {
		conn, err := h.a.pool.Acquire(ctx)
		if err != nil {
			if ctx.Err() == nil {
				h.a.log.Warn("heartbeat failed", "err", err)
			}
			return
		}
		h.conn = conn
	}
	_, err := h.conn.Exec(ctx, `UPDATE ace.agents SET heartbeat_at = clock_timestamp(), running = $2, backend_pid = pg_backend_pid()
		WHERE agent_id = $1`, h.a.id, h.a.runningCount())
	if err != nil {
		// The connection may be broken: the next beat takes another.
		h.release()
		if ctx.Err() == nil {
			h.a.log.Warn("heartbeat failed", "err", err)
		}
	}
}

func (h *heartbeat) release() {
	if h.conn != nil {
		h.conn.Release()
		h.conn = nil
	}
}
