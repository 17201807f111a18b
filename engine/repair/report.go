package repair

import (
	"encoding/json"

	"github.com/ace-agent/ace-agent/engine/acefile"
)

// ReportArgs are the repair's options as ACE's repair report lists them under supplied_args:
// the one conversion from RepairOptions, with what the options do not hold (the diff task, the
// table's name, whether a report was asked for). TaskID is o.ID.
func (o *RepairOptions) ReportArgs(diffTask, tableName string, generateReport bool) acefile.ReportArgs {
	return acefile.ReportArgs{
		TaskID: o.ID, DiffTask: diffTask, SourceOfTruth: o.SourceOfTruth, TableName: tableName,
		DryRun: o.DryRun, InsertOnly: o.InsertOnly, UpsertOnly: o.UpsertOnly, FireTriggers: o.FireTriggers,
		GenerateReport: generateReport, Bidirectional: o.Bidirectional, FixNulls: o.FixNulls,
		Strategy: o.Strategy, Atomic: o.Atomic, CheckUnchanged: o.CheckUnchanged,
	}
}

// ACERepairReport renders a repair's recorded actions as ACE's repair report JSON (see
// acefile.RepairReport).
func ACERepairReport(args acefile.ReportArgs, s *RepairSummary, actions []RepairAction) (json.RawMessage, error) {
	changes := make([]acefile.Change, len(actions))
	for i, a := range actions {
		changes[i] = acefile.Change{
			Node: a.Node, Source: a.Source, Skip: a.Action == ActionSkip, Delete: a.Action == ActionDelete,
			Reason: a.Reason, Applied: a.Applied, PK: a.PK, Before: a.Before, After: a.After,
		}
	}
	return acefile.RepairReport(args, s.EndTime, s.TimeTakenSeconds, changes)
}
