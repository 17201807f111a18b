package sqlapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/engine"
)

// Querier is a *pgx.Conn, a pool or a transaction (defined once, in engine).
type Querier = engine.Querier

// Submit queues a task. The same checks run as for ace.table_diff(...): they live in the
// insert trigger, so an invalid task is refused here with the trigger's message.
func Submit(ctx context.Context, q Querier, typ TaskType, args any) (uuid.UUID, error) {
	raw, err := json.Marshal(args)
	if err != nil {
		return uuid.Nil, fmt.Errorf("encode %s arguments: %w", typ, err)
	}
	var id uuid.UUID
	if err := q.QueryRow(ctx, `INSERT INTO ace.tasks (task_type, args) VALUES ($1, $2) RETURNING task_id`, typ, raw).Scan(&id); err != nil {
		return uuid.Nil, fmt.Errorf("submit %s: %w", typ, err)
	}
	return id, nil
}

// ErrNoTask means no visible task has the given id.
var ErrNoTask = errors.New("no such task")

// GetTask reads one task.
func GetTask(ctx context.Context, q Querier, id uuid.UUID) (Task, error) {
	t, err := scanTask(q.QueryRow(ctx, `SELECT `+taskColumns+` FROM ace.tasks WHERE task_id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return t, fmt.Errorf("task %s: %w", id, ErrNoTask)
	}
	if err != nil {
		return t, fmt.Errorf("read task %s: %w", id, err)
	}
	return t, nil
}

// TaskChannel is the NOTIFY channel of one task's status changes and progress, as
// ace.task_channel(task_id) names it. Only who knows the task's id can name it.
func TaskChannel(id uuid.UUID) string {
	return "ace_task_" + strings.ReplaceAll(id.String(), "-", "")
}

// Wait blocks until the task is terminal and returns it. It listens on the task's channel and
// re-reads the row at least every pollEvery, since NOTIFY is only a wake-up. onChange, if set,
// sees every new version of the row it reads.
func Wait(ctx context.Context, conn *pgx.Conn, id uuid.UUID, pollEvery time.Duration, onChange func(Task)) (Task, error) {
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{TaskChannel(id)}.Sanitize()); err != nil {
		return Task{}, fmt.Errorf("listen on the channel of task %s: %w", id, err)
	}
	defer func() {
		unlistenCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_, _ = conn.Exec(unlistenCtx, "UNLISTEN *")
	}()
	var last json.RawMessage
	var lastStatus Status
	for {
		t, err := GetTask(ctx, conn, id)
		if err != nil {
			return t, err
		}
		if onChange != nil && (string(t.Progress) != string(last) || t.Status != lastStatus) {
			onChange(t)
			last, lastStatus = t.Progress, t.Status
		}
		if t.Status.Terminal() {
			return t, nil
		}
		waitCtx, cancel := context.WithTimeout(ctx, pollEvery)
		_, err = conn.WaitForNotification(waitCtx)
		cancel()
		if err != nil && ctx.Err() != nil {
			return t, ctx.Err()
		}
	}
}

// RegisteredNode is one row of ace.nodes.
type RegisteredNode struct {
	Name     string `json:"node_name"`
	ConnInfo string `json:"conninfo"`
	Cluster  string `json:"cluster_name"`
	// State is active (a default node of every task), joining (taking part only when named) or
	// down (refused when named), with the reason given and when it changed.
	State          NodeState `json:"state"`
	StateReason    *string   `json:"state_reason"`
	StateChangedAt time.Time `json:"state_changed_at"`
}

// Nodes lists the registered nodes by name.
func Nodes(ctx context.Context, q Querier) ([]RegisteredNode, error) {
	rows, err := q.Query(ctx, `SELECT `+nodeColumns+` FROM ace.nodes n ORDER BY node_name`)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return pgx.CollectRows(rows, scanNode)
}

// nodeColumns are the columns of ace.nodes (alias n) that scanNode reads.
const nodeColumns = `n.node_name, n.conninfo, n.cluster_name, n.state, n.state_reason, n.state_changed_at`

func scanNode(r pgx.CollectableRow) (RegisteredNode, error) {
	var n RegisteredNode
	err := r.Scan(&n.Name, &n.ConnInfo, &n.Cluster, &n.State, &n.StateReason, &n.StateChangedAt)
	return n, err
}

// AddNode registers or updates a node on the node q is connected to. A new node starts in
// n.State (active when empty); a registered one keeps its state.
func AddNode(ctx context.Context, q Querier, n RegisteredNode) error {
	if n.Cluster == "" {
		n.Cluster = "default"
	}
	if n.State == "" {
		n.State = NodeActive
	}
	if _, err := q.Exec(ctx, `SELECT ace.add_node($1, $2, $3, $4)`, n.Name, n.ConnInfo, n.Cluster, n.State); err != nil {
		return fmt.Errorf("add node %s: %w", n.Name, err)
	}
	return nil
}

// RemoveNode unregisters a node on the node q is connected to (ace.remove_node); it reports
// whether the node was registered.
func RemoveNode(ctx context.Context, q Querier, name string) (bool, error) {
	var removed bool
	if err := q.QueryRow(ctx, `SELECT ace.remove_node($1)`, name).Scan(&removed); err != nil {
		return false, fmt.Errorf("remove node %s: %w", name, err)
	}
	return removed, nil
}

// Cancel asks for a task to be cancelled (ace.cancel): at once if it is queued, at its next step
// if it is running. It returns ace.cancel's word on what happened.
func Cancel(ctx context.Context, q Querier, id uuid.UUID) (string, error) {
	var outcome string
	if err := q.QueryRow(ctx, `SELECT ace.cancel($1)`, id).Scan(&outcome); err != nil {
		return "", fmt.Errorf("cancel task %s: %w", id, err)
	}
	return outcome, nil
}

// DeleteExpiredTasks deletes up to batch finished tasks older than task_retention
// (ace.delete_expired_tasks) and returns how many it deleted.
func DeleteExpiredTasks(ctx context.Context, q Querier, batch int) (int, error) {
	var n int
	if err := q.QueryRow(ctx, `SELECT ace.delete_expired_tasks($1)`, batch).Scan(&n); err != nil {
		return 0, fmt.Errorf("delete finished tasks older than task_retention: %w", err)
	}
	return n, nil
}
