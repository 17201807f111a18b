package engine

import (
	"encoding/json"
	"fmt"
)

// ReportArgs are the repair's arguments as ACE's report lists them under supplied_args, plus
// ace-agent's own.
type ReportArgs struct {
	TaskID         string `json:"task_id"`
	DiffTask       string `json:"diff_task"`
	DiffFilePath   string `json:"diff_file_path"`
	SourceOfTruth  string `json:"source_of_truth"`
	TableName      string `json:"table_name"`
	DryRun         bool   `json:"dry_run"`
	InsertOnly     bool   `json:"insert_only"`
	UpsertOnly     bool   `json:"upsert_only"`
	FireTriggers   bool   `json:"fire_triggers"`
	GenerateReport bool   `json:"generate_report"`
	Bidirectional  bool   `json:"bidirectional"`
	FixNulls       bool   `json:"fix_nulls"`
	Strategy       string `json:"strategy,omitempty"`
	Atomic         bool   `json:"atomic"`
	CheckUnchanged bool   `json:"check_unchanged"`
}

// aceReport is ACE's repair report (repair_report_<time>.json / dry_run_report_<time>.json).
type aceReport struct {
	OperationType string                    `json:"operation_type"`
	Mode          string                    `json:"mode"`
	TimeStamp     string                    `json:"time_stamp"`
	SuppliedArgs  map[string]any            `json:"supplied_args"`
	Changes       map[string]map[string]any `json:"changes"`
	RunTime       float64                   `json:"run_time"`
}

// ACERepairReport renders a repair's recorded actions as ACE's repair report JSON. Rows are in
// ace-agent's encoding (JSON numbers and booleans, else PostgreSQL's text form). Beyond ACE's
// keys, every node lists "skipped_rows" with the reason for each.
func ACERepairReport(args ReportArgs, s *RepairSummary, actions []RepairAction) (json.RawMessage, error) {
	rep := aceReport{OperationType: "table-repair", Mode: "LIVE_RUN", Changes: map[string]map[string]any{},
		TimeStamp: s.EndTime.UTC().Format("2006-01-02 15:04:05.000"), RunTime: s.TimeTakenSeconds}
	if args.DryRun {
		rep.OperationType, rep.Mode = "DRY_RUN", "DRY_RUN"
	}
	raw, err := json.Marshal(args)
	if err != nil {
		return nil, fmt.Errorf("encode report arguments: %w", err)
	}
	if err := json.Unmarshal(raw, &rep.SuppliedArgs); err != nil {
		return nil, fmt.Errorf("encode report arguments: %w", err)
	}
	for k, v := range map[string]any{"cluster_name": "", "repair_plan_path": "", "dbname": "", "quiet": false, "recovery_mode": false} {
		rep.SuppliedArgs[k] = v
	}
	for _, a := range actions {
		if err := rep.add(args, a); err != nil {
			return nil, err
		}
	}
	return json.MarshalIndent(rep, "", "  ")
}

func (rep *aceReport) section(key string) map[string]any {
	if rep.Changes[key] == nil {
		rep.Changes[key] = map[string]any{}
	}
	return rep.Changes[key]
}

func appendTo(m map[string]any, key string, v any) {
	list, _ := m[key].([]any)
	m[key] = append(list, v)
}

// add files one action under ACE's keys for the repair's mode.
func (rep *aceReport) add(args ReportArgs, a RepairAction) error {
	if a.Action == ActionSkip {
		appendTo(rep.section(a.Node), "skipped_rows", map[string]any{"pk": a.PK, "reason": a.Reason, "row": a.Before})
		return nil
	}
	if !args.DryRun && !a.Applied {
		return nil // rolled back: the node did not get it
	}
	switch {
	case args.FixNulls:
		return rep.addFill(args, a)
	case args.Bidirectional:
		pair := rep.section(pairKey(a.Source, a.Node))
		if args.DryRun {
			appendTo(pair, "would_insert_into_"+a.Node, a.After)
		} else {
			inner, _ := pair[a.Node].(map[string]any)
			if inner == nil {
				inner = map[string]any{}
				pair[a.Node] = inner
			}
			appendTo(inner, "inserted_rows", a.After)
		}
		return nil
	}
	node := rep.section(a.Node)
	switch {
	case a.Action == ActionDelete && args.DryRun:
		appendTo(node, "would_delete", a.Before)
	case a.Action == ActionDelete:
		appendTo(node, "deleted_rows", a.Before)
	case args.DryRun && args.InsertOnly:
		appendTo(node, "would_insert", a.After)
	case args.DryRun:
		appendTo(node, "would_upsert", a.After)
	default:
		appendTo(node, "upserted_rows", a.After)
	}
	return nil
}

// addFill lists a fix_nulls update as ACE does: the key's columns and the filled values.
func (rep *aceReport) addFill(args ReportArgs, a RepairAction) error {
	entry, err := rowFields(a.PK)
	if err != nil {
		return fmt.Errorf("decode key %s: %w", a.PK, err)
	}
	before, err := rowFields(a.Before)
	if err != nil {
		return fmt.Errorf("decode row %s: %w", a.PK, err)
	}
	after, err := rowFields(a.After)
	if err != nil {
		return fmt.Errorf("decode row %s: %w", a.PK, err)
	}
	updates := map[string]json.RawMessage{}
	for c, v := range after {
		if isNull(before[c]) && !isNull(v) {
			updates[c] = v
		}
	}
	out := map[string]any{"updates": updates}
	for k, v := range entry {
		out[k] = v
	}
	key := "updated_rows"
	if args.DryRun {
		key = "would_update_rows"
	}
	appendTo(rep.section(a.Node), key, out)
	return nil
}
