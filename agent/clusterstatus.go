package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/sourcegraph/conc/pool"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// clusterStatusCollector asks, every HeartbeatInterval, every registered node (this one
// included, all at once) what it says about itself (ace.local_status, on the agent's own login)
// and writes one row per node into this node's ace.node_status, which ace.cluster_status,
// ace.cluster_health and the leader read. In the same transaction it records the transitions it
// sees, once each: a node's agent lost, a node's configuration drifting from this node's, the
// leader changing. A node that cannot be reached keeps its last reading, marked unreachable.
type clusterStatusCollector struct {
	startStop
	a     *Agent
	peers *peerSessions // the loop's own
}

func (c *clusterStatusCollector) Name() string { return "cluster status collector" }

func (c *clusterStatusCollector) Start(ctx context.Context) error { return c.start(ctx, c.run) }

func (c *clusterStatusCollector) run(ctx context.Context) {
	c.peers = newPeerSessions(c.a)
	defer c.peers.retain(nil)
	every(ctx, c.a.cfg.HeartbeatInterval, true, c.collect)
}

// nodeReading is what one node said about itself (ace.local_status as JSON), or why it could
// not be asked.
type nodeReading struct {
	node   string
	status json.RawMessage
	err    error
}

// readingFacts are the parts of a reading the collector decides on.
type readingFacts struct {
	AgentAlive   bool   `json:"agent_alive"`
	ConfigDigest string `json:"config_digest"`
}

func (c *clusterStatusCollector) collect(ctx context.Context) {
	conninfo, err := c.a.nodeConnInfo(ctx)
	if err != nil {
		if ctx.Err() == nil {
			c.a.log.Warn("collecting the cluster's status failed", "err", err)
		}
		return
	}
	c.peers.retain(conninfo)
	names := slices.Sorted(maps.Keys(conninfo))
	readings := make([]nodeReading, len(names))
	p := pool.New()
	for i, name := range names {
		p.Go(func() { readings[i] = c.read(ctx, name, conninfo[name]) })
	}
	p.Wait()
	if err := c.store(ctx, readings); err != nil && ctx.Err() == nil {
		c.a.log.Warn("storing the cluster's status failed; the next heartbeat tries again", "err", err)
	}
}

// read asks one node for its status, within a bound, so that a node that does not answer
// delays the collection by that much only.
func (c *clusterStatusCollector) read(ctx context.Context, name, conninfo string) nodeReading {
	ctx, cancel := context.WithTimeout(ctx, max(2*c.a.cfg.HeartbeatInterval, 3*time.Second))
	defer cancel()
	var status json.RawMessage
	err := c.peers.ask(ctx, name, conninfo, func(n *engine.Node) (err error) {
		status, err = askStatus(ctx, n, name, c.a.cfg.StaleAfter)
		if err != nil {
			return fmt.Errorf("ask node %s for its status (is its ace schema up to date? run ace-agent install there): %w", name, err)
		}
		return nil
	})
	return nodeReading{node: name, status: status, err: err}
}

// askStatus reads ace.local_status on a node's session.
func askStatus(ctx context.Context, n *engine.Node, name string, staleAfter time.Duration) (json.RawMessage, error) {
	var status json.RawMessage
	err := n.Pool.QueryRow(ctx, `SELECT to_jsonb(s) FROM ace.local_status($1, make_interval(secs => $2)) s`,
		name, staleAfter.Seconds()).Scan(&status)
	return status, err
}

// previousReading is what ace.node_status held about a node before this collection.
type previousReading struct {
	live   bool
	digest *string
}

