package diff

import (
	"context"
	"encoding/hex"
	"fmt"
	"math/big"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/sourcegraph/conc/pool"

	"github.com/ace-agent/ace-agent/engine"
)

// SummaryKind is how a table-diff summarises the leaves of its blocks on every node. Every node
// of a diff uses the same kind for every block: the coordinator decides once, when it plans.
type SummaryKind string

const (
	// SummaryAuto chooses SummaryOrdered where the key's ranges are read cheaply on every node
	// (orderedCorrelation), else SummaryLanes.
	SummaryAuto SummaryKind = ""
	// SummaryLanes adds up two 64-bit lanes of every row's SHA-256 per leaf, in grouped queries
	// (engine.SummarySQL) that read the block's rows in any order: its cost does not depend on
	// how rows are stored.
	SummaryLanes SummaryKind = "lanes"
	// SummaryOrdered takes one SHA-256 per leaf over the leaf's row encodings in key order
	// (engine.LeafDigestSQL), each leaf an index range scan: about half the hashing, and rows
	// stream back leaf by leaf, but a range scan of rows stored out of key order reads a page per row.
	SummaryOrdered SummaryKind = "ordered"
)

// orderedCorrelation is the smallest correlation of the key's leading column with the heap
// order (pg_stats, on every node) for which the ordered summary is chosen. Measured on copies
// of the benchmark table with a share of rows stored out of order (docs/performance.md): the
// ordered digests cost about 0.75 of the lanes at 1.0, 0.85 at 0.7, as much at 0.5 and 1.2 at
// 0; 0.8 keeps a margin for tables not all in memory, where a page out of order is a read.
const orderedCorrelation = 0.8

// MaxOrderedLeafUnits bounds the rows an ordered leaf's digest reads, in the leaf's planned size
// (a diff's compare units, a tree's leaf_rows): a leaf's encodings are concatenated in the node's
// memory before they are hashed. Leaves of sparse integer keys (wide, and possibly dense
// somewhere) keep the lanes; a leaf found holding more is marked and compared row by row.
const MaxOrderedLeafUnits = 64

// orderedLeafCap is the most rows a leaf's ordered digest reads (engine.LeafDigestSQL): a leaf
// holding more is narrowed row by row instead.
func (d *differ) orderedLeafCap() int64 { return int64(MaxOrderedLeafUnits * d.opts.CompareUnitSize) }

// leafProgressEvery is how many leaves of a streamed block pass between progress reports.
const leafProgressEvery = 16

// maxOrderedParts caps how many queries hash parts of one block at once on one node: the
// leader and two helpers, PostgreSQL's default max_parallel_workers_per_gather.
const maxOrderedParts = 3

// ConnsPerNode is how many connections a table-diff with workers blocks at once can use on a
// node: one holds the snapshot, and each block has up to maxOrderedParts queries in flight.
func ConnsPerNode(workers int) int32 { return int32(workers*maxOrderedParts + 1) }

// minPartPages is the fewest heap pages a part of a whole-table block hashed with lanes reads:
// smaller tables are hashed by one query per node.
const minPartPages = 4

// chooseSummary decides, once for the diff, how the blocks' leaves are summarised.
func (d *differ) chooseSummary(ctx context.Context, blocks []block) error {
	d.summaryKind = d.opts.ForceSummary
	if len(blocks) == 1 && len(blocks[0].bounds) == 0 && d.summaryKind != SummaryOrdered {
		d.summaryKind = SummaryLanes // one leaf: nothing to stream, nothing to split
		return nil
	}
	stats, err := d.orderStats(ctx)
	if err != nil {
		return err
	}
	d.parts, d.pages = make([]int, len(stats)), make([]int64, len(stats))
	for i, s := range stats {
		// As many parts as the node lets a query have processes, and its pool connections.
		conns := int(d.nodes[i].Pool.Config().MaxConns) - 1
		d.parts[i] = max(1, min(s.Parallel+1, maxOrderedParts, conns))
		d.pages[i] = s.Pages
	}
	ordered := d.orderedFits(blocks) && OrderedKeyRanges(d.keys, stats)
	// A range stored whole carries its holders' lanes, which its repair's compare-and-set adds up
	// again as it copies: such a diff needs the lanes.
	ordered = ordered && !d.rangeRowsAllowed()
	if d.summaryKind == SummaryAuto {
		d.summaryKind = map[bool]SummaryKind{true: SummaryOrdered, false: SummaryLanes}[ordered]
	}
	return nil
}

