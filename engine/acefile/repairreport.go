package acefile

import (
	"encoding/json"
	"fmt"
	"time"
)

// ReportArgs are a repair's arguments as ACE's repair report lists them under supplied_args,
// plus ace-agent's own. repair.Options.ReportArgs builds them.
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
	RecoveryMode   bool   `json:"recovery_mode"`
}

// ReportChange is one recorded repair action, as the report needs it.
type ReportChange struct {
	Node    string
	Source  string // the node whose version was copied
	Skip    bool   // not done, for Reason
	Delete  bool   // else an insert or update to After
	Reason  string
	Applied bool // committed on the node
	PK      json.RawMessage
	Before  json.RawMessage // null when absent
	After   json.RawMessage
}

// repairReport is ACE's repair report (repair_report_<time>.json / dry_run_report_<time>.json).
type repairReport struct {
	OperationType string                    `json:"operation_type"`
	Mode          string                    `json:"mode"`
	TimeStamp     string                    `json:"time_stamp"`
	SuppliedArgs  map[string]any            `json:"supplied_args"`
	Changes       map[string]map[string]any `json:"changes"`
	RunTime       float64                   `json:"run_time"`
	// AutoSourceOfTruth is how recovery_mode chose the source of truth (omitted when it was given).
	AutoSourceOfTruth any `json:"auto_source_of_truth,omitempty"`
}

// RepairReport renders a repair that ended at end after runTime seconds as ACE's repair report
// JSON. Rows are in ace-agent's encoding (JSON numbers and booleans, else PostgreSQL's text
// form). Beyond ACE's keys, every node lists "skipped_rows" with the reason for each.
func RepairReport(args ReportArgs, end time.Time, runTime float64, changes []ReportChange, autoSourceOfTruth any) (json.RawMessage, error) {
	rep := repairReport{OperationType: "table-repair", Mode: "LIVE_RUN", Changes: map[string]map[string]any{},
		TimeStamp: end.UTC().Format("2006-01-02 15:04:05.000"), RunTime: runTime, AutoSourceOfTruth: autoSourceOfTruth}
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
	for k, v := range map[string]any{"cluster_name": "", "repair_plan_path": "", "dbname": "", "quiet": false} {
		rep.SuppliedArgs[k] = v
	}
	for _, c := range changes {
		if err := rep.add(args, c); err != nil {
			return nil, err
		}
	}
	return json.MarshalIndent(rep, "", "  ")
}

func (rep *repairReport) section(key string) map[string]any {
	if rep.Changes[key] == nil {
		rep.Changes[key] = map[string]any{}
	}
	return rep.Changes[key]
}

func appendTo(m map[string]any, key string, v any) {
	list, _ := m[key].([]any)
	m[key] = append(list, v)
}

// add files one change under ACE's keys for the repair's mode.
func (rep *repairReport) add(args ReportArgs, c ReportChange) error {
	if c.Skip {
		appendTo(rep.section(c.Node), "skipped_rows", map[string]any{"pk": c.PK, "reason": c.Reason, "row": c.Before})
		return nil
	}
	if !args.DryRun && !c.Applied {
		return nil // rolled back: the node did not get it
	}
	switch {
	case args.FixNulls:
		return rep.addFill(args, c)
	case args.Bidirectional:
		pair := rep.section(sortedPairKey(c.Source, c.Node))
		if args.DryRun {
			appendTo(pair, "would_insert_into_"+c.Node, c.After)
		} else {
			inner, _ := pair[c.Node].(map[string]any)
			if inner == nil {
				inner = map[string]any{}
				pair[c.Node] = inner
			}
			appendTo(inner, "inserted_rows", c.After)
		}
		return nil
	}
	node := rep.section(c.Node)
	switch {
	case c.Delete && args.DryRun:
		appendTo(node, "would_delete", c.Before)
	case c.Delete:
		appendTo(node, "deleted_rows", c.Before)
	case args.DryRun && args.InsertOnly:
		appendTo(node, "would_insert", c.After)
	case args.DryRun:
		appendTo(node, "would_upsert", c.After)
	default:
		appendTo(node, "upserted_rows", c.After)
	}
	return nil
}

// addFill lists a fix_nulls update as ACE does: the key's columns and the filled values.
func (rep *repairReport) addFill(args ReportArgs, c ReportChange) error {
	entry, err := rowFields(c.PK)
	if err != nil {
		return fmt.Errorf("decode key %s: %w", c.PK, err)
	}
	before, err := rowFields(c.Before)
	if err != nil {
		return fmt.Errorf("decode row %s: %w", c.PK, err)
	}
	after, err := rowFields(c.After)
	if err != nil {
		return fmt.Errorf("decode row %s: %w", c.PK, err)
	}
	updates := map[string]json.RawMessage{}
	for col, v := range after {
		if isNull(before[col]) && !isNull(v) {
			updates[col] = v
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
	appendTo(rep.section(c.Node), key, out)
	return nil
}

// sortedPairKey names the pair of nodes a and b in either order.
func sortedPairKey(a, b string) string {
	if b < a {
		a, b = b, a
	}
	return PairKey([2]string{a, b})
}

// rowFields decodes a row object into its columns, keeping each value's JSON as it is.
func rowFields(raw json.RawMessage) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if isNull(raw) {
		return nil, nil
	}
	err := json.Unmarshal(raw, &m)
	return m, err
}
