package mtree

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/sourcegraph/conc/pool"

	"github.com/ace-agent/ace-agent/engine"
)

// mapPendingSQL moves a tree's pending keys ($1 = tree id) onto the leaves that hold them, as
// dirty rows. A transaction visible in the snapshot $2 (NULL: the statement's) is recorded as '0': seen by every
// snapshot taken later, under the tree's lock, so by every refresh to come. Keys arrive as the
// text output of their columns and are compared as the leaves' bounds are (engine.KeyOrder);
// a key of NULL (a TRUNCATE) dirties every leaf. The leaves' sorted bounds, which cost a read of
// every leaf, are built only when some key is pending.
func mapPendingSQL(keys engine.KeyOrder) string {
	return fmt.Sprintf(`WITH p AS (DELETE FROM ace.mtree_pending x WHERE x.tree_id = $1 RETURNING x.key, x.xid, x.lsn),
		b AS (
			SELECT array_agg(%[1]s ORDER BY %[1]s) AS bounds, array_agg(l.leaf_id ORDER BY %[1]s) AS ids
			FROM ace.mtree_leaves l WHERE l.tree_id = $1 AND l.lo IS NOT NULL AND EXISTS (SELECT FROM p WHERE p.key IS NOT NULL)),
		f AS (SELECT l.leaf_id FROM ace.mtree_leaves l WHERE l.tree_id = $1 AND l.lo IS NULL),
		m AS (
			SELECT CASE WHEN w IS NULL OR w = 0 THEN (SELECT f.leaf_id FROM f) ELSE b.ids[w] END AS leaf_id, p.xid, p.lsn
			FROM p CROSS JOIN b CROSS JOIN LATERAL width_bucket(%[2]s, b.bounds) AS w
			WHERE p.key IS NOT NULL
			UNION ALL
			SELECT l.leaf_id, p.xid, p.lsn FROM p JOIN ace.mtree_leaves l ON l.tree_id = $1 WHERE p.key IS NULL)
		INSERT INTO ace.mtree_dirty (tree_id, leaf_id, xid, lsn)
		SELECT $1, m.leaf_id, CASE WHEN pg_visible_in_snapshot(m.xid, coalesce($2::pg_snapshot, pg_current_snapshot())) THEN '0'::xid8 ELSE m.xid END, max(m.lsn)
		FROM m WHERE m.leaf_id IS NOT NULL GROUP BY 2, 3
		ON CONFLICT (tree_id, leaf_id, xid) DO UPDATE SET lsn = greatest(ace.mtree_dirty.lsn, excluded.lsn)`,
		keys.KeyFromArray("l.lo"), keys.KeyFromRawArray("p.key"))
}

// Compact moves the pending keys of every ready tree on a node onto their leaves, so that the
// pending changes of a busy table take one row per leaf instead of one per change. The agent
// of the node calls it now and then with its own login; a tree some task holds is skipped.
func Compact(ctx context.Context, agent *engine.Node, minPending int) (int64, error) {
	rows, err := agent.Pool.Query(ctx, `SELECT m.table_name FROM ace.mtrees m
		WHERE m.status = 'ready' AND (SELECT count(*) FROM ace.mtree_pending p WHERE p.tree_id = m.tree_id) >= $1`, minPending)
	if err != nil {
		return 0, fmt.Errorf("find trees to compact: %w", err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, fmt.Errorf("find trees to compact: %w", err)
	}
	var moved int64
	for _, table := range tables {
		n, err := compactTree(ctx, agent, table)
		if errors.Is(err, errTreeBusy) {
			continue // a task holds it, and assigns the pending keys itself
		}
		if err != nil {
			return moved, fmt.Errorf("compact the pending changes of %s: %w", table, err)
		}
		moved += n
	}
	return moved, nil
}

func compactTree(ctx context.Context, agent *engine.Node, table string) (int64, error) {
	var moved int64
	err := pgx.BeginFunc(ctx, agent.Pool, func(tx pgx.Tx) error {
		t, err := lockTreeNoWait(ctx, tx, table)
		if err != nil {
			return err
		}
		keys, err := treeKeyOrder(ctx, agent, t)
		if err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, mapPendingSQL(keys), t.ID, nil)
		moved = tag.RowsAffected()
		return err
	})
	return moved, err
}

