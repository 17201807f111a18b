package agent

import (
	"context"
	"errors"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/mtree"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// mtreeBuild runs an mtree-build task: the tree of a table on the chosen nodes.
func (a *Agent) mtreeBuild(ctx context.Context, run *sqlapi.Run, args *sqlapi.MtreeBuildArgs) (_ any, err error) {
	nodes, done, err := a.openTreeNodes(ctx, run, args.Nodes, 4)
	if err != nil {
		return nil, err
	}
	defer func() { done(err) }()
	progress, stop := a.progressReporter(ctx, run)
	defer stop()
	return mtree.Build(ctx, nodes, args.Options(run.Task, a.cfg.TreeTxWait), progress)
}

// mtreeDiff runs an mtree-diff task; its result and rows are those of a table-diff.
func (a *Agent) mtreeDiff(ctx context.Context, run *sqlapi.Run, args *sqlapi.MtreeDiffArgs) (_ any, err error) {
	if err := run.ResetResults(ctx); err != nil {
		return nil, err
	}
	opts, err := args.Options(a.diffSessions())
	if err != nil {
		return nil, err
	}
	nodes, done, err := a.openTreeNodes(ctx, run, args.Nodes, int32(opts.Diff.Workers+2))
	if err != nil {
		return nil, err
	}
	defer func() { done(err) }()
	progress, stop := a.progressReporter(ctx, run)
	defer stop()
	summary, err := mtree.Diff(ctx, nodes, opts, run, progress)
	if err != nil {
		return nil, err
	}
	if err := a.writeReport(ctx, run, args.Output, summary); err != nil {
		return nil, err
	}
	return summary, nil
}

// mtreeTeardown runs an mtree-teardown task: one table's tree, or all of them.
func (a *Agent) mtreeTeardown(ctx context.Context, run *sqlapi.Run, args *sqlapi.MtreeTeardownArgs) (_ any, err error) {
	nodes, done, err := a.openTreeNodes(ctx, run, args.Nodes, 2)
	if err != nil {
		return nil, err
	}
	defer func() { done(err) }()
	return mtree.Teardown(ctx, nodes, args.TableName)
}

// openTreeNodes connects to the named nodes twice: as the submitter, who reads the table, and
// as this agent, which writes the trees in the ace schema it owns. The submitter's sessions run
// with mtree.DataSettings: what they hash goes into trees every user of the table shares. The
// tasks wake each node's tree keeper with wakeTreeKeeper. done ends the task's sessions, given
// how the task ended: the submitter's close, the agent's go back to a.trees (see treePools).
//
// Both logins connect at once: a diff after a few changes is over in a few hundred milliseconds,
// of which the connections are a good part.
func (a *Agent) openTreeNodes(ctx context.Context, run *sqlapi.Run, names []string, maxConns int32) (_ []mtree.NodeLogins, done func(taskErr error), _ error) {
	var agents *treeLease
	var agentsErr error
	opened := make(chan struct{})
	go func() {
		defer close(opened)
		agents, agentsErr = a.trees.lease(ctx, names)
	}()
	data, err := a.openEach(ctx, names, func(o engine.NodeOptions) engine.NodeOptions {
		o.MaxConns, o.Settings = maxConns, mtree.DataSettings
		return a.asSubmitter(o, run)
	})
	<-opened
	if err != nil || agentsErr != nil {
		closeNodes(data)
		if agents != nil {
			a.trees.release(agents, nil)
		}
		return nil, nil, errors.Join(err, agentsErr)
	}
	nodes := make([]mtree.NodeLogins, len(names))
	for i, agent := range agents.nodes() {
		nodes[i] = mtree.NodeLogins{Data: data[i], Agent: agent, Wake: wakeTreeKeeper}
	}
	return nodes, func(taskErr error) {
		closeNodes(data)
		a.trees.release(agents, taskErr)
	}, nil
}
