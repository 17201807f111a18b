package sqlapi

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// NodeState is a registered node's state in ace.nodes.
type NodeState string

// The node states: what part a node takes in tasks.
const (
	NodeActive  NodeState = "active"  // a default node of every task
	NodeJoining NodeState = "joining" // takes part only when named
	NodeDown    NodeState = "down"    // left out by default, refused when named
)

// PromoteNode makes a joining node active (ace.promote_node) and returns its row.
func PromoteNode(ctx context.Context, q Querier, name string) (RegisteredNode, error) {
	return changeNodeState(ctx, q, "promote node "+name, `SELECT `+nodeColumns+` FROM ace.promote_node($1) n`, name)
}

// MarkNodeDown marks a node down with a reason (ace.mark_node_down; "" gives none).
func MarkNodeDown(ctx context.Context, q Querier, name, reason string) (RegisteredNode, error) {
	return changeNodeState(ctx, q, "mark node "+name+" down", `SELECT `+nodeColumns+` FROM ace.mark_node_down($1, nullif($2, '')) n`, name, reason)
}

// MarkNodeUp makes a down node active again (ace.mark_node_up).
func MarkNodeUp(ctx context.Context, q Querier, name string) (RegisteredNode, error) {
	return changeNodeState(ctx, q, "mark node "+name+" up", `SELECT `+nodeColumns+` FROM ace.mark_node_up($1) n`, name)
}

func changeNodeState(ctx context.Context, q Querier, what, sql string, args ...any) (RegisteredNode, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return RegisteredNode{}, fmt.Errorf("%s: %w", what, err)
	}
	n, err := pgx.CollectExactlyOneRow(rows, scanNode)
	if err != nil {
		return RegisteredNode{}, fmt.Errorf("%s: %w", what, err)
	}
	return n, nil
}

// NodeStatus is one row of ace.cluster_status(): a node as this node's agent last saw it.
type NodeStatus struct {
	Node                    string     `json:"node_name"`
	State                   NodeState  `json:"state"`
	Reachable               bool       `json:"reachable"`
	AgentAlive              bool       `json:"agent_alive"`
	HeartbeatAgeSeconds     *float64   `json:"heartbeat_age_seconds"`
	Version                 *string    `json:"version"`
	SchemaVersion           *int32     `json:"schema_version"`
	IsLeader                bool       `json:"is_leader"`
	TrackCommitTimestamp    *bool      `json:"track_commit_timestamp"`
	WalLevel                *string    `json:"wal_level"`
	MaxPreparedTransactions *int32     `json:"max_prepared_transactions"`
	SubscriptionsEnabled    *int32     `json:"subscriptions_enabled"`
	SubscriptionsTotal      *int32     `json:"subscriptions_total"`
	MaxSlotLagBytes         *int64     `json:"max_slot_lag_bytes"`
	SameConfig              *bool      `json:"same_config"`
	Warning                 *string    `json:"warning"`
	ReportedAt              *time.Time `json:"reported_at"`
}

