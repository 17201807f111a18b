package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/repair"
	"github.com/ace-agent/ace-agent/engine/spock"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// The outcomes of a repair policy's run (a run that fails fails its task).
const (
	policyInSync   = "in_sync"  // the diff found nothing that outlived recheck_after
	policyHeld     = "held"     // more than max_rows keys differ: nothing repaired, a person looks
	policySkipped  = "skipped"  // a node down, no quorum, or max_runs_per_hour reached: nothing diffed
	policyRepaired = "repaired" // a repair ran, then a rerun counted what still differs
	policyDryRun   = "dry_run"  // the repair ran as a dry run: ace.repair_rows(repair_task) says what it would do
)

// policyRun is a repair-policy-run's result.
type policyRun struct {
	PolicyName    string     `json:"policy_name"`
	Owner         string     `json:"owner"`
	TableName     string     `json:"table_name"`
	Strategy      string     `json:"strategy"`
	Trigger       string     `json:"trigger"`
	Nodes         []string   `json:"nodes"`
	DryRun        bool       `json:"dry_run"`
	MaxRows       int64      `json:"max_rows"`
	Outcome       string     `json:"outcome"`
	Reason        string     `json:"reason,omitempty"` // why it was held or skipped (held_reason, skip_reason)
	HeldReason    string     `json:"held_reason,omitempty"`
	SkipReason    string     `json:"skip_reason,omitempty"`
	DiffType      string     `json:"diff_type,omitempty"`
	DiffTask      *uuid.UUID `json:"diff_task,omitempty"`
	DifferingKeys int64      `json:"differing_keys"`
	Transient     int64      `json:"transient_diffs"`
	RepairTask    *uuid.UUID `json:"repair_task,omitempty"`
	RerunTask     *uuid.UUID `json:"rerun_task,omitempty"`
	Inserted      int64      `json:"inserted"`
	Updated       int64      `json:"updated"`
	Deleted       int64      `json:"deleted"`
	Skipped       int64      `json:"skipped"`
	Unresolved    int64      `json:"unresolved"`
	RemainingKeys int64      `json:"remaining_keys"`
	// With trigger spock_exceptions: the PENDING exceptions about the table whose keys the run
	// diffed, those it marked RESOLVED, and those without a key in their row images (left alone).
	Exceptions         int `json:"spock_exceptions,omitempty"`
	ExceptionsResolved int `json:"spock_exceptions_resolved,omitempty"`
	ExceptionsUnkeyed  int `json:"spock_exceptions_unkeyed,omitempty"`
}

// repairPolicyRun runs one repair policy's run: checks that the run may go (rate limit, nodes,
// commit timestamps), a child diff, and, unless it is in sync or held, a child repair with the
// compare-and-set forced on and a child rerun, each an ordinary task of the policy's owner.
// Every run records auto_repair_started and an event for its outcome.
func (a *Agent) repairPolicyRun(ctx context.Context, run *sqlapi.Run, args *sqlapi.RepairPolicyRunArgs) (any, error) {
	res := &policyRun{PolicyName: args.PolicyName, Owner: run.Task.SubmittedBy, TableName: args.TableName,
		Strategy: args.Strategy, Trigger: args.Trigger, Nodes: args.Nodes, DryRun: args.DryRun, MaxRows: args.MaxRows}
	if err := a.policyEvent(ctx, run, res, "auto_repair_started", nil); err != nil {
		return nil, err
	}
	err := a.runPolicy(ctx, run, args, res)
	if err != nil {
		if evErr := a.policyEvent(ctx, run, res, "auto_repair_failed", map[string]any{"error": err.Error()}); evErr != nil {
			a.log.Warn("recording an auto_repair_failed event failed", "task", run.Task.ID, "err", evErr)
		}
		return nil, err
	}
	return res, a.policyEvent(ctx, run, res, "auto_repair_"+res.Outcome, nil)
}