// orderedFits reports whether the blocks' leaves can be summarised with ordered digests: each
// leaf a range of the key's index, of a bounded number of rows.
func (d *differ) orderedFits(blocks []block) bool {
	for _, b := range blocks {
		if len(b.bounds) == 0 && b.rng.Lo == nil && b.rng.Hi == nil {
			return false // the whole table in one leaf: no bound on the leaf's size
		}
		if b.step != nil && b.step.W > int64(MaxOrderedLeafUnits*d.opts.CompareUnitSize) {
			return false
		}
	}
	return true
}

// KeyOrderStat is what a node says about reading its table in key ranges.
type KeyOrderStat struct {
	Correlation *float64 // of the key's leading column with the heap order; nil: no statistic
	Parallel    int      // max_parallel_workers_per_gather: the helpers a query may have there
	Pages       int64    // the table's heap pages now (0 for a partitioned table)
}

// ReadKeyOrderStat reads, on one node, the correlation of the key's leading column with the
// table's physical order and how many parallel workers a query may use.
func ReadKeyOrderStat(ctx context.Context, q engine.Querier, t *engine.Table, keys engine.KeyOrder) (KeyOrderStat, error) {
	var s KeyOrderStat
	sql := "SELECT " + engine.KeyCorrelationExpr(t.Schema, t.Name, keys.Columns()[0].Name) +
		", current_setting('max_parallel_workers_per_gather')::int, pg_relation_size($1::regclass) / current_setting('block_size')::int8"
	if err := q.QueryRow(ctx, sql, t.Qualified()).Scan(&s.Correlation, &s.Parallel, &s.Pages); err != nil {
		return s, fmt.Errorf("read the key's correlation with the table's order: %w", err)
	}
	return s, nil
}

// OrderedKeyRanges reports whether leaves of the key's ranges are best summarised by ordered
// digests on nodes that say stats: each leaf a range scan of the key's index, on tables stored
// in about key order on every node (never analysed counts as not).
func OrderedKeyRanges(keys engine.KeyOrder, stats []KeyOrderStat) bool {
	if !keys.Indexable() {
		return false // a range of keys compared in another order is no index range scan
	}
	for _, s := range stats {
		if s.Correlation == nil || *s.Correlation < orderedCorrelation {
			return false
		}
	}
	return true
}

// orderStats reads every node's KeyOrderStat at the diff's snapshots.
func (d *differ) orderStats(ctx context.Context) ([]KeyOrderStat, error) {
	out := make([]KeyOrderStat, len(d.nodes))
	err := d.onAllNodes(ctx, func(ctx context.Context, i int) error {
		return d.sessions[i].Read(ctx, func(tx pgx.Tx) error {
			var err error
			out[i], err = ReadKeyOrderStat(ctx, tx, d.tables[i], d.keys)
			return err
		})
	})
	return out, err
}

// hashBlock summarises every leaf of block b on every node, as the diff's summary kind says,
// and counts the rows hashed as they are.
func (d *differ) hashBlock(ctx context.Context, b block) ([]map[int]bucketHash, error) {
	if d.summaryKind == SummaryOrdered {
		return d.hashOrdered(ctx, b)
	}
	return d.hashLanesInParts(ctx, b)
}

