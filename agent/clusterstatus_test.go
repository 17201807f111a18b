package agent_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/agent"
	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// eventsOf lists the events of a kind recorded on the node, oldest first.
func eventsOf(t *testing.T, n *testcluster.Node, kind string) []sqlapi.Event {
	t.Helper()
	events, err := sqlapi.EventsSince(context.Background(), n.Pool, 0, kind)
	require.NoError(t, err)
	return events
}

// eventually waits for cond, on the agents' heartbeat of 200 ms.
func eventually(t *testing.T, cond func() bool, msg string) {
	t.Helper()
	require.Eventually(t, cond, 30*time.Second, 50*time.Millisecond, msg)
}

func health(t *testing.T, n *testcluster.Node) sqlapi.Health {
	t.Helper()
	h, err := sqlapi.ClusterHealth(context.Background(), n.Pool)
	require.NoError(t, err)
	return h
}

// collectionsAfter waits until n's agent has collected the cluster's status twice more.
func collectionsAfter(t *testing.T, n *testcluster.Node) {
	t.Helper()
	var since time.Time
	require.NoError(t, n.Pool.QueryRow(context.Background(), `SELECT max(reported_at) FROM ace.node_status`).Scan(&since))
	for range 2 {
		eventually(t, func() bool {
			var last time.Time
			require.NoError(t, n.Pool.QueryRow(context.Background(), `SELECT min(reported_at) FROM ace.node_status`).Scan(&last))
			if last.After(since) {
				since = last
				return true
			}
			return false
		}, "n's agent collects again")
	}
}

// TestClusterStatusIsCollectedEveryHeartbeat: every agent collects every node's status; a
// configuration that differs on one node, a leader marked down and an agent that stopped are
// each recorded once, and the health follows.
func TestClusterStatusIsCollectedEveryHeartbeat(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := testcluster.New(t)
	n1, n2, n3 := e.Node("n1"), e.Node("n2"), e.Node("n3")
	agents := map[string]*testcluster.Agent{}
	for _, n := range e.Nodes {
		agents[n.Name] = n.StartAgent(t)
	}

	t.Run("every node live, the first one leads", func(t *testing.T) {
		eventually(t, func() bool { return health(t, n1).Health == sqlapi.Healthy }, "the cluster becomes healthy")
		h := health(t, n1)
		require.Equal(t, sqlapi.Health{Health: sqlapi.Healthy, InQuorum: true, ActiveNodes: 3, LiveNodes: 3, MissingNodes: []string{},
			Leader: &n1.Name, Ready: true}, h)
		status, err := sqlapi.ClusterStatus(ctx, n1.Pool)
		require.NoError(t, err)
		require.Len(t, status, 3)
		var latest int32
		require.NoError(t, n1.Pool.QueryRow(ctx, `SELECT max(version) FROM ace.schema_version`).Scan(&latest))
		for _, s := range status {
			require.True(t, s.Reachable && s.AgentAlive, "%s is live", s.Node)
			require.Equal(t, agent.Version, *s.Version)
			require.Equal(t, latest, *s.SchemaVersion)
			require.True(t, *s.SameConfig, "%s has n1's configuration", s.Node)
			require.Equal(t, s.Node == "n1", s.IsLeader)
			require.NotNil(t, s.WalLevel)
			require.NotNil(t, s.HeartbeatAgeSeconds)
			require.Nil(t, s.Warning, "%s", s.Node)
		}
		for _, n := range e.Nodes {
			require.Len(t, eventsOf(t, n, "agent_started"), 1, "on %s", n.Name)
		}
		eventually(t, func() bool { return len(eventsOf(t, n1, "leader_changed")) == 1 }, "the first leader is recorded")
	})

	t.Run("a node removed on one node only is config drift", func(t *testing.T) {
		_, err := sqlapi.RemoveNode(ctx, n2.Pool, "n3")
		require.NoError(t, err)
		eventually(t, func() bool { return len(eventsOf(t, n1, "config_drift")) > 0 }, "n1 records n2's drift")
		drift := eventsOf(t, n1, "config_drift")
		require.Equal(t, "n2", drift[0].NodeName)
		require.Equal(t, []any{"node n3"}, drift[0].Detail["items"])
		diff, err := sqlapi.ClusterConfigDiff(ctx, n1.Pool)
		require.NoError(t, err)
		require.Len(t, diff, 1)
		require.Equal(t, "n2", diff[0].Node)
		require.Equal(t, "node n3", diff[0].Item)
		require.JSONEq(t, `null`, string(diff[0].Actual))
		require.Contains(t, string(diff[0].Expected), `"state": "active"`)
		collectionsAfter(t, n1)
		require.Len(t, eventsOf(t, n1, "config_drift"), 1, "recorded once, not every heartbeat")
		status, err := sqlapi.ClusterStatus(ctx, n1.Pool)
		require.NoError(t, err)
		require.False(t, *status[1].SameConfig)
		require.Contains(t, *status[1].Warning, "ace.cluster_config_diff()")
		require.NoError(t, sqlapi.AddNode(ctx, n2.Pool, sqlapi.RegisteredNode{Name: "n3", ConnInfo: n3.DSN}))
		eventually(t, func() bool {
			diff, err := sqlapi.ClusterConfigDiff(ctx, n1.Pool)
			require.NoError(t, err)
			return len(diff) == 0
		}, "the configurations agree again")
	})

	t.Run("the leader changes when it is marked down", func(t *testing.T) {
		_, err := sqlapi.MarkNodeDown(ctx, n1.Pool, "n1", "maintenance")
		require.NoError(t, err)
		l, err := sqlapi.Leader(ctx, n1.Pool)
		require.NoError(t, err)
		require.Equal(t, "n2", *l.Leader)
		require.Equal(t, sqlapi.Degraded, health(t, n1).Health, "a node marked down is missing")
		eventually(t, func() bool { return len(eventsOf(t, n1, "leader_changed")) == 2 }, "the change is recorded")
		changed := eventsOf(t, n1, "leader_changed")[1]
		require.Equal(t, "n2", changed.NodeName)
		require.Equal(t, map[string]any{"leader": "n2", "previous": "n1"}, changed.Detail)
		_, err = sqlapi.MarkNodeUp(ctx, n1.Pool, "n1")
		require.NoError(t, err)
		eventually(t, func() bool { return len(eventsOf(t, n1, "leader_changed")) == 3 }, "the way back is recorded too")
	})

	t.Run("an agent stopped is lost to the others", func(t *testing.T) {
		require.NoError(t, agents["n3"].Stop())
		require.Len(t, eventsOf(t, n3, "agent_stopped"), 1)
		eventually(t, func() bool { return len(eventsOf(t, n1, "agent_lost")) == 1 }, "n1 records n3's agent lost")
		require.Equal(t, "n3", eventsOf(t, n1, "agent_lost")[0].NodeName)
		h := health(t, n1)
		require.Equal(t, sqlapi.Degraded, h.Health)
		require.True(t, h.InQuorum)
		require.Equal(t, []string{"n3"}, h.MissingNodes)
		collectionsAfter(t, n1)
		require.Len(t, eventsOf(t, n1, "agent_lost"), 1, "recorded once")
	})
}

