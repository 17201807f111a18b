package sqlapi

import (
	"encoding/json"
	"time"

	"github.com/google/uuid"
)

// TaskType names a kind of work; it is the value of ace.tasks.task_type.
type TaskType string

// Status is a task's place in its life cycle.
type Status string

// The statuses of ace.tasks.status.
const (
	StatusQueued    Status = "QUEUED"
	StatusRunning   Status = "RUNNING"
	StatusCompleted Status = "COMPLETED"
	StatusFailed    Status = "FAILED"
	StatusCancelled Status = "CANCELLED"
)

// Terminal reports whether a task in this status will change no more.
func (s Status) Terminal() bool {
	return s == StatusCompleted || s == StatusFailed || s == StatusCancelled
}

// Task is one row of ace.tasks.
type Task struct {
	ID              uuid.UUID       `json:"task_id"`
	Type            TaskType        `json:"task_type"`
	Status          Status          `json:"status"`
	Args            json.RawMessage `json:"args"`
	SubmittedBy     string          `json:"submitted_by"`
	SubmittedAt     time.Time       `json:"submitted_at"`
	StartedAt       *time.Time      `json:"started_at,omitempty"`
	FinishedAt      *time.Time      `json:"finished_at,omitempty"`
	ClaimedBy       *string         `json:"claimed_by,omitempty"`
	Attempts        int             `json:"attempts"`
	MaxAttempts     int             `json:"max_attempts"`
	CancelRequested bool            `json:"cancel_requested"`
	Progress        json.RawMessage `json:"progress,omitempty"`
	Result          json.RawMessage `json:"result,omitempty"`
	Error           *string         `json:"error,omitempty"`
}

// taskColumns lists ace.tasks' columns in the order scanTask reads them.
const taskColumns = `task_id, task_type, status, args, submitted_by, submitted_at, started_at, finished_at,
	claimed_by, attempts, max_attempts, cancel_requested, progress, result, error`

type rowScanner interface{ Scan(dest ...any) error }

// scanTask reads taskColumns, then any extra columns that follow them into extra.
func scanTask(row rowScanner, extra ...any) (Task, error) {
	var t Task
	dest := []any{&t.ID, &t.Type, &t.Status, &t.Args, &t.SubmittedBy, &t.SubmittedAt, &t.StartedAt, &t.FinishedAt,
		&t.ClaimedBy, &t.Attempts, &t.MaxAttempts, &t.CancelRequested, &t.Progress, &t.Result, &t.Error}
	err := row.Scan(append(dest, extra...)...)
	return t, err
}
