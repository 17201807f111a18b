package sqlapi

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"runtime"
	"strings"
	"time"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/diff"
	"github.com/ace-agent/ace-agent/engine/mtree"
	"github.com/ace-agent/ace-agent/engine/repair"
)

// This file holds the argument groups several task types share, and the one conversion of each
// into the engine's options. A task type's own argument struct embeds the groups it takes;
// embedded without a JSON name, a group's fields stay top-level args keys.

// DiffArgs are the options every diff of a table's rows takes: table-diff, mtree-diff, and the
// schema and replication-set diffs, which run one of them per table. The JSON names are the SQL
// argument names, the CLI flags (with dashes) and the REST fields.
type DiffArgs struct {
	TableName         string   `json:"table_name"`
	Nodes             []string `json:"nodes,omitempty"`
	CompareUnitSize   int      `json:"compare_unit_size,omitempty"`
	TableFilter       string   `json:"table_filter,omitempty"`
	MaxDiffRows       int64    `json:"max_diff_rows,omitempty"`
	ConcurrencyFactor float64  `json:"concurrency_factor,omitempty"` // blocks hashed at once = CPUs × this
	MaxConnections    int      `json:"max_connections,omitempty"`    // per node; 0 = derived
	AgainstOrigin     string   `json:"against_origin,omitempty"`
	// Until is a timestamp; the insert trigger normalises it to ISO 8601.
	Until string `json:"until,omitempty"`
	// Output names a report (json, html or csv) the agent stores when the diff ends.
	Output string `json:"output,omitempty"`
	// RecheckAfter is an interval (in SQL) or a number of seconds; the insert trigger
	// normalises it to seconds.
	RecheckAfter any `json:"recheck_after,omitempty"`
}

// TableDiffArgs are a table-diff task's arguments: the diff options, and the blocks the table is
// first cut into.
type TableDiffArgs struct {
	DiffArgs
	BlockSize         int  `json:"block_size,omitempty"`
	OverrideBlockSize bool `json:"override_block_size,omitempty"`
	// Columns limits the compared columns to these and the key.
	Columns []string `json:"columns,omitempty"`
}

// RecheckAfterDuration reads the normalised recheck_after.
func (a DiffArgs) RecheckAfterDuration() (time.Duration, error) {
	switch v := a.RecheckAfter.(type) {
	case nil:
		return 0, nil
	case float64:
		return time.Duration(v * float64(time.Second)), nil
	}
	return 0, fmt.Errorf("recheck_after %v is not a number of seconds", a.RecheckAfter)
}

// UntilTime reads the normalised until.
func (a DiffArgs) UntilTime() (*time.Time, error) {
	if a.Until == "" {
		return nil, nil
	}
	t, err := time.Parse(time.RFC3339Nano, a.Until)
	if err != nil {
		return nil, fmt.Errorf("until %q: %w", a.Until, err)
	}
	return &t, nil
}

// DiffSessions is what the engine's options take from the agent rather than from the task.
type DiffSessions struct {
	// Workers are the blocks hashed at once when the task does not say (0: the CPUs).
	Workers int
	// SetRole: the node sessions log in as the agent and SET ROLE to the submitter.
	SetRole bool
}

// Options turns the diff options into the engine's. concurrency_factor scales the blocks hashed
// at once by the CPUs (ACE's meaning); max_connections caps them per node.
func (a DiffArgs) Options(s DiffSessions) (diff.TableDiffOptions, error) {
	workers := s.Workers
	if a.ConcurrencyFactor > 0 {
		workers = int(math.Round(float64(runtime.NumCPU()) * a.ConcurrencyFactor))
	}
	if workers <= 0 {
		workers = max(2, runtime.NumCPU())
	}
	workers = max(workers, 1)
	if a.MaxConnections > 0 {
		workers = max(1, min(workers, a.MaxConnections-1))
	}
	recheck, err := a.RecheckAfterDuration()
	if err != nil {
		return diff.TableDiffOptions{}, err
	}
	until, err := a.UntilTime()
	if err != nil {
		return diff.TableDiffOptions{}, err
	}
	return diff.TableDiffOptions{
		Table: a.TableName, CompareUnitSize: a.CompareUnitSize, TableFilter: a.TableFilter,
		MaxDiffRows: a.MaxDiffRows, Workers: workers, AgainstOrigin: a.AgainstOrigin, Until: until,
		RecheckAfter: recheck, SetRoleSessions: s.SetRole,
	}, nil
}

// Options are the diff options with the table-diff's block size.
func (a TableDiffArgs) Options(s DiffSessions) (diff.TableDiffOptions, error) {
	o, err := a.DiffArgs.Options(s)
	o.BlockSize, o.Columns = a.BlockSize, a.Columns
	return o, err
}

