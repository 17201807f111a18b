package repair

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/ace-agent/ace-agent/engine"
)

// Actions a repair takes on a row of a node.
const (
	ActionInsert = "insert"
	ActionUpdate = "update"
	ActionDelete = "delete"
	ActionSkip   = "skip"
)

// Reasons for leaving a row alone. The first group are differences a repair was asked to fix
// and could not safely; the second are differences its mode leaves on purpose.
const (
	ReasonChangedSinceDiff    = "changed_since_diff"   // the node's row is no longer what the diff saw
	ReasonCommitTSTie         = "commit_ts_tie"        // latest_commit: two versions committed at the same instant
	ReasonMissingCommitTS     = "missing_commit_ts"    // latest_commit: a version has no commit timestamp
	ReasonConflictingVersions = "conflicting_versions" // bidirectional: the nodes that have the row disagree
	ReasonConflictingValues   = "conflicting_values"   // fix_nulls: the other nodes disagree on a NULL column's value
	ReasonNoMajority          = "no_majority"          // majority: no version (absence included) is held by more than half the nodes

	ReasonAlreadyInSync = "already_in_sync" // the node already holds what the repair would write
	ReasonInsertOnly    = "insert_only"     // the mode never updates or deletes
	ReasonUpsertOnly    = "upsert_only"     // the mode never deletes
	ReasonBidirectional = "bidirectional"   // the mode only inserts missing rows
	ReasonFixNulls      = "fix_nulls"       // the mode only fills NULLs of rows the node has
	ReasonPlanSkip      = "plan_skip"       // the repair plan's rule says skip

	ReasonFreshestTie = "pick_freshest_tie" // a plan's pick_freshest found no one freshest version and has no tie node holding the row
)

// unresolvedReasons are the skips that leave a difference the repair was meant to remove.
var unresolvedReasons = map[string]bool{
	ReasonChangedSinceDiff: true, ReasonCommitTSTie: true, ReasonMissingCommitTS: true,
	ReasonConflictingVersions: true, ReasonConflictingValues: true, ReasonFreshestTie: true, ReasonNoMajority: true,
}

// Strategies: what picks, per key, the version every target gets when no source of truth does.
const (
	// StrategyLatestCommit picks the version with the latest commit timestamp.
	StrategyLatestCommit = "latest_commit"
	// StrategyMajority picks the version (absence included) that more than half of the diff's
	// nodes hold; it needs three nodes or more.
	StrategyMajority = "majority"
)

// strategies lists the strategies, for the error that names them.
var strategies = []string{StrategyLatestCommit, StrategyMajority}

// defaultRepairOrigin is the replication origin repairs write under, so that logical
// replication set up not to forward other origins' changes (pglogical's forward_origins = '{}')
// does not echo them to the other nodes.
const defaultRepairOrigin = "ace_repair"

// Action is what a repair did, or would do, to one key on one node.
type Action struct {
	Node    string          `json:"node"`
	Kind    string          `json:"action"` // ActionInsert, ActionUpdate, ActionDelete or ActionSkip
	PK      json.RawMessage `json:"pk"`
	PKSort  json.RawMessage `json:"pk_sort"`
	Source  string          `json:"source,omitempty"` // the node whose version was copied
	Before  json.RawMessage `json:"before"`           // the node's row before; null when absent
	After   json.RawMessage `json:"after"`            // its row after (for a skip: what it would have been)
	Reason  string          `json:"reason,omitempty"`
	Applied bool            `json:"applied"`        // committed on the node
	Rule    string          `json:"rule,omitempty"` // the repair plan's rule that decided the row
	// Range is set for an insert of a whole key range copied from Source (a differing range
	// row): then PK and PKSort are the range row's and the action stands for Range.Rows rows.
	Range *engine.KeyRange `json:"range,omitempty"`
}

// Sink records a repair's actions as they are decided, and learns which nodes committed.
type Sink interface {
	WriteRepairActions(ctx context.Context, actions []Action) error
	MarkApplied(ctx context.Context, node string) error
}

