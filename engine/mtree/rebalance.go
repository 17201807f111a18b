package mtree

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/diff"
)

// nodeLeaf is one leaf as every node has it: the same range, each node's count.
type nodeLeaf struct {
	ID     int
	Range  engine.Range
	Counts []int64
}

func (l nodeLeaf) most() (node int, count int64) {
	for i, c := range l.Counts {
		if c > count || i == 0 {
			node, count = i, c
		}
	}
	return node, count
}

// rebalance splits leaves that grew past twice leaf_rows and merges leaves that shrank under
// half of it with a neighbour, deciding from every node's counts so the leaves stay the same
// on every node. Only leaves just refreshed can have changed size, so only they (and their
// neighbours) are looked at: the cost follows the changes, not the table.
func (d *differ) rebalance(ctx context.Context, refreshed [][]int) error {
	var touched []int
	for _, ids := range refreshed {
		touched = append(touched, ids...)
	}
	slices.Sort(touched)
	touched = slices.Compact(touched)
	if len(touched) == 0 {
		return nil
	}
	limit := int64(d.trees[0].LeafRows)
	// Most refreshes leave every leaf within bounds: then no neighbour needs reading.
	if touched, err := d.outOfBounds(ctx, touched, limit); err != nil || len(touched) == 0 {
		return err
	}
	leaves, err := d.leavesAround(ctx, touched)
	if err != nil {
		return err
	}
	next := 0
	for _, t := range d.trees {
		next = max(next, t.NextLeafID)
	}
	used := map[int]bool{}
	changed := false
	queue := make([]*nodeLeaf, 0, len(touched))
	for _, id := range touched {
		if l, ok := leaves[id]; ok {
			queue = append(queue, l)
		}
	}
	for len(queue) > 0 {
		l := queue[0]
		queue = queue[1:]
		if used[l.ID] {
			continue
		}
		_, most := l.most()
		switch {
		case most > 2*limit:
			// A piece cut at one node's keys can still be too big on a node whose rows lie
			// elsewhere in the range: it is cut again, at that node's keys.
			var pieces []*nodeLeaf
			if pieces, next, err = d.split(ctx, l, next); err != nil {
				return err
			}
			changed = true
			d.stats.Splits++
			d.markReshaped(l.ID)
			for _, p := range pieces {
				d.markReshaped(p.ID)
			}
			for _, p := range pieces {
				leaves[p.ID] = p
			}
			queue = append(queue, pieces...)
		case most < limit/2:
			left, right, ok := mergePartner(l, leaves, used, limit)
			if !ok {
				continue
			}
			if err := d.merge(ctx, left, right); err != nil {
				return err
			}
			used[left.ID], used[right.ID], changed = true, true, true
			d.stats.Merges++
			d.markReshaped(left.ID)
			d.markReshaped(right.ID)
		}
	}
	if !changed {
		return nil
	}
	return d.onNodes(ctx, func(ctx context.Context, i int) error {
		_, err := d.txs[i].Exec(ctx, `UPDATE ace.mtrees SET next_leaf_id = $2, generation = generation + 1, refreshed_at = now() WHERE tree_id = $1`,
			d.trees[i].ID, next)
		return err
	})
}

// markReshaped records that leaf id's range changed in this diff: what its summaries were
// before says nothing of it now.
func (d *differ) markReshaped(id int) {
	if d.reshaped == nil {
		d.reshaped = map[int]bool{}
	}
	d.reshaped[id] = true
}

// outOfBounds returns the leaves among ids that hold more than twice limit rows, or fewer than
// half of it, on some node.
func (d *differ) outOfBounds(ctx context.Context, ids []int, limit int64) ([]int, error) {
	found := map[int]bool{}
	var mu sync.Mutex
	err := d.onNodes(ctx, func(ctx context.Context, i int) error {
		rows, err := d.txs[i].Query(ctx, `SELECT leaf_id FROM ace.mtree_leaves WHERE tree_id = $1 AND leaf_id = ANY($2)
			AND (row_count > 2 * $3::bigint OR row_count < $3::bigint / 2)`, d.trees[i].ID, ids, limit)
		if err != nil {
			return err
		}
		out, err := pgx.CollectRows(rows, pgx.RowTo[int])
		mu.Lock()
		for _, id := range out {
			found[id] = true
		}
		mu.Unlock()
		return err
	})
	return slices.Sorted(maps.Keys(found)), err
}

