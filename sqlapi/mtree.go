package sqlapi

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// MtreeBuildArgs are an mtree-build task's arguments, named as ace.mtree_build's.
type MtreeBuildArgs struct {
	TableName string   `json:"table_name"`
	Nodes     []string `json:"nodes,omitempty"`
	LeafRows  int      `json:"leaf_rows,omitempty"`
}

// MtreeDiffArgs are an mtree-diff task's arguments: the diff options (block_size does not apply
// to a tree: the leaves are the ranges) and how long, in seconds, to wait for the nodes' change
// streams to catch up.
type MtreeDiffArgs struct {
	DiffArgs
	// CDCTimeout is an interval (in SQL) or a number of seconds; the insert trigger normalises it
	// to seconds.
	CDCTimeout any `json:"cdc_timeout,omitempty"`
}

// CDCTimeoutDuration reads the normalised cdc_timeout; 0 means the engine's default.
func (a MtreeDiffArgs) CDCTimeoutDuration() time.Duration {
	if v, ok := a.CDCTimeout.(float64); ok {
		return time.Duration(v * float64(time.Second))
	}
	return 0
}

// MtreeTeardownArgs are an mtree-teardown task's arguments; no table means every tree.
type MtreeTeardownArgs struct {
	TableName string   `json:"table_name,omitempty"`
	Nodes     []string `json:"nodes,omitempty"`
}

// RunMtreeDiff is CALL ace.run_mtree_diff(table) as a psql user runs it: one statement that
// submits the diff, commits and waits for its end. conn must not be in a transaction. It returns
// the task's id, its status and its summary.
func RunMtreeDiff(ctx context.Context, conn *pgx.Conn, table string) (id uuid.UUID, status Status, summary json.RawMessage, err error) {
	err = conn.QueryRow(ctx, `CALL ace.run_mtree_diff($1)`, table).Scan(&id, &status, nil, nil, &summary)
	if err != nil {
		return id, status, nil, fmt.Errorf("CALL ace.run_mtree_diff(%s): %w", table, err)
	}
	return id, status, summary, nil
}
