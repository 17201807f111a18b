package sqlapi_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// TestEventsAreSeenAsTheirTasksAre: an event about a task is visible only to who may see the
// task, one about a role's own object (a schedule) only to that role and its members; events
// about nodes are visible to every reader; only the schema's owner records them.
func TestEventsAreSeenAsTheirTasksAre(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := testcluster.NewSecure(t)
	e.SeedTable("public.t", 5)
	e.ExecAll(`GRANT SELECT ON public.t TO ` + testcluster.SubmittersRole)
	n1 := e.Node("n1")
	alice, bob := e.AddSubmitter("alice", false), e.AddSubmitter("bob", false)
	asAlice, asBob := n1.ConnectAs(t, alice), n1.ConnectAs(t, bob)

	// The events before these: the nodes' registration (node_added).
	var before int64
	require.NoError(t, n1.Pool.QueryRow(ctx, `SELECT coalesce(max(event_id), 0) FROM ace.events`).Scan(&before))
	task, err := sqlapi.Submit(ctx, asAlice, sqlapi.TypeTableDiff, map[string]any{"table_name": "public.t"})
	require.NoError(t, err)
	nodeEvent, err := sqlapi.RecordEvent(ctx, n1.Pool, sqlapi.Event{Kind: "node_down", NodeName: "n3", Detail: map[string]any{"reason": "disk"}})
	require.NoError(t, err)
	taskEvent, err := sqlapi.RecordEvent(ctx, n1.Pool, sqlapi.Event{Kind: "table_out_of_sync", TableName: "public.t", TaskID: &task})
	require.NoError(t, err)
	ownedEvent, err := sqlapi.RecordEvent(ctx, n1.Pool, sqlapi.Event{Kind: "schedule_failed", NodeName: "n1",
		Detail: map[string]any{"schedule": "nightly", "owner": alice, "error": "relation public.secret does not exist"}})
	require.NoError(t, err)

	ids := func(events []sqlapi.Event) []int64 {
		out := []int64{}
		for _, ev := range events {
			out = append(out, ev.ID)
		}
		return out
	}
	t.Run("the task's submitter sees them all", func(t *testing.T) {
		events, err := sqlapi.EventsSince(ctx, asAlice, before)
		require.NoError(t, err)
		require.Equal(t, []int64{nodeEvent, taskEvent, ownedEvent}, ids(events))
		require.Equal(t, "disk", events[0].Detail["reason"])
		require.Equal(t, uuid.UUID(task), *events[1].TaskID)
	})
	t.Run("another role sees only the node's, not the task's nor another owner's", func(t *testing.T) {
		events, err := sqlapi.EventsSince(ctx, asBob, before)
		require.NoError(t, err)
		require.Equal(t, []int64{nodeEvent}, ids(events))
	})
	t.Run("by kind and after an id", func(t *testing.T) {
		events, err := sqlapi.EventsSince(ctx, asAlice, nodeEvent, "table_out_of_sync")
		require.NoError(t, err)
		require.Equal(t, []int64{taskEvent}, ids(events))
		events, err = sqlapi.EventsSince(ctx, asAlice, 0, "node_up")
		require.NoError(t, err)
		require.Empty(t, events)
	})
	t.Run("a submitter cannot record one", func(t *testing.T) {
		_, err := sqlapi.RecordEvent(ctx, asBob, sqlapi.Event{Kind: "node_up", NodeName: "n3"})
		require.ErrorContains(t, err, "permission denied")
	})
}
