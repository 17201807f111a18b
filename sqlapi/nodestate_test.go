package sqlapi_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// noticeConn is a connection to the node that keeps the NOTICEs it receives.
type noticeConn struct {
	*pgx.Conn
	mu      sync.Mutex
	notices []string
}

func connectWithNotices(t *testing.T, n *testcluster.Node) *noticeConn {
	t.Helper()
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(n.DSN)
	require.NoError(t, err)
	nc := &noticeConn{}
	cfg.OnNotice = func(_ *pgconn.PgConn, notice *pgconn.Notice) {
		nc.mu.Lock()
		defer nc.mu.Unlock()
		nc.notices = append(nc.notices, notice.Message)
	}
	nc.Conn, err = pgx.ConnectConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close(ctx) })
	return nc
}

// takeNotices returns the NOTICEs received since the last call.
func (nc *noticeConn) takeNotices() []string {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	out := nc.notices
	nc.notices = nil
	return out
}

// diffNodes submits a table-diff of public.t on nodes (all by default) and returns the nodes
// its validated arguments hold.
func diffNodes(t *testing.T, nc *noticeConn, nodes ...string) ([]string, error) {
	t.Helper()
	ctx := context.Background()
	args := map[string]any{"table_name": "public.t"}
	if len(nodes) > 0 {
		args["nodes"] = nodes
	}
	id, err := sqlapi.Submit(ctx, nc, sqlapi.TypeTableDiff, args)
	if err != nil {
		return nil, err
	}
	var got []string
	require.NoError(t, nc.QueryRow(ctx, `SELECT ARRAY(SELECT jsonb_array_elements_text(args->'nodes')) FROM ace.tasks WHERE task_id = $1`, id).Scan(&got))
	return got, nil
}

// kindsOfEvents lists the kind and node of the node events recorded after id.
func nodeEventsAfter(t *testing.T, q sqlapi.Querier, after int64) []string {
	t.Helper()
	events, err := sqlapi.EventsSince(context.Background(), q, after, "node_added", "node_removed", "node_promoted", "node_down", "node_up")
	require.NoError(t, err)
	out := []string{}
	for _, e := range events {
		s := e.Kind + " " + e.NodeName
		if r, ok := e.Detail["reason"].(string); ok {
			s += " (" + r + ")"
		}
		out = append(out, s)
	}
	return out
}

func lastEventID(t *testing.T, q sqlapi.Querier) int64 {
	t.Helper()
	var id int64
	require.NoError(t, q.QueryRow(context.Background(), `SELECT coalesce(max(event_id), 0) FROM ace.events`).Scan(&id))
	return id
}