// Options are the engine's options for the tree diff: the diff options, and how long to wait for
// the change streams.
func (a MtreeDiffArgs) Options(s DiffSessions) (mtree.DiffOptions, error) {
	o, err := a.DiffArgs.Options(s)
	return mtree.DiffOptions{Diff: o, CDCTimeout: a.CDCTimeoutDuration()}, err
}

// Options are the engine's options for building the tree of the task's table. txWait bounds the
// wait for transactions open when the tracking began (the agent's setting).
func (a MtreeBuildArgs) Options(task Task, txWait time.Duration) mtree.BuildOptions {
	return mtree.BuildOptions{Table: a.TableName, LeafRows: a.LeafRows, TaskID: task.ID.String(),
		User: task.SubmittedBy, TxWait: txWait}
}

// RecheckOptions are the engine's options for rechecking keys of the rerun's diff.
func (a TableRerunArgs) RecheckOptions(keys [][]string, ranges []engine.Range, setRole bool) diff.RecheckOptions {
	return diff.RecheckOptions{Table: a.TableName, Keys: keys, Ranges: ranges, TableFilter: a.TableFilter,
		MaxDiffRows: a.MaxDiffRows, Columns: a.Columns, SetRoleSessions: setRole}
}

// RepairArgs are the options every repair of a diff takes: table-repair, and the repairs of
// schema and replication-set diffs, which run one per table. The JSON names are those of
// ace.table_repair's arguments.
type RepairArgs struct {
	SourceOfTruth  string   `json:"source_of_truth,omitempty"`
	Strategy       string   `json:"strategy,omitempty"`
	TargetNodes    []string `json:"target_nodes,omitempty"`
	DryRun         bool     `json:"dry_run"`
	UpsertOnly     bool     `json:"upsert_only"`
	InsertOnly     bool     `json:"insert_only"`
	Bidirectional  bool     `json:"bidirectional"`
	FixNulls       bool     `json:"fix_nulls"`
	FireTriggers   bool     `json:"fire_triggers"`
	GenerateReport bool     `json:"generate_report"`
	Atomic         bool     `json:"atomic"`
	CheckUnchanged bool     `json:"check_unchanged"`
	// RepairPlan names a saved repair plan (ace.repair_plans); Plan is a plan given inline, which
	// the validator replaces by the plan the repair runs with (the saved one, or the one given),
	// checked and narrowed to the table by ace.validate_repair_plan.
	RepairPlan string          `json:"repair_plan,omitempty"`
	Plan       json.RawMessage `json:"plan,omitempty"`
	// RecoveryMode allows repairing a diff made with against_origin or until (a recovery after a
	// node failed); without a source of truth the agent picks one (recovery.go in package agent).
	RecoveryMode bool `json:"recovery_mode"`
	// PreserveOrigin writes the repaired rows under a replication origin that stands for the
	// diff's against_origin node, with their original commit timestamps.
	PreserveOrigin bool `json:"preserve_origin"`
}

// ParsedPlan is the repair plan the validator resolved, as the engine takes it; nil without one.
func (a RepairArgs) ParsedPlan() (*repair.Plan, error) {
	if len(a.Plan) == 0 || string(a.Plan) == "null" {
		return nil, nil
	}
	return repair.ParsePlan(a.Plan, a.RepairPlan)
}

// Options are the engine's options for the repair's arguments: the one conversion of
// the repair's flags from the task's arguments. The caller adds what the task does not hold
// (ID, the diff and its rows, the role, the session mode).
func (a RepairArgs) Options() repair.Options {
	return repair.Options{
		SourceOfTruth: a.SourceOfTruth, Strategy: a.Strategy, Targets: a.TargetNodes,
		DryRun: a.DryRun, UpsertOnly: a.UpsertOnly, InsertOnly: a.InsertOnly, Bidirectional: a.Bidirectional,
		FixNulls: a.FixNulls, FireTriggers: a.FireTriggers, Atomic: a.Atomic, CheckUnchanged: a.CheckUnchanged,
	}
}

// ArgNames lists the args keys of an argument struct (or a pointer to one): its fields' JSON
// names, those of embedded groups included, in field order.
func ArgNames(args any) []string {
	return argNames(reflect.Indirect(reflect.ValueOf(args)).Type())
}

func argNames(t reflect.Type) []string {
	var names []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case f.Anonymous && name == "":
			names = append(names, argNames(f.Type)...)
		case name != "-" && f.IsExported():
			names = append(names, cmp.Or(name, f.Name))
		}
	}
	return names
}
