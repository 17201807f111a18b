package sqlapi

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// RepairPolicyRunArgs are a repair-policy-run task's arguments. A run is submitted with the
// policy's name only (ace.run_repair_policy, or its schedule); the validator fills in the policy
// as it is at the run's insert (ace.validate_repair_policy_run), so a run says what it ran with.
type RepairPolicyRunArgs struct {
	PolicyName    string   `json:"policy_name"`
	TableName     string   `json:"table_name,omitempty"`
	Strategy      string   `json:"strategy,omitempty"`
	SourceOfTruth string   `json:"source_of_truth,omitempty"`
	RepairPlan    string   `json:"repair_plan,omitempty"`
	Nodes         []string `json:"nodes,omitempty"`
	Trigger       string   `json:"trigger,omitempty"`
	// RecheckAfter is in seconds.
	RecheckAfter   float64 `json:"recheck_after,omitempty"`
	MaxRows        int64   `json:"max_rows,omitempty"`
	MaxRunsPerHour int     `json:"max_runs_per_hour,omitempty"`
	DryRun         bool    `json:"dry_run"`
	UpsertOnly     bool    `json:"upsert_only"`
}

// The policy strategies that are no table-repair strategy of the same name.
const (
	PolicyStrategyPlan = "plan"
	// TriggerSpockExceptions is a policy whose runs repair the keys of the table's PENDING Spock
	// exceptions.
	TriggerSpockExceptions = "spock_exceptions"
)

// Diff is the run's child diff: a tree diff when the table has a ready tree, else a table diff,
// of the rows filter keeps (all when it is empty). It stops at one row per node pair more than
// max_rows, which is enough to hold the run.
func (a RepairPolicyRunArgs) Diff(tree bool, filter string) Child {
	typ := TypeTableDiff
	if tree {
		typ = TypeMtreeDiff
	}
	args := map[string]any{"table_name": a.TableName, "nodes": a.Nodes, "max_diff_rows": a.MaxRows + 1}
	if filter != "" {
		args["table_filter"] = filter
	}
	if a.RecheckAfter > 0 {
		args["recheck_after"] = a.RecheckAfter
	}
	return Child{Key: "diff", Type: typ, Args: args}
}

// Repair is the run's child repair of its diff: the policy's strategy, the compare-and-set that
// skips rows changed since the diff forced on.
func (a RepairPolicyRunArgs) Repair(diffTask uuid.UUID) Child {
	args := map[string]any{"diff_task": diffTask.String(), "check_unchanged": true, "dry_run": a.DryRun,
		"upsert_only": a.UpsertOnly}
	switch a.Strategy {
	case StrategySourceOfTruth:
		args["source_of_truth"] = a.SourceOfTruth
	case PolicyStrategyPlan:
		args["repair_plan"] = a.RepairPlan
	default:
		args["strategy"] = a.Strategy
	}
	return Child{Key: "repair", Type: TypeTableRepair, Args: args}
}

// Rerun is the run's child recheck of its diff's keys after the repair.
func (a RepairPolicyRunArgs) Rerun(diffTask uuid.UUID) Child {
	return Child{Key: "rerun", Type: TypeTableRerun, Args: map[string]any{"diff_task": diffTask.String()}}
}

// RecentPolicyRuns counts the runs of the owner's policy submitted in the last `within` that
// count against max_runs_per_hour: every one but except, and the runs that were skipped or
// cancelled (they repaired nothing).
func RecentPolicyRuns(ctx context.Context, q Querier, owner, policy string, except uuid.UUID, within time.Duration) (int, error) {
	var n int
	err := q.QueryRow(ctx, `SELECT count(*) FROM ace.tasks t
		WHERE t.task_type = 'repair-policy-run' AND t.submitted_by = $1 AND t.args->>'policy_name' = $2
		  AND t.task_id <> $3 AND t.submitted_at > clock_timestamp() - $4::interval
		  AND t.status <> 'CANCELLED' AND coalesce(t.result->>'outcome', '') <> 'skipped'`,
		owner, policy, except, within).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count the recent runs of repair policy %q: %w", policy, err)
	}
	return n, nil
}