// TestNodeStatesDecideATasksNodes: a down node is left out of a task's default nodes with a
// NOTICE, and refused when named; a joining node takes part only when named; each change of
// state is an event.
func TestNodeStatesDecideATasksNodes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := testcluster.New(t)
	e.SeedTable("public.t", 5)
	n1 := e.Node("n1")
	nc := connectWithNotices(t, n1)

	t.Run("mark a node down and up, with events", func(t *testing.T) {
		from := lastEventID(t, n1.Pool)
		down, err := sqlapi.MarkNodeDown(ctx, n1.Pool, "n3", "disk failure")
		require.NoError(t, err)
		require.Equal(t, sqlapi.NodeDown, down.State)
		require.Equal(t, "disk failure", *down.StateReason)

		nodes, err := diffNodes(t, nc)
		require.NoError(t, err)
		require.Equal(t, []string{"n1", "n2"}, nodes, "a diff with default nodes leaves the down node out")
		require.Contains(t, nc.takeNotices(), "nodes left out: n3 (down: disk failure)")

		_, err = diffNodes(t, nc, "n1", "n3")
		var pgErr *pgconn.PgError
		require.True(t, errors.As(err, &pgErr), "naming a down node is an error: %v", err)
		require.Equal(t, pgerrcode.ObjectNotInPrerequisiteState, pgErr.Code)
		require.Equal(t, "node n3 is marked down (disk failure); mark it up with ace.mark_node_up('n3') or leave it out", pgErr.Message)
		require.NotEmpty(t, pgErr.Hint)

		up, err := sqlapi.MarkNodeUp(ctx, n1.Pool, "n3")
		require.NoError(t, err)
		require.Equal(t, sqlapi.NodeActive, up.State)
		nodes, err = diffNodes(t, nc)
		require.NoError(t, err)
		require.Equal(t, []string{"n1", "n2", "n3"}, nodes)
		require.Empty(t, nc.takeNotices())
		require.Equal(t, []string{"node_down n3 (disk failure)", "node_up n3"}, nodeEventsAfter(t, n1.Pool, from))
	})

	t.Run("a down node named by a Spock task alone is refused too", func(t *testing.T) {
		_, err := sqlapi.MarkNodeDown(ctx, n1.Pool, "n2", "")
		require.NoError(t, err)
		defer func() { _, err := sqlapi.MarkNodeUp(ctx, n1.Pool, "n2"); require.NoError(t, err) }()
		_, err = n1.Pool.Exec(ctx, `SELECT ace.spock_exception_sync(ARRAY['n2'])`)
		require.ErrorContains(t, err, "node n2 is marked down (no reason given); mark it up with ace.mark_node_up('n2') or leave it out")
	})

	t.Run("a joining node takes part only when named, until promoted", func(t *testing.T) {
		from := lastEventID(t, n1.Pool)
		require.NoError(t, sqlapi.AddNode(ctx, n1.Pool, sqlapi.RegisteredNode{Name: "n4", ConnInfo: e.Node("n2").DSN, State: sqlapi.NodeJoining}))
		nodes, err := diffNodes(t, nc)
		require.NoError(t, err)
		require.Equal(t, []string{"n1", "n2", "n3"}, nodes)
		require.Contains(t, nc.takeNotices(), "nodes left out: n4 (joining)")
		nodes, err = diffNodes(t, nc, "n1", "n4")
		require.NoError(t, err)
		require.Equal(t, []string{"n1", "n4"}, nodes)

		_, err = sqlapi.PromoteNode(ctx, n1.Pool, "n4")
		require.NoError(t, err)
		nodes, err = diffNodes(t, nc)
		require.NoError(t, err)
		require.Equal(t, []string{"n1", "n2", "n3", "n4"}, nodes)
		_, err = sqlapi.PromoteNode(ctx, n1.Pool, "n4")
		var pgErr *pgconn.PgError
		require.True(t, errors.As(err, &pgErr))
		require.Equal(t, pgerrcode.ObjectNotInPrerequisiteState, pgErr.Code, "only a joining node is promoted")

		removed, err := sqlapi.RemoveNode(ctx, n1.Pool, "n4")
		require.NoError(t, err)
		require.True(t, removed)
		require.Equal(t, []string{"node_added n4", "node_promoted n4", "node_removed n4"}, nodeEventsAfter(t, n1.Pool, from))
	})

	t.Run("the three-argument add_node still works and keeps a node's state", func(t *testing.T) {
		_, err := sqlapi.MarkNodeDown(ctx, n1.Pool, "n3", "maintenance")
		require.NoError(t, err)
		n1.Exec(t, `SELECT ace.add_node('n3', $1, 'default')`, e.Node("n3").DSN)
		var state string
		require.NoError(t, n1.Pool.QueryRow(ctx, `SELECT state FROM ace.nodes WHERE node_name = 'n3'`).Scan(&state))
		require.Equal(t, "down", state)
		_, err = sqlapi.MarkNodeUp(ctx, n1.Pool, "n3")
		require.NoError(t, err)
	})

	t.Run("an unknown node and an unknown state are refused", func(t *testing.T) {
		_, err := sqlapi.MarkNodeDown(ctx, n1.Pool, "n9", "")
		require.ErrorContains(t, err, "node n9 is not in ace.nodes")
		err = sqlapi.AddNode(ctx, n1.Pool, sqlapi.RegisteredNode{Name: "n5", ConnInfo: "host=x", State: sqlapi.NodeDown})
		require.ErrorContains(t, err, "a node is added as active or joining, not down")
	})
}

