package sqlapi

import (
	"slices"
	"strings"
)

// The task types, each described by its entry in TaskSpecs.
const (
	TypeTableDiff     TaskType = "table-diff"
	TypeTableRepair   TaskType = "table-repair"
	TypeTableRerun    TaskType = "table-rerun"
	TypeDiffImport    TaskType = "diff-import"
	TypeMtreeBuild    TaskType = "mtree-build"
	TypeMtreeDiff     TaskType = "mtree-diff"
	TypeMtreeTeardown TaskType = "mtree-teardown"
	TypeSpockDiff     TaskType = "spock-diff"

	TypeSpockExceptionSync   TaskType = "spock-exception-sync"
	TypeSpockExceptionUpdate TaskType = "spock-exception-update"
	TypeSchemaDiff           TaskType = "schema-diff"
	TypeRepsetDiff           TaskType = "repset-diff"
	TypeNodeResync           TaskType = "node-resync"
	TypeRepairPolicyRun      TaskType = "repair-policy-run"
)

// Result says what a task type's result is, and so who may read it as what.
type Result int

const (
	// ResultOwn is a result of the type's own shape.
	ResultOwn Result = iota
	// ResultDiff is a diff summary whose rows are in ace.diff_rows: a repair or rerun may act
	// on it (ace.completed_diff), and the shim shows it as ACE's diff_summary.
	ResultDiff
	// ResultRepair is a repair report whose actions are in ace.repair_rows; the shim shows it as
	// ACE's repair_report.
	ResultRepair
)

// TaskSpec describes one task type: everything about it that the SQL side, the agent, the
// recovery sweep, the shim and the CLI need to agree on.
type TaskSpec struct {
	Type TaskType
	// Args returns a new, empty argument struct of the type (a pointer). Its JSON names are the
	// args keys, the SQL argument names and (with dashes) the CLI flags.
	Args func() any
	// ChangesData: running the task changes rows of the user's tables. Running such a task
	// again after its agent died may repeat a change, so the recovery sweep re-queues it only if
	// RecordsChanges shows that the attempt changed nothing; otherwise it fails it.
	ChangesData bool
	// RecordsChanges: every change is recorded in ace.repair_actions (with its attempt) before
	// any node commits, and a dry_run argument changes nothing.
	RecordsChanges bool
	Result         Result
	// Exported: its diff can be exported (ace-agent diff export, the shim's report routes): it
	// compared the nodes itself and its summary lists the table's columns.
	Exported bool
	// Submit are the SQL functions and procedures that insert such a task (ace.<name>).
	Submit []string
	// Results are the SQL functions that read what such a task found or did (ace.<name>).
	Results []string
	// Commands are the CLI commands that submit it, as their paths below ace-agent; none: it is
	// submitted by other commands only.
	Commands []string
	// Routes are the shim's POST routes that submit it.
	Routes []string
	// QueryRoutes are the shim's GET routes that submit it with the fields as query parameters,
	// as ACE's Python API has them.
	QueryRoutes []string
}

// Validator is the SQL function that validates and normalises the type's arguments: the insert
// trigger on ace.tasks calls ace.validate_<type, dashes as underscores>(args jsonb).
func (s TaskSpec) Validator() string {
	return "validate_" + strings.ReplaceAll(string(s.Type), "-", "_")
}