// hashLanesInParts hashes b with lanes. A block that is the whole table is cut, on each node,
// into consecutive ranges of heap pages (TID range scans, which read each page once), hashed
// at once as the node lets a query have processes; their lanes add up exactly to the block's.
// Its progress moves as each part ends. A block of a key range is one query per node, as
// parts of a key range on a table stored out of key order would each read the whole table.
func (d *differ) hashLanesInParts(ctx context.Context, b block) ([]map[int]bucketHash, error) {
	if b.rng.Lo != nil || b.rng.Hi != nil || d.parts == nil {
		return d.hashBuckets(ctx, b, true)
	}
	out := make([]map[int]bucketHash, len(d.nodes))
	err := d.onAllNodes(ctx, func(ctx context.Context, i int) error {
		parts := int64(d.parts[i])
		if d.pages[i] < parts*minPartPages {
			parts = 1
		}
		per := d.pages[i]/parts + 1
		var mu sync.Mutex
		out[i] = map[int]bucketHash{}
		p := pool.New().WithErrors().WithContext(ctx).WithCancelOnError()
		// Each leaf's lanes are added up as its parts come, so no part's leaves are held apart.
		add := func(leaf int, h bucketHash) {
			mu.Lock()
			defer mu.Unlock()
			out[i][leaf] = addLanes(out[i][leaf], h)
		}
		for part := range parts {
			p.Go(func(ctx context.Context) error {
				return d.lanesOn(ctx, b, i, part*per, (part+1)*per, part == parts-1, add)
			})
		}
		return p.Wait()
	})
	return out, err
}

// lanesOn hashes, with lanes, the rows of b on node i in heap pages [first, last), or from first
// on when open, and hands each leaf's summary to add.
func (d *differ) lanesOn(ctx context.Context, b block, i int, first, last int64, open bool, add func(int, bucketHash)) error {
	var args []any
	where := d.keys.Where(b.rng, &args)
	bucket := d.bucketExpr(b, &args)
	where += fmt.Sprintf(" AND ctid >= $%d::text::tid", len(args)+1)
	args = append(args, fmt.Sprintf("(%d,0)", first))
	if !open {
		where += fmt.Sprintf(" AND ctid < $%d::text::tid", len(args)+1)
		args = append(args, fmt.Sprintf("(%d,0)", last))
	}
	sql := engine.SummarySQL(bucket, d.hash, d.hash.Source(d.table.Qualified(), where+" AND "+d.filterFor(i)))
	return d.sessions[i].Read(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, sql, args...)
		if err != nil {
			return d.hashError(err, b, i)
		}
		var leaf int
		var h bucketHash
		var hashed int64
		_, err = pgx.ForEachRow(rows, []any{&leaf, &h.count, &h.lane1, &h.lane2}, func() error {
			add(leaf, h)
			hashed += h.count
			return nil
		})
		if err != nil {
			return d.hashError(err, b, i)
		}
		d.countHashed(i, hashed)
		return nil
	})
}

// addLanes is the summary of two disjoint sets of rows: counts and lanes added exactly.
func addLanes(a, b bucketHash) bucketHash {
	if a.count == 0 {
		return b
	}
	return bucketHash{count: a.count + b.count, lane1: addDecimal(a.lane1, b.lane1), lane2: addDecimal(a.lane2, b.lane2)}
}

// addDecimal adds two integers written in decimal, exactly.
func addDecimal(a, b string) string {
	x, okA := new(big.Int).SetString(a, 10)
	y, okB := new(big.Int).SetString(b, 10)
	if !okA || !okB {
		return a + "+" + b // never equal to a sum written in decimal: the leaf is compared row by row
	}
	return x.Add(x, y).String()
}

// part is the block of b's leaves first … last-1, its leaf 0 being b's leaf first.
func (b block) part(first, last int) block {
	p := block{rng: engine.Range{Lo: b.leafRange(first).Lo, Hi: b.leafRange(last - 1).Hi}, bounds: b.bounds[first : last-1]}
	if b.step != nil {
		p.step = &engine.IntStep{Lo: b.step.Lo + int64(first)*b.step.W, W: b.step.W}
	}
	return p
}

