package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/google/uuid"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/diff"
	"github.com/ace-agent/ace-agent/engine/repair"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// tableRepair runs a table-repair task: it reads the diff the task refers to and has the engine
// change the target nodes, recording every action in ace.repair_actions.
func (a *Agent) tableRepair(ctx context.Context, run *sqlapi.Run, args *sqlapi.TableRepairArgs) (any, error) {
	diff, err := a.diffSummary(ctx, args.DiffTask)
	if err != nil {
		return nil, err
	}
	auto, err := a.recoverySourceOfTruth(ctx, run, args, diff)
	if err != nil {
		return nil, err
	}
	targets := args.TargetNodes
	if len(targets) == 0 {
		targets = slices.DeleteFunc(slices.Clone(diff.Nodes), func(n string) bool { return n == args.SourceOfTruth })
	}
	nodes, err := a.openRepairNodes(ctx, run, repairNodes(targets, diff))
	if err != nil {
		return nil, err
	}
	defer closeNodes(nodes)
	sink, err := run.RepairActions(ctx)
	if err != nil {
		return nil, err
	}
	progress, stop := a.progressReporter(ctx, run)
	defer stop()
	opts := a.repairOptions(run, *args, diff)
	if args.PreserveOrigin {
		opts.PreserveOrigin = diff.AgainstOrigin
	}
	if opts.Plan, err = args.ParsedPlan(); err != nil {
		return nil, err
	}
	summary, err := repair.Repair(ctx, nodes, opts, sink, progress)
	if summary != nil {
		summary.AutoSourceOfTruth = auto
	}
	if err != nil {
		return nil, err
	}
	if args.GenerateReport {
		// The nodes are committed: the shutdown must not cut the report short.
		reportCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
		defer cancel()
		if summary.RepairReport, err = a.repairReport(reportCtx, run, *args, summary); err != nil {
			return nil, err
		}
	}
	return summary, nil
}

