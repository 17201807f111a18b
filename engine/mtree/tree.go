package mtree

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/diff"
)

// NodeLogins is one node as a tree task sees it: the submitter's login reads the table, the
// agent's own login (the owner of the ace schema) writes the tree, so no submitter can write a
// tree. Wake, when set, tells the node's agent what the task did (see WakeFunc).
type NodeLogins struct {
	Data  *engine.Node
	Agent *engine.Node
	Wake  WakeFunc
}

// Wakeup is what a tree task tells the node's agent.
type Wakeup int

const (
	// TreesChanged: the set of tracked tables changed, a tree was registered or deleted.
	TreesChanged Wakeup = iota + 1
	// PositionWanted: a build or a diff waits for the change stream to report its position now.
	PositionWanted
)

// WakeFunc tells the node's agent w on q, the agent's login: inside the task's transaction when q
// is one, so that the agent hears of a change only once it is committed. The caller (the agent)
// chooses how; the engine knows nothing of notifications.
type WakeFunc func(ctx context.Context, q engine.Querier, w Wakeup) error

// wake tells the node's agent w; a node without a WakeFunc has no agent to tell, and its agent
// notices on its next round instead.
func (n NodeLogins) wake(ctx context.Context, q engine.Querier, w Wakeup) error {
	if n.Wake == nil {
		return nil
	}
	return n.Wake(ctx, q, w)
}

// Name is the node's name.
func (n NodeLogins) Name() string { return n.Data.Name }

func sortNodes(nodes []NodeLogins) []NodeLogins {
	out := append([]NodeLogins(nil), nodes...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out
}

func dataNodes(nodes []NodeLogins) []*engine.Node {
	out := make([]*engine.Node, len(nodes))
	for i, n := range nodes {
		out[i] = n.Data
	}
	return out
}

// DataSettings are the run-time settings of the submitter's sessions of a tree task. With
// row_security off PostgreSQL raises instead of filtering rows by a policy, so no view that
// row-level security restricts can hash a tree's leaves, even if checkAccess missed it.
var DataSettings = map[string]string{"row_security": "off"}

// checkAccess refuses, before anything is written, a submitter whose view of the table on a
// node is restricted (ace.check_full_view: a tree is shared by every user of the table, so its
// leaves must cover every row) and, when ready is set, a tree that is not ready or not the tree
// of the table the submitter's name resolves to now (ace.check_mtree_ready: a table dropped
// and re-created, or given to another owner, since the tree was built).
func checkAccess(ctx context.Context, n NodeLogins, table string, ready bool) error {
	sql := `SELECT ace.check_full_view($1::text)`
	if ready {
		sql += `, ace.check_mtree_ready($1::text, $1::text::regclass::oid)`
	}
	if _, err := n.Data.Pool.Exec(ctx, sql, table); err != nil {
		return fmt.Errorf("node %s: %w", n.Name(), err)
	}
	return nil
}

// tree is a row of ace.mtrees.
type tree struct {
	ID          int64
	Table       string
	Publication string
	LeafRows    int
	KeyColumns  []string
	CollateC    []bool
	HashMode    engine.HashMode
	HashVersion int
	LeafSummary diff.SummaryKind
	Status      string
	TrackingLSN *string
	NextLeafID  int
	Generation  int
	Error       *string
}

const treeColumns = `tree_id, table_name, publication, leaf_rows, key_columns, key_collate_c, hash_mode, hash_version,
	leaf_summary, status, tracking_lsn::text, next_leaf_id, generation, error`

var errNoTree = errors.New("no Merkle tree")

// loadTree reads the tree of table; lock adds FOR UPDATE (inside a transaction).
func loadTree(ctx context.Context, q engine.Querier, table string, lock bool) (*tree, error) {
	sql := `SELECT ` + treeColumns + ` FROM ace.mtrees WHERE table_name = $1`
	if lock {
		sql += " FOR UPDATE"
	}
	var t tree
	err := q.QueryRow(ctx, sql, table).Scan(&t.ID, &t.Table, &t.Publication, &t.LeafRows, &t.KeyColumns, &t.CollateC,
		&t.HashMode, &t.HashVersion, &t.LeafSummary, &t.Status, &t.TrackingLSN, &t.NextLeafID, &t.Generation, &t.Error)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, errNoTree
	}
	return &t, err
}

// leaf is a row of ace.mtree_leaves.
type leaf struct {
	ID    int
	Range engine.Range
	sum   summary
}

// summary is a leaf's (or a range's) row count and, as its tree's leaf summary says, the sums
// of its rows' lanes (exact numerics, as text) or its ordered digest (raw bytes; empty for no
// rows). Overflow marks an ordered leaf that held more rows than a digest reads: its digest
// stands for only some of them, so it never compares equal.
type summary struct {
	Count        int64
	Lane1, Lane2 string
	Digest       string
	Overflow     bool
}

// emptySum is the lanes summary of no rows; the ordered one is the zero summary.
var emptySum = summary{Lane1: "0", Lane2: "0"}