// NodeStates reads the state of each named node (active, joining, down); a node that is not
// registered any more is missing from the map.
func NodeStates(ctx context.Context, q Querier, nodes []string) (map[string]string, error) {
	rows, err := q.Query(ctx, `SELECT node_name, state FROM ace.nodes WHERE node_name = ANY ($1)`, nodes)
	if err != nil {
		return nil, fmt.Errorf("read the state of nodes %v: %w", nodes, err)
	}
	defer rows.Close()
	states := map[string]string{}
	for rows.Next() {
		var name, state string
		if err := rows.Scan(&name, &state); err != nil {
			return nil, fmt.Errorf("read the state of nodes %v: %w", nodes, err)
		}
		states[name] = state
	}
	return states, rows.Err()
}

// UnreachableNodes are those of nodes that this node's agent could not reach at its last
// collection of the cluster's status (ace.node_status), each with the reading's warning.
func UnreachableNodes(ctx context.Context, q Querier, nodes []string) (map[string]string, error) {
	rows, err := q.Query(ctx, `SELECT node_name, coalesce(warning, 'unreachable') FROM ace.node_status
		WHERE node_name = ANY ($1) AND NOT reachable`, nodes)
	if err != nil {
		return nil, fmt.Errorf("read which of nodes %v are reachable: %w", nodes, err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var name, warning string
		if err := rows.Scan(&name, &warning); err != nil {
			return nil, fmt.Errorf("read which of nodes %v are reachable: %w", nodes, err)
		}
		out[name] = warning
	}
	return out, rows.Err()
}

// TreeReady reports whether the table has a ready Merkle tree on this node.
func TreeReady(ctx context.Context, q Querier, table string) (bool, error) {
	var ready bool
	err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM ace.mtrees WHERE table_name = $1 AND status = 'ready')`, table).Scan(&ready)
	if err != nil {
		return false, fmt.Errorf("look for a Merkle tree of %s: %w", table, err)
	}
	return ready, nil
}

// RepairPolicySpec is what ace.repair_policy takes: the JSON names are its argument names, and
// the REST fields of POST /api/v1/repair-policies.
type RepairPolicySpec struct {
	Name           string   `json:"policy_name"`
	TableName      string   `json:"table_name"`
	Strategy       string   `json:"strategy"`
	SourceOfTruth  string   `json:"source_of_truth,omitempty"`
	RepairPlan     string   `json:"repair_plan,omitempty"`
	Every          string   `json:"every,omitempty"` // an interval: '10 minutes'
	Cron           string   `json:"cron,omitempty"`
	Trigger        string   `json:"trigger,omitempty"`
	RecheckAfter   string   `json:"recheck_after,omitempty"` // an interval; empty: 30 seconds
	MaxRows        *int     `json:"max_rows,omitempty"`
	MaxRunsPerHour *int     `json:"max_runs_per_hour,omitempty"`
	DryRun         bool     `json:"dry_run,omitempty"`
	Nodes          []string `json:"nodes,omitempty"`
	UpsertOnly     bool     `json:"upsert_only,omitempty"`
	Scope          string   `json:"scope,omitempty"`
	Enabled        *bool    `json:"enabled,omitempty"`
	RunNow         bool     `json:"run_now,omitempty"`
}

// AddRepairPolicy makes (or redefines) the session's role's policy with ace.repair_policy, which
// checks it as that role, and returns when it is first due (nil: it runs by hand only).
func AddRepairPolicy(ctx context.Context, q Querier, s RepairPolicySpec) (*time.Time, error) {
	var due *time.Time
	err := q.QueryRow(ctx, `SELECT ace.repair_policy($1, $2, $3, source_of_truth => nullif($4, ''), repair_plan => nullif($5, ''),
		every => nullif($6, '')::interval, cron => nullif($7, ''), trigger => coalesce(nullif($8, ''), 'schedule'),
		recheck_after => coalesce(nullif($9, ''), '30 seconds')::interval, max_rows => coalesce($10, 1000),
		max_runs_per_hour => coalesce($11, 6), dry_run => $12, nodes => $13, upsert_only => $14,
		scope => coalesce(nullif($15, ''), 'node'), enabled => coalesce($16, true), run_now => $17)`,
		s.Name, s.TableName, s.Strategy, s.SourceOfTruth, s.RepairPlan, s.Every, s.Cron, s.Trigger, s.RecheckAfter,
		s.MaxRows, s.MaxRunsPerHour, s.DryRun, s.Nodes, s.UpsertOnly, s.Scope, s.Enabled, s.RunNow).Scan(&due)
	if err != nil {
		return nil, fmt.Errorf("repair policy %s: %w", s.Name, err)
	}
	return due, nil
}

// RepairPolicy is a row of ace.repair_policy_status: a policy, its timer and its last run, as its
// owner sees it.
type RepairPolicy struct {
	Owner        string     `json:"owner"`
	Name         string     `json:"policy_name"`
	TableName    string     `json:"table_name"`
	Strategy     string     `json:"strategy"`
	Trigger      string     `json:"trigger"`
	DryRun       bool       `json:"dry_run"`
	Every        *string    `json:"every"`
	Cron         *string    `json:"cron"`
	Scope        *string    `json:"scope"`
	Enabled      bool       `json:"enabled"`
	NextDue      *time.Time `json:"next_due"`
	LastRun      *uuid.UUID `json:"last_run"`
	LastStatus   *string    `json:"last_status"`
	LastOutcome  *string    `json:"last_outcome"`
	LastReason   *string    `json:"last_reason"`
	LastFinished *time.Time `json:"last_finished"`
}

// RepairPolicies lists the policies the session may see (its role's own), by owner and name.
func RepairPolicies(ctx context.Context, q Querier) ([]RepairPolicy, error) {
	rows, err := q.Query(ctx, `SELECT owner, policy_name, table_name, strategy, trigger, dry_run, every::text, cron, scope, enabled,
		next_due, last_run, last_status, last_outcome, last_reason, last_finished
		FROM ace.repair_policy_status ORDER BY owner, policy_name`)
	if err != nil {
		return nil, fmt.Errorf("read ace.repair_policy_status: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (p RepairPolicy, err error) {
		err = r.Scan(&p.Owner, &p.Name, &p.TableName, &p.Strategy, &p.Trigger, &p.DryRun, &p.Every, &p.Cron, &p.Scope, &p.Enabled,
			&p.NextDue, &p.LastRun, &p.LastStatus, &p.LastOutcome, &p.LastReason, &p.LastFinished)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("read ace.repair_policy_status: %w", err)
	}
	return out, nil
}

// RunRepairPolicy starts a run of the session's role's policy now (ace.run_repair_policy).
func RunRepairPolicy(ctx context.Context, q Querier, name string) (uuid.UUID, error) {
	var id uuid.UUID
	if err := q.QueryRow(ctx, `SELECT ace.run_repair_policy($1)`, name).Scan(&id); err != nil {
		return uuid.Nil, fmt.Errorf("run repair policy %s: %w", name, err)
	}
	return id, nil
}

// PolicyChange is what ChangeRepairPolicy does to one of the session's role's policies.
type PolicyChange string

// The changes an owner makes to a policy.
const (
	DropPolicy   PolicyChange = "drop"
	PausePolicy  PolicyChange = "pause"
	ResumePolicy PolicyChange = "resume"
)

// ChangeRepairPolicy drops, pauses or resumes the session's role's policy (ace.drop_repair_policy,
// ace.pause_repair_policy, ace.resume_repair_policy). found is false when there was no policy to
// drop.
func ChangeRepairPolicy(ctx context.Context, q Querier, name string, change PolicyChange) (found bool, err error) {
	sql := map[PolicyChange]string{
		DropPolicy:   `SELECT ace.drop_repair_policy($1)`,
		PausePolicy:  `SELECT true FROM ace.pause_repair_policy($1)`,
		ResumePolicy: `SELECT true FROM ace.resume_repair_policy($1)`,
	}[change]
	if sql == "" {
		return false, fmt.Errorf("unknown change %q of a repair policy", change)
	}
	if err := q.QueryRow(ctx, sql, name).Scan(&found); err != nil {
		return false, fmt.Errorf("%s repair policy %s: %w", change, name, err)
	}
	return found, nil
}

// ReadableTables lists the tables a policy or resync with no table named covers: every table
// with a primary key the session's role may read, outside the system schemas (ace.resync_tables).
func ReadableTables(ctx context.Context, q Querier) ([]string, error) {
	var tables []string
	if err := q.QueryRow(ctx, `SELECT ace.resync_tables()`).Scan(&tables); err != nil {
		return nil, fmt.Errorf("list the tables you may read: %w", err)
	}
	return tables, nil
}
