package spock

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/engine"
)

// Key finds an exception as ACE's Python API does, by remote_origin, remote_commit_ts and
// remote_xid, narrowed as Spock 5 keys it: to one command, and to one retry.
type Key struct {
	RemoteOrigin   uint32
	RemoteCommitTS time.Time
	RemoteXID      int64
	CommandCounter *int32     // nil: the transaction's status row and every detail row
	RetryErroredAt *time.Time // nil: every retry of the transaction
}

// Update sets an exception's status.
type Update struct {
	Key               Key
	Status            string
	ResolutionDetails map[string]any
}

// UpdateResult says which rows an update changed on the node.
type UpdateResult struct {
	Node       string `json:"node_name"`
	Status     string `json:"status"`
	StatusRows int64  `json:"status_rows"`
	DetailRows int64  `json:"detail_rows"`
}

// Apply updates the exception on the node in one transaction: without a command counter its
// spock.exception_status row(s) and all their spock.exception_status_detail rows, with one only
// that command's detail row(s). resolved_at is the time of the update, as in ACE. An update that
// matches no row is an error: a mistyped key must not look like a success.
func Apply(ctx context.Context, n *engine.Node, u Update) (UpdateResult, error) {
	res := UpdateResult{Node: n.Name, Status: u.Status}
	if err := CheckInstalled(ctx, n); err != nil {
		return res, err
	}
	details, err := json.Marshal(u.ResolutionDetails)
	if err != nil {
		return res, fmt.Errorf("encode resolution_details: %w", err)
	}
	if u.ResolutionDetails == nil {
		details = nil
	}
	k := u.Key
	args := []any{u.Status, details, k.RemoteOrigin, k.RemoteCommitTS, k.RemoteXID, k.RetryErroredAt, k.CommandCounter}
	const set = `SET status = $1, resolution_details = $2, resolved_at = clock_timestamp()
		WHERE remote_origin = $3 AND remote_commit_ts = $4 AND remote_xid = $5
		  AND ($6::timestamptz IS NULL OR retry_errored_at = $6)`
	err = pgx.BeginFunc(ctx, n.Pool, func(tx pgx.Tx) error {
		if k.CommandCounter == nil {
			tag, err := tx.Exec(ctx, `UPDATE spock.exception_status `+set+` AND $7::int IS NULL`, args...)
			if err != nil {
				return fmt.Errorf("update spock.exception_status on node %s: %w", n.Name, err)
			}
			res.StatusRows = tag.RowsAffected()
		}
		tag, err := tx.Exec(ctx, `UPDATE spock.exception_status_detail `+set+` AND ($7::int IS NULL OR command_counter = $7)`, args...)
		if err != nil {
			return fmt.Errorf("update spock.exception_status_detail on node %s: %w", n.Name, err)
		}
		res.DetailRows = tag.RowsAffected()
		if res.StatusRows+res.DetailRows == 0 {
			return fmt.Errorf("no Spock exception on node %s has remote_origin %d, remote_commit_ts %s, remote_xid %d%s: nothing was updated; see the node's exceptions with SELECT ace.spock_exception_sync(ARRAY['%s']); then SELECT * FROM ace.spock_exceptions('%s');",
				n.Name, k.RemoteOrigin, k.RemoteCommitTS.UTC().Format(time.RFC3339Nano), k.RemoteXID, k.narrowing(), n.Name, n.Name)
		}
		return nil
	})
	return res, err
}

func (k Key) narrowing() string {
	s := ""
	if k.CommandCounter != nil {
		s += fmt.Sprintf(", command_counter %d", *k.CommandCounter)
	}
	if k.RetryErroredAt != nil {
		s += ", retry_errored_at " + k.RetryErroredAt.UTC().Format(time.RFC3339Nano)
	}
	return s
}

// SettleTransaction gives a transaction's status row (one retry of it: Key's RetryErroredAt) the
// status its commands have, once every command's detail row has that status: a transaction is
// resolved when all its commands are, whichever tables they touched. It reports whether the row
// was changed.
func SettleTransaction(ctx context.Context, n *engine.Node, u Update) (bool, error) {
	details, err := json.Marshal(u.ResolutionDetails)
	if err != nil {
		return false, fmt.Errorf("encode resolution_details: %w", err)
	}
	k := u.Key
	tag, err := n.Pool.Exec(ctx, `UPDATE spock.exception_status s
		SET status = $1, resolution_details = $2, resolved_at = clock_timestamp()
		WHERE s.remote_origin = $3 AND s.remote_commit_ts = $4 AND s.remote_xid = $5 AND s.retry_errored_at = $6
		  AND s.status IS DISTINCT FROM $1
		  AND NOT EXISTS (SELECT 1 FROM spock.exception_status_detail d
		                  WHERE (d.remote_origin, d.remote_commit_ts, d.remote_xid, d.retry_errored_at)
		                      = (s.remote_origin, s.remote_commit_ts, s.remote_xid, s.retry_errored_at)
		                    AND d.status IS DISTINCT FROM $1)`,
		u.Status, details, k.RemoteOrigin, k.RemoteCommitTS, k.RemoteXID, k.RetryErroredAt)
	if err != nil {
		return false, fmt.Errorf("update spock.exception_status on node %s: %w", n.Name, err)
	}
	return tag.RowsAffected() > 0, nil
}
