package sqlapi

// SpockDiffArgs are a spock-diff task's arguments: the nodes whose replication configuration
// it compares (all registered nodes when empty).
type SpockDiffArgs struct {
	Nodes []string `json:"nodes,omitempty"`
}
