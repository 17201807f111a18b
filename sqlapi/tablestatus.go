package sqlapi

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/google/uuid"

	"github.com/ace-agent/ace-agent/engine"
)

// The per-table sync status (ace.table_status): each node's verdict is reached here, in Go, as a
// diff's rows are stored (or, for a repair, from the repaired diff's rows and what the repair
// committed), and ace.record_table_status stores it when the task ends. Counting in Go costs
// nothing beside the rows' own encoding; the same count in SQL over ace.diff_results took tens
// of seconds for a million differing keys.

// nodeVerdict is one node's tally over the differing keys of a diff.
type nodeVerdict struct {
	Differing int64 `json:"differing_keys"` // keys where the node is not with a strict majority
	Diverged  bool  `json:"diverged"`       // some key had no majority at all
}

// verdictTally is the tally of every node that differed somewhere, by node name.
type verdictTally map[string]*nodeVerdict

// absent is the version of a node that lacks the row: engine.DiffRow numbers versions from 1.
const absent = 0

// add counts one key, given each compared node's version of it. The version held by a strict
// majority of the nodes wins; a node holding another one differs; with no majority, every node
// of the key differs and is diverged.
func (v verdictTally) add(versions map[string]int) { v.addKeys(versions, 1) }

// addKeys counts keys keys that each have these versions (a differing key range's).
func (v verdictTally) addKeys(versions map[string]int, keys int64) {
	held := map[int]int{}
	for _, ver := range versions {
		held[ver]++
	}
	winner, majority := absent, false
	for ver, n := range held {
		if 2*n > len(versions) {
			winner, majority = ver, true
		}
	}
	for node, ver := range versions {
		if majority && ver == winner {
			continue
		}
		t := v[node]
		if t == nil {
			t = &nodeVerdict{}
			v[node] = t
		}
		t.Differing += keys
		t.Diverged = t.Diverged || !majority
	}
}

// rowVersions is every compared node's version of a differing row (absent where it lacks it):
// the row lists every node of the diff.
func rowVersions(d engine.DiffRow) map[string]int {
	out := make(map[string]int, len(d.Rows))
	for node := range d.Rows {
		out[node] = absent
	}
	for node, ver := range d.Versions {
		out[node] = ver
	}
	return out
}

// tallyRows counts stored differing rows into the run's verdicts.
func (r *Run) tallyRows(rows []engine.DiffRow) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.verdicts == nil {
		r.verdicts = verdictTally{}
	}
	for _, d := range rows {
		r.verdicts.addKeys(rowVersions(d), d.Keys())
	}
}

// resetTally forgets what an earlier attempt counted.
func (r *Run) resetTally() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.verdicts = nil
}

// tableVerdicts is the tally the run's end records: for a diff, what its stored rows counted;
// for a repair that may have changed data, the repaired diff's rows as the repair left them; nil
// for other tasks.
func (r *Run) tableVerdicts(ctx context.Context, q Querier) (verdictTally, error) {
	switch r.Task.Type {
	case TypeTableDiff, TypeMtreeDiff, TypeTableRerun:
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.verdicts == nil {
			return verdictTally{}, nil
		}
		return r.verdicts, nil
	case TypeTableRepair:
		var args TableRepairArgs
		if err := json.Unmarshal(r.Task.Args, &args); err != nil {
			return nil, fmt.Errorf("read the arguments of repair %s: %w", r.Task.ID, err)
		}
		if args.DryRun || len(args.DiffNodes) == 0 {
			return nil, nil // changed nothing, or does not say which nodes it compared
		}
		return repairedVerdicts(ctx, q, r.Task.ID, args)
	}
	return nil, nil
}

// repairedVerdicts tallies the repaired diff's keys as the repair left them: a row the repair
// committed on a node holds the version of the node it was copied from; a fix_nulls update (or a
// change without a source) holds a version of its own until a rerun compares it again.
func repairedVerdicts(ctx context.Context, q Querier, repair uuid.UUID, args TableRepairArgs) (verdictTally, error) {
	type cell struct{ key, node string }
	changed := map[cell]*string{} // the source of what a node got; nil: unknown
	// A range row and its repair action are keyed by their range (rangeCell), apart from the keys.
	rows, err := q.Query(ctx, `SELECT `+rangeCell+`, node, source FROM ace.repair_actions a
		WHERE task_id = $1 AND `+appliedSQL+` AND action <> 'skip'`, repair)
	if err != nil {
		return nil, fmt.Errorf("read what repair %s committed: %w", repair, err)
	}
	for rows.Next() {
		var key, node string
		var source *string
		if err := rows.Scan(&key, &node, &source); err != nil {
			return nil, fmt.Errorf("read what repair %s committed: %w", repair, err)
		}
		if args.FixNulls {
			source = nil
		}
		changed[cell{key, node}] = source
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read what repair %s committed: %w", repair, err)
	}
	tally := verdictTally{}
	rows, err = q.Query(ctx, `SELECT `+rangeCell+`, coalesce(versions, '{}'), coalesce((key_range->>'rows')::bigint, 1)
		FROM ace.diff_results a WHERE task_id = $1`, args.DiffTask)
	if err != nil {
		return nil, fmt.Errorf("read the keys of diff %s: %w", args.DiffTask, err)
	}
	defer rows.Close()
	for rows.Next() {
		var key string
		var before map[string]int
		var keys int64
		if err := rows.Scan(&key, &before, &keys); err != nil {
			return nil, fmt.Errorf("read the keys of diff %s: %w", args.DiffTask, err)
		}
		after := make(map[string]int, len(args.DiffNodes))
		for i, node := range args.DiffNodes {
			after[node] = before[node] // absent when missing
			if source, ok := changed[cell{key, node}]; ok {
				after[node] = -1 - i // a version nobody else holds
				if source != nil {
					after[node] = before[*source]
				}
			}
		}
		tally.addKeys(after, keys)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the keys of diff %s: %w", args.DiffTask, err)
	}
	return tally, nil
}

// rangeCell is how repairedVerdicts names a stored key (of ace.diff_results or
// ace.repair_actions as a): its pk_sort, or for a key range its pk, which no key's pk_sort equals.
const rangeCell = `CASE WHEN a.key_range IS NULL THEN a.pk_sort::text ELSE a.pk::text END`

// recordTableStatus turns the end of a task (its status and result) into its table's sync
// status: ace.record_table_status decides whether the task gives a verdict (a completed
// table-diff, mtree-diff or rerun; a repair that was not a dry run), stores the tally's verdicts
// and records the transitions as events. It runs in the transaction that records the task's
// end, so a diff never ends without its verdict.
func (r *Run) recordTableStatus(ctx context.Context, q Querier, status Status, result json.RawMessage) error {
	tally, err := r.tableVerdicts(ctx, q)
	if err != nil {
		return err
	}
	if tally == nil {
		return nil
	}
	raw, err := json.Marshal(tally)
	if err != nil {
		return fmt.Errorf("encode the verdicts of task %s: %w", r.Task.ID, err)
	}
	if _, err := q.Exec(ctx, `SELECT ace.record_table_status($1, $2, $3, $4)`, r.Task.ID, status, nullJSON(result), raw); err != nil {
		return fmt.Errorf("record the table status after task %s: %w", r.Task.ID, err)
	}
	return nil
}
