package mtree

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/diff"
)

// fanout is how many leaves a parent sums: parents are compared first, then only the leaves of
// the parents that differ. The parents of every leaf are read, and the leaves of each differing
// parent: 16 keeps both small for trees of thousands to tens of thousands of leaves and a few
// hundred changes.
const fanout = 16

// parentSum is a parent's summary: how many leaves it has and their total.
type parentSum struct {
	leaves int
	sum    summary
}

// compare finds the leaves whose summaries differ between nodes (with each node's summary of
// them, and their ids), and each node's row count.
func (d *differ) compare(ctx context.Context) ([]diff.Leaf, map[int][]summary, []int, []int64, error) {
	parents := make([]map[int]parentSum, len(d.nodes))
	rows := make([]int64, len(d.nodes))
	err := d.onNodes(ctx, func(ctx context.Context, i int) error {
		p, err := d.parents(ctx, i)
		if err != nil {
			return fmt.Errorf("sum the tree's parents: %w", err)
		}
		parents[i] = p
		for _, s := range p {
			rows[i] += s.sum.Count
		}
		return nil
	})
	if err != nil {
		return nil, nil, nil, nil, err
	}
	for _, s := range parents[0] {
		d.stats.Leaves += s.leaves
	}
	d.stats.LeafRows = d.trees[0].LeafRows
	differing := mismatchedKeys(parents)
	if len(differing) == 0 {
		return nil, nil, nil, rows, nil
	}
	leaves := make([]map[int]leaf, len(d.nodes))
	err = d.onNodes(ctx, func(ctx context.Context, i int) error {
		l, err := d.leavesOf(ctx, i, differing, d.stats.Leaves)
		if err != nil {
			return fmt.Errorf("read the leaves of differing parents: %w", err)
		}
		leaves[i] = l
		return nil
	})
	if err != nil {
		return nil, nil, nil, nil, err
	}
	out, sums, ids, err := d.mismatchedLeaves(leaves)
	return out, sums, ids, rows, err
}

// parents sums node i's leaves into parents of fanout leaves: lanes add up; ordered digests are
// hashed again, with each leaf's id and count, in leaf order. A parent holding an overflowed
// leaf is marked so that it differs from every other node's.
func (d *differ) parents(ctx context.Context, i int) (map[int]parentSum, error) {
	rows, err := d.txs[i].Query(ctx, `SELECT leaf_id / $2, count(*), sum(row_count)::bigint, coalesce(sum(lane1)::text, ''), coalesce(sum(lane2)::text, ''),
			CASE WHEN $3 THEN sha256(string_agg(int4send(leaf_id) || int8send(row_count) || coalesce(digest, ''::bytea), ''::bytea ORDER BY leaf_id)) END,
			bool_or(lane1 IS NULL AND digest IS NULL)
		FROM ace.mtree_leaves WHERE tree_id = $1 GROUP BY 1`, d.trees[i].ID, fanout, d.sub.leaves == diff.SummaryOrdered)
	if err != nil {
		return nil, err
	}
	out := map[int]parentSum{}
	var id int
	var p parentSum
	var digest []byte
	_, err = pgx.ForEachRow(rows, []any{&id, &p.leaves, &p.sum.Count, &p.sum.Lane1, &p.sum.Lane2, &digest, &p.sum.Overflow}, func() error {
		p.sum.Digest = string(digest)
		if p.sum.Overflow {
			p.sum.Digest = d.nodes[i].Name() // no other node's parent has it
		}
		out[id] = p
		return nil
	})
	return out, err
}

// mismatchedKeys returns the keys whose values are not the same in every map.
func mismatchedKeys[V comparable](perNode []map[int]V) []int {
	keys := map[int]bool{}
	for _, m := range perNode {
		for k := range m {
			keys[k] = true
		}
	}
	var out []int
	for k := range keys {
		first, ok := perNode[0][k]
		for _, m := range perNode[1:] {
			v, has := m[k]
			if !ok || !has || v != first {
				out = append(out, k)
				break
			}
		}
	}
	slices.Sort(out)
	return out
}

// leavesOf reads the leaves of the given parents: by their ids, so that the cost follows the
// parents that differ, unless they hold a good part of the tree's leaves (of which the tree has
// total), when reading every leaf once costs less than looking each one up.
func (d *differ) leavesOf(ctx context.Context, i int, parents []int, total int) (map[int]leaf, error) {
	wanted := map[int]bool{}
	ids := make([]int, 0, len(parents)*fanout)
	for _, p := range parents {
		wanted[p] = true
		for id := p * fanout; id < (p+1)*fanout; id++ {
			ids = append(ids, id)
		}
	}
	sql := `SELECT leaf_id, lo, hi, row_count, lane1::text, lane2::text, digest FROM ace.mtree_leaves WHERE tree_id = $1 AND leaf_id = ANY($2)`
	args := []any{d.trees[i].ID, ids}
	if len(ids)*wholePassShare > total {
		sql, args = `SELECT leaf_id, lo, hi, row_count, lane1::text, lane2::text, digest FROM ace.mtree_leaves WHERE tree_id = $1`, args[:1]
	}
	rows, err := d.txs[i].Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	out := map[int]leaf{}
	var l leaf
	var count int64
	var lane1, lane2 *string
	var digest []byte
	_, err = pgx.ForEachRow(rows, []any{&l.ID, &l.Range.Lo, &l.Range.Hi, &count, &lane1, &lane2, &digest}, func() error {
		if wanted[l.ID/fanout] {
			l.sum = storedSummary(count, lane1, lane2, digest)
			out[l.ID] = l
		}
		return nil
	})
	return out, err
}

// mismatchedLeaves compares the leaves of differing parents: the same ids and ranges on every
// node (or the trees were not kept together), and differing summaries. It returns them with
// each node's summary, and their ids.
func (d *differ) mismatchedLeaves(perNode []map[int]leaf) ([]diff.Leaf, map[int][]summary, []int, error) {
	var out []diff.Leaf
	sums := map[int][]summary{}
	var ids []int
	for _, id := range slices.Sorted(maps.Keys(perNode[0])) {
		first := perNode[0][id]
		counts := make([]int64, len(d.nodes))
		nodeSums := make([]summary, len(d.nodes))
		same := true
		for i, m := range perNode {
			l, ok := m[id]
			if !ok || !sameRange(l.Range, first.Range) {
				return nil, nil, nil, d.structureError(i)
			}
			counts[i], nodeSums[i] = l.sum.Count, l.sum
			same = same && l.sum == first.sum && !l.sum.Overflow
		}
		if !same {
			out = append(out, diff.Leaf{Range: first.Range, Counts: counts})
			sums[id] = nodeSums
			ids = append(ids, id)
		}
	}
	for i, m := range perNode {
		if len(m) != len(perNode[0]) {
			return nil, nil, nil, d.structureError(i)
		}
	}
	return out, sums, ids, nil
}

func sameRange(a, b engine.Range) bool {
	return (a.Lo == nil) == (b.Lo == nil) && (a.Hi == nil) == (b.Hi == nil) && slices.Equal(a.Lo, b.Lo) && slices.Equal(a.Hi, b.Hi)
}

func (d *differ) structureError(i int) error {
	return fmt.Errorf("the leaves of the Merkle trees of %s differ between %s and %s (an interrupted rebalance); build the tree again with ace.mtree_build(%s)",
		d.opts.Diff.Table, d.nodes[0].Name(), d.nodes[i].Name(), engine.QuoteLiteral(d.opts.Diff.Table))
}