// runPolicy decides the run's outcome into res; an error fails the run.
func (a *Agent) runPolicy(ctx context.Context, run *sqlapi.Run, args *sqlapi.RepairPolicyRunArgs, res *policyRun) error {
	reason, err := a.policySkipReason(ctx, run, args)
	if err != nil || reason != "" {
		res.Outcome, res.Reason, res.SkipReason = policySkipped, reason, reason
		return err
	}
	if err := a.checkCommitTimestamps(ctx, run, args); err != nil {
		return err
	}
	if args.Trigger == sqlapi.TriggerSpockExceptions {
		return a.runSpockPolicy(ctx, run, args, res)
	}
	tree, err := sqlapi.TreeReady(ctx, a.pool, args.TableName)
	if err != nil {
		return err
	}
	return a.diffAndRepair(ctx, run, args, args.Diff(tree, ""), res)
}

// runSpockPolicy repairs the keys of the table's PENDING Spock exceptions: a diff of those keys
// only, then as any run; the exceptions are marked RESOLVED when the keys end in sync (by the
// diff, or by the repair with nothing left for the rerun), naming the task that settled them.
func (a *Agent) runSpockPolicy(ctx context.Context, run *sqlapi.Run, args *sqlapi.RepairPolicyRunArgs, res *policyRun) error {
	nodes, err := a.openSpockNodes(ctx, run, args.Nodes)
	if err != nil {
		return err
	}
	defer closeNodes(nodes)
	pending, filter, unkeyed, err := a.spockPending(ctx, nodes, args.TableName)
	if err != nil {
		return err
	}
	res.Exceptions, res.ExceptionsUnkeyed = len(pending), unkeyed
	if len(pending) == 0 {
		res.Outcome, res.Reason = policyInSync, fmt.Sprintf("no PENDING Spock exception about %s names a key", args.TableName)
		return nil
	}
	if err := a.diffAndRepair(ctx, run, args, args.Diff(false, filter), res); err != nil {
		return err
	}
	switch {
	case res.Outcome == policyInSync:
		return resolveExceptions(ctx, nodes, pending, res, *res.DiffTask)
	case res.Outcome == policyRepaired && res.RemainingKeys == 0:
		return resolveExceptions(ctx, nodes, pending, res, *res.RepairTask)
	}
	res.Reason = strings.TrimPrefix(res.Reason+"; the Spock exceptions stay PENDING", "; ")
	return nil
}

// diffAndRepair runs the diff child and decides the outcome from what it found: in sync, held,
// or a repair.
func (a *Agent) diffAndRepair(ctx context.Context, run *sqlapi.Run, args *sqlapi.RepairPolicyRunArgs, diff sqlapi.Child, res *policyRun) error {
	d, err := a.policyChild(ctx, run, diff, "diffed")
	if err != nil {
		return err
	}
	res.DiffType, res.DiffTask = string(d.Type), &d.TaskID
	var found struct {
		DifferingKeys int64 `json:"differing_keys"`
		Transient     int64 `json:"transient_diffs"`
		LimitReached  bool  `json:"diff_row_limit_reached"`
	}
	if err := json.Unmarshal(d.Task.Result, &found); err != nil {
		return fmt.Errorf("read the result of %s task %s: %w", d.Type, d.TaskID, err)
	}
	res.DifferingKeys, res.Transient = found.DifferingKeys, found.Transient
	switch {
	case found.DifferingKeys == 0:
		res.Outcome = policyInSync
		return nil
	case found.LimitReached || found.DifferingKeys > args.MaxRows:
		res.Outcome = policyHeld
		count := fmt.Sprint(found.DifferingKeys)
		if found.LimitReached {
			count = "at least " + count // the diff stopped one row past max_rows per node pair
		}
		res.Reason = fmt.Sprintf("%s keys differ, more than max_rows (%d): nothing was repaired; look at them with ace.diff_rows('%s'), then repair by hand with ace.table_repair('%s', ...) or raise max_rows",
			count, args.MaxRows, d.TaskID, d.TaskID)
		res.HeldReason = res.Reason
		return nil
	}
	return a.repairPolicyDiff(ctx, run, args, res)
}

