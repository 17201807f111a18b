package sqlapi

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/acefile"
	"github.com/ace-agent/ace-agent/engine/repair"
)

// TableRepairArgs are a table-repair task's arguments, named as the arguments of
// ace.table_repair(...). The validator fills TableName, TargetNodes (the nodes to repair) and
// DiffNodes from the diff, and every flag, so the agent always reads them all.
type TableRepairArgs struct {
	DiffTask  uuid.UUID `json:"diff_task"`
	TableName string    `json:"table_name,omitempty"`
	DiffNodes []string  `json:"diff_nodes,omitempty"`
	RepairArgs
}

// ReportArgs are the repair's arguments as its ACE repair report lists them.
func (a TableRepairArgs) ReportArgs(id uuid.UUID) acefile.ReportArgs {
	o := a.Options()
	o.ID = id.String()
	r := o.ReportArgs(a.DiffTask.String(), a.TableName, a.GenerateReport)
	r.RecoveryMode = a.RecoveryMode
	return r
}

// TableRerunArgs are a table-rerun task's arguments; the validator fills all but DiffTask
// from the diff.
type TableRerunArgs struct {
	DiffTask    uuid.UUID `json:"diff_task"`
	TableName   string    `json:"table_name,omitempty"`
	Nodes       []string  `json:"nodes,omitempty"`
	TableFilter string    `json:"table_filter,omitempty"`
	MaxDiffRows int64     `json:"max_diff_rows,omitempty"`
	Columns     []string  `json:"columns,omitempty"` // the diff's columns option, filled by the server
}

// DiffImportArgs are a diff-import task's arguments: an ACE diff file, as JSON.
type DiffImportArgs struct {
	Diff      json.RawMessage `json:"diff"`
	FileName  string          `json:"file_name,omitempty"`
	TableName string          `json:"table_name,omitempty"`
	Nodes     []string        `json:"nodes,omitempty"`
}

func decodeDiffRow(d *engine.DiffRow, rowsJSON, versions, meta, keyRange []byte) error {
	if err := json.Unmarshal(rowsJSON, &d.Rows); err != nil {
		return err
	}
	if keyRange != nil {
		d.Kind = engine.KindMissingRange
		if err := json.Unmarshal(keyRange, &d.Range); err != nil {
			return err
		}
	}
	if versions != nil {
		if err := json.Unmarshal(versions, &d.Versions); err != nil {
			return err
		}
	}
	if meta != nil {
		return json.Unmarshal(meta, &d.Meta)
	}
	return nil
}

// RepairActions records a repair's actions in ace.repair_actions. It implements
// repair.Sink; every write is fenced by the run's claim.
type RepairActions struct {
	run   *Run
	rowNo int64
}

// RepairActions returns the writer of this run's repair actions. Rows of earlier attempts are
// kept (they may describe changes that were committed), so numbering continues after them.
func (r *Run) RepairActions(ctx context.Context) (*RepairActions, error) {
	w := &RepairActions{run: r}
	err := r.fenced(ctx, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT coalesce(max(row_no), 0) FROM ace.repair_actions WHERE task_id = $1`, r.Task.ID).Scan(&w.rowNo)
	})
	if err != nil {
		return nil, fmt.Errorf("read earlier repair actions of task %s: %w", r.Task.ID, err)
	}
	return w, nil
}

// WriteRepairActions stores actions with COPY, as not applied, in one transaction on a
// connection of its own. A repair commits a node only after every change made there is stored,
// which is what lets the recovery sweep tell an attempt that changed nothing.
func (w *RepairActions) WriteRepairActions(ctx context.Context, actions []repair.Action) error {
	if len(actions) == 0 {
		return nil
	}
	r := w.run
	data := make([][]any, len(actions))
	for i, a := range actions {
		w.rowNo++
		var keyRange []byte
		if a.Range != nil {
			var err error
			if keyRange, err = json.Marshal(a.Range); err != nil {
				return fmt.Errorf("encode the key range of a repair action: %w", err)
			}
		}
		data[i] = []any{r.Task.ID, w.rowNo, r.Task.Attempts, a.Node, a.Kind, []byte(a.PK), []byte(a.PKSort),
			nullString(a.Source), nullJSON(a.Before), nullJSON(a.After), nullString(a.Reason), nullString(a.Rule), keyRange}
	}
	return r.fenced(ctx, func(tx pgx.Tx) error {
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"ace", "repair_actions"},
			[]string{"task_id", "row_no", "attempt", "node", "action", "pk", "pk_sort", "source", "before", "after", "reason", "rule", "key_range"},
			pgx.CopyFromRows(data))
		if err != nil {
			return fmt.Errorf("store %d repair actions of task %s: %w", len(actions), r.Task.ID, err)
		}
		return nil
	})
}

// MarkApplied records that the changes this attempt made on node are committed. From its first
// call on, the run may have changed data. It tries again while connections are lost: the node
// is committed, and that must not go unrecorded for a broken connection.
func (w *RepairActions) MarkApplied(ctx context.Context, node string) error {
	r := w.run
	r.mu.Lock()
	r.applied = true
	r.mu.Unlock()
	return retry(ctx, func() error {
		return r.fenced(ctx, func(tx pgx.Tx) error {
			// One row for the node, not an update of each action row: see ace.repair_commits.
			_, err := tx.Exec(ctx, `INSERT INTO ace.repair_commits (task_id, attempt, node) VALUES ($1, $2, $3)
				ON CONFLICT DO NOTHING`, r.Task.ID, r.Task.Attempts, node)
			if err != nil {
				return fmt.Errorf("record the committed repair of node %s for task %s: %w", node, r.Task.ID, err)
			}
			return nil
		})
	})
}

// appliedSQL says whether the action a of ace.repair_actions was committed on its node: its
// attempt's commit there is recorded in ace.repair_commits (the applied column holds it for
// repairs recorded before that table). ace.repair_rows says the same.
const appliedSQL = `(a.applied OR (a.action <> 'skip' AND EXISTS (SELECT 1 FROM ace.repair_commits c
	WHERE c.task_id = a.task_id AND c.attempt = a.attempt AND c.node = a.node)))`

// ReadRepairActions returns a repair's recorded actions, by node and key.
func ReadRepairActions(ctx context.Context, q Querier, taskID uuid.UUID) ([]repair.Action, error) {
	rows, err := q.Query(ctx, `SELECT node, action, pk, pk_sort, coalesce(source, ''), before, after, coalesce(reason, ''),
			`+appliedSQL+`, coalesce(rule, ''), key_range FROM ace.repair_actions a WHERE task_id = $1 ORDER BY node, pk_sort, row_no`, taskID)
	if err != nil {
		return nil, fmt.Errorf("read repair actions of task %s: %w", taskID, err)
	}
	actions, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (repair.Action, error) {
		var a repair.Action
		var pk, pkSort, before, after, keyRange []byte
		err := row.Scan(&a.Node, &a.Kind, &pk, &pkSort, &a.Source, &before, &after, &a.Reason, &a.Applied, &a.Rule, &keyRange)
		a.PK, a.PKSort, a.Before, a.After = pk, pkSort, before, after
		if err == nil && keyRange != nil {
			err = json.Unmarshal(keyRange, &a.Range)
		}
		return a, err
	})
	if err != nil {
		return nil, fmt.Errorf("read repair actions of task %s: %w", taskID, err)
	}
	return actions, nil
}

func nullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// nullJSON stores an absent row as SQL NULL.
func nullJSON(raw json.RawMessage) []byte {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	return raw
}
