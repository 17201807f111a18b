package agent

import (
	"context"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/spock"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// SpockSyncResult is a spock-exception-sync task's result: per node, what the sync did.
type SpockSyncResult struct {
	Nodes map[string]spock.SyncCounts `json:"nodes"`
}

// spockExceptionSync syncs every chosen node's exception statuses as the submitter and stores
// what it read, so ace.spock_exceptions lists it. A node without Spock fails the task.
func (a *Agent) spockExceptionSync(ctx context.Context, run *sqlapi.Run, args *sqlapi.SpockExceptionSyncArgs) (any, error) {
	nodes, err := a.openSpockNodes(ctx, run, args.Nodes)
	if err != nil {
		return nil, err
	}
	defer closeNodes(nodes)
	for _, n := range nodes {
		if err := spock.CheckInstalled(ctx, n); err != nil {
			return nil, err
		}
	}
	res := SpockSyncResult{Nodes: map[string]spock.SyncCounts{}}
	for _, n := range nodes {
		rows, counts, err := spock.Sync(ctx, n)
		if err != nil {
			return nil, err
		}
		if err := run.WriteSpockExceptions(ctx, n.Name, rows); err != nil {
			return nil, err
		}
		res.Nodes[n.Name] = counts
	}
	return res, nil
}

// spockExceptionUpdate sets an exception's status on its node as the submitter.
func (a *Agent) spockExceptionUpdate(ctx context.Context, run *sqlapi.Run, args *sqlapi.SpockExceptionUpdateArgs) (any, error) {
	nodes, err := a.openSpockNodes(ctx, run, []string{args.NodeName})
	if err != nil {
		return nil, err
	}
	defer closeNodes(nodes)
	return spock.Apply(ctx, nodes[0], args.Update())
}

func (a *Agent) openSpockNodes(ctx context.Context, run *sqlapi.Run, names []string) ([]*engine.Node, error) {
	return a.openEach(ctx, names, func(o engine.NodeOptions) engine.NodeOptions {
		o.MaxConns = 2
		return a.asSubmitter(o, run)
	})
}
