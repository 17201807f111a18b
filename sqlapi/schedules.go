package sqlapi

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Schedule is a row of ace.schedules, as its owner (or the schema's owner) sees it.
type Schedule struct {
	Owner     string          `json:"owner"`
	Name      string          `json:"schedule_name"`
	TaskType  string          `json:"task_type"`
	Args      json.RawMessage `json:"args"`
	Every     *string         `json:"every"` // an interval, as PostgreSQL writes it
	Cron      *string         `json:"cron"`
	Scope     string          `json:"scope"`
	Overlap   string          `json:"overlap"`
	Enabled   bool            `json:"enabled"`
	NextDue   time.Time       `json:"next_due"`
	LastFired *time.Time      `json:"last_fired"`
	LastTask  *uuid.UUID      `json:"last_task"`
	Runs      int64           `json:"runs"`
	Skipped   int64           `json:"skipped"`
	Failures  int64           `json:"failures"`
	LastError *string         `json:"last_error"`
}

// ScheduleSpec is what ace.schedule takes: the JSON names are its argument names, and the REST
// fields of POST /api/v1/schedules.
type ScheduleSpec struct {
	Name     string          `json:"schedule_name"`
	TaskType string          `json:"task_type"`
	Args     json.RawMessage `json:"args"`
	Every    string          `json:"every,omitempty"` // an interval: '1 hour', '90 seconds'
	Cron     string          `json:"cron,omitempty"`
	RunNow   *bool           `json:"run_now,omitempty"`
	Scope    string          `json:"scope,omitempty"`
	Overlap  string          `json:"overlap,omitempty"`
	Enabled  *bool           `json:"enabled,omitempty"`
}

// AddSchedule makes (or redefines) the session's role's schedule with ace.schedule, which
// validates it as that role, and returns when it is first due.
func AddSchedule(ctx context.Context, q Querier, s ScheduleSpec) (time.Time, error) {
	args := s.Args
	if len(args) == 0 {
		args = json.RawMessage("{}")
	}
	var due time.Time
	err := q.QueryRow(ctx, `SELECT ace.schedule($1, $2, $3::jsonb, every => nullif($4, '')::interval, cron => nullif($5, ''),
		run_now => coalesce($6, true), scope => coalesce(nullif($7, ''), 'node'), overlap => coalesce(nullif($8, ''), 'skip'),
		enabled => coalesce($9, true))`,
		s.Name, s.TaskType, string(args), s.Every, s.Cron, s.RunNow, s.Scope, s.Overlap, s.Enabled).Scan(&due)
	if err != nil {
		return time.Time{}, fmt.Errorf("schedule %s: %w", s.Name, err)
	}
	return due, nil
}

const scheduleColumns = `owner, schedule_name, task_type, args, every::text, cron, scope, overlap, enabled, next_due,
	last_fired, last_task, runs, skipped, failures, last_error`

func scanSchedule(row pgx.Row) (Schedule, error) {
	var s Schedule
	err := row.Scan(&s.Owner, &s.Name, &s.TaskType, &s.Args, &s.Every, &s.Cron, &s.Scope, &s.Overlap, &s.Enabled, &s.NextDue,
		&s.LastFired, &s.LastTask, &s.Runs, &s.Skipped, &s.Failures, &s.LastError)
	return s, err
}

// Schedules lists the schedules the session may see (its role's own), by owner and name.
func Schedules(ctx context.Context, q Querier) ([]Schedule, error) {
	rows, err := q.Query(ctx, `SELECT `+scheduleColumns+` FROM ace.schedules ORDER BY owner, schedule_name`)
	if err != nil {
		return nil, fmt.Errorf("read ace.schedules: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Schedule, error) { return scanSchedule(r) })
	if err != nil {
		return nil, fmt.Errorf("read ace.schedules: %w", err)
	}
	return out, nil
}

// ScheduleChange is what ChangeSchedule does to one of the session's role's schedules.
type ScheduleChange string

// The changes an owner makes to a schedule.
const (
	RemoveSchedule ScheduleChange = "remove"
	PauseSchedule  ScheduleChange = "pause"
	ResumeSchedule ScheduleChange = "resume"
)

// ChangeSchedule removes, pauses or resumes the session's role's schedule (ace.unschedule,
// ace.pause_schedule, ace.resume_schedule).
func ChangeSchedule(ctx context.Context, q Querier, name string, change ScheduleChange) error {
	sql := map[ScheduleChange]string{
		RemoveSchedule: `SELECT ace.unschedule($1)`,
		PauseSchedule:  `SELECT 1 FROM ace.pause_schedule($1)`,
		ResumeSchedule: `SELECT 1 FROM ace.resume_schedule($1)`,
	}[change]
	if sql == "" {
		return fmt.Errorf("unknown change %q of a schedule", change)
	}
	if _, err := q.Exec(ctx, sql, name); err != nil {
		return fmt.Errorf("%s schedule %s: %w", change, name, err)
	}
	return nil
}

// RunSchedule starts a run of the session's role's schedule now (ace.run_schedule).
func RunSchedule(ctx context.Context, q Querier, name string) (uuid.UUID, error) {
	var id uuid.UUID
	if err := q.QueryRow(ctx, `SELECT ace.run_schedule($1)`, name).Scan(&id); err != nil {
		return uuid.Nil, fmt.Errorf("run schedule %s: %w", name, err)
	}
	return id, nil
}

// DueSchedule is a schedule whose due time has come.
type DueSchedule struct {
	Owner string
	Name  string
	Due   time.Time
}

// DueSchedules lists up to limit schedules due now, oldest due first: read by the agent, which
// owns the schema and so sees every role's.
func DueSchedules(ctx context.Context, q Querier, limit int) ([]DueSchedule, error) {
	rows, err := q.Query(ctx, `SELECT owner, schedule_name, next_due FROM ace.due_schedules($1)`, limit)
	if err != nil {
		return nil, fmt.Errorf("read the due schedules: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (DueSchedule, error) {
		var d DueSchedule
		return d, r.Scan(&d.Owner, &d.Name, &d.Due)
	})
	if err != nil {
		return nil, fmt.Errorf("read the due schedules: %w", err)
	}
	return out, nil
}

// Outcomes of firing a schedule's due time (ace.fire_schedule).
const (
	FireFired     = "fired"      // the run was inserted: TaskID
	FireSkipped   = "skipped"    // overlap skip, and TaskID is still queued or running
	FireFailed    = "failed"     // the run's insert was refused: Error
	FireNotLeader = "not_leader" // a cluster schedule, and this node is not the leader
	FireGone      = "gone"       // another agent fired it first, or the schedule changed
)

// Firing is what firing one due time did.
type Firing struct {
	Outcome string
	TaskID  *uuid.UUID
	Error   *string
}

// FireSchedule fires the due time of a schedule with ace.fire_schedule, in one transaction on
// q, which must be logged in as the schedule's owner: the due time's compare-and-set and the
// run's insert commit together, so the due time fires once whoever else tries.
func FireSchedule(ctx context.Context, q Querier, name string, due time.Time, node string) (Firing, error) {
	var f Firing
	err := q.QueryRow(ctx, `SELECT outcome, task_id, error FROM ace.fire_schedule($1, $2, $3)`, name, due, node).
		Scan(&f.Outcome, &f.TaskID, &f.Error)
	if err != nil {
		return Firing{}, fmt.Errorf("fire schedule %s due at %s: %w", name, due.Format(time.RFC3339), err)
	}
	return f, nil
}
