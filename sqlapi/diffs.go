package sqlapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/ace-agent/ace-agent/engine"
)

// ErrNotCompletedDiff means a task exists but is not a diff (table-diff or mtree-diff) that
// completed, so it has no diff to export.
var ErrNotCompletedDiff = errors.New("not a completed table-diff or mtree-diff")

// CompletedDiff reads a diff task (table-diff or mtree-diff: their results are the same) that completed, and its summary: what every export of a
// diff (the CLI's, the HTTP shim's) starts from. An unknown task is ErrNoTask, any other task
// ErrNotCompletedDiff.
func CompletedDiff(ctx context.Context, q Querier, id uuid.UUID) (Task, *engine.DiffSummary, error) {
	task, err := GetTask(ctx, q, id)
	if err != nil {
		return task, nil, err
	}
	if !task.Type.Exported() {
		return task, nil, fmt.Errorf("task %s is a %s task, not a diff: %w", id, task.Type, ErrNotCompletedDiff)
	}
	if task.Status != StatusCompleted {
		return task, nil, fmt.Errorf("task %s is %s, not COMPLETED: %w", id, task.Status, ErrNotCompletedDiff)
	}
	var s engine.DiffSummary
	if err := json.Unmarshal(task.Result, &s); err != nil {
		return task, nil, fmt.Errorf("decode the result of task %s: %w", id, err)
	}
	if len(s.Columns) == 0 || len(s.Columns) != len(s.ColumnTypes) {
		return task, nil, fmt.Errorf("the result of task %s does not list the table's columns", id)
	}
	return task, &s, nil
}
