package agent

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/sourcegraph/conc"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// Version is the agent's version, recorded in ace.agents.
var Version = "dev"

// Agent runs the tasks submitted on its node.
type Agent struct {
	cfg  Config
	id   string
	log  *slog.Logger
	pool *pgxpool.Pool

	// clientCerts is the TLS identity of ACE_DSN, which task sessions present when they log in
	// as a submitter.
	clientCerts []tls.Certificate
	// user is ACE_DSN's login: the agent's own role on every node, owner of the ace schema.
	user string

	mu      sync.Mutex
	running map[uuid.UUID]*runningTask
	shared  map[uuid.UUID]*childNodes // by parent task: the node pools its children share
	stop    <-chan struct{}           // closed when the agent starts shutting down

	// trees keeps the node pools of the agent's own login between tree tasks.
	trees *treePools
}

type runningTask struct {
	run    *sqlapi.Run
	cancel context.CancelCauseFunc
	// waiting: a parent task that only waits for its children; it takes no place of MaxTasks,
	// so that this agent can run the children.
	waiting bool
}

// Causes for stopping a task early.
var (
	errShutdown  = errors.New("agent is shutting down")
	errCancelled = errors.New("cancelled by request")
)

// New prepares an agent; Run starts it.
func New(cfg Config, log *slog.Logger) *Agent {
	host, _ := os.Hostname()
	suffix := make([]byte, 3)
	_, _ = rand.Read(suffix)
	a := &Agent{
		cfg:     cfg,
		id:      fmt.Sprintf("%s@%s:%d:%s", cfg.Node, host, os.Getpid(), hex.EncodeToString(suffix)),
		log:     log,
		running: map[uuid.UUID]*runningTask{},
		shared:  map[uuid.UUID]*childNodes{},
	}
	a.trees = newTreePools(a)
	return a
}

// Run works until ctx is cancelled, then stops claiming, lets running tasks finish for
// ShutdownGrace, hands back the rest, and returns nil.
func (a *Agent) Run(ctx context.Context) error {
	a.stop = ctx.Done()
	pcfg, err := engine.ParsePoolConfig(a.cfg.DSN)
	if err != nil {
		return fmt.Errorf("ACE_DSN: %w", err)
	}
	// Each task holds its claim connection and may read a stream (a repair's diff rows) while it
	// writes on a third; the heartbeat holds one; the rest serve claiming and the background
	// services (the tree keeper has a pool of its own).
	pcfg.MaxConns = int32(3*a.cfg.MaxTasks + 5)
	pcfg.ConnConfig.RuntimeParams["application_name"] = "ace-agent"
	// The agent's own writes to the ace schema, and its DDL, stay on this node.
	pcfg.AfterConnect = engine.KeepLocal
	if a.cfg.Impersonation == "" {
		a.cfg.Impersonation = ImpersonateLogin
	}
	a.user = pcfg.ConnConfig.User
	if pcfg.ConnConfig.TLSConfig != nil {
		a.clientCerts = pcfg.ConnConfig.TLSConfig.Certificates
	}
	if a.cfg.setRole() {
		a.log.Warn("ACE_IMPERSONATION=set_role: task sessions log in as this agent and SET ROLE to the submitter; code a submitter can reach (filters, policies, triggers, domains) could RESET ROLE to the agent's login, so run this only where every submitter is trusted")
	}
	a.pool, err = pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return fmt.Errorf("connect to local node: %w", err)
	}
	defer a.pool.Close()
	// A stop that comes while the agent registers lets the registration finish (within
	// registerTimeout), so the agent stops as any registered agent does instead of failing.
	regCtx, cancelReg := context.WithTimeout(context.WithoutCancel(ctx), registerTimeout)
	err = a.register(regCtx)
	cancelReg()
	if err != nil {
		return err
	}
	a.log.Info("agent started", "agent", a.id, "node", a.cfg.Node, "max_tasks", a.cfg.MaxTasks)

	wake := make(chan struct{}, 1)
	services := a.services(wake)
	// The services outlive ctx: while running tasks finish or are handed back, the heartbeat
	// keeps them this agent's and the listener still hears cancel requests.
	if err := startServices(context.WithoutCancel(ctx), services); err != nil {
		a.unregister()
		return err
	}

	var tasks conc.WaitGroup
	a.claimLoop(ctx, wake, &tasks)
	a.shutdown(&tasks)
	stopServices(services)
	a.unregister()
	a.log.Info("agent stopped", "agent", a.id)
	return nil
}

// services is the agent's background work, in the order it starts; it stops in reverse, so the
// heartbeat stops last and the agent looks alive until all else has stopped. The listener wakes
// the claim loop through wake, and passes the tree notifications on to the tree keeper.
func (a *Agent) services(wake chan struct{}) []service {
	trees := make(chan string, 8)
	return []service{
		&heartbeat{a: a},
		&recoverySweep{a: a},
		&listener{a: a, wake: wake, trees: trees},
		newTreeKeeper(a, trees),
		&treeStatusCollector{a: a},
		&clusterStatusCollector{a: a},
		&retention{a: a},
		&scheduler{a: a},
		a.trees,
	}
}

// registerTimeout bounds the agent's registration: reading ace.nodes, its row in ace.agents and
// its agent_started event.
const registerTimeout = 30 * time.Second

