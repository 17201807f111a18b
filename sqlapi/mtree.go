package sqlapi

import "time"

// Merkle tree task types.
const (
	TypeMtreeBuild    TaskType = "mtree-build"
	TypeMtreeDiff     TaskType = "mtree-diff"
	TypeMtreeTeardown TaskType = "mtree-teardown"
)

// MtreeBuildArgs are an mtree-build task's arguments, named as ace.mtree_build's.
type MtreeBuildArgs struct {
	TableName string   `json:"table_name"`
	Nodes     []string `json:"nodes,omitempty"`
	LeafRows  int      `json:"leaf_rows,omitempty"`
}

// MtreeDiffArgs are an mtree-diff task's arguments: the table-diff options that apply to a tree
// (block_size does not: the leaves are the ranges) and how long, in seconds, to wait for the
// nodes' change streams to catch up.
type MtreeDiffArgs struct {
	TableName         string   `json:"table_name"`
	Nodes             []string `json:"nodes,omitempty"`
	CompareUnitSize   int      `json:"compare_unit_size,omitempty"`
	TableFilter       string   `json:"table_filter,omitempty"`
	MaxDiffRows       int64    `json:"max_diff_rows,omitempty"`
	ConcurrencyFactor float64  `json:"concurrency_factor,omitempty"`
	MaxConnections    int      `json:"max_connections,omitempty"`
	AgainstOrigin     string   `json:"against_origin,omitempty"`
	Until             string   `json:"until,omitempty"`
	Output            string   `json:"output,omitempty"`
	RecheckAfter      any      `json:"recheck_after,omitempty"`
	// CDCTimeout is an interval (in SQL) or a number of seconds; the insert trigger normalises it
	// to seconds.
	CDCTimeout any `json:"cdc_timeout,omitempty"`
}

// TableDiffArgs are the table-diff options of the tree diff.
func (a MtreeDiffArgs) TableDiffArgs() TableDiffArgs {
	return TableDiffArgs{TableName: a.TableName, Nodes: a.Nodes, CompareUnitSize: a.CompareUnitSize, TableFilter: a.TableFilter,
		MaxDiffRows: a.MaxDiffRows, ConcurrencyFactor: a.ConcurrencyFactor, MaxConnections: a.MaxConnections,
		AgainstOrigin: a.AgainstOrigin, Until: a.Until, Output: a.Output, RecheckAfter: a.RecheckAfter}
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