// TestOldEventsExpire: the retention job deletes the events older than event_retention.
func TestOldEventsExpire(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	n1 := e.Node("n1")
	n1.Exec(t, `INSERT INTO ace.events (kind, node_name, at) VALUES ('node_down', 'old', now() - interval '31 days'),
		('node_down', 'recent', now() - interval '29 days')`)
	cfg := n1.AgentConfig()
	cfg.RetentionInterval = 200 * time.Millisecond
	n1.StartAgentWith(t, cfg)
	eventually(t, func() bool { return countOn(t, n1, `SELECT count(*) FROM ace.events WHERE node_name = 'old'`) == 0 }, "the old event expires")
	require.EqualValues(t, 1, countOn(t, n1, `SELECT count(*) FROM ace.events WHERE node_name = 'recent'`))
}

// TestCollectorsKeepTheirSessions: the cluster and tree status collectors ask every node every
// heartbeat on sessions kept open, so an idle cluster's agents open no session once they run.
func TestCollectorsKeepTheirSessions(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	for _, n := range e.Nodes {
		n.StartAgent(t)
	}
	n1, n2 := e.Node("n1"), e.Node("n2")
	sessions := func() map[int32]bool {
		rows, err := n2.Pool.Query(context.Background(), `SELECT pid FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = 'ace-agent'`)
		require.NoError(t, err)
		pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		require.NoError(t, err)
		set := map[int32]bool{}
		for _, pid := range pids {
			set[pid] = true
		}
		return set
	}
	eventually(t, func() bool { return health(t, n1).Health == sqlapi.Healthy }, "the cluster becomes healthy")
	collectionsAfter(t, n1)
	before := sessions()
	for range 3 {
		collectionsAfter(t, n1)
	}
	after := sessions()
	var opened []int32
	for pid := range after {
		if !before[pid] {
			opened = append(opened, pid)
		}
	}
	require.Empty(t, opened, "sessions opened on n2 over six heartbeats of an idle cluster (before: %v)", before)
}