func (a *Agent) register(ctx context.Context) error {
	var node string
	err := a.pool.QueryRow(ctx, `SELECT node_name FROM ace.nodes WHERE node_name = $1`, a.cfg.Node).Scan(&node)
	if errors.Is(err, pgx.ErrNoRows) {
		a.log.Warn("this node is not in ace.nodes yet; register it with ace.add_node(name, conninfo)", "node", a.cfg.Node)
	} else if err != nil {
		return fmt.Errorf("read ace.nodes (is the schema installed? run 'ace-agent install'): %w", err)
	}
	host, _ := os.Hostname()
	_, err = a.pool.Exec(ctx, `INSERT INTO ace.agents (agent_id, node_name, hostname, os_pid, version, max_tasks)
		VALUES ($1, $2, $3, $4, $5, $6)`, a.id, a.cfg.Node, host, os.Getpid(), Version, a.cfg.MaxTasks)
	if err != nil {
		return fmt.Errorf("register agent in ace.agents: %w", err)
	}
	if _, err := sqlapi.RecordEvent(ctx, a.pool, a.agentEvent("agent_started")); err != nil {
		return fmt.Errorf("register agent: %w", err)
	}
	return nil
}

// agentEvent is an event about this agent's own start or stop.
func (a *Agent) agentEvent(kind string) sqlapi.Event {
	return sqlapi.Event{Kind: kind, NodeName: a.cfg.Node, Detail: map[string]any{"agent_id": a.id, "version": Version}}
}

func (a *Agent) unregister() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := a.pool.Exec(ctx, `UPDATE ace.agents SET stopped_at = clock_timestamp(), running = 0 WHERE agent_id = $1`, a.id); err != nil {
		a.log.Warn("could not mark agent stopped", "err", err)
		return
	}
	if _, err := sqlapi.RecordEvent(ctx, a.pool, a.agentEvent("agent_stopped")); err != nil {
		a.log.Warn("could not record the agent's stop", "err", err)
	}
}

// claimLoop claims tasks while there is room, then sleeps until a notification, a finished
// task or the poll interval, until ctx ends.
func (a *Agent) claimLoop(ctx context.Context, wake chan struct{}, tasks *conc.WaitGroup) {
	for ctx.Err() == nil {
		for a.runningCount() < a.cfg.MaxTasks && a.tryClaim(ctx, tasks, wake) {
		}
		select {
		case <-ctx.Done():
		case <-wake:
		case <-time.After(a.cfg.PollInterval):
		}
	}
}

// runningCount counts the tasks that take a place of MaxTasks: those not only waiting.
func (a *Agent) runningCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, t := range a.running {
		if !t.waiting {
			n++
		}
	}
	return n
}

// setWaiting marks a running parent task as one that only waits for its children.
func (a *Agent) setWaiting(id uuid.UUID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if t, ok := a.running[id]; ok {
		t.waiting = true
	}
}

// tryClaim claims one task on a dedicated connection and starts it. The connection holds the
// task's claim lock until the task ends, and runs nothing else: the claim itself is not cut
// short by the shutdown either (it never waits for a lock), so no cancellation can break it.
func (a *Agent) tryClaim(ctx context.Context, tasks *conc.WaitGroup, wake chan struct{}) bool {
	conn, err := a.pool.Acquire(ctx)
	if err != nil {
		if ctx.Err() == nil {
			a.log.Error("cannot reach the local node", "err", err)
		}
		return false
	}
	claimCtx, cancelClaim := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancelClaim()
	run, err := sqlapi.Claim(claimCtx, conn.Conn(), a.pool, a.id)
	if err != nil || run == nil {
		if err != nil {
			a.log.Error("claim failed", "err", err)
			// It may hold a task's lock: closing it lets the recovery sweep take the task.
			_ = conn.Conn().Close(claimCtx)
		}
		conn.Release()
		return false
	}
	taskCtx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	a.mu.Lock()
	a.running[run.Task.ID] = &runningTask{run: run, cancel: cancel}
	a.mu.Unlock()
	tasks.Go(func() {
		defer conn.Release()
		limited, stopLimit := withRuntimeLimit(taskCtx, run.MaxRuntime)
		a.execute(limited, conn, run, func() {
			// The task's end is recorded: its role's running slot is free, and a parent waiting
			// for it may read it, before its claim lock is released.
			notify(wake)
			a.childEnded(run)
		})
		stopLimit()
		cancel(nil)
		a.mu.Lock()
		delete(a.running, run.Task.ID)
		a.mu.Unlock()
		notify(wake)
	})
	return true
}

// runningIDs lists the tasks this agent runs.
func (a *Agent) runningIDs() []uuid.UUID {
	a.mu.Lock()
	defer a.mu.Unlock()
	ids := make([]uuid.UUID, 0, len(a.running))
	for id := range a.running {
		ids = append(ids, id)
	}
	return ids
}

// shutdown waits for running tasks for the grace period, then stops them; they hand their
// tasks back to the queue.
func (a *Agent) shutdown(tasks *conc.WaitGroup) {
	if a.runningCount() > 0 {
		a.log.Info("waiting for running tasks", "count", a.runningCount(), "grace", a.cfg.ShutdownGrace)
	}
	done := make(chan struct{})
	go func() { tasks.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-time.After(a.cfg.ShutdownGrace):
	}
	a.mu.Lock()
	for _, t := range a.running {
		t.cancel(errShutdown)
	}
	a.mu.Unlock()
	<-done
}

// stopping reports whether the agent is shutting down.
func (a *Agent) stopping() bool {
	select {
	case <-a.stop:
		return true
	default:
		return false
	}
}

// cancelTask stops a running task at a user's request.
func (a *Agent) cancelTask(id uuid.UUID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if t, ok := a.running[id]; ok {
		t.cancel(errCancelled)
	}
}

// notify wakes the claim loop without blocking; one pending wake-up is enough.
func notify(wake chan struct{}) {
	select {
	case wake <- struct{}{}:
	default:
	}
}
