package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/sourcegraph/conc/pool"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/diff"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// finishTimeout bounds the final writes about a task after its context has ended.
const finishTimeout = 10 * time.Second

// execute runs one claimed task to a terminal status, or hands it back on shutdown. conn holds
// the claim lock and is used for nothing but releasing it: the task's end is recorded on a
// fresh connection, so a write that the shutdown cut short cannot strand the task. ended is
// called once the end is recorded.
func (a *Agent) execute(ctx context.Context, conn *pgxpool.Conn, run *sqlapi.Run, ended func()) {
	log := a.log.With("task", run.Task.ID, "type", run.Task.Type, "attempt", run.Task.Attempts)
	log.Info("task started", "submitted_by", run.Task.SubmittedBy)
	result, err := a.dispatch(ctx, run)
	endCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	if endErr := a.end(endCtx, context.Cause(ctx), log, run, result, err); endErr != nil {
		log.Error("could not record the task's end; the recovery sweep will take it over", "err", endErr)
	}
	ended()
	if err := run.Unlock(endCtx); err != nil {
		// Closing the session releases the lock too, so the recovery sweep can take the task.
		log.Warn("could not release the task's claim lock; closing its connection", "err", err)
		_ = conn.Conn().Close(endCtx)
	}
}

// end records how the task ended, given what dispatch returned and why the task's context
// ended (cause).
func (a *Agent) end(ctx context.Context, cause error, log *slog.Logger, run *sqlapi.Run, result any, err error) error {
	switch {
	case err == nil:
		log.Info("task completed")
		return run.Complete(ctx, result)
	case errors.Is(err, sqlapi.ErrLostClaim):
		log.Warn("task was recovered by another agent; result discarded")
		return nil
	case errors.Is(cause, errCancelled):
		log.Info("task cancelled")
		return run.Cancel(ctx, "cancelled by request")
	case errors.As(cause, new(runtimeLimitError)):
		log.Warn("task stopped at max_task_runtime", "limit", run.MaxRuntime)
		return run.Fail(ctx, cause)
	case a.handBack(cause, err, run):
		log.Info("task handed back for another agent", "reason", cmp.Or(cause, err))
		return run.HandBack(ctx)
	}
	// The log keeps key values; the task's error, which its submitter reads, names ranges by
	// position only.
	log.Warn("task failed", "err", err)
	return run.Fail(ctx, engine.Redacted(err))
}

// handBack reports whether an unfinished task goes back to the queue: the shutdown's grace ran
// out, or the agent is shutting down and lost a connection (a restart of the node, say); and
// the task committed nothing. A repair that committed a node is failed instead, so that its
// record stays and a person looks at it. (A repair re-plans from the rows the nodes hold when it
// runs, so even a node whose COMMIT broke off, and may have committed, is safe to run again.)
func (a *Agent) handBack(cause, err error, run *sqlapi.Run) bool {
	stopped := errors.Is(cause, errShutdown) || (a.stopping() && sqlapi.ConnectionLost(err))
	return stopped && !run.MayHaveChangedData()
}

func (a *Agent) tableDiff(ctx context.Context, run *sqlapi.Run, args *sqlapi.TableDiffArgs) (any, error) {
	if err := run.ResetResults(ctx); err != nil {
		return nil, err
	}
	opts, err := args.Options(a.diffSessions())
	if err != nil {
		return nil, err
	}
	if opts.RangeRows, err = a.childOfResync(ctx, run); err != nil {
		return nil, err
	}
	// One connection holds each node's snapshot; the others hash blocks.
	nodes, done, err := a.taskNodes(ctx, run, args.Nodes, diff.ConnsPerNode(opts.Workers))
	if err != nil {
		return nil, err
	}
	defer done()
	progress, stop := a.progressReporter(ctx, run)
	defer stop()
	summary, err := diff.TableDiff(ctx, nodes, opts, run, progress)
	if err != nil {
		return nil, err
	}
	if err := a.writeReport(ctx, run, args.Output, summary); err != nil {
		return nil, err
	}
	return summary, nil
}

