package diff

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/sourcegraph/conc/pool"

	"github.com/ace-agent/ace-agent/engine"
)

// bucketHash is the aggregate of one range on one node: a row count and two additive lanes of
// row hashes. Addition cannot cancel the way XOR does when a row appears twice.
type bucketHash struct {
	count        int64
	lane1, lane2 string // exact numeric sums, compared as text
}

// onAllNodes runs fn for every node at once and waits for all of them.
func (d *differ) onAllNodes(ctx context.Context, fn func(ctx context.Context, i int) error) error {
	p := pool.New().WithErrors().WithContext(ctx).WithCancelOnError()
	for i := range d.nodes {
		p.Go(func(ctx context.Context) error { return fn(ctx, i) })
	}
	return p.Wait()
}

// hashBuckets hashes block b on every node, one summary per leaf: the row count and two exact
// sums of 64-bit lanes of the row digests (engine.SummarySQL). With count, each node's rows
// count as checked and hashed as soon as its query ends, and progress is reported: a block's
// progress moves node by node, not only when every node is done.
func (d *differ) hashBuckets(ctx context.Context, b block, count bool) ([]map[int]bucketHash, error) {
	var args []any
	where := d.keys.Where(b.rng, &args)
	bucket := d.bucketExpr(b, &args)
	r := b.rng
	out := make([]map[int]bucketHash, len(d.nodes))
	err := d.onAllNodes(ctx, func(ctx context.Context, i int) error {
		sql := engine.SummarySQL(bucket, d.hash, d.hash.Source(d.table.Qualified(), where+" AND "+d.filterFor(i)))
		return d.sessions[i].Read(ctx, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, sql, args...)
			if err != nil {
				return engine.WithKeys(err, fmt.Sprintf("hash range %s on node %s", r, d.nodes[i].Name),
					fmt.Sprintf("hash a range of %d pieces on node %s", len(b.bounds)+1, d.nodes[i].Name))
			}
			out[i] = map[int]bucketHash{}
			var b int
			var h bucketHash
			var hashed int64
			_, err = pgx.ForEachRow(rows, []any{&b, &h.count, &h.lane1, &h.lane2}, func() error {
				out[i][b] = h
				hashed += h.count
				return nil
			})
			if err == nil && count {
				d.countHashed(i, hashed)
			}
			return err
		})
	})
	return out, err
}

// countHashed counts rows of node i as checked and hashed, and reports progress.
func (d *differ) countHashed(i int, rows int64) {
	d.mu.Lock()
	d.rowsPerNode[i] += rows
	d.prog.RowsHashed += rows
	d.mu.Unlock()
	d.report()
}

// mismatchedBuckets returns the buckets whose hashes differ between nodes, with the row
// count of each node in them.
func mismatchedBuckets(hashes []map[int]bucketHash, n int) map[int][]int64 {
	out := map[int][]int64{}
	for b := 0; b <= n; b++ {
		first := hashes[0][b]
		same := true
		counts := make([]int64, len(hashes))
		for i, h := range hashes {
			counts[i] = h[b].count
			same = same && h[b] == first
		}
		if !same {
			out[b] = counts
		}
	}
	return out
}

func (d *differ) diffBlock(ctx context.Context, b block) error {
	hashes, err := d.hashBlock(ctx, b)
	if err != nil {
		return err
	}
	mismatched := mismatchedBuckets(hashes, len(b.bounds))
	d.mu.Lock()
	d.mismatched += len(mismatched)
	d.mu.Unlock()
	if mismatched, err = d.storeRanges(ctx, b, hashes, mismatched); err != nil {
		return err
	}
	return d.resolve(ctx, b, mismatched)
}

// compareBatch bounds how many small ranges one row-hash query reads.
const compareBatch = 64

// resolve finds the differing keys in the mismatched pieces of b (resolveLeaves).
//
// The pieces are worked on Workers at a time: with large blocks, one block can hold most of the
// differences. The node pools bound the queries actually in flight.
//
// Consecutive pieces that are empty on some node are merged into one leaf first: all their rows
// differ, so they are streamed together (stream) rather than compared piece by piece.
func (d *differ) resolve(ctx context.Context, b block, mismatched map[int][]int64) error {
	leaves := make([]Leaf, 0, len(mismatched))
	pieces := slices.Sorted(maps.Keys(mismatched))
	for i := 0; i < len(pieces); i++ {
		leaf := Leaf{Range: b.leafRange(pieces[i]), Counts: slices.Clone(mismatched[pieces[i]])}
		for emptyOnSomeNode(leaf.Counts) && i+1 < len(pieces) && pieces[i+1] == pieces[i]+1 && emptyOnSomeNode(mismatched[pieces[i+1]]) {
			i++
			leaf.Range.Hi = b.leafRange(pieces[i]).Hi
			for n, c := range mismatched[pieces[i]] {
				leaf.Counts[n] += c
			}
		}
		leaves = append(leaves, leaf)
	}
	return d.resolveLeaves(ctx, leaves)
}

