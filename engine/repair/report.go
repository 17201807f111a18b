package repair

import (
	"encoding/json"

	"github.com/ace-agent/ace-agent/engine/acefile"
)

// ReportArgs are the repair's options as ACE's repair report lists them under supplied_args:
// the one conversion from Options, with what the options do not hold (the diff task, the
// table's name, whether a report was asked for). TaskID is o.ID.
func (o *Options) ReportArgs(diffTask, tableName string, generateReport bool) acefile.ReportArgs {
	return acefile.ReportArgs{
		TaskID: o.ID, DiffTask: diffTask, SourceOfTruth: o.SourceOfTruth, TableName: tableName,
		DryRun: o.DryRun, InsertOnly: o.InsertOnly, UpsertOnly: o.UpsertOnly, FireTriggers: o.FireTriggers,
		GenerateReport: generateReport, Bidirectional: o.Bidirectional, FixNulls: o.FixNulls,
		Strategy: o.Strategy, Atomic: o.Atomic, CheckUnchanged: o.CheckUnchanged,
	}
}

// ACERepairReport renders a repair's recorded actions as ACE's repair report JSON (see
// acefile.RepairReport). A key range copied whole is one change whose after is the range.
func ACERepairReport(args acefile.ReportArgs, s *Summary, actions []Action) (json.RawMessage, error) {
	changes := make([]acefile.ReportChange, len(actions))
	for i, a := range actions {
		if a.Range != nil {
			// A key range copied whole: its after is the range, as ace.repair_rows shows it.
			raw, err := json.Marshal(a.Range)
			if err != nil {
				return nil, err
			}
			a.After = raw
		}
		changes[i] = acefile.ReportChange{
			Node: a.Node, Source: a.Source, Skip: a.Kind == ActionSkip, Delete: a.Kind == ActionDelete,
			Reason: a.Reason, Applied: a.Applied, PK: a.PK, Before: a.Before, After: a.After,
		}
	}
	var auto any
	if s.AutoSourceOfTruth != nil {
		auto = s.AutoSourceOfTruth
	}
	return acefile.RepairReport(args, s.EndTime, s.TimeTakenSeconds, changes, auto)
}