// hashOrdered summarises every leaf of b by its count and ordered digest on every node. The
// leaves stream back one by one, so each node's rows count as hashed while its query runs.
//
// The leaves' aggregates cannot run in parallel workers, so on each node the block is cut
// into as many consecutive parts as a query there may have processes (the leader and
// max_parallel_workers_per_gather helpers), hashed at once in sessions of the same snapshot.
func (d *differ) hashOrdered(ctx context.Context, b block) ([]map[int]bucketHash, error) {
	out := make([]map[int]bucketHash, len(d.nodes))
	err := d.onAllNodes(ctx, func(ctx context.Context, i int) error {
		leaves := len(b.bounds) + 1
		per := (leaves + d.parts[i] - 1) / d.parts[i]
		var mu sync.Mutex
		out[i] = map[int]bucketHash{}
		p := pool.New().WithErrors().WithContext(ctx).WithCancelOnError()
		for first := 0; first < leaves; first += per {
			p.Go(func(ctx context.Context) error {
				part, err := d.hashOrderedOn(ctx, b.part(first, min(first+per, leaves)), i)
				mu.Lock()
				defer mu.Unlock()
				for leaf, h := range part {
					out[i][first+leaf] = h
				}
				return err
			})
		}
		return p.Wait()
	})
	return out, err
}

// hashOrderedOn summarises every leaf of b on node i.
func (d *differ) hashOrderedOn(ctx context.Context, b block, i int) (map[int]bucketHash, error) {
	var args []any
	sql := d.orderedSQL(b, d.filterFor(i), &args)
	var out map[int]bucketHash
	err := d.sessions[i].Read(ctx, func(tx pgx.Tx) error {
		// The estimated cost of thousands of index scans crosses jit_optimize_above_cost,
		// and optimising the query cost 0.2 CPU s a node: more than JIT saves here.
		if _, err := tx.Exec(ctx, "SET LOCAL jit = off"); err != nil {
			return d.hashError(err, b, i)
		}
		rows, err := tx.Query(ctx, sql, args...)
		if err != nil {
			return d.hashError(err, b, i)
		}
		out, err = d.collectOrdered(rows, i)
		if err != nil {
			return d.hashError(err, b, i)
		}
		return nil
	})
	return out, err
}

func (d *differ) hashError(err error, b block, i int) error {
	return engine.WithKeys(err, fmt.Sprintf("hash range %s on node %s", b.rng, d.nodes[i].Name),
		fmt.Sprintf("hash a range of %d pieces on node %s", len(b.bounds)+1, d.nodes[i].Name))
}

// collectOrdered reads the leaves' summaries of node i as they come, reporting the rows hashed
// every leafProgressEvery leaves. Empty leaves are left out, as the lanes' grouping leaves them.
func (d *differ) collectOrdered(rows pgx.Rows, i int) (map[int]bucketHash, error) {
	defer rows.Close()
	out := map[int]bucketHash{}
	var pending int64
	for n := 1; rows.Next(); n++ {
		var leaf int
		var count int64
		var digest []byte
		if err := rows.Scan(&leaf, &count, &digest); err != nil {
			return nil, err
		}
		switch {
		case count > d.orderedLeafCap():
			// Its digest stands for some of its rows only: a mark no other node's leaf has, so
			// the leaf is narrowed row by row as a differing one is.
			out[leaf] = bucketHash{count: count, lane1: "more rows than a leaf holds, on " + d.nodes[i].Name}
		case count > 0:
			out[leaf] = bucketHash{count: count, lane1: hex.EncodeToString(digest)}
		}
		pending += count
		if n%leafProgressEvery == 0 && pending > 0 {
			d.countHashed(i, pending)
			pending = 0
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	d.countHashed(i, pending)
	return out, nil
}

// orderedSQL is the query that summarises every leaf of b with engine.OrderedLeavesSQL, rows
// matching filter. Its parameters are appended to args.
func (d *differ) orderedSQL(b block, filter string, args *[]any) string {
	return engine.OrderedLeavesSQL(d.hash, d.keys, d.table.Qualified(), b.rng, b.bounds, b.step, filter, d.orderedLeafCap(), args)
}