// repairPolicyDiff repairs the run's diff, then (unless in a dry run) rechecks its keys.
func (a *Agent) repairPolicyDiff(ctx context.Context, run *sqlapi.Run, args *sqlapi.RepairPolicyRunArgs, res *policyRun) error {
	r, err := a.policyChild(ctx, run, args.Repair(*res.DiffTask), "repaired")
	if err != nil {
		return err
	}
	res.RepairTask = &r.TaskID
	var s repair.Summary
	if err := json.Unmarshal(r.Task.Result, &s); err != nil {
		return fmt.Errorf("read the result of table-repair task %s: %w", r.TaskID, err)
	}
	res.Inserted, res.Updated, res.Deleted, res.Skipped, res.Unresolved = s.Inserted, s.Updated, s.Deleted, s.Skipped, s.Unresolved
	if args.DryRun {
		res.Outcome = policyDryRun
		res.Reason = fmt.Sprintf("dry run: nothing was written; ace.repair_rows('%s') lists what the repair would do", r.TaskID)
		return nil
	}
	rr, err := a.policyChild(ctx, run, args.Rerun(*res.DiffTask), "rechecked")
	if err != nil {
		return err
	}
	res.RerunTask = &rr.TaskID
	var left struct {
		DifferingKeys int64 `json:"differing_keys"`
	}
	if err := json.Unmarshal(rr.Task.Result, &left); err != nil {
		return fmt.Errorf("read the result of table-rerun task %s: %w", rr.TaskID, err)
	}
	res.RemainingKeys = left.DifferingKeys
	res.Outcome = policyRepaired
	if left.DifferingKeys > 0 {
		res.Reason = fmt.Sprintf("%d key(s) still differ after the repair (changed since the diff, or not decided by the strategy): ace.diff_rows('%s') lists them",
			left.DifferingKeys, rr.TaskID)
	}
	return nil
}

// policyChild runs one child task as the policy's owner and returns it; a child that was refused
// or did not complete fails the run, naming it.
func (a *Agent) policyChild(ctx context.Context, run *sqlapi.Run, c sqlapi.Child, done string) (sqlapi.ChildOutcome, error) {
	outcomes, err := a.runChildrenSaying(ctx, run, sqlapi.ChildDiffArgs{}, []sqlapi.Child{c}, done)
	if err != nil {
		return sqlapi.ChildOutcome{}, err
	}
	o := outcomes[0]
	switch {
	case o.Err != nil:
		return o, fmt.Errorf("the policy's %s was refused: %w", c.Type, o.Err)
	case o.Task.Status != sqlapi.StatusCompleted:
		return o, fmt.Errorf("the policy's %s task %s %s: %s", c.Type, o.TaskID, o.Task.Status, deref(o.Task.Error))
	}
	return o, nil
}

// policySkipReason says why the run is skipped before it diffs anything, or "" when it goes on:
// the rate limit, a node down (or no longer registered), or too few active nodes for a vote.
func (a *Agent) policySkipReason(ctx context.Context, run *sqlapi.Run, args *sqlapi.RepairPolicyRunArgs) (string, error) {
	recent, err := sqlapi.RecentPolicyRuns(ctx, a.pool, run.Task.SubmittedBy, args.PolicyName, run.Task.ID, time.Hour)
	if err != nil {
		return "", err
	}
	if recent >= args.MaxRunsPerHour {
		return fmt.Sprintf("rate limit: %d run(s) in the last hour, and max_runs_per_hour is %d", recent, args.MaxRunsPerHour), nil
	}
	states, err := sqlapi.NodeStates(ctx, a.pool, args.Nodes)
	if err != nil {
		return "", err
	}
	var down []string
	active := 0
	for _, n := range args.Nodes {
		switch state, ok := states[n]; {
		case !ok:
			down = append(down, n+" (not registered)")
		case state == "active":
			active++
		default:
			down = append(down, n+" ("+state+")")
		}
	}
	if args.Strategy == repair.StrategyMajority && active < 3 {
		return fmt.Sprintf("no quorum: strategy majority needs three or more active nodes, and only %d of %s are", active,
			strings.Join(args.Nodes, ", ")), nil
	}
	if len(down) > 0 {
		return "node down: " + strings.Join(down, ", ") + "; the run repairs nothing while a node of the policy is not active", nil
	}
	// A node that is not marked down but that this agent could not reach at its last heartbeat
	// would only fail the run's diff: the run is skipped, saying so, until it answers again.
	unreachable, err := sqlapi.UnreachableNodes(ctx, a.pool, args.Nodes)
	if err != nil {
		return "", err
	}
	if len(unreachable) > 0 {
		var named []string
		for _, n := range slices.Sorted(maps.Keys(unreachable)) {
			named = append(named, n+" ("+unreachable[n]+")")
		}
		return "node unreachable: " + strings.Join(named, ", ") + "; the run repairs nothing while a node of the policy cannot be reached", nil
	}
	return "", nil
}