// TaskSpecs lists every task type once. Adding a task type: its SQL file in migrations/code
// (validator, submit functions), an entry here, its engine package, and its tests; the agent
// then needs a handler for it (agent/handlers.go), which a test asks for.
var TaskSpecs = []TaskSpec{
	{
		Type: TypeTableDiff, Args: func() any { return new(TableDiffArgs) },
		Result: ResultDiff, Exported: true,
		Submit: []string{"table_diff", "run_table_diff"}, Results: []string{"diff_rows", "describe_diff"},
		Commands: []string{"table-diff"}, Routes: []string{"/ace/table-diff", "/api/v1/table-diff"},
	},
	{
		Type: TypeTableRepair, Args: func() any { return new(TableRepairArgs) },
		ChangesData: true, RecordsChanges: true, Result: ResultRepair,
		Submit: []string{"table_repair", "run_table_repair"}, Results: []string{"repair_rows", "describe_repair"},
		Commands: []string{"table-repair"}, Routes: []string{"/ace/table-repair", "/api/v1/table-repair"},
	},
	{
		Type: TypeTableRerun, Args: func() any { return new(TableRerunArgs) },
		Result: ResultDiff,
		Submit: []string{"table_rerun", "run_table_rerun"}, Results: []string{"diff_rows", "describe_diff"},
		Commands: []string{"table-rerun"}, Routes: []string{"/ace/table-rerun", "/api/v1/table-rerun"},
	},
	{
		// Submitted by table-repair and table-rerun's --diff-file and the shim's uploads.
		Type: TypeDiffImport, Args: func() any { return new(DiffImportArgs) },
		Result: ResultDiff,
		Submit: []string{"diff_import"}, Results: []string{"diff_rows", "describe_diff"},
	},
	{
		Type: TypeMtreeBuild, Args: func() any { return new(MtreeBuildArgs) },
		Submit: []string{"mtree_build", "run_mtree_build"}, Results: []string{"mtree_status"},
		Commands: []string{"mtree build"}, Routes: []string{"/api/v1/mtree/build"},
	},
	{
		Type: TypeMtreeDiff, Args: func() any { return new(MtreeDiffArgs) },
		Result: ResultDiff, Exported: true,
		Submit: []string{"mtree_diff", "run_mtree_diff"}, Results: []string{"diff_rows", "describe_diff"},
		Commands: []string{"mtree diff"}, Routes: []string{"/api/v1/mtree/diff"},
	},
	{
		// Teardown is quick: it has no CALL form.
		Type: TypeMtreeTeardown, Args: func() any { return new(MtreeTeardownArgs) },
		Submit: []string{"mtree_teardown"}, Results: []string{"mtree_status"},
		Commands: []string{"mtree teardown-table", "mtree teardown"},
		Routes:   []string{"/api/v1/mtree/teardown-table", "/api/v1/mtree/teardown"},
	},
	{
		// The Spock tasks write only Spock's status tables, and running one again sets the same
		// statuses: they are safe to re-queue.
		Type: TypeSpockExceptionSync, Args: func() any { return new(SpockExceptionSyncArgs) },
		Submit: []string{"spock_exception_sync"}, Results: []string{"spock_exceptions"},
		Commands: []string{"spock exception-sync"}, Routes: []string{"/api/v1/spock/exception-sync"},
	},
	{
		Type: TypeSpockExceptionUpdate, Args: func() any { return new(SpockExceptionUpdateArgs) },
		Submit: []string{"update_spock_exception"}, Results: []string{"spock_exceptions"},
		Commands: []string{"spock exception-update"},
		Routes:   []string{"/ace/update-spock-exception", "/api/v1/spock/exception-update"},
	},
	{
		// Compares the nodes' replication configuration, not rows: no CALL form.
		Type: TypeSpockDiff, Args: func() any { return new(SpockDiffArgs) },
		Submit:   []string{"spock_diff"},
		Commands: []string{"spock-diff"}, Routes: []string{"/api/v1/spock-diff"}, QueryRoutes: []string{"/ace/spock-diff"},
	},
	{
		// A parent task: its data comparison runs one child table-diff per table.
		Type: TypeSchemaDiff, Args: func() any { return new(SchemaDiffArgs) },
		Submit: []string{"schema_diff", "run_schema_diff"}, Results: []string{"schema_diff_rows", "describe_schema_diff"},
		Commands: []string{"schema-diff"}, Routes: []string{"/api/v1/schema-diff"}, QueryRoutes: []string{"/ace/schema-diff"},
	},
	{
		// A parent task: one child table-diff per member table, its row filter ANDed in.
		Type: TypeRepsetDiff, Args: func() any { return new(RepsetDiffArgs) },
		Submit: []string{"repset_diff", "run_repset_diff"}, Results: []string{"describe_repset_diff"},
		Commands: []string{"repset-diff"}, Routes: []string{"/api/v1/repset-diff"}, QueryRoutes: []string{"/ace/repset-diff"},
	},
	{
		// A parent task: one child table-diff per table, then one child table-repair per table
		// that differs, with the node as its only target. The children record their own changes,
		// and running the parent again diffs again, so it changes no data itself.
		Type: TypeNodeResync, Args: func() any { return new(NodeResyncArgs) },
		Submit: []string{"resync_node", "run_resync_node"}, Results: []string{"describe_resync"},
	},
	{
		// A parent task: a child diff of the policy's table, then (unless held) a child
		// table-repair with the compare-and-set forced on and a child table-rerun. The children
		// record their own changes, and running the parent again diffs again.
		Type: TypeRepairPolicyRun, Args: func() any { return new(RepairPolicyRunArgs) },
		Submit: []string{"run_repair_policy"}, Results: []string{"repair_policy_runs", "describe_policy_run"},
		Routes: []string{"/api/v1/repair-policies/run"},
	},
}

// Spec returns the registry's entry for a task type; ok is false for a type it does not list
// (a task inserted by a newer version, say).
func Spec(t TaskType) (spec TaskSpec, ok bool) {
	i := slices.IndexFunc(TaskSpecs, func(s TaskSpec) bool { return s.Type == t })
	if i < 0 {
		return TaskSpec{}, false
	}
	return TaskSpecs[i], true
}

// ResultIsDiff reports whether tasks of the type leave a diff that repairs and reruns act on.
func (t TaskType) ResultIsDiff() bool {
	s, _ := Spec(t)
	return s.Result == ResultDiff
}

// Exported reports whether a completed task of the type is a diff that can be exported.
func (t TaskType) Exported() bool {
	s, _ := Spec(t)
	return s.Exported
}

// ChangesData reports whether tasks of the type change rows of the user's tables; a type the
// registry does not know is taken to.
func (t TaskType) ChangesData() bool {
	s, ok := Spec(t)
	return !ok || s.ChangesData
}