// errTreeBusy is a tree another transaction holds.
var errTreeBusy = errors.New("the tree is held by a task")

// lockTreeNoWait locks the tree's row, or returns errTreeBusy if someone holds it (or it is gone).
func lockTreeNoWait(ctx context.Context, tx pgx.Tx, table string) (*tree, error) {
	if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '10ms'`); err != nil {
		return nil, err
	}
	t, err := loadTree(ctx, tx, table, true)
	if engine.IsLockTimeout(err) || errors.Is(err, errNoTree) {
		return nil, errTreeBusy
	}
	return t, err
}

// treeKeyOrder is the key order a tree was built with, on the table as the node has it now.
func treeKeyOrder(ctx context.Context, n *engine.Node, t *tree) (engine.KeyOrder, error) {
	schema, name, err := engine.SplitTableName(t.Table)
	if err != nil {
		return engine.KeyOrder{}, err
	}
	table, err := engine.LoadTable(ctx, n, schema, name)
	if err != nil {
		return engine.KeyOrder{}, err
	}
	return engine.NewKeyOrderFixed(table, t.CollateC)
}

// refreshNode brings one node's tree up to the session's snapshot: its pending keys go onto
// leaves, and every leaf dirtied by a transaction the snapshot sees is hashed again there. It
// runs in tx, which holds the tree's lock, and returns the ids of the leaves it hashed.
func (d *differ) refreshNode(ctx context.Context, i int) ([]int, error) {
	tx, t := d.txs[i], d.trees[i]
	if err := d.readCandidates(ctx, i); err != nil {
		return nil, err
	}
	if err := d.readUnknownChanges(ctx, i); err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, mapPendingSQL(d.sub.keys), t.ID, d.snaps[i]); err != nil {
		return nil, fmt.Errorf("assign the pending changes to leaves: %w", err)
	}
	// The dirty ids are collected first (an init plan), so the leaves are read by their key
	// whatever the planner believes of a tree just built: joined, a nested loop over every leaf
	// once cost a second at 40,000 leaves.
	// Their summaries as stored are what the leaves were before the changes now applied.
	rows, err := tx.Query(ctx, `SELECT l.leaf_id, l.lo, l.hi, l.row_count, l.lane1::text, l.lane2::text, l.digest
		FROM ace.mtree_leaves l WHERE l.tree_id = $1 AND l.leaf_id = ANY(ARRAY(
		SELECT x.leaf_id FROM ace.mtree_dirty x WHERE x.tree_id = $1 AND pg_visible_in_snapshot(x.xid, $2::pg_snapshot)))
		ORDER BY l.leaf_id`, t.ID, d.snaps[i])
	if err != nil {
		return nil, fmt.Errorf("find the stale leaves: %w", err)
	}
	stale, err := pgx.CollectRows(rows, scanStoredLeaf)
	if err != nil {
		return nil, fmt.Errorf("find the stale leaves: %w", err)
	}
	ranges := make([]engine.Range, len(stale))
	ids := make([]int, len(stale))
	d.history[i].before = make(map[int]summary, len(stale))
	for j, l := range stale {
		ranges[j], ids[j] = l.Range, l.ID
		d.history[i].before[l.ID] = l.sum
	}
	ids, sums, err := d.hashStale(ctx, i, ids, ranges)
	if err != nil {
		return nil, err
	}
	if err := updateLeaves(ctx, tx, t.ID, ids, sums); err != nil {
		return nil, err
	}
	_, err = tx.Exec(ctx, `DELETE FROM ace.mtree_dirty WHERE tree_id = $1 AND pg_visible_in_snapshot(xid, $2::pg_snapshot)`, t.ID, d.snaps[i])
	if err != nil {
		return nil, fmt.Errorf("clear the refreshed leaves: %w", err)
	}
	return ids, nil
}

// hashStale hashes the stale leaves ids (with their ranges) of node i, or every leaf of its
// tree when so many are stale that one pass over the table costs less, and returns the leaves
// hashed with their summaries.
func (d *differ) hashStale(ctx context.Context, i int, ids []int, ranges []engine.Range) ([]int, []summary, error) {
	if len(ids) == 0 {
		return nil, nil, nil
	}
	total, err := d.leafCount(ctx, i, len(ids)*wholePassShare+1)
	if err != nil {
		return nil, nil, err
	}
	if len(ids)*wholePassShare > total {
		return d.rehashAll(ctx, i)
	}
	sums, err := d.parallelSummaries(ctx, i, ranges)
	return ids, sums, err
}

func scanStoredLeaf(r pgx.CollectableRow) (leaf, error) {
	var l leaf
	var count int64
	var lane1, lane2 *string
	var digest []byte
	err := r.Scan(&l.ID, &l.Range.Lo, &l.Range.Hi, &count, &lane1, &lane2, &digest)
	l.sum = storedSummary(count, lane1, lane2, digest)
	return l, err
}

func updateLeaves(ctx context.Context, tx pgx.Tx, treeID int64, ids []int, sums []summary) error {
	if len(ids) == 0 {
		return nil
	}
	counts := make([]int64, len(ids))
	lane1 := make([]*string, len(ids))
	lane2 := make([]*string, len(ids))
	digests := make([][]byte, len(ids))
	for j, s := range sums {
		counts[j] = s.Count
		lane1[j], lane2[j], digests[j] = s.columns()
	}
	_, err := tx.Exec(ctx, `UPDATE ace.mtree_leaves l SET row_count = v.c, lane1 = v.a, lane2 = v.b, digest = v.d
		FROM unnest($2::int[], $3::bigint[], $4::numeric[], $5::numeric[], $6::bytea[]) AS v(id, c, a, b, d)
		WHERE l.tree_id = $1 AND l.leaf_id = ANY($2) AND l.leaf_id = v.id`, treeID, ids, counts, lane1, lane2, digests)
	if err != nil {
		return fmt.Errorf("store the refreshed leaves: %w", err)
	}
	return nil
}

// refreshChunk is the fewest stale leaves worth a connection of their own.
const refreshChunk = 32

// parallelSummaries hashes ranges on node i over up to Workers connections at once.
func (d *differ) parallelSummaries(ctx context.Context, i int, ranges []engine.Range) ([]summary, error) {
	sums := make([]summary, len(ranges))
	workers := max(1, min(d.opts.Diff.Workers, (len(ranges)+refreshChunk-1)/refreshChunk))
	per := (len(ranges) + workers - 1) / workers
	p := pool.New().WithErrors().WithContext(ctx).WithCancelOnError()
	for start := 0; start < len(ranges); start += per {
		end := min(start+per, len(ranges))
		p.Go(func(ctx context.Context) error {
			part, err := d.sub.rangeSummaries(ctx, d.sessions[i], ranges[start:end])
			copy(sums[start:end], part)
			return err
		})
	}
	return sums, p.Wait()
}

// wholePassShare: when more than one leaf in this many is stale, one pass over the whole table
// costs less than a range scan per leaf.
const wholePassShare = 4

// rehashAll hashes every leaf of node i's tree in one pass over the table, cut into Workers
// ranges hashed at once, and returns the leaf ids with their summaries.
func (d *differ) rehashAll(ctx context.Context, i int) ([]int, []summary, error) {
	k := d.sub.keys
	rows, err := d.txs[i].Query(ctx, fmt.Sprintf(`SELECT leaf_id, lo FROM ace.mtree_leaves WHERE tree_id = $1 ORDER BY lo IS NOT NULL, %s`,
		k.KeyFromArray("lo")), d.trees[i].ID)
	if err != nil {
		return nil, nil, fmt.Errorf("read the leaves: %w", err)
	}
	var ids []int
	var bounds [][]string
	var id int
	var lo []string
	_, err = pgx.ForEachRow(rows, []any{&id, &lo}, func() error {
		ids = append(ids, id)
		if lo != nil {
			bounds = append(bounds, append([]string(nil), lo...))
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read the leaves: %w", err)
	}
	if len(bounds) != len(ids)-1 {
		return nil, nil, fmt.Errorf("the tree's leaves do not cover the key space (%d leaves, %d lower bounds); build it again", len(ids), len(bounds))
	}
	parts := max(1, min(d.opts.Diff.Workers, len(ids)/refreshChunk))
	sums, err := d.sub.summaries(ctx, d.sessions[i], engine.Range{}, bounds, parts)
	return ids, sums, err
}