// checkCommitTimestamps refuses a latest_commit run unless every node tracks commit timestamps:
// the policy's creation could check only the local node.
func (a *Agent) checkCommitTimestamps(ctx context.Context, run *sqlapi.Run, args *sqlapi.RepairPolicyRunArgs) error {
	if args.Strategy != repair.StrategyLatestCommit {
		return nil
	}
	nodes, err := a.openNodes(ctx, run, args.Nodes, 1)
	if err != nil {
		return fmt.Errorf("open sessions to check track_commit_timestamp: %w", err)
	}
	defer closeNodes(nodes)
	var off []string
	for _, n := range nodes {
		var setting string
		if err := n.Pool.QueryRow(ctx, `SHOW track_commit_timestamp`).Scan(&setting); err != nil {
			return fmt.Errorf("read track_commit_timestamp on node %s: %w", n.Name, err)
		}
		if setting != "on" {
			off = append(off, n.Name)
		}
	}
	if len(off) > 0 {
		slices.Sort(off)
		return fmt.Errorf("strategy latest_commit needs track_commit_timestamp = on on every node, and it is off on %s: nothing was diffed or repaired; turn it on there (it needs a restart) or change the policy's strategy",
			strings.Join(off, ", "))
	}
	return nil
}

// policyEvent records one of the run's events, as the agent (the schema's owner), naming the
// owner so that only the owner's roles see it.
func (a *Agent) policyEvent(ctx context.Context, run *sqlapi.Run, res *policyRun, kind string, extra map[string]any) error {
	detail := map[string]any{"policy": res.PolicyName, "owner": res.Owner, "strategy": res.Strategy, "dry_run": res.DryRun}
	if kind != "auto_repair_started" && kind != "auto_repair_failed" {
		detail["outcome"] = res.Outcome
		detail["differing_keys"] = res.DifferingKeys
		if res.Reason != "" {
			detail["reason"] = res.Reason
		}
		for k, v := range map[string]*uuid.UUID{"diff_task": res.DiffTask, "repair_task": res.RepairTask, "rerun_task": res.RerunTask} {
			if v != nil {
				detail[k] = v.String()
			}
		}
		if res.RepairTask != nil {
			detail["inserted"], detail["updated"], detail["deleted"] = res.Inserted, res.Updated, res.Deleted
			detail["remaining_keys"] = res.RemainingKeys
		}
	}
	for k, v := range extra {
		detail[k] = v
	}
	id := run.Task.ID
	_, err := sqlapi.RecordEvent(ctx, a.pool, sqlapi.Event{Kind: kind, NodeName: a.cfg.Node, TableName: res.TableName,
		TaskID: &id, Detail: detail})
	return err
}

// pendingException is a PENDING Spock exception about the policy's table, on its node.
type pendingException struct {
	node string
	exc  spock.Exception
}

// spockPending syncs the exception statuses of the nodes (the owner's sessions, as
// spock-exception-sync does) and returns the PENDING exceptions about the table that name a key,
// and a table_filter that keeps the rows of their keys. Exceptions without a row image of the
// key are left alone (counted as unkeyed).
func (a *Agent) spockPending(ctx context.Context, nodes []*engine.Node, table string) (pending []pendingException, filter string, unkeyed int, err error) {
	schema, name, err := engine.SplitTableName(table)
	if err != nil {
		return nil, "", 0, err
	}
	t, err := engine.LoadTable(ctx, nodes[0], schema, name)
	if err != nil {
		return nil, "", 0, err
	}
	var keys [][]string
	for _, n := range nodes {
		rows, _, err := spock.Sync(ctx, n)
		if err != nil {
			return nil, "", 0, err
		}
		for _, e := range rows {
			if e.Status == nil || *e.Status != "PENDING" || e.TableSchema == nil || e.TableName == nil ||
				*e.TableSchema != schema || *e.TableName != name {
				continue
			}
			key, ok := exceptionKey(e, t.PKNames())
			if !ok {
				unkeyed++
				continue
			}
			pending = append(pending, pendingException{node: n.Name, exc: e})
			keys = append(keys, key)
		}
	}
	if len(keys) > 0 {
		filter = keyFilter(t.PKNames(), keys)
	}
	return pending, filter, unkeyed, nil
}

