package sqlapi

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/engine"
)

// ResetResults deletes what an earlier attempt of this task stored, so a re-run starts clean.
// A first attempt has nothing to delete: a hand-back deletes what its attempt stored as it
// re-queues the task and un-counts the attempt, in one transaction (HandBack), and a recovered
// task's next attempt counts on. (A child diff of a small table is mostly round trips like these.)
func (r *Run) ResetResults(ctx context.Context) error {
	r.resetTally()
	if r.Task.Attempts <= 1 {
		return nil
	}
	return r.fenced(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM ace.diff_results WHERE task_id = $1`, r.Task.ID); err != nil {
			return fmt.Errorf("clear earlier results of task %s: %w", r.Task.ID, err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM ace.schema_findings WHERE task_id = $1`, r.Task.ID); err != nil {
			return fmt.Errorf("clear earlier findings of task %s: %w", r.Task.ID, err)
		}
		return nil
	})
}

// WriteDiffRows stores differing rows with COPY. It implements engine.Sink, and is fenced by the
// claim like every other write of the run. Each call is one transaction on a connection of its
// own: cut short, it stores nothing and breaks no other connection.
func (r *Run) WriteDiffRows(ctx context.Context, rows []engine.DiffRow) error {
	if len(rows) == 0 {
		return nil
	}
	data, err := r.diffRowData(rows)
	if err != nil {
		return err
	}
	err = r.fenced(ctx, func(tx pgx.Tx) error {
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"ace", "diff_results"},
			[]string{"task_id", "row_no", "pk", "pk_sort", "kind", "rows", "versions", "meta", "key_range"}, pgx.CopyFromRows(data))
		if err != nil {
			return fmt.Errorf("store %d differing rows of task %s: %w", len(rows), r.Task.ID, err)
		}
		return nil
	})
	if err == nil {
		r.tallyRows(rows)
	}
	return err
}

// diffRowData encodes differing rows as ace.diff_results rows, numbered after the last ones.
func (r *Run) diffRowData(rows []engine.DiffRow) ([][]any, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	data := make([][]any, len(rows))
	for i, row := range rows {
		rowsJSON, err := json.Marshal(row.Rows)
		if err != nil {
			return nil, fmt.Errorf("encode differing row: %w", err)
		}
		var meta []byte
		if row.Meta != nil {
			if meta, err = json.Marshal(row.Meta); err != nil {
				return nil, fmt.Errorf("encode row metadata: %w", err)
			}
		}
		versions, err := json.Marshal(row.Versions)
		if err != nil {
			return nil, fmt.Errorf("encode row versions: %w", err)
		}
		kind, keyRange, err := storedKind(row)
		if err != nil {
			return nil, err
		}
		r.rowNo++
		data[i] = []any{r.Task.ID, r.rowNo, []byte(row.PK), []byte(row.PKSort), kind, rowsJSON, versions, meta, keyRange}
	}
	return data, nil
}

// storedKind is how a differing row is stored: a range row (engine.KindMissingRange) is a
// 'missing' row with its key_range; any other row has none.
func storedKind(row engine.DiffRow) (string, []byte, error) {
	if row.Range == nil {
		return row.Kind, nil, nil
	}
	raw, err := json.Marshal(row.Range)
	if err != nil {
		return "", nil, fmt.Errorf("encode a differing key range: %w", err)
	}
	return engine.KindMissing, raw, nil
}

// ReadDiffRows calls fn for each differing row of a diff task, ordered by primary key. A key
// range stored whole (engine.KindMissingRange: a node resync's diff) is an error naming the fix:
// its rows are on the nodes, not in the diff, and a reader of rows would miss them.
func ReadDiffRows(ctx context.Context, q Querier, taskID uuid.UUID, fn func(engine.DiffRow) error) error {
	return readDiffRows(ctx, q, taskID, "pk_sort, row_no", func(d engine.DiffRow) error {
		if d.Range != nil {
			return &KeyRangeError{Task: taskID, Range: d.Range}
		}
		return fn(d)
	})
}

// ReadDiffRowsAndRanges is ReadDiffRows for a reader that takes key ranges (DiffRow.Range) too.
func ReadDiffRowsAndRanges(ctx context.Context, q Querier, taskID uuid.UUID, fn func(engine.DiffRow) error) error {
	return readDiffRows(ctx, q, taskID, "pk_sort, row_no", fn)
}

// KeyRangeError is a key range met by a reader that needs every differing row.
type KeyRangeError struct {
	Task  uuid.UUID
	Range *engine.KeyRange
}

func (e *KeyRangeError) Error() string {
	return fmt.Sprintf("diff task %s stored the %d keys of range %s, held by %s and missing on %s, as one key range (a node resync's diff stores "+
		"such ranges whole, to copy them whole), so their rows are on the nodes, not in the diff: diff the table again with ace.table_diff "+
		"(or ace.table_rerun, which rechecks the range row by row) and read that diff", e.Task, e.Range.Rows, e.Range.Range(),
		strings.Join(e.Range.Holders, ", "), strings.Join(e.Range.Empty, ", "))
}

// ReadDiffRowsAsStored calls fn for each differing row of a diff task in the order the diff
// stored them, which needs no sort (sorting a million keys as jsonb takes seconds): for a
// repair, where the order only decides which batch a key falls in.
func ReadDiffRowsAsStored(ctx context.Context, q Querier, taskID uuid.UUID, fn func(engine.DiffRow) error) error {
	return readDiffRows(ctx, q, taskID, "row_no", fn)
}

func readDiffRows(ctx context.Context, q Querier, taskID uuid.UUID, order string, fn func(engine.DiffRow) error) error {
	rows, err := q.Query(ctx, `SELECT pk, pk_sort, kind, rows, versions, meta, key_range FROM ace.diff_results
		WHERE task_id = $1 ORDER BY `+order, taskID)
	if err != nil {
		return fmt.Errorf("read differing rows of task %s: %w", taskID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var d engine.DiffRow
		var pk, pkSort, rowsJSON, versions, meta, keyRange []byte
		if err := rows.Scan(&pk, &pkSort, &d.Kind, &rowsJSON, &versions, &meta, &keyRange); err != nil {
			return fmt.Errorf("read differing rows of task %s: %w", taskID, err)
		}
		d.PK, d.PKSort = pk, pkSort
		if err := decodeDiffRow(&d, rowsJSON, versions, meta, keyRange); err != nil {
			return fmt.Errorf("decode a differing row of task %s: %w", taskID, err)
		}
		if err := fn(d); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read differing rows of task %s: %w", taskID, err)
	}
	return nil
}
