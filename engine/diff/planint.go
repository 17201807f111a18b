package diff

import (
	"context"
	"fmt"
	"math"
	"math/big"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/engine"
)

// integerKey reports whether the key is one integer column, whose leaves can be computed by
// arithmetic.
func (d *differ) integerKey() bool {
	if len(d.keys.Columns()) != 1 {
		return false
	}
	switch d.keys.Columns()[0].BaseType {
	case "int2", "int4", "int8":
		return true
	}
	return false
}

// planIntegerBlocks cuts [min, max] of the key over all nodes into equal-width leaves of about
// CompareUnitSize rows (if the keys were dense) and groups them into blocks. The first block is
// open below and the last open above, like every plan. It returns ok = false when the key span
// does not fit the arithmetic, and the caller samples bounds instead.
func (d *differ) planIntegerBlocks(ctx context.Context) ([]block, bool, error) {
	lo, hi, found, estimates, err := d.keySpan(ctx)
	if err != nil || !found {
		return []block{{}}, err == nil, err
	}
	span := new(big.Int).Sub(big.NewInt(hi), big.NewInt(lo))
	span.Add(span, big.NewInt(1))
	if !span.IsInt64() {
		return nil, false, nil
	}
	rows := 0.0
	for _, e := range estimates {
		rows = max(rows, e)
	}
	if rows < 1 {
		// Never analysed: count, since assuming dense keys would plan a leaf for every
		// possible key of a sparse table.
		if rows, err = d.countRows(ctx); err != nil {
			return nil, false, err
		}
	}
	w := int64(math.Ceil(float64(span.Int64()) * float64(d.opts.CompareUnitSize) / max(rows, 1)))
	w = max(w, 1)
	leaves := (span.Int64()-1)/w + 1
	if float64(leaves) > 4*(rows/float64(d.opts.CompareUnitSize)+1) {
		return nil, false, nil // the estimate is far off: sample bounds instead
	}
	perBlock := int64(max(1, d.opts.BlockSize/d.opts.CompareUnitSize))
	var blocks []block
	for first := int64(0); first < leaves; first += perBlock {
		n := min(perBlock, leaves-first) // leaves in this block
		b := block{step: &engine.IntStep{Lo: lo + first*w, W: w}}
		if first > 0 {
			b.rng.Lo = []string{strconv.FormatInt(lo+first*w, 10)}
		}
		if first+n < leaves {
			b.rng.Hi = []string{strconv.FormatInt(lo+(first+n)*w, 10)}
		}
		for i := int64(1); i < n; i++ {
			b.bounds = append(b.bounds, []string{strconv.FormatInt(lo+(first+i)*w, 10)})
		}
		blocks = append(blocks, b)
	}
	return blocks, true, nil
}

// countRows counts the rows of the largest node.
func (d *differ) countRows(ctx context.Context) (float64, error) {
	counts := make([]float64, len(d.nodes))
	err := d.onAllNodes(ctx, func(ctx context.Context, i int) error {
		sql := fmt.Sprintf(`SELECT count(*)::float8 FROM %s WHERE %s`, d.table.Qualified(), d.filterFor(i))
		return d.sessions[i].Read(ctx, func(tx pgx.Tx) error { return tx.QueryRow(ctx, sql).Scan(&counts[i]) })
	})
	if err != nil {
		return 0, fmt.Errorf("count rows: %w", err)
	}
	most := 0.0
	for _, c := range counts {
		most = max(most, c)
	}
	return most, nil
}

// keySpan returns the smallest and largest key over all nodes, read at the diff's snapshots,
// and each node's estimate of the table's rows (read in the same query, to save a round trip
// per node: a small table's diff is mostly round trips).
func (d *differ) keySpan(ctx context.Context) (lo, hi int64, found bool, estimates []float64, err error) {
	col := d.keys.Columns()[0]
	mins := make([]*int64, len(d.nodes))
	maxs := make([]*int64, len(d.nodes))
	estimates = make([]float64, len(d.nodes))
	err = d.onAllNodes(ctx, func(ctx context.Context, i int) error {
		sql := fmt.Sprintf(`SELECT min(%[1]s)::int8, max(%[1]s)::int8, %[4]s FROM %[2]s WHERE %[3]s`,
			engine.Ident(col.Name), d.table.Qualified(), d.filterFor(i), engine.RowEstimateExpr(d.table.Qualified()))
		return d.sessions[i].Read(ctx, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, sql).Scan(&mins[i], &maxs[i], &estimates[i])
		})
	})
	if err != nil {
		return 0, 0, false, nil, fmt.Errorf("read key span: %w", err)
	}
	for i := range mins {
		if mins[i] == nil {
			continue
		}
		if !found || *mins[i] < lo {
			lo = *mins[i]
		}
		if !found || *maxs[i] > hi {
			hi = *maxs[i]
		}
		found = true
	}
	return lo, hi, found, estimates, nil
}

// bucketExpr is the SQL that puts a row of block b into its leaf (0 … len(b.bounds)), with its
// parameters appended to args.
func (d *differ) bucketExpr(b block, args *[]any) string {
	switch {
	case len(b.bounds) == 0:
		return "0"
	case b.step != nil:
		// The CASE keeps k - lo from overflowing for keys far outside the block.
		n := int64(len(b.bounds))
		k := engine.Ident(d.keys.Columns()[0].Name)
		first := len(*args) + 1
		*args = append(*args, b.step.Lo+b.step.W, b.step.Lo+n*b.step.W, b.step.Lo, b.step.W)
		return fmt.Sprintf("CASE WHEN %[1]s < $%[2]d::int8 THEN 0 WHEN %[1]s >= $%[3]d::int8 THEN %[6]d ELSE (%[1]s::int8 - $%[4]d::int8) / $%[5]d::int8 END",
			k, first, first+1, first+2, first+3, n)
	}
	expr := fmt.Sprintf("width_bucket(%s, %s)", d.keys.KeyExpr(), d.keys.ParamKeyArray(len(*args)+1))
	*args = engine.AppendKeyArrays(*args, b.bounds, len(d.keys.Columns()))
	return expr
}