// exceptionKey reads the key of the row an exception is about from its row images (the new
// remote row, else the old, else the local one): Spock writes them as [{"attname", "value"}].
func exceptionKey(e spock.Exception, pk []string) ([]string, bool) {
	for _, image := range [][]byte{e.RemoteNewTup, e.RemoteOldTup, e.LocalTup} {
		var cols []struct {
			Attname string          `json:"attname"`
			Value   json.RawMessage `json:"value"`
		}
		if len(image) == 0 || json.Unmarshal(image, &cols) != nil {
			continue
		}
		values := map[string]json.RawMessage{}
		for _, c := range cols {
			values[c.Attname] = c.Value
		}
		key := make([]string, 0, len(pk))
		for _, col := range pk {
			v, ok := values[col]
			if !ok || string(v) == "null" {
				break
			}
			var s string
			if json.Unmarshal(v, &s) != nil {
				s = string(v) // a number or a boolean: its JSON text is its SQL text
			}
			key = append(key, s)
		}
		if len(key) == len(pk) {
			return key, true
		}
	}
	return nil, false
}

// keyFilter is a table_filter that keeps the rows of the given keys: pk IN ('v', ...), or
// (pk1, pk2) IN (('v1', 'v2'), ...); the literals take the key columns' types.
func keyFilter(pk []string, keys [][]string) string {
	cols := make([]string, len(pk))
	for i, c := range pk {
		cols[i] = pgx.Identifier{c}.Sanitize()
	}
	seen := map[string]bool{}
	var tuples []string
	for _, k := range keys {
		lits := make([]string, len(k))
		for i, v := range k {
			lits[i] = engine.QuoteLiteral(v)
		}
		t := strings.Join(lits, ", ")
		if len(pk) > 1 {
			t = "(" + t + ")"
		}
		if !seen[t] {
			seen[t] = true
			tuples = append(tuples, t)
		}
	}
	slices.Sort(tuples)
	lhs := strings.Join(cols, ", ")
	if len(pk) > 1 {
		lhs = "(" + lhs + ")"
	}
	return lhs + " IN (" + strings.Join(tuples, ", ") + ")"
}

// resolveExceptions marks the exceptions RESOLVED on their nodes, naming the task that settled
// them (the repair, or the diff that found their rows in sync).
func resolveExceptions(ctx context.Context, nodes []*engine.Node, pending []pendingException, res *policyRun, by uuid.UUID) error {
	byName := map[string]*engine.Node{}
	for _, n := range nodes {
		byName[n.Name] = n
	}
	details := map[string]any{"policy": res.PolicyName, "task_id": by.String(), "outcome": res.Outcome,
		"resolved_by": "repair policy " + res.PolicyName}
	for _, p := range pending {
		e := p.exc
		cc, at := e.CommandCounter, e.RetryErroredAt
		u := spock.Update{Status: "RESOLVED", ResolutionDetails: details, Key: spock.Key{RemoteOrigin: e.RemoteOrigin,
			RemoteCommitTS: e.RemoteCommitTS, RemoteXID: e.RemoteXID, CommandCounter: &cc, RetryErroredAt: &at}}
		if _, err := spock.Apply(ctx, byName[p.node], u); err != nil {
			return fmt.Errorf("mark a Spock exception of node %s RESOLVED: %w", p.node, err)
		}
		// The transaction is resolved once all its commands are (some may be of other tables).
		if _, err := spock.SettleTransaction(ctx, byName[p.node], u); err != nil {
			return fmt.Errorf("mark a Spock transaction of node %s RESOLVED: %w", p.node, err)
		}
		res.ExceptionsResolved++
	}
	return nil
}
