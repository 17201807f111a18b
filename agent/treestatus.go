package agent

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/engine"
)

// collectTreeStatus copies every node's ace.mtree_local_status() into this node's
// ace.mtree_node_status, which ace.mtree_status reads: one place to see every node's trees and
// streams. A node that cannot be reached keeps its last report, marked with the error.
func (a *Agent) collectTreeStatus(ctx context.Context, local *engine.Node) {
	conninfo, err := a.nodeConnInfo(ctx)
	if err != nil {
		return
	}
	for name, ci := range conninfo {
		rows, err := a.nodeTreeStatus(ctx, name, ci)
		if err == nil {
			err = storeTreeStatus(ctx, local, name, rows)
		} else {
			_, err = local.Pool.Exec(ctx, `UPDATE ace.mtree_node_status SET status = status || jsonb_build_object('error', $2::text) WHERE node_name = $1`,
				name, fmt.Sprintf("node %s could not be asked for its trees' status: %v", name, err))
		}
		if err != nil && ctx.Err() == nil {
			a.log.Debug("collecting Merkle tree status failed", "node", name, "err", err)
		}
	}
}

type treeStatus struct {
	table  string
	status []byte
}

func (a *Agent) nodeTreeStatus(ctx context.Context, name, conninfo string) ([]treeStatus, error) {
	n, err := engine.OpenNode(ctx, engine.NodeOptions{Name: name, ConnInfo: conninfo, User: a.user, ClientCerts: a.clientCerts, MaxConns: 1})
	if err != nil {
		return nil, err
	}
	defer n.Close()
	rows, err := n.Pool.Query(ctx, `SELECT s.table_name, to_jsonb(s) FROM ace.mtree_local_status() s`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (treeStatus, error) {
		var s treeStatus
		return s, r.Scan(&s.table, &s.status)
	})
}

func storeTreeStatus(ctx context.Context, local *engine.Node, node string, rows []treeStatus) error {
	tables := make([]string, len(rows))
	docs := make([][]byte, len(rows))
	for i, r := range rows {
		tables[i], docs[i] = r.table, r.status
	}
	return pgx.BeginFunc(ctx, local.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM ace.mtree_node_status WHERE node_name = $1 AND NOT table_name = ANY($2)`, node, tables); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO ace.mtree_node_status (node_name, table_name, status, reported_at)
			SELECT $1, u.t, u.s, now() FROM unnest($2::text[], $3::jsonb[]) AS u(t, s)
			ON CONFLICT (node_name, table_name) DO UPDATE SET status = excluded.status, reported_at = excluded.reported_at`, node, tables, docs)
		return err
	})
}