// resolveLeaves finds the differing keys in mismatched ranges: the small ones together, a few
// queries for all of them, the large ones empty on some node streamed (stream), and the other
// large ones each narrowed down further.
func (d *differ) resolveLeaves(ctx context.Context, leaves []Leaf) error {
	p := pool.New().WithErrors().WithContext(ctx).WithCancelOnError().WithMaxGoroutines(d.opts.Workers)
	var small []engine.Range
	for _, l := range leaves {
		if maxCount(l.Counts) <= int64(2*d.opts.CompareUnitSize) {
			small = append(small, l.Range)
			continue
		}
		if emptyOnSomeNode(l.Counts) {
			p.Go(func(ctx context.Context) error { return d.stream(ctx, l.Range, l.Counts) })
			continue
		}
		p.Go(func(ctx context.Context) error { return d.narrow(ctx, l.Range, l.Counts) })
	}
	for start := 0; start < len(small); start += compareBatch {
		batch := small[start:min(start+compareBatch, len(small))]
		p.Go(func(ctx context.Context) error { return d.compareRows(ctx, batch) })
	}
	return p.Wait()
}

func maxCount(counts []int64) int64 {
	var m int64
	for _, c := range counts {
		m = max(m, c)
	}
	return m
}

// narrow finds the differing keys of a large mismatched range: it is cut by the keys of the
// node with the most rows there, hashed again piece by piece, and only the mismatched pieces are
// followed.
func (d *differ) narrow(ctx context.Context, r engine.Range, counts []int64) error {
	if d.allPairsLimited() {
		return errLimitReached
	}
	most := 0
	for i, c := range counts {
		if c > counts[most] {
			most = i
		}
	}
	// Cut into at most ~256 pieces, none smaller than a compare unit.
	step := max(int64(d.opts.CompareUnitSize), counts[most]/256+1)
	bounds, err := d.splitKeys(ctx, most, r, int(step))
	if err != nil {
		return engine.WithKeys(err, fmt.Sprintf("split range %s", r), "split a range")
	}
	sub := block{rng: r, bounds: bounds}
	hashes, err := d.hashBuckets(ctx, sub, false)
	if err != nil {
		return err
	}
	return d.resolve(ctx, sub, mismatchedBuckets(hashes, len(bounds)))
}

// keyHash is one row's key and digest on one node.
type keyHash struct {
	key  []string
	hash string
}

// compareRows fetches the keys and row hashes of the ranges from every node, in one query per
// node, and reports the keys whose rows are not identical everywhere.
func (d *differ) compareRows(ctx context.Context, ranges []engine.Range) error {
	if d.allPairsLimited() {
		return errLimitReached
	}
	var args []any
	conds := make([]string, len(ranges))
	for j, r := range ranges {
		conds[j] = "(" + d.keys.Where(r, &args) + ")"
	}
	where := "(" + strings.Join(conds, " OR ") + ")"
	perNode, err := d.rowDigests(ctx, where, args)
	if err != nil {
		return engine.WithKeys(err, fmt.Sprintf("read row hashes in %d ranges from %s", len(ranges), ranges[0]),
			fmt.Sprintf("read row hashes in %d ranges", len(ranges)))
	}
	return d.reportKeys(ctx, differingKeys(perNode))
}

// rowDigests reads the canonical key and the digest of every row matching where (with its
// parameters args) on every node, at the diff's snapshots.
func (d *differ) rowDigests(ctx context.Context, where string, args []any) ([]map[string]keyHash, error) {
	perNode := make([]map[string]keyHash, len(d.nodes))
	err := d.onAllNodes(ctx, func(ctx context.Context, i int) error {
		sql := fmt.Sprintf(`SELECT %s, %s FROM %s`, d.keys.KeyText(), d.hash.Digest, d.hash.Source(d.table.Qualified(), where+" AND "+d.filterFor(i)))
		return d.sessions[i].Read(ctx, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, sql, args...)
			if err != nil {
				return fmt.Errorf("node %s: %w", d.nodes[i].Name, err)
			}
			perNode[i], err = collectKeyHashes(rows, len(d.keys.Columns()))
			return err
		})
	})
	return perNode, err
}

func collectKeyHashes(rows pgx.Rows, nkey int) (map[string]keyHash, error) {
	defer rows.Close()
	out := map[string]keyHash{}
	for rows.Next() {
		kh := keyHash{key: make([]string, nkey)}
		dest := make([]any, 0, nkey+1)
		for i := range kh.key {
			dest = append(dest, &kh.key[i])
		}
		var digest []byte
		if err := rows.Scan(append(dest, &digest)...); err != nil {
			return nil, err
		}
		kh.hash = string(digest)
		out[engine.KeyString(kh.key)] = kh
	}
	return out, rows.Err()
}

// keyDiff is a key whose row differs somewhere: which nodes have it and with which hash.
type keyDiff struct {
	key     []string
	present []bool
	hashes  []string
}

// differingKeys returns the keys not present with the same hash on every node.
func differingKeys(perNode []map[string]keyHash) []keyDiff {
	seen := map[string]bool{}
	var out []keyDiff
	for _, m := range perNode {
		for k, kh := range m {
			if seen[k] {
				continue
			}
			seen[k] = true
			kd := keyDiff{key: kh.key, present: make([]bool, len(perNode)), hashes: make([]string, len(perNode))}
			same := true
			for i, other := range perNode {
				okh, ok := other[k]
				kd.present[i], kd.hashes[i] = ok, okh.hash
				same = same && ok && okh.hash == kh.hash
			}
			if !same {
				out = append(out, kd)
			}
		}
	}
	return out
}

// differs reports whether nodes i and j disagree about this key.
func (k keyDiff) differs(i, j int) bool {
	return k.present[i] != k.present[j] || (k.present[i] && k.hashes[i] != k.hashes[j])
}