// leavesAround reads the given leaves and their neighbours from every node.
func (d *differ) leavesAround(ctx context.Context, ids []int) (map[int]*nodeLeaf, error) {
	out := map[int]*nodeLeaf{}
	for i := range d.nodes {
		rows, err := d.txs[i].Query(ctx, `SELECT n.leaf_id, n.lo, n.hi, n.row_count
			FROM ace.mtree_leaves t JOIN ace.mtree_leaves n ON n.tree_id = t.tree_id AND n.leaf_id = t.leaf_id
			WHERE t.tree_id = $1 AND t.leaf_id = ANY($2)
			UNION
			SELECT n.leaf_id, n.lo, n.hi, n.row_count
			FROM ace.mtree_leaves t JOIN ace.mtree_leaves n ON n.tree_id = t.tree_id AND n.lo = t.hi
			WHERE t.tree_id = $1 AND t.leaf_id = ANY($2)
			UNION
			SELECT n.leaf_id, n.lo, n.hi, n.row_count
			FROM ace.mtree_leaves t JOIN ace.mtree_leaves n ON n.tree_id = t.tree_id AND n.hi = t.lo
			WHERE t.tree_id = $1 AND t.leaf_id = ANY($2)`, d.trees[i].ID, ids)
		if err != nil {
			return nil, fmt.Errorf("node %s: read leaves: %w", d.nodes[i].Name(), err)
		}
		var l leaf
		var count int64
		_, err = pgx.ForEachRow(rows, []any{&l.ID, &l.Range.Lo, &l.Range.Hi, &count}, func() error {
			nl, ok := out[l.ID]
			if !ok {
				nl = &nodeLeaf{ID: l.ID, Range: l.Range, Counts: make([]int64, len(d.nodes))}
				out[l.ID] = nl
			}
			nl.Counts[i] = count
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("node %s: read leaves: %w", d.nodes[i].Name(), err)
		}
	}
	return out, nil
}

// mergePartner finds the neighbour of l to merge it with: the next leaf, else the previous,
// if neither was changed in this pass and together they hold at most leaf_rows on every node.
func mergePartner(l *nodeLeaf, leaves map[int]*nodeLeaf, used map[int]bool, limit int64) (left, right *nodeLeaf, ok bool) {
	fits := func(a, b *nodeLeaf) bool {
		for i := range a.Counts {
			if a.Counts[i]+b.Counts[i] > limit {
				return false
			}
		}
		return true
	}
	for _, n := range leaves {
		if used[n.ID] || n.ID == l.ID {
			continue
		}
		if l.Range.Hi != nil && slices.Equal(n.Range.Lo, l.Range.Hi) && fits(l, n) {
			return l, n, true
		}
		if l.Range.Lo != nil && slices.Equal(n.Range.Hi, l.Range.Lo) && fits(n, l) {
			return n, l, true
		}
	}
	return nil, nil, false
}

// split cuts l into pieces of about leaf_rows at the keys of the node that has most rows
// there; each node hashes its pieces at its snapshot. The first piece keeps l's id, the others
// get new ids from next, the same on every node. A stale mark on l goes to every piece. It
// returns the pieces with every node's count.
func (d *differ) split(ctx context.Context, l *nodeLeaf, next int) ([]*nodeLeaf, int, error) {
	ref, most := l.most()
	pieces := (most + int64(d.trees[0].LeafRows) - 1) / int64(d.trees[0].LeafRows)
	step := (most + pieces - 1) / pieces
	bounds, err := d.sub.splitKeys(ctx, d.sessions[ref], l.Range, step)
	if err != nil {
		return nil, next, fmt.Errorf("node %s: %w", d.nodes[ref].Name(), err)
	}
	if len(bounds) == 0 {
		return nil, next, nil
	}
	ranges := piecesOf(l.Range, bounds)
	out := make([]*nodeLeaf, len(ranges))
	for j, r := range ranges {
		id := l.ID
		if j > 0 {
			id, next = next, next+1
		}
		out[j] = &nodeLeaf{ID: id, Range: r, Counts: make([]int64, len(d.nodes))}
	}
	ids := make([]int, len(out))
	for j, p := range out {
		ids[j] = p.ID
	}
	err = d.onNodes(ctx, func(ctx context.Context, i int) error {
		sums, err := d.sub.summaries(ctx, d.sessions[i], l.Range, bounds, 1)
		if err != nil {
			return err
		}
		for j, s := range sums {
			out[j].Counts[i] = s.Count
		}
		return replaceLeaf(ctx, d.txs[i], d.trees[i].ID, l.ID, ids, ranges, sums)
	})
	return out, next, err
}

func replaceLeaf(ctx context.Context, tx pgx.Tx, treeID int64, old int, ids []int, ranges []engine.Range, sums []summary) error {
	if _, err := tx.Exec(ctx, `DELETE FROM ace.mtree_leaves WHERE tree_id = $1 AND leaf_id = $2`, treeID, old); err != nil {
		return err
	}
	leaves := make([]leaf, len(ids))
	for j := range ids {
		leaves[j] = leaf{ID: ids[j], Range: ranges[j], sum: sums[j]}
	}
	if err := copyLeaves(ctx, tx, treeID, leaves); err != nil {
		return fmt.Errorf("store split leaves: %w", err)
	}
	_, err := tx.Exec(ctx, `INSERT INTO ace.mtree_dirty (tree_id, leaf_id, xid, lsn)
		SELECT x.tree_id, n.id, x.xid, x.lsn FROM ace.mtree_dirty x CROSS JOIN unnest($3::int[]) AS n(id)
		WHERE x.tree_id = $1 AND x.leaf_id = $2 AND n.id <> $2`, treeID, old, ids)
	return err
}

// merge joins two neighbouring leaves into left: lanes add up, so nothing is hashed again; an
// ordered digest is taken again over the two together.
func (d *differ) merge(ctx context.Context, left, right *nodeLeaf) error {
	merged := engine.Range{Lo: left.Range.Lo, Hi: right.Range.Hi}
	return d.onNodes(ctx, func(ctx context.Context, i int) error {
		tx, id := d.txs[i], d.trees[i].ID
		var err error
		if d.sub.leaves == diff.SummaryOrdered {
			err = d.mergeOrdered(ctx, i, left.ID, merged)
		} else {
			_, err = tx.Exec(ctx, `UPDATE ace.mtree_leaves x SET hi = y.hi, row_count = x.row_count + y.row_count,
					lane1 = x.lane1 + y.lane1, lane2 = x.lane2 + y.lane2
				FROM ace.mtree_leaves y WHERE x.tree_id = $1 AND x.leaf_id = $2 AND y.tree_id = $1 AND y.leaf_id = $3`, id, left.ID, right.ID)
		}
		if err != nil {
			return fmt.Errorf("merge leaves: %w", err)
		}
		_, err = tx.Exec(ctx, `WITH moved AS (DELETE FROM ace.mtree_dirty WHERE tree_id = $1 AND leaf_id = $3 RETURNING xid, lsn)
			INSERT INTO ace.mtree_dirty (tree_id, leaf_id, xid, lsn) SELECT $1, $2, xid, lsn FROM moved
			ON CONFLICT (tree_id, leaf_id, xid) DO UPDATE SET lsn = greatest(ace.mtree_dirty.lsn, excluded.lsn)`, id, left.ID, right.ID)
		if err != nil {
			return fmt.Errorf("merge stale marks: %w", err)
		}
		_, err = tx.Exec(ctx, `DELETE FROM ace.mtree_leaves WHERE tree_id = $1 AND leaf_id = $2`, id, right.ID)
		return err
	})
}

// mergeOrdered makes leaf left of node i the range merged, hashed at the diff's snapshot.
func (d *differ) mergeOrdered(ctx context.Context, i, left int, merged engine.Range) error {
	sums, err := d.sub.rangeSummaries(ctx, d.sessions[i], []engine.Range{merged})
	if err != nil {
		return err
	}
	lane1, lane2, digest := sums[0].columns()
	_, err = d.txs[i].Exec(ctx, `UPDATE ace.mtree_leaves SET hi = $3, row_count = $4, lane1 = $5, lane2 = $6, digest = $7
		WHERE tree_id = $1 AND leaf_id = $2`, d.trees[i].ID, left, merged.Hi, sums[0].Count, lane1, lane2, digest)
	return err
}