// DiffSource streams the stored rows of a diff, with DiffRow.PKSort set, each key once. The order
// only decides which batch a key falls in (a batch's rows are read and locked by one statement).
type DiffSource func(ctx context.Context, fn func(engine.DiffRow) error) error

// Options are the inputs of Repair.
type Options struct {
	ID            string              // names the repair's prepared transactions (atomic)
	Diff          *engine.DiffSummary // the summary of the diff being repaired
	Rows          DiffSource
	Role          string   // SET LOCAL ROLE to this in every transaction; "" keeps the login role
	SourceOfTruth string   // the node whose rows win; "" with Strategy, Bidirectional or FixNulls
	Strategy      string   // "", StrategyLatestCommit or StrategyMajority
	Targets       []string // nodes to change; default every diff node but the source of truth
	DryRun        bool
	UpsertOnly    bool
	InsertOnly    bool
	Bidirectional bool
	FixNulls      bool
	FireTriggers  bool
	Atomic        bool
	// CheckUnchanged changes a row only if the node still holds what the diff saw there.
	CheckUnchanged bool
	Origin         string // replication origin; default "ace_repair" (defaultRepairOrigin)
	BatchSize      int    // keys per statement; default 2000 (defaultBatchSize)
	// Plan is the repair plan that decides every row (instead of a source of truth or a mode);
	// nil for none. Its sides are resolved against Diff.Nodes when the repair starts.
	Plan *Plan
	// SetRoleSessions says the node sessions log in as the agent and SET ROLE to the submitter:
	// code the table runs on a repair (triggers, rules, policies, domain checks, defaults and
	// other expressions) could step back to the agent's login, so a table carrying such code
	// owned by a non-superuser is refused before anything is written (see engine.CheckTableCode).
	SetRoleSessions bool
	// PreserveOrigin names the failed node whose origin the repaired rows keep ("" for none): the
	// rows copied from each original commit are written in a transaction of their own, under a
	// replication origin that stands for that node on the target, with that commit's timestamp
	// (preserve.go). Not with Atomic.
	PreserveOrigin string
}

// How a repair writes on a node (NodeRepair.WriteMode).
const (
	// WriteReplica writes as logical replication applies changes: session_replication_role =
	// replica (or local with FireTriggers) and the repair's replication origin, so ordinary
	// triggers, foreign keys and rules do not act and the changes do not echo to other nodes.
	// Only for a submitting role that may set session_replication_role itself.
	WriteReplica = "replica"
	// WriteNormal writes as the submitting role's own statements would: the table owner's
	// foreign keys, rules and triggers apply, and the changes replicate like any other write.
	WriteNormal = "normal"
)

