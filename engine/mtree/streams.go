package mtree

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/engine"
)

// The records of the change streams and of every node's tree status: what the agent's tree
// keeper and status collector write, on the agent's login. They decide when; the statements
// are here, so that this package is the one writer of the tree tables (ace.mtrees,
// ace.mtree_pending, ace.cdc_state, ace.mtree_node_status and the rest).

// txBeginner is a pool or a connection: what opens the transaction a record is written in.
type txBeginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// AdoptTrees moves the trees of the single stream of earlier releases onto their publication
// owners' streams (ace.mtree_adopt_trees).
func AdoptTrees(ctx context.Context, q engine.Querier) error {
	if _, err := q.Exec(ctx, `SELECT ace.mtree_adopt_trees()`); err != nil {
		return fmt.Errorf("move the trees of the single stream onto their owners' streams: %w", err)
	}
	return nil
}

// FailedTree is a tree failed because its publication changed since its build, with the error
// recorded on it.
type FailedTree struct {
	Table, Error string
}

// FailAlteredPublications fails the trees whose publication changed since their build
// (ace.mtree_publication_problem): such a tree may have missed changes.
func FailAlteredPublications(ctx context.Context, q engine.Querier) ([]FailedTree, error) {
	rows, err := q.Query(ctx, `UPDATE ace.mtrees m
		SET status = 'failed', error = format('%s since the tree was built, so it may have missed changes; build the tree again with ace.mtree_build(%L)', c.problem, m.table_name)
		FROM (SELECT x.tree_id, ace.mtree_publication_problem(x) AS problem FROM ace.mtrees x WHERE x.status IN ('building', 'ready')) c
		WHERE c.tree_id = m.tree_id AND c.problem IS NOT NULL
		RETURNING m.table_name, m.error`)
	if err != nil {
		return nil, fmt.Errorf("check the trees' publications: %w", err)
	}
	failed, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (FailedTree, error) {
		var f FailedTree
		return f, r.Scan(&f.Table, &f.Error)
	})
	if err != nil {
		return nil, fmt.Errorf("check the trees' publications: %w", err)
	}
	return failed, nil
}

// FailStreamTrees fails the trees that the stream of slot feeds, naming each publication, the
// cause, what else is wrong with the publication, and the owner whose publications the slot
// streams: the stream stopped for good.
func FailStreamTrees(ctx context.Context, q engine.Querier, slot, owner, cause string) error {
	_, err := q.Exec(ctx, `UPDATE ace.mtrees m SET status = 'failed',
			error = format('the change stream of publication %I (slot %s, which streams the publications of %s) stopped for good: %s%s; build the tree again with ace.mtree_build(%L)',
				m.publication, m.slot_name, $2::text, $3::text, coalesce('; ' || ace.mtree_publication_problem(m), ''), m.table_name)
		WHERE m.slot_name = $1 AND m.status IN ('building', 'ready')`, slot, owner, cause)
	return err
}

// RegisterStream records that agent agentID streams slot, and that it is alive now.
func RegisterStream(ctx context.Context, q engine.Querier, slot, agentID string) error {
	_, err := q.Exec(ctx, `INSERT INTO ace.cdc_state (slot_name, agent_id, heartbeat_at) VALUES ($1, $2, now())
		ON CONFLICT (slot_name) DO UPDATE SET agent_id = excluded.agent_id, heartbeat_at = now()`, slot, agentID)
	if err != nil {
		return fmt.Errorf("record the change stream: %w", err)
	}
	return nil
}

// StreamHeartbeat records that agent agentID streams slot and is connected now.
func StreamHeartbeat(ctx context.Context, q engine.Querier, slot, agentID string) error {
	_, err := q.Exec(ctx, `UPDATE ace.cdc_state SET heartbeat_at = now(), connected = true, agent_id = $2 WHERE slot_name = $1`,
		slot, agentID)
	return err
}

// RecordStreamError records that the stream of slot stopped with cause.
func RecordStreamError(ctx context.Context, q engine.Querier, slot, cause string) error {
	_, err := q.Exec(ctx, `UPDATE ace.cdc_state SET connected = false, last_error = $2, updated_at = now() WHERE slot_name = $1`,
		slot, cause)
	return err
}

