package diff

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/engine"
)

// block is a range hashed by one query per node, grouped into leaves by the bounds inside it.
type block struct {
	rng    engine.Range
	bounds [][]string // leaf boundaries strictly inside rng, ascending
	// step, when set, says the bounds are lo+w, lo+2w, … of an integer key, so a row's leaf is
	// computed arithmetically instead of searched for in an array.
	step *engine.IntStep
}

// leafRange returns the i-th leaf of b: [bounds[i-1], bounds[i]), open where b is.
func (b block) leafRange(i int) engine.Range {
	r := engine.Range{Lo: b.rng.Lo, Hi: b.rng.Hi}
	if i > 0 {
		r.Lo = b.bounds[i-1]
	}
	if i < len(b.bounds) {
		r.Hi = b.bounds[i]
	}
	return r
}

// maxSearchedBounds caps the bounds searched with width_bucket per row: its cost grows with
// the array, so keys that are not integers get more, smaller blocks.
const maxSearchedBounds = 63

// planBlocks splits the key space into blocks of about BlockSize rows and leaves of about
// CompareUnitSize rows. The ranges are applied unchanged to every node.
func (d *differ) planBlocks(ctx context.Context) ([]block, error) {
	if d.small() {
		return []block{{}}, nil
	}
	if d.integerKey() {
		blocks, ok, err := d.planIntegerBlocks(ctx)
		if err != nil || ok {
			return blocks, err
		}
	}
	estimates, err := d.estimateRows(ctx)
	if err != nil {
		return nil, err
	}
	ref := 0
	for i, e := range estimates {
		if e > estimates[ref] {
			ref = i
		}
	}
	estimate := estimates[ref]
	if estimate < 1 {
		if estimate, err = d.countRows(ctx); err != nil {
			return nil, err
		}
	}
	bounds, err := d.sampleBounds(ctx, ref, estimate)
	if err != nil {
		return nil, fmt.Errorf("plan ranges: %w", err)
	}
	leavesPerBlock := min(max(1, d.opts.BlockSize/d.opts.CompareUnitSize), maxSearchedBounds+1)
	return groupLeaves(bounds, leavesPerBlock), nil
}

// smallTableRows is the largest table hashed whole, as one summary per node, without planning:
// most tables compared are identical, and planning a small one (reading its key span at the
// snapshots) costs more than hashing it. One that differs is narrowed down from the whole range,
// which costs a few more queries than leaves planned ahead would.
const smallTableRows = 20_000

// small reports whether every node's planner estimate puts the table under smallTableRows and
// within one block. A table never analysed (or partitioned) has no usable estimate, and is
// planned.
func (d *differ) small() bool {
	limit := float64(min(smallTableRows, d.opts.BlockSize))
	for _, t := range d.tables {
		if t.EstimatedRows < 0 || t.EstimatedRows > limit {
			return false
		}
	}
	return true
}

// groupLeaves makes blocks of leavesPerBlock consecutive leaves; len(bounds) bounds make
// len(bounds)+1 leaves, the first open below and the last open above.
func groupLeaves(bounds [][]string, leavesPerBlock int) []block {
	var blocks []block
	for first := 0; first <= len(bounds); first += leavesPerBlock {
		last := min(first+leavesPerBlock, len(bounds)+1) // exclusive leaf index
		b := block{bounds: bounds[first : last-1]}
		if first > 0 {
			b.rng.Lo = bounds[first-1]
		}
		if last <= len(bounds) {
			b.rng.Hi = bounds[last-1]
		}
		blocks = append(blocks, b)
	}
	return blocks
}

// estimateRows reads each node's planner estimate of the table's rows, partitions included.
func (d *differ) estimateRows(ctx context.Context) ([]float64, error) {
	out := make([]float64, len(d.nodes))
	err := d.onAllNodes(ctx, func(ctx context.Context, i int) error {
		return d.sessions[i].Read(ctx, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, `SELECT `+engine.RowEstimateExpr(d.table.Qualified())).Scan(&out[i])
		})
	})
	if err != nil {
		return nil, fmt.Errorf("estimate rows: %w", err)
	}
	return out, nil
}

// sampleBounds returns leaf boundaries from node i: every key when the table is small, else a
// Bernoulli sample of about one key per CompareUnitSize rows, which costs far less than reading
// the keys in order.
func (d *differ) sampleBounds(ctx context.Context, i int, estimate float64) ([][]string, error) {
	const exactBelow = 200_000
	if estimate < exactBelow {
		return d.splitKeys(ctx, i, engine.Range{}, d.opts.CompareUnitSize)
	}
	pct := 100 / float64(d.opts.CompareUnitSize)
	sql := fmt.Sprintf(`SELECT %s FROM (SELECT DISTINCT %s FROM %s TABLESAMPLE BERNOULLI ($1) WHERE %s) s ORDER BY %s`,
		d.keys.KeyText(), d.keyColumns(), d.table.Qualified(), d.filterFor(i), d.keys.OrderBy())
	var keys [][]string
	err := d.sessions[i].Read(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, sql, pct)
		if err != nil {
			return err
		}
		keys, err = pgx.CollectRows(rows, engine.ScanKey(len(d.keys.Columns())))
		return err
	})
	return keys, err
}

// splitKeys returns every step-th key in r on node i, in key order: boundaries that cut r into
// pieces of about step rows on that node.
func (d *differ) splitKeys(ctx context.Context, i int, r engine.Range, step int) ([][]string, error) {
	step = max(step, 2)
	var args []any
	where := d.keys.Where(r, &args)
	args = append(args, step)
	sql := fmt.Sprintf(`SELECT %s FROM (SELECT %s, row_number() OVER (ORDER BY %s) AS "?ace_rn?" FROM %s WHERE %s AND %s) s
		WHERE "?ace_rn?" %% $%d = 0 ORDER BY "?ace_rn?"`,
		d.keys.KeyText(), d.keyColumns(), d.keys.OrderBy(), d.table.Qualified(), where, d.filterFor(i), len(args))
	var keys [][]string
	err := d.sessions[i].Read(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, sql, args...)
		if err != nil {
			return err
		}
		keys, err = pgx.CollectRows(rows, engine.ScanKey(len(d.keys.Columns())))
		return err
	})
	return keys, err
}

func (d *differ) keyColumns() string {
	var cols string
	for i, c := range d.keys.Columns() {
		if i > 0 {
			cols += ", "
		}
		cols += engine.Ident(c.Name)
	}
	return cols
}
