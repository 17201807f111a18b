package agent

import (
	"context"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/spockdiff"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// spockDiff runs a spock-diff task: each node's replication catalog is read in a session
// logged in as the submitter, so it shows only what she may read.
func (a *Agent) spockDiff(ctx context.Context, run *sqlapi.Run, args *sqlapi.SpockDiffArgs) (any, error) {
	nodes, err := a.openEach(ctx, args.Nodes, func(o engine.NodeOptions) engine.NodeOptions {
		o.MaxConns = 2
		return a.asSubmitter(o, run)
	})
	if err != nil {
		return nil, err
	}
	defer closeNodes(nodes)
	return spockdiff.Run(ctx, nodes)
}
