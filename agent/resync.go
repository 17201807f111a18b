package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/ace-agent/ace-agent/engine/repair"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// Statuses of a table in a resync's result.
const (
	resyncInSync     = "in_sync"    // the diff found no difference
	resyncRepaired   = "repaired"   // the repair left the node agreeing on every differing key
	resyncUnresolved = "unresolved" // the repair skipped keys it was meant to fix (no majority, changed since the diff, …)
	resyncFailed     = "failed"     // the diff or the repair did not complete
)

// resyncResult is a node-resync's result: what each table's diff found and its repair did on
// the node.
type resyncResult struct {
	NodeName         string        `json:"node_name"`
	Strategy         string        `json:"strategy"`
	SourceOfTruth    string        `json:"source_of_truth,omitempty"`
	Nodes            []string      `json:"nodes"` // the nodes each table was diffed on
	TablesTotal      int           `json:"tables_total"`
	InSync           int           `json:"in_sync"`
	Repaired         int           `json:"repaired"`
	UnresolvedTables int           `json:"unresolved_tables"`
	Inserted         int64         `json:"inserted"`
	Updated          int64         `json:"updated"`
	Deleted          int64         `json:"deleted"`
	Skipped          int64         `json:"skipped"`
	Unresolved       int64         `json:"unresolved"`
	FullyResynced    bool          `json:"fully_resynced"`
	Tables           []resyncTable `json:"tables"`
}

// resyncTable is one table of a resync.
type resyncTable struct {
	Table         string     `json:"table"`
	Status        string     `json:"status"`
	DiffTask      *uuid.UUID `json:"diff_task,omitempty"`
	DifferingKeys int64      `json:"differing_keys"`
	RepairTask    *uuid.UUID `json:"repair_task,omitempty"`
	Inserted      int64      `json:"inserted"`
	Updated       int64      `json:"updated"`
	Deleted       int64      `json:"deleted"`
	Skipped       int64      `json:"skipped"`
	Unresolved    int64      `json:"unresolved"`
	Error         string     `json:"error,omitempty"`
}

// nodeResync brings one node back in line with the others: a child table-diff per table, then a
// child table-repair per table that differs, whose only target is the node. Each child is an
// ordinary task of the submitter (validated, limited, logged in as them), so the repairs keep
// their compare-and-set and write modes, and no other node is written. A table whose diff or
// repair did not complete fails the resync, after every other table was done.
func (a *Agent) nodeResync(ctx context.Context, run *sqlapi.Run, args *sqlapi.NodeResyncArgs) (any, error) {
	res := &resyncResult{NodeName: args.NodeName, Strategy: args.Strategy, SourceOfTruth: args.SourceOfTruth,
		Nodes: args.Nodes, TablesTotal: len(args.Tables), Tables: make([]resyncTable, len(args.Tables))}
	diffs := make([]sqlapi.Child, len(args.Tables))
	for i, table := range args.Tables {
		diffs[i] = args.TableDiff(table)
		res.Tables[i] = resyncTable{Table: table}
	}
	outcomes, err := a.runChildrenSaying(ctx, run, sqlapi.ChildDiffArgs{}, diffs, "tables diffed")
	if err != nil {
		return nil, err
	}
	var repairs []sqlapi.Child
	repairOf := map[string]int{}
	for i, o := range outcomes {
		t := &res.Tables[i]
		if !placeDiff(t, o) {
			continue
		}
		repairOf[t.Table] = i
		repairs = append(repairs, args.TableRepair(t.Table, t.DiffTask.String()))
	}
	if len(repairs) > 0 {
		if outcomes, err = a.runChildrenSaying(ctx, run, sqlapi.ChildDiffArgs{}, repairs, "tables repaired"); err != nil {
			return nil, err
		}
		for _, o := range outcomes {
			placeRepair(&res.Tables[repairOf[o.Key]], o, args.NodeName)
		}
	}
	return res, res.total()
}

