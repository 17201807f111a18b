package shim

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ace-agent/ace-agent/sqlapi"
)

// clusterMetrics is what one scrape read of ace.cluster_status() and ace.cluster_health(): each
// node's liveness and the leader, as the local agent last collected them.
type clusterMetrics struct {
	nodes  []sqlapi.NodeStatus
	health sqlapi.Health
}

func readClusterMetrics(ctx context.Context, pool *pgxpool.Pool) (*clusterMetrics, error) {
	nodes, err := sqlapi.ClusterStatus(ctx, pool)
	if err != nil {
		return nil, err
	}
	health, err := sqlapi.ClusterHealth(ctx, pool)
	if err != nil {
		return nil, err
	}
	return &clusterMetrics{nodes: nodes, health: health}, nil
}

var (
	nodeLiveDesc = prometheus.NewDesc("ace_node_live", "1 for each node that is reachable with a live agent, 0 otherwise, by its state (active, joining, down).",
		[]string{"node", "state"}, nil)
	nodeHeartbeatDesc = prometheus.NewDesc("ace_node_heartbeat_age_seconds", "Age of the last heartbeat of each node's agent when it was collected.",
		[]string{"node"}, nil)
	leaderDesc = prometheus.NewDesc("ace_leader", "1 for the node that leads the cluster (ace.leader()), 0 for the others; no 1 at all means no leader.",
		[]string{"node"}, nil)
	healthDesc = prometheus.NewDesc("ace_cluster_health", "1 for the cluster's health as this node sees it (healthy, degraded or unavailable).",
		[]string{"health"}, nil)
	quorumDesc = prometheus.NewDesc("ace_cluster_in_quorum", "1 when more than half of the nodes that are not joining are live, as this node sees them.",
		nil, nil)
)

func (c *clusterMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{nodeLiveDesc, nodeHeartbeatDesc, leaderDesc, healthDesc, quorumDesc} {
		ch <- d
	}
}

func (c *clusterMetrics) Collect(ch chan<- prometheus.Metric) {
	for _, n := range c.nodes {
		constant(ch, nodeLiveDesc, prometheus.GaugeValue, oneIf(n.Reachable && n.AgentAlive), n.Node, string(n.State))
		if n.HeartbeatAgeSeconds != nil {
			constant(ch, nodeHeartbeatDesc, prometheus.GaugeValue, *n.HeartbeatAgeSeconds, n.Node)
		}
		constant(ch, leaderDesc, prometheus.GaugeValue, oneIf(n.IsLeader), n.Node)
	}
	constant(ch, healthDesc, prometheus.GaugeValue, 1, c.health.Health)
	constant(ch, quorumDesc, prometheus.GaugeValue, oneIf(c.health.InQuorum))
}

func oneIf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