// ForgetUnusedStreams deletes the state of the streams none of whose trees is left.
func ForgetUnusedStreams(ctx context.Context, q engine.Querier) error {
	_, err := q.Exec(ctx, `DELETE FROM ace.cdc_state s WHERE NOT EXISTS (SELECT 1 FROM ace.mtrees m WHERE m.slot_name = s.slot_name)`)
	if err != nil {
		return fmt.Errorf("forget the state of unused streams: %w", err)
	}
	return nil
}

// PendingKey is a key a streamed change touched in a tree's table: Key is a JSON array of the
// key columns' text, or nil when every key may be touched.
type PendingKey struct {
	TreeID    int64
	Key       []byte
	Xid       int64
	CommitLSN string
}

// StreamBatch is what one batch of a stream delivered: the changed keys, the position the
// stream has passed (UpTo) and the publications it streamed.
type StreamBatch struct {
	Slot, AgentID string
	Keys          []PendingKey
	UpTo          string
	Publications  []string
}

// RecordStreamBatch records a batch in one transaction: its keys as pending for their trees,
// the stream's position, and, for the trees the stream now covers that had no position yet,
// where their tracking starts.
func RecordStreamBatch(ctx context.Context, db txBeginner, b StreamBatch) error {
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if err := recordPending(ctx, tx, b.Keys); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE ace.cdc_state SET confirmed_lsn = $2::pg_lsn, heartbeat_at = now(), connected = true,
			publications = $3, last_error = NULL, updated_at = now(), agent_id = $4 WHERE slot_name = $1`, b.Slot, b.UpTo, b.Publications, b.AgentID)
		if err != nil {
			return fmt.Errorf("record the stream's position: %w", err)
		}
		_, err = tx.Exec(ctx, `UPDATE ace.mtrees SET tracking_lsn = $1::pg_lsn WHERE tracking_lsn IS NULL AND slot_name = $3 AND publication = ANY($2)`,
			b.UpTo, b.Publications, b.Slot)
		return err
	})
}

func recordPending(ctx context.Context, tx pgx.Tx, keys []PendingKey) error {
	if len(keys) == 0 {
		return nil
	}
	ids, raw, xids, lsns := make([]int64, len(keys)), make([][]byte, len(keys)), make([]int64, len(keys)), make([]string, len(keys))
	for i, k := range keys {
		ids[i], raw[i], xids[i], lsns[i] = k.TreeID, k.Key, k.Xid, k.CommitLSN
	}
	_, err := tx.Exec(ctx, `INSERT INTO ace.mtree_pending (tree_id, key, xid, lsn)
		SELECT u.t, CASE WHEN u.k IS NULL THEN NULL ELSE ARRAY(SELECT jsonb_array_elements_text(u.k)) END, ace.xid8_of(u.x), u.l::pg_lsn
		FROM unnest($1::bigint[], $2::jsonb[], $3::bigint[], $4::text[]) AS u(t, k, x, l)`, ids, raw, xids, lsns)
	if err != nil {
		return fmt.Errorf("record %d changed keys: %w", len(keys), err)
	}
	return nil
}

// NodeTreeStatus is one row of a node's ace.mtree_local_status(), as JSON.
type NodeTreeStatus struct {
	Table  string
	Status []byte
}

// StoreNodeStatus replaces what ace.mtree_node_status holds of node with rows, its report now.
func StoreNodeStatus(ctx context.Context, db txBeginner, node string, rows []NodeTreeStatus) error {
	tables := make([]string, len(rows))
	docs := make([][]byte, len(rows))
	for i, r := range rows {
		tables[i], docs[i] = r.Table, r.Status
	}
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM ace.mtree_node_status WHERE node_name = $1 AND NOT table_name = ANY($2)`, node, tables); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO ace.mtree_node_status (node_name, table_name, status, reported_at)
			SELECT $1, u.t, u.s, now() FROM unnest($2::text[], $3::jsonb[]) AS u(t, s)
			ON CONFLICT (node_name, table_name) DO UPDATE SET status = excluded.status, reported_at = excluded.reported_at`, node, tables, docs)
		return err
	})
}

// MarkNodeStatusError marks node's last report with why it could not be asked again: the report
// stays, with the error beside it.
func MarkNodeStatusError(ctx context.Context, q engine.Querier, node, cause string) error {
	_, err := q.Exec(ctx, `UPDATE ace.mtree_node_status SET status = status || jsonb_build_object('error', $2::text) WHERE node_name = $1`,
		node, cause)
	return err
}
