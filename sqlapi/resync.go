package sqlapi

// NodeResyncArgs are a node-resync task's arguments, named as the arguments of
// ace.resync_node(...). The validator fills Tables (every table the submitter may read, when none
// is named), Nodes (the nodes each table is diffed on) and Strategy (source_of_truth when a
// source of truth is named).
type NodeResyncArgs struct {
	NodeName      string   `json:"node_name"`
	Tables        []string `json:"tables,omitempty"`
	Strategy      string   `json:"strategy,omitempty"`
	SourceOfTruth string   `json:"source_of_truth,omitempty"`
	Nodes         []string `json:"nodes,omitempty"`
	AllTables     bool     `json:"all_tables,omitempty"`
}

// StrategySourceOfTruth is a resync that copies from one node rather than by a vote.
const StrategySourceOfTruth = "source_of_truth"

// TableDiff is the child table-diff of one table of the resync.
func (a NodeResyncArgs) TableDiff(table string) Child {
	return Child{Key: table, Type: TypeTableDiff, Args: map[string]any{"table_name": table, "nodes": a.Nodes}}
}

// TableRepair is the child table-repair of a table's diff: the resynced node is its only target,
// so no other node is written.
func (a NodeResyncArgs) TableRepair(table string, diffTask string) Child {
	args := map[string]any{"diff_task": diffTask, "target_nodes": []string{a.NodeName}}
	if a.Strategy == StrategySourceOfTruth {
		args["source_of_truth"] = a.SourceOfTruth
	} else {
		args["strategy"] = a.Strategy
	}
	return Child{Key: table, Type: TypeTableRepair, Args: args}
}
