package sqlapi

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
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

// TreeReady reports whether the table has a ready Merkle tree on this node.
func TreeReady(ctx context.Context, q Querier, table string) (bool, error) {
	var ready bool
	err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM ace.mtrees WHERE table_name = $1 AND status = 'ready')`, table).Scan(&ready)
	if err != nil {
		return false, fmt.Errorf("look for a Merkle tree of %s: %w", table, err)
	}
	return ready, nil
}