// check rejects incompatible options with the reason, as the SQL validator does.
func (o *Options) check() error {
	type combo struct {
		a, b bool
		msg  string
	}
	for _, c := range []combo{
		{o.Bidirectional, o.UpsertOnly, "bidirectional and upsert_only"},
		{o.Bidirectional, o.FixNulls, "bidirectional and fix_nulls"},
		{o.FixNulls, o.InsertOnly, "fix_nulls and insert_only"},
		{o.FixNulls, o.UpsertOnly, "fix_nulls and upsert_only"},
		{o.InsertOnly, o.UpsertOnly, "insert_only and upsert_only"},
		{o.Strategy != "" && o.SourceOfTruth != "", true, "strategy and source_of_truth"},
		{o.Strategy != "", o.Bidirectional || o.FixNulls, "strategy and bidirectional or fix_nulls"},
		{o.PreserveOrigin != "", o.Atomic, "preserve_origin and atomic"},
	} {
		if c.a && c.b {
			return fmt.Errorf("%s cannot be combined", c.msg)
		}
	}
	if o.Strategy != "" && !slices.Contains(strategies, o.Strategy) {
		return fmt.Errorf("unknown strategy %q: the strategies are %s", o.Strategy, strings.Join(strategies, " and "))
	}
	if o.Plan != nil {
		for name, set := range map[string]bool{"source_of_truth": o.SourceOfTruth != "", "strategy": o.Strategy != "",
			"bidirectional": o.Bidirectional, "fix_nulls": o.FixNulls, "insert_only": o.InsertOnly, "upsert_only": o.UpsertOnly} {
			if set {
				return fmt.Errorf("a repair plan cannot be combined with %s", name)
			}
		}
	}
	if o.SourceOfTruth == "" && o.Strategy == "" && !o.Bidirectional && !o.FixNulls && o.Plan == nil {
		return errors.New("a source of truth is required unless strategy, bidirectional or fix_nulls is given")
	}
	if o.Diff == nil || o.Rows == nil {
		return errors.New("a repair needs the diff's summary and rows")
	}
	if len(o.Diff.CompareColumns) > 0 {
		return errColumnSubset(o.Diff.CompareColumns)
	}
	if o.Diff.HashVersion != engine.HashVersion {
		return fmt.Errorf("the diff was made with hash version %d and this agent uses version %d, whose keys and values compare differently: run the diff again (or table-rerun it) and repair that",
			o.Diff.HashVersion, engine.HashVersion)
	}
	if o.Strategy == StrategyMajority && len(o.Diff.Nodes) < 3 {
		return fmt.Errorf("strategy majority needs a diff of three nodes or more, and this one has %d (%s): two nodes cannot outvote each other; name a source_of_truth",
			len(o.Diff.Nodes), strings.Join(o.Diff.Nodes, ", "))
	}
	if o.SourceOfTruth != "" && !slices.Contains(o.Diff.Nodes, o.SourceOfTruth) {
		return fmt.Errorf("source of truth %s is not one of the diff's nodes (%s)", o.SourceOfTruth, strings.Join(o.Diff.Nodes, ", "))
	}
	return nil
}

// Mode names what decides the rows a repair writes.
func (o *Options) Mode() string {
	switch {
	case o.Plan != nil:
		return "repair_plan"
	case o.FixNulls:
		return "fix_nulls"
	case o.Bidirectional:
		return "bidirectional"
	case o.Strategy != "":
		return o.Strategy
	}
	return "source_of_truth"
}

// Node repair outcomes.
const (
	NodeRepaired   = "repaired"    // committed (possibly with nothing to change)
	NodeFailed     = "failed"      // its transaction failed and was rolled back
	NodeRolledBack = "rolled_back" // atomic: rolled back because another node failed
	NodePlanned    = "dry_run"     // dry run: nothing changed
)

// NodeRepair is the outcome of a repair on one node.
type NodeRepair struct {
	Status          string           `json:"status"`
	Inserted        int64            `json:"inserted"`
	Updated         int64            `json:"updated"`
	Deleted         int64            `json:"deleted"`
	Skipped         int64            `json:"skipped"`
	SkippedByReason map[string]int64 `json:"skipped_by_reason,omitempty"`
	Error           string           `json:"error,omitempty"`
	// WriteMode is how the repair wrote there: WriteReplica or WriteNormal ("" for a dry run,
	// or when the node failed before the repair knew).
	WriteMode string `json:"write_mode,omitempty"`
}

