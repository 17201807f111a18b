// Package spock reads and updates Spock's exception tables on one node: the exceptions its apply
// workers logged (spock.exception_log) and the statuses kept for them (spock.exception_status,
// spock.exception_status_detail), keyed as Spock 5 keys them. It works in whatever session it is
// given; the agent gives it the submitter's own login.
package spock

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/engine"
)

// ErrNotInstalled is returned for a node that lacks Spock's exception tables.
var ErrNotInstalled = errors.New("spock is not installed")

// relations are the Spock relations these tasks use. Spock is detected by them, not by
// pg_extension: what the tasks need is the tables, whoever made them.
var relations = []string{"spock.node", "spock.exception_log", "spock.exception_status", "spock.exception_status_detail"}

// Exception is one entry of a node's spock.exception_log with the status Spock keeps for it.
// The row images and the error message are nil unless the session may SELECT the table.
type Exception struct {
	RemoteOrigin      uint32
	RemoteCommitTS    time.Time
	CommandCounter    int32
	RetryErroredAt    time.Time
	RemoteXID         int64
	LocalOrigin       *uint32
	LocalCommitTS     *time.Time
	TableSchema       *string
	TableName         *string
	Operation         *string
	LocalTup          []byte
	RemoteOldTup      []byte
	RemoteNewTup      []byte
	ErrorMessage      *string
	DDLStatement      *string
	DDLUser           *string
	Status            *string
	ResolvedAt        *time.Time
	ResolutionDetails []byte
}

// SyncCounts says what a sync did on one node.
type SyncCounts struct {
	Exceptions    int            `json:"exceptions"`
	NewStatuses   int64          `json:"new_status_rows"`
	NewDetails    int64          `json:"new_detail_rows"`
	ByStatus      map[string]int `json:"by_status"`
	ImagesHidden  int            `json:"row_images_hidden"`
	SpockNodeName string         `json:"spock_node,omitempty"`
}

// CheckInstalled returns ErrNotInstalled, naming the node, unless all of Spock's relations are
// there.
func CheckInstalled(ctx context.Context, n *engine.Node) error {
	var missing []string
	err := n.Pool.QueryRow(ctx, `SELECT coalesce(array_agg(r ORDER BY r), '{}') FROM unnest($1::text[]) r WHERE to_regclass(r) IS NULL`,
		relations).Scan(&missing)
	if err != nil {
		return fmt.Errorf("look for Spock's tables on node %s: %w", n.Name, err)
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w on node %s (missing %v): install Spock there, or leave the node out with nodes => ARRAY[...]",
			ErrNotInstalled, n.Name, missing)
	}
	return nil
}

