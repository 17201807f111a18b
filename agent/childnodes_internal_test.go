package agent

import (
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/sqlapi"
)

// Only a child of a parent this agent runs, submitted by the parent's own role, borrows the
// parent's node sessions (logged in as that role); none does once the parent has let go, and a
// child's end wakes its parent.
func TestChildrenShareTheParentsSessionsOnlyWithinOneSubmitter(t *testing.T) {
	t.Parallel()
	a := New(Config{Node: "n1", MaxTasks: 2}, slog.New(slog.DiscardHandler))
	parent := &sqlapi.Run{Task: sqlapi.Task{ID: uuid.New(), SubmittedBy: "alice"}}
	task := func(submitter string, parentID *uuid.UUID) *sqlapi.Run {
		args := map[string]any{"table_name": "public.t"}
		if parentID != nil {
			args[sqlapi.ParentTaskArg] = parentID.String()
		}
		raw, err := json.Marshal(args)
		require.NoError(t, err)
		return &sqlapi.Run{Task: sqlapi.Task{ID: uuid.New(), SubmittedBy: submitter, Args: raw}}
	}
	shared, release := a.shareNodes(parent, 3)
	require.EqualValues(t, 6, shared.maxConns, "room for every task this agent runs at once")

	child := a.sharedFor(task("alice", &parent.Task.ID))
	require.Same(t, shared, child, "the parent's own role borrows")
	require.Equal(t, 2, shared.users)
	require.Nil(t, a.sharedFor(task("mallory", &parent.Task.ID)), "another role never borrows")
	other := uuid.New()
	require.Nil(t, a.sharedFor(task("alice", &other)), "a parent this agent does not run")
	require.Nil(t, a.sharedFor(task("alice", nil)), "not a child")

	a.childEnded(task("alice", &parent.Task.ID))
	select {
	case <-shared.ended:
	default:
		t.Fatal("a child's end wakes its parent")
	}

	release()
	require.Nil(t, a.sharedFor(task("alice", &parent.Task.ID)), "no new borrower once the parent let go")
	require.Equal(t, 1, shared.users, "the child that borrowed still holds the pools")
	require.NotNil(t, shared.nodes)
	shared.release()
	require.Nil(t, shared.nodes, "the last holder closed them")
}