// store writes the readings and records the transitions, in one transaction that holds off the
// other collectors of this node (two agents on one node record each transition once).
func (c *clusterStatusCollector) store(ctx context.Context, readings []nodeReading) error {
	tx, err := c.a.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, `LOCK TABLE ace.node_status IN SHARE ROW EXCLUSIVE MODE`); err != nil {
		return err
	}
	prev, err := previousReadings(ctx, tx)
	if err != nil {
		return err
	}
	var localDigest string
	if err := tx.QueryRow(ctx, `SELECT ace.config_digest(ace.local_config())`).Scan(&localDigest); err != nil {
		return fmt.Errorf("digest this node's configuration: %w", err)
	}
	names := make([]string, 0, len(readings))
	for _, r := range readings {
		names = append(names, r.node)
		if err := c.write(ctx, tx, r); err != nil {
			return err
		}
		if err := c.recordTransitions(ctx, tx, r, prev, localDigest); err != nil {
			return err
		}
	}
	if _, err := tx.Exec(ctx, `DELETE FROM ace.node_status WHERE NOT (node_name = ANY ($1))`, names); err != nil {
		return fmt.Errorf("forget the status of removed nodes: %w", err)
	}
	if err := recordLeaderChange(ctx, tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

func previousReadings(ctx context.Context, tx pgx.Tx) (map[string]previousReading, error) {
	rows, err := tx.Query(ctx, `SELECT s.node_name, ace.node_live(s), s.config_digest FROM ace.node_status s`)
	if err != nil {
		return nil, fmt.Errorf("read the last status of the nodes: %w", err)
	}
	prev := map[string]previousReading{}
	var name string
	var p previousReading
	_, err = pgx.ForEachRow(rows, []any{&name, &p.live, &p.digest}, func() error {
		prev[name] = p
		p.digest = nil
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the last status of the nodes: %w", err)
	}
	return prev, nil
}

// write stores one node's reading, or marks the node unreachable, keeping its last reading.
func (c *clusterStatusCollector) write(ctx context.Context, tx pgx.Tx, r nodeReading) error {
	staleAfter := c.a.cfg.StaleAfter.Seconds()
	var err error
	if r.err != nil {
		_, err = tx.Exec(ctx, `INSERT INTO ace.node_status AS s (node_name, reachable, agent_alive, warning, reported_at, stale_at)
			VALUES ($1, false, false, $2, clock_timestamp(), clock_timestamp() + make_interval(secs => $3))
			ON CONFLICT (node_name) DO UPDATE SET reachable = false, agent_alive = false, warning = EXCLUDED.warning,
				reported_at = EXCLUDED.reported_at, stale_at = EXCLUDED.stale_at`,
			r.node, fmt.Sprintf("unreachable: %v", r.err), staleAfter)
	} else {
		_, err = tx.Exec(ctx, `INSERT INTO ace.node_status AS s (node_name, reachable, agent_alive, heartbeat_age, version,
				schema_version, track_commit_timestamp, wal_level, max_prepared_transactions, subscriptions_enabled,
				subscriptions_total, max_slot_lag_bytes, config_digest, config, warning, reported_at, stale_at)
			SELECT $1, true, r.agent_alive, r.heartbeat_age, r.version, r.schema_version, r.track_commit_timestamp, r.wal_level,
				r.max_prepared_transactions, r.subscriptions_enabled, r.subscriptions_total, r.max_slot_lag_bytes,
				r.config_digest, r.config, r.warning, clock_timestamp(), clock_timestamp() + make_interval(secs => $3)
			FROM jsonb_populate_record(NULL::ace.node_status, $2) r
			ON CONFLICT (node_name) DO UPDATE SET reachable = true, agent_alive = EXCLUDED.agent_alive,
				heartbeat_age = EXCLUDED.heartbeat_age, version = EXCLUDED.version, schema_version = EXCLUDED.schema_version,
				track_commit_timestamp = EXCLUDED.track_commit_timestamp, wal_level = EXCLUDED.wal_level,
				max_prepared_transactions = EXCLUDED.max_prepared_transactions, subscriptions_enabled = EXCLUDED.subscriptions_enabled,
				subscriptions_total = EXCLUDED.subscriptions_total, max_slot_lag_bytes = EXCLUDED.max_slot_lag_bytes,
				config_digest = EXCLUDED.config_digest, config = EXCLUDED.config, warning = EXCLUDED.warning,
				reported_at = EXCLUDED.reported_at, stale_at = EXCLUDED.stale_at`,
			r.node, r.status, staleAfter)
	}
	if err != nil {
		return fmt.Errorf("store the status of node %s: %w", r.node, err)
	}
	return nil
}

// recordTransitions records agent_lost when a node that was live is not any more, and
// config_drift when a node's configuration stops matching this node's (or differs at its first
// reading).
func (c *clusterStatusCollector) recordTransitions(ctx context.Context, tx pgx.Tx, r nodeReading, prev map[string]previousReading, localDigest string) error {
	var facts readingFacts
	if r.err == nil {
		if err := json.Unmarshal(r.status, &facts); err != nil {
			return fmt.Errorf("read the status of node %s: %w", r.node, err)
		}
	}
	before, seen := prev[r.node]
	if before.live && (r.err != nil || !facts.AgentAlive) {
		reason := "its agent is not alive (no fresh heartbeat from a live session)"
		if r.err != nil {
			reason = fmt.Sprintf("unreachable: %v", r.err)
		}
		if _, err := sqlapi.RecordEvent(ctx, tx, sqlapi.Event{Kind: "agent_lost", NodeName: r.node, Detail: map[string]any{"reason": reason}}); err != nil {
			return err
		}
	}
	if r.err != nil || r.node == c.a.cfg.Node || facts.ConfigDigest == localDigest {
		return nil
	}
	ownBefore := prev[c.a.cfg.Node].digest
	wasSame := seen && before.digest != nil && ownBefore != nil && *before.digest == *ownBefore
	if seen && before.digest != nil && !wasSame {
		return nil // drifted already, and recorded then
	}
	var items []string
	err := tx.QueryRow(ctx, `SELECT coalesce(array_agg(d.item), '{}') FROM ace.config_differences(ace.local_config(), $1::jsonb->'config') d`,
		r.status).Scan(&items)
	if err != nil {
		return fmt.Errorf("compare the configuration of node %s: %w", r.node, err)
	}
	_, err = sqlapi.RecordEvent(ctx, tx, sqlapi.Event{Kind: "config_drift", NodeName: r.node, Detail: map[string]any{"items": items}})
	return err
}

// recordLeaderChange records leader_changed when ace.leader() is not the leader the last
// leader_changed event named: a change by this collection, or by a node's state changing
// (ace.mark_node_down), recorded once.
func recordLeaderChange(ctx context.Context, tx pgx.Tx) error {
	var leader, last *string
	var recorded bool
	err := tx.QueryRow(ctx, `SELECT ace.leader(), e.detail->>'leader', e.event_id IS NOT NULL
		FROM (SELECT 1) one LEFT JOIN LATERAL (SELECT x.event_id, x.detail FROM ace.events x WHERE x.kind = 'leader_changed'
		                                       ORDER BY x.event_id DESC LIMIT 1) e ON true`).Scan(&leader, &last, &recorded)
	if err != nil {
		return fmt.Errorf("read the leader: %w", err)
	}
	if equalNames(leader, last) && (recorded || leader == nil) {
		return nil
	}
	e := sqlapi.Event{Kind: "leader_changed", Detail: map[string]any{"leader": leader, "previous": last}}
	if leader != nil {
		e.NodeName = *leader
	}
	_, err = sqlapi.RecordEvent(ctx, tx, e)
	return err
}

func equalNames(a, b *string) bool {
	return (a == nil && b == nil) || (a != nil && b != nil && *a == *b)
}
