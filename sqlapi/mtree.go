package sqlapi

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
	TableDiffArgs
	CDCTimeout float64 `json:"cdc_timeout,omitempty"`
}

// MtreeTeardownArgs are an mtree-teardown task's arguments; no table means every tree.
type MtreeTeardownArgs struct {
	TableName string   `json:"table_name,omitempty"`
	Nodes     []string `json:"nodes,omitempty"`
}
