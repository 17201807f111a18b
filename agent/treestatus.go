package agent

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/mtree"
)

// treeStatusCollector copies, every HeartbeatInterval, every node's ace.mtree_local_status() into
// this node's ace.mtree_node_status, which ace.mtree_status reads: one place to see every node's
// trees and streams. It runs whether or not this node has a tree, and whatever the tree keeper
// does. A node that cannot be reached keeps its last report, marked with the error.
type treeStatusCollector struct {
	startStop
	a     *Agent
	peers *peerSessions // the loop's own
}

func (c *treeStatusCollector) Name() string { return "tree status collector" }

func (c *treeStatusCollector) Start(ctx context.Context) error { return c.start(ctx, c.run) }

func (c *treeStatusCollector) run(ctx context.Context) {
	c.peers = newPeerSessions(c.a)
	defer c.peers.retain(nil)
	every(ctx, c.a.cfg.HeartbeatInterval, false, c.collect)
}

// collect asks every registered node, this one included, for its trees' status.
func (c *treeStatusCollector) collect(ctx context.Context) {
	conninfo, err := c.a.nodeConnInfo(ctx)
	if err != nil {
		return
	}
	c.peers.retain(conninfo)
	for name, ci := range conninfo {
		rows, err := c.nodeTreeStatus(ctx, name, ci)
		if err == nil {
			err = mtree.StoreNodeStatus(ctx, c.a.pool, name, rows)
		} else {
			err = mtree.MarkNodeStatusError(ctx, c.a.pool, name, fmt.Sprintf("node %s could not be asked for its trees' status: %v", name, err))
		}
		if err != nil && ctx.Err() == nil {
			c.a.log.Debug("collecting Merkle tree status failed", "node", name, "err", err)
		}
	}
}

func (c *treeStatusCollector) nodeTreeStatus(ctx context.Context, name, conninfo string) (status []mtree.NodeTreeStatus, err error) {
	err = c.peers.ask(ctx, name, conninfo, func(n *engine.Node) error {
		rows, err := n.Pool.Query(ctx, `SELECT s.table_name, to_jsonb(s) FROM ace.mtree_local_status() s`)
		if err != nil {
			return err
		}
		status, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (mtree.NodeTreeStatus, error) {
			var s mtree.NodeTreeStatus
			return s, r.Scan(&s.Table, &s.Status)
		})
		return err
	})
	return status, err
}