// diffSessions is what a diff's engine options take from this agent rather than from the task.
func (a *Agent) diffSessions() sqlapi.DiffSessions {
	return sqlapi.DiffSessions{Workers: a.cfg.DiffWorkers, SetRole: a.cfg.setRole()}
}

// openNodes connects to the named nodes as the task's submitter. The local node is reached
// through ACE_DSN, the others through their ace.nodes connection strings.
func (a *Agent) openNodes(ctx context.Context, run *sqlapi.Run, names []string, maxConns int32) ([]*engine.Node, error) {
	return a.openEach(ctx, names, func(o engine.NodeOptions) engine.NodeOptions {
		o.MaxConns = maxConns
		return a.asSubmitter(o, run)
	})
}

// openEach connects to the named nodes at once, each with the options login makes of its name
// and connection string.
func (a *Agent) openEach(ctx context.Context, names []string, login func(engine.NodeOptions) engine.NodeOptions) ([]*engine.Node, error) {
	conninfo, err := a.nodeConnInfo(ctx)
	if err != nil {
		return nil, err
	}
	nodes := make([]*engine.Node, len(names))
	p := pool.New().WithErrors().WithContext(ctx)
	for i, name := range names {
		ci, ok := conninfo[name]
		if !ok {
			return nil, fmt.Errorf("node %s is not registered in ace.nodes any more", name)
		}
		p.Go(func(ctx context.Context) error {
			n, err := engine.OpenNode(ctx, login(engine.NodeOptions{Name: name, ConnInfo: ci}))
			nodes[i] = n
			return err
		})
	}
	if err := p.Wait(); err != nil {
		closeNodes(nodes)
		return nil, err
	}
	return nodes, nil
}

// nodeConnInfo maps each registered node to its connection string; the local node is reached
// through ACE_DSN.
func (a *Agent) nodeConnInfo(ctx context.Context) (map[string]string, error) {
	registered, err := sqlapi.Nodes(ctx, a.pool)
	if err != nil {
		return nil, err
	}
	conninfo := map[string]string{}
	for _, n := range registered {
		conninfo[n.Name] = n.ConnInfo
	}
	conninfo[a.cfg.Node] = a.cfg.DSN
	return conninfo, nil
}

// asSubmitter makes a task's node sessions the submitter's: by logging in as the submitting role
// with the agent's client certificate (the node's pg_ident.conf maps it onto submitters), or, in
// the set_role mode, by SET ROLE in the agent's own login.
func (a *Agent) asSubmitter(o engine.NodeOptions, run *sqlapi.Run) engine.NodeOptions {
	return a.asRole(o, run.Task.SubmittedBy)
}

// asRole makes node sessions the given role's, as asSubmitter does for a task's submitter: the
// scheduler's sessions are its schedules' owners'.
func (a *Agent) asRole(o engine.NodeOptions, role string) engine.NodeOptions {
	if a.cfg.setRole() {
		o.Role = role
		return o
	}
	o.User, o.ClientCerts = role, a.clientCerts
	return o
}

func closeNodes(nodes []*engine.Node) {
	for _, n := range nodes {
		if n != nil {
			n.Close()
		}
	}
}

// progressReporter returns an engine progress callback that writes at most one update per
// ProgressInterval, and cancels the task when a user asked for it.
func (a *Agent) progressReporter(ctx context.Context, run *sqlapi.Run) (engine.ProgressFunc, func()) {
	var mu sync.Mutex
	var latest *engine.Progress
	flush := func() {
		mu.Lock()
		p := latest
		latest = nil
		mu.Unlock()
		if p == nil {
			return
		}
		cancel, err := run.SetProgress(ctx, p)
		if err != nil && ctx.Err() == nil {
			a.log.Warn("progress update failed", "task", run.Task.ID, "err", err)
		}
		if cancel {
			a.cancelTask(run.Task.ID)
		}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(a.cfg.ProgressInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				flush()
				return
			case <-t.C:
				flush()
			}
		}
	}()
	report := func(p engine.Progress) {
		mu.Lock()
		latest = &p
		mu.Unlock()
	}
	return report, func() { close(done); wg.Wait() }
}