// childOfResync reports whether a task is a child of a node-resync: then its diff stores a key
// range that some nodes hold and the resynced node lacks as one row (diff.TableDiffOptions'
// RangeRows), which the resync's repair copies whole, instead of a row per key.
func (a *Agent) childOfResync(ctx context.Context, run *sqlapi.Run) (bool, error) {
	var args struct {
		Parent *uuid.UUID `json:"parent_task"`
	}
	if json.Unmarshal(run.Task.Args, &args) != nil || args.Parent == nil {
		return false, nil
	}
	parent, err := sqlapi.GetTask(ctx, a.pool, *args.Parent)
	if err != nil {
		return false, fmt.Errorf("read the parent task of task %s: %w", run.Task.ID, err)
	}
	return parent.Type == sqlapi.TypeNodeResync, nil
}

// placeDiff records a table's diff, and reports whether the table needs a repair.
func placeDiff(t *resyncTable, o sqlapi.ChildOutcome) bool {
	if failed(t, "table-diff", o) {
		return false
	}
	t.DiffTask = &o.TaskID
	var s struct {
		DifferingKeys int64 `json:"differing_keys"`
	}
	if err := json.Unmarshal(o.Task.Result, &s); err != nil {
		t.Status, t.Error = resyncFailed, fmt.Sprintf("read the result of table-diff task %s: %v", o.TaskID, err)
		return false
	}
	t.DifferingKeys = s.DifferingKeys
	if s.DifferingKeys == 0 {
		t.Status = resyncInSync
		return false
	}
	return true
}

// placeRepair records what a table's repair did on the node.
func placeRepair(t *resyncTable, o sqlapi.ChildOutcome, node string) {
	if failed(t, "table-repair", o) {
		return
	}
	t.RepairTask = &o.TaskID
	var s repair.Summary
	if err := json.Unmarshal(o.Task.Result, &s); err != nil {
		t.Status, t.Error = resyncFailed, fmt.Sprintf("read the result of table-repair task %s: %v", o.TaskID, err)
		return
	}
	if n := s.Nodes[node]; n != nil {
		t.Inserted, t.Updated, t.Deleted, t.Skipped = n.Inserted, n.Updated, n.Deleted, n.Skipped
	}
	t.Unresolved = s.Unresolved
	t.Status = resyncRepaired
	if s.Unresolved > 0 {
		t.Status = resyncUnresolved
	}
}

// failed records a child that could not be submitted or did not complete.
func failed(t *resyncTable, kind string, o sqlapi.ChildOutcome) bool {
	switch {
	case o.Err != nil:
		t.Status, t.Error = resyncFailed, fmt.Sprintf("%s refused: %v", kind, o.Err)
	case o.Task.Status != sqlapi.StatusCompleted:
		t.Status, t.Error = resyncFailed, fmt.Sprintf("%s task %s %s: %s", kind, o.TaskID, o.Task.Status, deref(o.Task.Error))
	default:
		return false
	}
	return true
}

// total adds the tables up; a table that failed is the resync's error, which names every table.
func (r *resyncResult) total() error {
	var failures []string
	for _, t := range r.Tables {
		r.Inserted, r.Updated, r.Deleted, r.Skipped, r.Unresolved =
			r.Inserted+t.Inserted, r.Updated+t.Updated, r.Deleted+t.Deleted, r.Skipped+t.Skipped, r.Unresolved+t.Unresolved
		switch t.Status {
		case resyncInSync:
			r.InSync++
		case resyncRepaired:
			r.Repaired++
		case resyncUnresolved:
			r.UnresolvedTables++
		case resyncFailed:
			failures = append(failures, t.Table+": "+t.Error)
		}
	}
	r.FullyResynced = len(failures) == 0 && r.UnresolvedTables == 0
	if len(failures) > 0 {
		return fmt.Errorf("resync of node %s failed for %d of %d table(s): %s; the others: %d in sync, %d repaired, %d with unresolved rows (their child tasks hold the details)",
			r.NodeName, len(failures), r.TablesTotal, strings.Join(failures, "; "), r.InSync, r.Repaired, r.UnresolvedTables)
	}
	return nil
}