// ClusterStatus reads ace.cluster_status().
func ClusterStatus(ctx context.Context, q Querier) ([]NodeStatus, error) {
	rows, err := q.Query(ctx, `SELECT node_name, state, reachable, agent_alive, extract(epoch FROM heartbeat_age)::float8,
		version, schema_version, coalesce(is_leader, false), track_commit_timestamp, wal_level, max_prepared_transactions,
		subscriptions_enabled, subscriptions_total, max_slot_lag_bytes, same_config, warning, reported_at
		FROM ace.cluster_status()`)
	if err != nil {
		return nil, fmt.Errorf("read the cluster's status: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (NodeStatus, error) {
		var s NodeStatus
		err := r.Scan(&s.Node, &s.State, &s.Reachable, &s.AgentAlive, &s.HeartbeatAgeSeconds, &s.Version, &s.SchemaVersion,
			&s.IsLeader, &s.TrackCommitTimestamp, &s.WalLevel, &s.MaxPreparedTransactions, &s.SubscriptionsEnabled,
			&s.SubscriptionsTotal, &s.MaxSlotLagBytes, &s.SameConfig, &s.Warning, &s.ReportedAt)
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("read the cluster's status: %w", err)
	}
	return out, nil
}

// Health is ace.cluster_health(): healthy, degraded (a quorum of the nodes that are not joining
// is live) or unavailable, as this node sees the cluster.
type Health struct {
	Health       string   `json:"health"`
	InQuorum     bool     `json:"in_quorum"`
	ActiveNodes  int32    `json:"active_nodes"`
	LiveNodes    int32    `json:"live_nodes"`
	MissingNodes []string `json:"missing_nodes"`
	Leader       *string  `json:"leader"`
	Ready        bool     `json:"ready"`
}

// The values of Health.Health.
const (
	Healthy     = "healthy"
	Degraded    = "degraded"
	Unavailable = "unavailable"
)

// Serving reports whether the cluster can serve: healthy, or degraded with a quorum.
func (h Health) Serving() bool {
	return h.Health == Healthy || (h.Health == Degraded && h.InQuorum)
}

// ClusterHealth reads ace.cluster_health().
func ClusterHealth(ctx context.Context, q Querier) (Health, error) {
	var h Health
	err := q.QueryRow(ctx, `SELECT health, in_quorum, active_nodes, live_nodes, missing_nodes, leader, ready FROM ace.cluster_health()`).
		Scan(&h.Health, &h.InQuorum, &h.ActiveNodes, &h.LiveNodes, &h.MissingNodes, &h.Leader, &h.Ready)
	if err != nil {
		return h, fmt.Errorf("read the cluster's health: %w", err)
	}
	return h, nil
}

// ConfigDifference is one row of ace.cluster_config_diff(): an item of ace.nodes or ace.settings
// whose value on a node (actual) is not this node's (expected).
type ConfigDifference struct {
	Node     string          `json:"node_name"`
	Item     string          `json:"item"`
	Expected json.RawMessage `json:"expected"`
	Actual   json.RawMessage `json:"actual"`
}

// ClusterConfigDiff reads ace.cluster_config_diff().
func ClusterConfigDiff(ctx context.Context, q Querier) ([]ConfigDifference, error) {
	rows, err := q.Query(ctx, `SELECT node_name, item, coalesce(expected, 'null'), coalesce(actual, 'null') FROM ace.cluster_config_diff()`)
	if err != nil {
		return nil, fmt.Errorf("compare the nodes' configurations: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ConfigDifference, error) {
		var d ConfigDifference
		var expected, actual []byte
		err := r.Scan(&d.Node, &d.Item, &expected, &actual)
		d.Expected, d.Actual = expected, actual
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("compare the nodes' configurations: %w", err)
	}
	return out, nil
}

// Leadership is who leads the cluster as this node sees it, and whether it is this node.
type Leadership struct {
	Leader   *string `json:"leader"`
	Pinned   *string `json:"pinned"`
	IsLeader bool    `json:"is_leader"`
}

// Leader reads ace.leader(), ace.is_leader() and the pin.
func Leader(ctx context.Context, q Querier) (Leadership, error) {
	var l Leadership
	err := q.QueryRow(ctx, `SELECT ace.leader(), (SELECT node_name FROM ace.leader_pin), ace.is_leader()`).Scan(&l.Leader, &l.Pinned, &l.IsLeader)
	if err != nil {
		return l, fmt.Errorf("read the leader: %w", err)
	}
	return l, nil
}

// SetLeader pins the leader to a node, or unpins it when node is "" (ace.set_leader: the
// schema owner's only). It returns the leader that follows.
func SetLeader(ctx context.Context, q Querier, node string) (*string, error) {
	var leader *string
	var arg *string
	if node != "" {
		arg = &node
	}
	if err := q.QueryRow(ctx, `SELECT ace.set_leader($1)`, arg).Scan(&leader); err != nil {
		return nil, fmt.Errorf("pin the leader: %w", err)
	}
	return leader, nil
}

// DeleteExpiredEvents deletes up to batch events older than the event_retention setting and
// returns how many it deleted.
func DeleteExpiredEvents(ctx context.Context, q Querier, batch int) (int, error) {
	tag, err := q.Exec(ctx, `DELETE FROM ace.events WHERE event_id IN (
		SELECT e.event_id FROM ace.events e
		WHERE e.at < now() - (SELECT s.value::interval FROM ace.settings s WHERE s.name = 'event_retention')
		ORDER BY e.event_id LIMIT $1 FOR UPDATE SKIP LOCKED)`, batch)
	if err != nil {
		return 0, fmt.Errorf("delete events older than event_retention: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// ClusterMap is the cluster as this node sees it: the registered nodes with their states,
// which are live, and the leader.
type ClusterMap struct {
	Nodes  []MapNode `json:"nodes"`
	Leader *string   `json:"leader"`
}

// MapNode is a registered node on the map.
type MapNode struct {
	RegisteredNode
	Live   bool `json:"live"`
	Leader bool `json:"leader"`
}

// ReadClusterMap reads ace.nodes with each node's liveness (ace.node_live) and the leader.
func ReadClusterMap(ctx context.Context, q Querier) (ClusterMap, error) {
	m := ClusterMap{Nodes: []MapNode{}}
	if err := q.QueryRow(ctx, `SELECT ace.leader()`).Scan(&m.Leader); err != nil {
		return m, fmt.Errorf("read the cluster's map: %w", err)
	}
	rows, err := q.Query(ctx, `SELECT `+nodeColumns+`, ace.node_live(s)
		FROM ace.nodes n LEFT JOIN ace.node_status s ON s.node_name = n.node_name ORDER BY n.node_name COLLATE "C"`)
	if err != nil {
		return m, fmt.Errorf("read the cluster's map: %w", err)
	}
	m.Nodes, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (MapNode, error) {
		var n MapNode
		var live *bool
		err := r.Scan(&n.Name, &n.ConnInfo, &n.Cluster, &n.State, &n.StateReason, &n.StateChangedAt, &live)
		n.Live = live != nil && *live
		n.Leader = m.Leader != nil && *m.Leader == n.Name
		return n, err
	})
	if err != nil {
		return m, fmt.Errorf("read the cluster's map: %w", err)
	}
	return m, nil
}
