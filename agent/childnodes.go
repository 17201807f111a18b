package agent

import (
	"context"
	"encoding/json"
	"sync"

	"github.com/google/uuid"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// childNodes are the node sessions that the children of one parent task share. A child diff of a
// small table spends most of its time logging in to every node and warming fresh backends'
// catalog caches, so the parent keeps one pool per node, logged in as its submitter, and each
// child borrows it instead of opening its own. Only children submitted by the parent's own
// submitter borrow them (ace.check_parent_task already refuses a child of another role's
// parent); the pools close when the parent and every child that borrowed them are done.
type childNodes struct {
	submitter string
	maxConns  int32 // per node: every task this agent runs at once may be one of the children

	// ended wakes the waiting parent when a child that borrowed the pools has ended.
	ended chan struct{}

	mu     sync.Mutex
	nodes  map[string]*engine.Node
	users  int  // the parent and the children that hold the pools
	closed bool // the parent ended: no new borrowers
}

// shareNodes opens the parent's shared node pools (lazily, a node at its first use) and returns
// them with the function that gives up the parent's hold on them.
func (a *Agent) shareNodes(run *sqlapi.Run, connsPerChild int32) (shared *childNodes, release func()) {
	c := &childNodes{submitter: run.Task.SubmittedBy, maxConns: connsPerChild * int32(a.cfg.MaxTasks),
		nodes: map[string]*engine.Node{}, users: 1, ended: make(chan struct{}, 1)}
	a.mu.Lock()
	a.shared[run.Task.ID] = c
	a.mu.Unlock()
	return c, func() {
		a.mu.Lock()
		delete(a.shared, run.Task.ID)
		a.mu.Unlock()
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		c.release()
	}
}

// parentOf returns what the parent of the task shares, if the task is a child of a parent that
// runs on this agent and was submitted by the same role; nil otherwise.
func (a *Agent) parentOf(run *sqlapi.Run) *childNodes {
	var args struct {
		Parent *uuid.UUID `json:"parent_task"`
	}
	if json.Unmarshal(run.Task.Args, &args) != nil || args.Parent == nil {
		return nil
	}
	a.mu.Lock()
	c := a.shared[*args.Parent]
	a.mu.Unlock()
	if c == nil || c.submitter != run.Task.SubmittedBy {
		return nil
	}
	return c
}

// childEnded wakes the parent of a task that has ended, if it waits on this agent.
func (a *Agent) childEnded(run *sqlapi.Run) {
	if c := a.parentOf(run); c != nil {
		notify(c.ended)
	}
}

// sharedFor returns the pools of the task's parent (parentOf), holding them for the caller.
func (a *Agent) sharedFor(run *sqlapi.Run) *childNodes {
	c := a.parentOf(run)
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.users++
	return c
}

// open returns the named nodes' shared pools, opening those not open yet.
func (c *childNodes) open(ctx context.Context, a *Agent, run *sqlapi.Run, names []string) ([]*engine.Node, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var missing []string
	for _, n := range names {
		if c.nodes[n] == nil {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		opened, err := a.openNodes(ctx, run, missing, c.maxConns)
		if err != nil {
			return nil, err
		}
		for _, n := range opened {
			c.nodes[n.Name] = n
		}
	}
	out := make([]*engine.Node, len(names))
	for i, n := range names {
		out[i] = c.nodes[n]
	}
	return out, nil
}

// release gives up one hold; the last one closes the pools.
func (c *childNodes) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.users--
	if c.users > 0 {
		return
	}
	for _, n := range c.nodes {
		n.Close()
	}
	c.nodes = nil
}

// taskNodes connects to the named nodes as the task's submitter, through its parent's shared
// pools when it is a child of a parent this agent runs. done gives the nodes back.
func (a *Agent) taskNodes(ctx context.Context, run *sqlapi.Run, names []string, maxConns int32) (nodes []*engine.Node, done func(), err error) {
	if c := a.sharedFor(run); c != nil {
		nodes, err := c.open(ctx, a, run, names)
		if err != nil {
			c.release()
			return nil, nil, err
		}
		return nodes, c.release, nil
	}
	nodes, err = a.openNodes(ctx, run, names, maxConns)
	if err != nil {
		return nil, nil, err
	}
	return nodes, func() { closeNodes(nodes) }, nil
}