// columns are the summary as ace.mtree_leaves stores it: the lanes of a lanes summary, the
// digest of an ordered one (NULL when it overflowed), NULL for the other.
func (s summary) columns() (lane1, lane2 *string, digest []byte) {
	switch {
	case s.Lane1 != "":
		return &s.Lane1, &s.Lane2, nil
	case s.Overflow:
		return nil, nil, nil
	default:
		return nil, nil, append([]byte{}, s.Digest...)
	}
}

// storedSummary is a summary as columns stored it: lanes as text, or the digest.
func storedSummary(count int64, lane1, lane2 *string, digest []byte) summary {
	switch {
	case lane1 != nil && lane2 != nil:
		return summary{Count: count, Lane1: *lane1, Lane2: *lane2}
	case digest == nil:
		return summary{Count: count, Overflow: true}
	default:
		return summary{Count: count, Digest: string(digest)}
	}
}

// copyLeaves writes leaves of tree id with COPY.
func copyLeaves(ctx context.Context, tx pgx.Tx, id int64, leaves []leaf) error {
	rows := make([][]any, len(leaves))
	for i, l := range leaves {
		lane1, lane2, digest := l.sum.columns()
		rows[i] = []any{id, l.ID, l.Range.Lo, l.Range.Hi, l.sum.Count, lane1, lane2, digest}
	}
	_, err := tx.CopyFrom(ctx, pgx.Identifier{"ace", "mtree_leaves"},
		[]string{"tree_id", "leaf_id", "lo", "hi", "row_count", "lane1", "lane2", "digest"}, pgx.CopyFromRows(rows))
	return err
}

// poll calls check every interval until it reports done, fails, or timeout passes.
func poll(ctx context.Context, timeout time.Duration, check func() (bool, error)) (bool, error) {
	deadline := time.Now().Add(timeout)
	for {
		done, err := check()
		if err != nil || done {
			return done, err
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// waitForOlderTransactions waits until every transaction that was running when it was called
// has ended, as CREATE INDEX CONCURRENTLY does: afterwards every transaction whose commit the
// change stream has passed is visible to a new snapshot. Anyone can leave a transaction open,
// so the wait ends after timeout (0: a minute) with an error naming the sessions still open.
func waitForOlderTransactions(ctx context.Context, n *engine.Node, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = time.Minute
	}
	var snap string
	if err := n.Pool.QueryRow(ctx, `SELECT pg_current_snapshot()::text`).Scan(&snap); err != nil {
		return fmt.Errorf("node %s: read the running transactions: %w", n.Name, err)
	}
	done, err := poll(ctx, timeout, func() (bool, error) {
		var done bool
		err := n.Pool.QueryRow(ctx, `SELECT coalesce(bool_and(pg_visible_in_snapshot(x, pg_current_snapshot())), true)
			FROM pg_snapshot_xip($1::pg_snapshot) x`, snap).Scan(&done)
		return done, err
	})
	if err != nil {
		return fmt.Errorf("node %s: wait for the transactions running before the tree's change tracking began: %w", n.Name, err)
	}
	if !done {
		return olderTransactionsError(ctx, n, snap, timeout)
	}
	return nil
}

// olderTransactionsError names the sessions whose transactions of snap are still open, with
// what pg_stat_activity shows the submitter of them: pid and user always, how long the
// transaction has been open only for the submitter's own sessions (or with pg_read_all_stats).
func olderTransactionsError(ctx context.Context, n *engine.Node, snap string, waited time.Duration) error {
	rows, err := n.Pool.Query(ctx, `SELECT a.pid, coalesce(a.usename::text, '?'),
			coalesce(date_trunc('second', now() - a.xact_start)::text, 'an unknown time')
		FROM pg_stat_activity a
		WHERE a.backend_xid::text::bigint IN (
			SELECT x::text::bigint % 4294967296 FROM pg_snapshot_xip($1::pg_snapshot) x
			WHERE NOT pg_visible_in_snapshot(x, pg_current_snapshot()))
		ORDER BY a.pid`, snap)
	if err != nil {
		return fmt.Errorf("node %s: find the transactions a tree build waits for: %w", n.Name, err)
	}
	var open []string
	var pid, firstPid int
	var user, age string
	_, err = pgx.ForEachRow(rows, []any{&pid, &user, &age}, func() error {
		if open == nil {
			firstPid = pid
		}
		open = append(open, fmt.Sprintf("pid %d (user %s, open for %s)", pid, user, age))
		return nil
	})
	if err != nil {
		return fmt.Errorf("node %s: find the transactions a tree build waits for: %w", n.Name, err)
	}
	if len(open) == 0 {
		return fmt.Errorf("node %s: transactions open when the tree's change tracking began were still open after %s, and none of them is a session's (a prepared transaction? see pg_prepared_xacts); end them, then build again",
			n.Name, waited)
	}
	return fmt.Errorf("node %s: transactions open when the tree's change tracking began were still open after %s: %s; end them (COMMIT or ROLLBACK in that session, or SELECT pg_terminate_backend(%d) as the session's user or a superuser), then build again",
		n.Name, waited, strings.Join(open, ", "), firstPid)
}

// snapshotOf is the pg_snapshot of a session: which transactions its reads see.
func snapshotOf(ctx context.Context, s *engine.Session) (string, error) {
	var snap string
	err := s.Read(ctx, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT pg_current_snapshot()::text`).Scan(&snap)
	})
	return snap, err
}