// repairNodes are the nodes a repair connects to: its targets, and with a diff that stored key
// ranges whole, every node of the diff, whose tables define the ranges' key order and whose
// holders the ranges are copied from (engine/repair's ranges.go).
func repairNodes(targets []string, diff *engine.DiffSummary) []string {
	if diff.KeyRanges == 0 {
		return targets
	}
	out := slices.Clone(targets)
	for _, n := range diff.Nodes {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// setRoleTo is the role a repair's transactions SET LOCAL ROLE to: the submitter in the set_role
// mode, none when the sessions log in as the submitter.
func (a *Agent) setRoleTo(run *sqlapi.Run) string {
	if a.cfg.setRole() {
		return run.Task.SubmittedBy
	}
	return ""
}

func (a *Agent) repairOptions(run *sqlapi.Run, args sqlapi.TableRepairArgs, diff *engine.DiffSummary) repair.Options {
	o := args.Options()
	o.ID = run.Task.ID.String()
	o.Diff = diff
	o.Rows = func(ctx context.Context, fn func(engine.DiffRow) error) error {
		return sqlapi.ReadDiffRowsAsStored(ctx, a.pool, args.DiffTask, fn)
	}
	o.Role = a.setRoleTo(run)
	// In the set_role mode the table's code runs in sessions that log in as the agent.
	o.SetRoleSessions = a.cfg.setRole()
	return o
}

// repairReport renders the recorded actions as ACE's repair report.
func (a *Agent) repairReport(ctx context.Context, run *sqlapi.Run, args sqlapi.TableRepairArgs, s *repair.Summary) (json.RawMessage, error) {
	actions, err := sqlapi.ReadRepairActions(ctx, a.pool, run.Task.ID)
	if err != nil {
		return nil, err
	}
	return repair.ACERepairReport(args.ReportArgs(run.Task.ID), s, actions)
}

// diffSummary reads the summary of the completed diff a repair or rerun refers to. The
// submitter's right to see it was checked when the task was submitted.
func (a *Agent) diffSummary(ctx context.Context, id uuid.UUID) (*engine.DiffSummary, error) {
	t, err := sqlapi.GetTask(ctx, a.pool, id)
	if err != nil {
		return nil, fmt.Errorf("read diff task: %w", err)
	}
	if t.Status != sqlapi.StatusCompleted {
		return nil, fmt.Errorf("diff task %s is %s, not COMPLETED", id, t.Status)
	}
	var s engine.DiffSummary
	if err := json.Unmarshal(t.Result, &s); err != nil {
		return nil, fmt.Errorf("decode the summary of diff task %s: %w", id, err)
	}
	return &s, nil
}

// openRepairNodes connects to the nodes a repair changes, logged in as the submitter; in the
// set_role mode, without a role: the engine switches to the submitter's role in every
// transaction (setRoleTo). Each repair holds one connection per node.
func (a *Agent) openRepairNodes(ctx context.Context, run *sqlapi.Run, names []string) ([]*engine.Node, error) {
	conninfo, err := a.conninfos(ctx)
	if err != nil {
		return nil, err
	}
	var nodes []*engine.Node
	for _, name := range names {
		ci, ok := conninfo[name]
		if !ok {
			closeNodes(nodes)
			return nil, fmt.Errorf("node %s is not registered in ace.nodes any more", name)
		}
		o := engine.NodeOptions{Name: name, ConnInfo: ci, MaxConns: 2}
		if !a.cfg.setRole() {
			o = a.asSubmitter(o, run)
		}
		n, err := engine.OpenNode(ctx, o)
		if err != nil {
			closeNodes(nodes)
			return nil, err
		}
		nodes = append(nodes, n)
	}
	return nodes, nil
}

// conninfos maps every registered node to its connection string; the local node is reached
// through ACE_DSN.
func (a *Agent) conninfos(ctx context.Context) (map[string]string, error) {
	registered, err := sqlapi.Nodes(ctx, a.pool)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, n := range registered {
		out[n.Name] = n.ConnInfo
	}
	out[a.cfg.Node] = a.cfg.DSN
	return out, nil
}

// tableRerun rechecks exactly the keys of a diff on the diff's nodes, and stores the keys that
// still differ as a diff of its own.
func (a *Agent) tableRerun(ctx context.Context, run *sqlapi.Run, args *sqlapi.TableRerunArgs) (any, error) {
	keys, ranges, err := a.diffKeys(ctx, args.DiffTask)
	if err != nil {
		return nil, err
	}
	if err := run.ResetResults(ctx); err != nil {
		return nil, err
	}
	nodes, err := a.openNodes(ctx, run, args.Nodes, 6)
	if err != nil {
		return nil, err
	}
	defer closeNodes(nodes)
	progress, stop := a.progressReporter(ctx, run)
	defer stop()
	s, err := diff.RecheckKeys(ctx, nodes, args.RecheckOptions(keys, ranges, a.cfg.setRole()), run, progress)
	if err != nil {
		return nil, err
	}
	return rerunResult{DiffSummary: s, RerunOf: args.DiffTask, KeysRechecked: len(keys), RangesRechecked: len(ranges)}, nil
}

// rerunResult is a table-rerun's result: a diff summary, and which diff it rechecked.
type rerunResult struct {
	*engine.DiffSummary
	RerunOf       uuid.UUID `json:"rerun_of"`
	KeysRechecked int       `json:"keys_rechecked"`
	// RangesRechecked counts the key ranges the diff stored whole (a node resync's diff), each
	// compared again whole.
	RangesRechecked int `json:"ranges_rechecked,omitempty"`
}

// diffKeys reads the keys a diff found, as the engine takes them, and the key ranges it stored
// whole, which a rerun compares whole.
func (a *Agent) diffKeys(ctx context.Context, id uuid.UUID) ([][]string, []engine.Range, error) {
	var keys [][]string
	var ranges []engine.Range
	err := sqlapi.ReadDiffRowsAndRanges(ctx, a.pool, id, func(d engine.DiffRow) error {
		if d.Range != nil {
			ranges = append(ranges, d.Range.Range())
			return nil
		}
		k, err := engine.KeyFromJSON(d.PKSort)
		if err != nil {
			return err
		}
		keys = append(keys, k)
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read the keys of diff task %s: %w", id, err)
	}
	return keys, ranges, nil
}

// diffImport stores an ACE diff file's rows as the result of a diff task, so a repair or a
// rerun can refer to it.
func (a *Agent) diffImport(ctx context.Context, run *sqlapi.Run, args *sqlapi.DiffImportArgs) (any, error) {
	if err := run.ResetResults(ctx); err != nil {
		return nil, err
	}
	nodes, err := a.openNodes(ctx, run, []string{a.cfg.Node}, 2)
	if err != nil {
		return nil, err
	}
	defer closeNodes(nodes)
	s, err := diff.ImportACEDiff(ctx, nodes[0], args.Diff, run, diff.ImportOptions{SetRoleSessions: a.cfg.setRole()})
	if err != nil {
		return nil, err
	}
	return importResult{DiffSummary: s, ImportedFrom: args.FileName}, nil
}

// importResult is a diff-import's result: the file's summary in a diff's form.
type importResult struct {
	*engine.DiffSummary
	ImportedFrom string `json:"imported_from,omitempty"`
}

// recoverySourceOfTruth picks the source of truth of a recovery_mode repair that names none (and
// nothing else decides its rows): the survivor with the highest origin LSN for the failed node,
// the diff's against_origin. It sets args.SourceOfTruth and takes that node out of the targets;
// nil when there is nothing to pick. The probe runs logged in as the submitter, before any write.
func (a *Agent) recoverySourceOfTruth(ctx context.Context, run *sqlapi.Run, args *sqlapi.TableRepairArgs, diff *engine.DiffSummary) (*repair.AutoSourceOfTruth, error) {
	if !args.RecoveryMode || args.SourceOfTruth != "" || args.Strategy != "" || len(args.Plan) > 0 || args.RepairPlan != "" ||
		args.FixNulls || args.Bidirectional {
		return nil, nil
	}
	failed := diff.AgainstOrigin
	if failed == "" {
		return nil, fmt.Errorf("recovery_mode without a source of truth needs a diff made with against_origin (the failed node): name a source_of_truth")
	}
	survivors := slices.DeleteFunc(slices.Clone(diff.Nodes), func(n string) bool { return n == failed })
	nodes, err := a.openNodes(ctx, run, survivors, 1)
	if err != nil {
		return nil, err
	}
	defer closeNodes(nodes)
	auto, err := repair.SelectSurvivor(ctx, nodes, failed)
	if err != nil {
		return nil, err
	}
	args.SourceOfTruth = auto.Selected
	args.TargetNodes = slices.DeleteFunc(args.TargetNodes, func(n string) bool { return n == auto.Selected })
	return auto, nil
}