// Sync gives every exception_log entry of the node its PENDING rows in exception_status (one per
// transaction and retry) and exception_status_detail (one per command), as ACE's poller does but
// with retry_errored_at, then reads the node's exceptions. One transaction. (Spock's tables are
// catalog tables, on which PostgreSQL refuses ON CONFLICT.)
func Sync(ctx context.Context, n *engine.Node) (rows []Exception, counts SyncCounts, err error) {
	if err := CheckInstalled(ctx, n); err != nil {
		return nil, counts, err
	}
	err = pgx.BeginFunc(ctx, n.Pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO spock.exception_status (remote_origin, remote_commit_ts, retry_errored_at, remote_xid, status)
			SELECT DISTINCT ON (remote_origin, remote_commit_ts, retry_errored_at) remote_origin, remote_commit_ts, retry_errored_at, remote_xid, 'PENDING'
			FROM spock.exception_log l
			WHERE NOT EXISTS (SELECT 1 FROM spock.exception_status s
				WHERE (s.remote_origin, s.remote_commit_ts, s.retry_errored_at) = (l.remote_origin, l.remote_commit_ts, l.retry_errored_at))
			ORDER BY remote_origin, remote_commit_ts, retry_errored_at`)
		if err != nil {
			return fmt.Errorf("add PENDING rows to spock.exception_status on node %s: %w", n.Name, err)
		}
		counts.NewStatuses = tag.RowsAffected()
		tag, err = tx.Exec(ctx, `INSERT INTO spock.exception_status_detail (remote_origin, remote_commit_ts, command_counter, retry_errored_at, remote_xid, status)
			SELECT remote_origin, remote_commit_ts, command_counter, retry_errored_at, remote_xid, 'PENDING'
			FROM spock.exception_log l
			WHERE NOT EXISTS (SELECT 1 FROM spock.exception_status_detail d
				WHERE (d.remote_origin, d.remote_commit_ts, d.command_counter, d.retry_errored_at)
				    = (l.remote_origin, l.remote_commit_ts, l.command_counter, l.retry_errored_at))`)
		if err != nil {
			return fmt.Errorf("add PENDING rows to spock.exception_status_detail on node %s: %w", n.Name, err)
		}
		counts.NewDetails = tag.RowsAffected()
		rows, err = read(ctx, tx, n.Name)
		return err
	})
	if err != nil {
		return nil, counts, err
	}
	counts.Exceptions, counts.ByStatus = len(rows), map[string]int{}
	for _, e := range rows {
		if e.Status != nil {
			counts.ByStatus[*e.Status]++
		}
		if e.ErrorMessage == nil { // NOT NULL in the log: hidden
			counts.ImagesHidden++
		}
	}
	return rows, counts, nil
}

// read returns the node's exceptions with their detail status (the transaction's status where
// the command has none). Row images and the error message only where the session may SELECT the
// table: they are rows of it. An exception of no table (DDL) has no row images to hide.
func read(ctx context.Context, tx pgx.Tx, node string) ([]Exception, error) {
	rows, err := tx.Query(ctx, `SELECT l.remote_origin, l.remote_commit_ts, l.command_counter, l.retry_errored_at, l.remote_xid,
			l.local_origin, l.local_commit_ts, l.table_schema, l.table_name, l.operation,
			CASE WHEN v.ok THEN l.local_tup END, CASE WHEN v.ok THEN l.remote_old_tup END,
			CASE WHEN v.ok THEN l.remote_new_tup END, CASE WHEN v.ok THEN l.error_message END,
			l.ddl_statement, l.ddl_user,
			coalesce(d.status, s.status), coalesce(d.resolved_at, s.resolved_at), coalesce(d.resolution_details, s.resolution_details)
		FROM spock.exception_log l
		CROSS JOIN LATERAL (SELECT CASE WHEN l.table_name IS NULL THEN true WHEN l.table_schema IS NULL THEN false
			ELSE coalesce(has_table_privilege(to_regclass(format('%I.%I', l.table_schema, l.table_name)), 'SELECT'), false) END AS ok) v
		LEFT JOIN spock.exception_status_detail d USING (remote_origin, remote_commit_ts, command_counter, retry_errored_at)
		LEFT JOIN spock.exception_status s USING (remote_origin, remote_commit_ts, retry_errored_at)
		ORDER BY l.remote_commit_ts, l.remote_origin, l.retry_errored_at, l.command_counter`)
	if err != nil {
		return nil, fmt.Errorf("read spock.exception_log on node %s: %w", node, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (e Exception, err error) {
		err = r.Scan(&e.RemoteOrigin, &e.RemoteCommitTS, &e.CommandCounter, &e.RetryErroredAt, &e.RemoteXID,
			&e.LocalOrigin, &e.LocalCommitTS, &e.TableSchema, &e.TableName, &e.Operation,
			&e.LocalTup, &e.RemoteOldTup, &e.RemoteNewTup, &e.ErrorMessage, &e.DDLStatement, &e.DDLUser,
			&e.Status, &e.ResolvedAt, &e.ResolutionDetails)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("read spock.exception_log on node %s: %w", node, err)
	}
	return out, nil
}
