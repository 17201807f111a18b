package engine

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Session reads one node at one point in time: a READ ONLY transaction exports its snapshot and
// every query of the diff imports it, so hashing, narrowing and row fetching all see the same
// rows even though they run on several connections.
type Session struct {
	node     *Node
	holder   *pgxpool.Conn
	snapshot string
}

// beginExportSQL begins the session's transaction and exports its snapshot in one round trip
// (the simple protocol takes both statements): a small table's diff is mostly round trips.
const beginExportSQL = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT pg_export_snapshot()"

// OpenSession opens a Session on node n: a READ ONLY, REPEATABLE READ transaction held on a
// connection of its own, whose snapshot it exports.
func OpenSession(ctx context.Context, n *Node) (*Session, error) {
	conn, err := n.Pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("node %s: connect: %w", n.Name, err)
	}
	s := &Session{node: n, holder: conn}
	results, err := conn.Conn().PgConn().Exec(ctx, beginExportSQL).ReadAll()
	if err == nil && (len(results) != 2 || len(results[1].Rows) != 1 || len(results[1].Rows[0]) != 1) {
		err = fmt.Errorf("unexpected reply to %q", beginExportSQL)
	}
	if err != nil {
		s.Close(ctx)
		return nil, fmt.Errorf("node %s: begin and export snapshot: %w", n.Name, err)
	}
	s.snapshot = string(results[1].Rows[0][0])
	return s, nil
}

// Close ends the session's transaction and releases its connection (a connection left in a
// transaction, because the rollback failed, is closed by the pool).
func (s *Session) Close(ctx context.Context) {
	_, _ = s.holder.Exec(context.WithoutCancel(ctx), "ROLLBACK")
	s.holder.Release()
}

// Read runs fn in a READ ONLY transaction on the session's snapshot.
func (s *Session) Read(ctx context.Context, fn func(tx pgx.Tx) error) error {
	conn, err := s.node.Pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("node %s: connect: %w", s.node.Name, err)
	}
	defer conn.Release()
	// One round trip begins the transaction and imports the snapshot (a query without arguments
	// goes by the simple protocol, which takes both statements): a small table's diff is mostly
	// round trips.
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{
		BeginQuery: "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT " + QuoteLiteral(s.snapshot)})
	if err != nil {
		return fmt.Errorf("node %s: begin and import snapshot: %w", s.node.Name, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if err := fn(tx); err != nil {
		return fmt.Errorf("node %s: %w", s.node.Name, err)
	}
	return tx.Commit(ctx)
}