// Summary is a repair's outcome: the result of a table-repair task.
type Summary struct {
	TableName        string                 `json:"table_name"`
	Mode             string                 `json:"mode"`
	SourceOfTruth    string                 `json:"source_of_truth,omitempty"`
	DryRun           bool                   `json:"dry_run"`
	Atomic           bool                   `json:"atomic"`
	InsertOnly       bool                   `json:"insert_only"`
	UpsertOnly       bool                   `json:"upsert_only"`
	FireTriggers     bool                   `json:"fire_triggers"`
	CheckUnchanged   bool                   `json:"check_unchanged"`
	Nodes            map[string]*NodeRepair `json:"nodes"`
	RepairedNodes    []string               `json:"repaired_nodes"`
	FailedNodes      []string               `json:"failed_nodes"`
	KeysChecked      int64                  `json:"keys_checked"`
	Inserted         int64                  `json:"inserted"`
	Updated          int64                  `json:"updated"`
	Deleted          int64                  `json:"deleted"`
	Skipped          int64                  `json:"skipped"`
	SkippedByReason  map[string]int64       `json:"skipped_by_reason"`
	Unresolved       int64                  `json:"unresolved"` // skips that leave a difference the repair was meant to remove
	FullyRepaired    bool                   `json:"fully_repaired"`
	StartTime        time.Time              `json:"start_time"`
	EndTime          time.Time              `json:"end_time"`
	TimeTaken        string                 `json:"time_taken"`
	TimeTakenSeconds float64                `json:"time_taken_seconds"`
	Warnings         []string               `json:"warnings,omitempty"`
	// RepairPlan names the saved plan the repair ran with ("inline" for one given inline), and
	// RuleMatches counts the keys each of its rules decided (ACE's rule_matches).
	RepairPlan   string           `json:"repair_plan,omitempty"`
	RuleMatches  map[string]int64 `json:"rule_matches,omitempty"`
	RepairReport json.RawMessage  `json:"repair_report,omitempty"` // ACE's report, with generate_report
	// AutoSourceOfTruth says how recovery_mode chose SourceOfTruth; nil when it was given.
	AutoSourceOfTruth *AutoSourceOfTruth `json:"auto_source_of_truth,omitempty"`
}

// repairError is a repair that failed on at least one node. Summary says what every node got.
type repairError struct {
	Summary *Summary
}

func (e *repairError) Error() string {
	s := e.Summary
	var failed, others []string
	for _, name := range slices.Sorted(maps.Keys(s.Nodes)) {
		n := s.Nodes[name]
		switch n.Status {
		case NodeFailed:
			failed = append(failed, fmt.Sprintf("%s: %s", name, n.Error))
		case NodeRepaired:
			others = append(others, fmt.Sprintf("%s repaired (%d inserted, %d updated, %d deleted, %d skipped)",
				name, n.Inserted, n.Updated, n.Deleted, n.Skipped))
		default:
			others = append(others, fmt.Sprintf("%s %s, unchanged", name, strings.ReplaceAll(n.Status, "_", " ")))
		}
	}
	msg := fmt.Sprintf("repair of %s failed on %s", s.TableName, strings.Join(failed, "; "))
	if s.Atomic {
		msg = "atomic " + msg + "; every node was left unchanged"
	}
	if len(others) > 0 {
		msg += "; " + strings.Join(others, "; ")
	}
	return msg
}

// Repair makes the target nodes agree as the options say, using the rows the diff stored. Each
// target is changed in its own transaction (all of them or none with Atomic), and only where
// its row is still what the diff saw (with CheckUnchanged). Every decision is sent to sink.
// nodes are the target nodes. A failure on some node returns the summary and an error that
// says what every node got.
func Repair(ctx context.Context, nodes []*engine.Node, opts Options, sink Sink, progress engine.ProgressFunc) (*Summary, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	r, err := newRepairer(nodes, opts, sink, progress)
	if err != nil {
		return nil, err
	}
	defer r.close(ctx)
	if err := r.prepare(ctx); err != nil {
		return nil, err
	}
	if err := r.run(ctx); err != nil {
		return nil, err
	}
	if err := r.finish(ctx); err != nil {
		return nil, err
	}
	s := r.summary()
	if len(s.FailedNodes) > 0 {
		return s, &repairError{Summary: s}
	}
	return s, nil
}

// errColumnSubset refuses to repair from a diff that compared some columns only: its rows hold
// only those, and writing them as whole rows would blank or lose the others.
func errColumnSubset(columns []string) error {
	return fmt.Errorf("the diff compared only the columns %s (and the key), so its rows do not hold whole rows to repair from: "+
		"run a table-diff without columns and repair that one", strings.Join(columns, ", "))
}
