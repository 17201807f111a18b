package agent

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/engine"
)

// listener holds one connection that LISTENs for new and cancelled tasks and for changes to the
// trees. NOTIFY is only a wake-up, without a payload: if the connection drops, the poll interval
// still finds the work, and a cancel request is also seen at the task's next progress update.
type listener struct {
	startStop
	a     *Agent
	wake  chan struct{} // wakes the claim loop
	trees chan string   // the payloads of NOTIFY ace_mtree, for the tree keeper
}

func (l *listener) Name() string { return "listener" }

func (l *listener) Start(ctx context.Context) error { return l.start(ctx, l.run) }

func (l *listener) run(ctx context.Context) {
	for ctx.Err() == nil {
		if err := l.listenOnce(ctx); err != nil && ctx.Err() == nil {
			l.a.log.Warn("listen connection lost; polling until it is back", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(l.a.cfg.PollInterval):
			}
		}
	}
}

func (l *listener) listenOnce(ctx context.Context) error {
	pcfg, err := engine.ParsePoolConfig(l.a.cfg.DSN)
	if err != nil {
		return err
	}
	conn, err := pgx.ConnectConfig(ctx, pcfg.ConnConfig)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, ch := range []string{"ace_task", "ace_task_cancel", treeChannel} {
		if _, err := conn.Exec(ctx, "LISTEN "+ch); err != nil {
			return err
		}
	}
	// Anything queued, or any cancel asked for, before LISTEN took effect is found now.
	notify(l.wake)
	l.signalTrees("trees")
	l.a.cancelRequested(ctx)
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		switch n.Channel {
		case "ace_task":
			notify(l.wake)
		case "ace_task_cancel":
			l.a.cancelRequested(ctx)
		case treeChannel:
			l.signalTrees(n.Payload)
		}
	}
}

// signalTrees passes a signal to the tree keeper without blocking: when the keeper has signals
// queued, it reconciles with the tables anyway.
func (l *listener) signalTrees(s string) {
	select {
	case l.trees <- s:
	default:
	}
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
