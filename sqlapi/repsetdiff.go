package sqlapi

// RepsetDiffArgs are a repset-diff task's arguments: the replication set (or publication), the
// provider whose catalog names it (detected per node when empty), and the options of the child
// table-diffs.
type RepsetDiffArgs struct {
	Repset     string   `json:"repset"`
	Nodes      []string `json:"nodes,omitempty"`
	SkipTables []string `json:"skip_tables,omitempty"` // schema.table quoted as format('%I.%I'), or a bare quoted name
	Provider   string   `json:"provider,omitempty"`
	ChildDiffArgs
}
