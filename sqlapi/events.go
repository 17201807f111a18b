package sqlapi

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// EventChannel is the payload-free NOTIFY channel that ace.record_event wakes.
const EventChannel = "ace_event"

// Event is one row of ace.events: a fact about a node, a table or a task, never a row's values.
// Its JSON names are those of the columns.
type Event struct {
	ID        int64          `json:"event_id"`
	At        time.Time      `json:"at"`
	Kind      string         `json:"kind"`
	NodeName  string         `json:"node_name,omitempty"`
	TableName string         `json:"table_name,omitempty"`
	TaskID    *uuid.UUID     `json:"task_id,omitempty"`
	Actor     string         `json:"actor"`
	Detail    map[string]any `json:"detail"`
}

// RecordEvent appends an event through ace.record_event, on the given session: its login is the
// event's actor, and it must own the ace schema (the agent does).
func RecordEvent(ctx context.Context, q Querier, e Event) (int64, error) {
	detail, err := json.Marshal(e.Detail)
	if err != nil {
		return 0, fmt.Errorf("encode the detail of event %s: %w", e.Kind, err)
	}
	if e.Detail == nil {
		detail = []byte("{}")
	}
	var id int64
	err = q.QueryRow(ctx, `SELECT ace.record_event($1, nullif($2, ''), nullif($3, ''), $4, $5)`,
		e.Kind, e.NodeName, e.TableName, e.TaskID, detail).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("record event %s: %w", e.Kind, err)
	}
	return id, nil
}

// EventsSince reads the events after afterID that the session may see, oldest first, of the
// given kinds (all when empty).
func EventsSince(ctx context.Context, q Querier, afterID int64, kinds ...string) ([]Event, error) {
	var kindArg []string
	if len(kinds) > 0 {
		kindArg = kinds
	}
	rows, err := q.Query(ctx, `SELECT event_id, at, kind, coalesce(node_name, ''), coalesce(table_name, ''), task_id, actor, detail
		FROM ace.events_since($1, $2)`, afterID, kindArg)
	if err != nil {
		return nil, fmt.Errorf("read events after %d: %w", afterID, err)
	}
	events, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Event, error) {
		var e Event
		err := r.Scan(&e.ID, &e.At, &e.Kind, &e.NodeName, &e.TableName, &e.TaskID, &e.Actor, &e.Detail)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("read events after %d: %w", afterID, err)
	}
	return events, nil
}