// TestWhoChangesNodesAndTheLeader: only the schema's owner pins the leader; a node's state is
// changed by the owner and by the roles the owner grants the state functions to, and the event
// names who did it.
func TestWhoChangesNodesAndTheLeader(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := testcluster.NewSecure(t)
	n1 := e.Node("n1")
	aliceRole := e.AddSubmitter("alice", false)
	alice := n1.ConnectAs(t, aliceRole)
	refused := func(t *testing.T, sql, message string) {
		t.Helper()
		_, err := alice.Exec(ctx, sql)
		var pgErr *pgconn.PgError
		require.True(t, errors.As(err, &pgErr), "refused: %v", err)
		require.Equal(t, pgerrcode.InsufficientPrivilege, pgErr.Code)
		require.Contains(t, pgErr.Message, message)
	}
	t.Run("the pin is the owner's only", func(t *testing.T) {
		refused(t, `SELECT ace.set_leader('n2')`, "only the owner of schema ace may pin the leader")
		refused(t, `SELECT ace.set_leader(NULL)`, "only the owner of schema ace may pin the leader")
		owner, err := pgx.Connect(ctx, n1.AgentDSN)
		require.NoError(t, err)
		defer owner.Close(ctx)
		_, err = sqlapi.SetLeader(ctx, owner, "n2")
		require.NoError(t, err)
		var pinned string
		require.NoError(t, owner.QueryRow(ctx, `SELECT node_name FROM ace.leader_pin`).Scan(&pinned))
		require.Equal(t, "n2", pinned)
		n1.Exec(t, `GRANT EXECUTE ON FUNCTION ace.set_leader(text) TO `+pgx.Identifier{aliceRole}.Sanitize())
		refused(t, `SELECT ace.set_leader(NULL)`, "only the owner of schema ace may pin the leader")
	})
	t.Run("node states are for the roles granted them", func(t *testing.T) {
		refused(t, `SELECT ace.mark_node_down('n2', 'mine')`, "permission denied for function mark_node_down")
		refused(t, `SELECT ace.mark_node_up('n2')`, "permission denied for function mark_node_up")
		refused(t, `SELECT ace.promote_node('n2')`, "permission denied for function promote_node")
		refused(t, `SELECT ace.set_node_state('n2', 'down', NULL, 'node_down')`, "permission denied for function set_node_state")
		from := lastEventID(t, n1.Pool)
		n1.Exec(t, `GRANT EXECUTE ON FUNCTION ace.mark_node_down(text, text), ace.mark_node_up(text) TO `+pgx.Identifier{aliceRole}.Sanitize())
		_, err := sqlapi.MarkNodeDown(ctx, alice, "n2", "paged")
		require.NoError(t, err)
		_, err = sqlapi.MarkNodeUp(ctx, alice, "n2")
		require.NoError(t, err)
		events, err := sqlapi.EventsSince(ctx, alice, from, "node_down", "node_up")
		require.NoError(t, err)
		require.Len(t, events, 2)
		for _, ev := range events {
			require.Equal(t, aliceRole, ev.Actor, "the event names who changed the state")
		}
	})
	t.Run("marked up with a resync, submitted as the caller", func(t *testing.T) {
		e.SeedTable("public.t", 5)
		e.ExecAll(`GRANT SELECT ON public.t TO ` + pgx.Identifier{aliceRole}.Sanitize())
		_, err := sqlapi.MarkNodeDown(ctx, alice, "n2", "back from a restore")
		require.NoError(t, err)
		var task *string
		require.NoError(t, alice.QueryRow(ctx, `SELECT ace.mark_node_up('n2', resync => false)`).Scan(&task))
		require.Nil(t, task, "no resync asked for")
		_, err = sqlapi.MarkNodeDown(ctx, alice, "n2", "back from a restore")
		require.NoError(t, err)
		require.NoError(t, alice.QueryRow(ctx, `SELECT ace.mark_node_up('n2', resync => true)`).Scan(&task))
		require.NotNil(t, task)
		var typ, submitter, node, state string
		require.NoError(t, alice.QueryRow(ctx, `SELECT t.task_type, t.submitted_by, t.args->>'node_name', n.state
			FROM ace.tasks t, ace.nodes n WHERE t.task_id = $1 AND n.node_name = 'n2'`, *task).Scan(&typ, &submitter, &node, &state))
		require.Equal(t, []string{"node-resync", aliceRole, "n2", "active"}, []string{typ, submitter, node, state})
		n1.Exec(t, `REVOKE EXECUTE ON FUNCTION ace.mark_node_up(text) FROM `+pgx.Identifier{aliceRole}.Sanitize())
		refused(t, `SELECT ace.mark_node_up('n2', resync => true)`, "permission denied for function mark_node_up")
	})
}
