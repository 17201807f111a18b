package sqlapi

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/engine/spock"
)

// SpockExceptionSyncArgs are a spock-exception-sync task's arguments.
type SpockExceptionSyncArgs struct {
	Nodes []string `json:"nodes,omitempty"`
}

// SpockExceptionUpdateArgs are a spock-exception-update task's arguments: the exception's key
// as Spock 5 keys it, and its new status. No command_counter: the exception's status and every
// detail row; no retry_errored_at: every retry of the transaction.
type SpockExceptionUpdateArgs struct {
	NodeName          string         `json:"node_name"`
	RemoteOrigin      uint32         `json:"remote_origin"`
	RemoteCommitTS    time.Time      `json:"remote_commit_ts"`
	RemoteXID         int64          `json:"remote_xid"`
	Status            string         `json:"status"`
	CommandCounter    *int32         `json:"command_counter,omitempty"`
	ResolutionDetails map[string]any `json:"resolution_details,omitempty"`
	RetryErroredAt    *time.Time     `json:"retry_errored_at,omitempty"`
}

// Update is the update the arguments ask for.
func (a SpockExceptionUpdateArgs) Update() spock.Update {
	return spock.Update{
		Key: spock.Key{RemoteOrigin: a.RemoteOrigin, RemoteCommitTS: a.RemoteCommitTS, RemoteXID: a.RemoteXID,
			CommandCounter: a.CommandCounter, RetryErroredAt: a.RetryErroredAt},
		Status: a.Status, ResolutionDetails: a.ResolutionDetails,
	}
}

// WriteSpockExceptions stores one node's collected exceptions, fenced by the claim.
func (r *Run) WriteSpockExceptions(ctx context.Context, node string, rows []spock.Exception) error {
	if len(rows) == 0 {
		return nil
	}
	data := make([][]any, len(rows))
	for i, e := range rows {
		data[i] = []any{r.Task.ID, node, e.RemoteOrigin, e.RemoteCommitTS, e.CommandCounter, e.RetryErroredAt,
			e.RemoteXID, e.LocalOrigin, e.LocalCommitTS, e.TableSchema, e.TableName, e.Operation,
			e.LocalTup, e.RemoteOldTup, e.RemoteNewTup, e.ErrorMessage, e.DDLStatement, e.DDLUser,
			e.Status, e.ResolvedAt, e.ResolutionDetails}
	}
	return r.fenced(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM ace.spock_exception_rows WHERE task_id = $1 AND node_name = $2`, r.Task.ID, node); err != nil {
			return fmt.Errorf("clear earlier Spock exceptions of node %s: %w", node, err)
		}
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"ace", "spock_exception_rows"},
			[]string{"task_id", "node_name", "remote_origin", "remote_commit_ts", "command_counter", "retry_errored_at",
				"remote_xid", "local_origin", "local_commit_ts", "table_schema", "table_name", "operation",
				"local_tup", "remote_old_tup", "remote_new_tup", "error_message", "ddl_statement", "ddl_user",
				"status", "resolved_at", "resolution_details"}, pgx.CopyFromRows(data))
		if err != nil {
			return fmt.Errorf("store %d Spock exceptions of node %s: %w", len(rows), node, err)
		}
		return nil
	})
}
