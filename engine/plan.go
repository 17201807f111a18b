package engine

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// block is a range hashed by one query per node, grouped into leaves by the bounds inside it.
type block struct {
	rng    Range
	bounds [][]string // leaf boundaries strictly inside rng, ascending
}

// leafRange returns the i-th leaf of b: [bounds[i-1], bounds[i]), open where b is.
func (b block) leafRange(i int) Range {
	r := Range{Lo: b.rng.Lo, Hi: b.rng.Hi}
	if i > 0 {
		r.Lo = b.bounds[i-1]
	}
	if i < len(b.bounds) {
		r.Hi = b.bounds[i]
	}
	return r
}

// planBlocks splits the key space into blocks of about BlockSize rows and leaves of about
// CompareUnitSize rows, using the keys of the node that holds the most rows. The ranges are
// applied unchanged to every node.
func (d *differ) planBlocks(ctx context.Context) ([]block, error) {
	ref, err := d.largestNode(ctx)
	if err != nil {
		return nil, err
	}
	bounds, err := d.splitKeys(ctx, ref, Range{}, d.opts.CompareUnitSize)
	if err != nil {
		return nil, fmt.Errorf("plan ranges: %w", err)
	}
	leavesPerBlock := max(1, d.opts.BlockSize/d.opts.CompareUnitSize)
	var blocks []block
	// len(bounds) bounds make len(bounds)+1 leaves; each block takes leavesPerBlock of them.
	for first := 0; first <= len(bounds); first += leavesPerBlock {
		last := min(first+leavesPerBlock, len(bounds)+1) // exclusive leaf index
		b := block{}
		if first > 0 {
			b.rng.Lo = bounds[first-1]
		}
		if last <= len(bounds) {
			b.rng.Hi = bounds[last-1]
		}
		b.bounds = bounds[first : last-1]
		blocks = append(blocks, b)
	}
	return blocks, nil
}

// largestNode picks the node with the most rows by the planner's estimate, counting partitions.
func (d *differ) largestNode(ctx context.Context) (int, error) {
	best, bestRows := 0, -1.0
	for i, s := range d.sessions {
		var rows float64
		err := s.read(ctx, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, `
				SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::float8
				FROM pg_partition_tree($1::regclass) p JOIN pg_class c ON c.oid = p.relid`, d.table.Qualified()).Scan(&rows)
		})
		if err != nil {
			return 0, fmt.Errorf("estimate rows: %w", err)
		}
		if rows > bestRows {
			best, bestRows = i, rows
		}
	}
	return best, nil
}

// splitKeys returns every step-th key in r on node i, in key order: boundaries that cut r into
// pieces of about step rows on that node.
func (d *differ) splitKeys(ctx context.Context, i int, r Range, step int) ([][]string, error) {
	step = max(step, 2)
	var args []any
	where := d.keys.where(r, &args)
	args = append(args, step)
	sql := fmt.Sprintf(`SELECT %s FROM (SELECT %s, row_number() OVER (ORDER BY %s) AS "?ace_rn?" FROM %s WHERE %s AND %s) s
		WHERE "?ace_rn?" %% $%d = 0 ORDER BY "?ace_rn?"`,
		d.keys.keyText(), d.keyColumns(), d.keys.orderBy(), d.table.Qualified(), where, d.filter, len(args))
	var keys [][]string
	err := d.sessions[i].read(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, sql, args...)
		if err != nil {
			return err
		}
		keys, err = pgx.CollectRows(rows, scanKey(len(d.keys.cols)))
		return err
	})
	return keys, err
}

func (d *differ) keyColumns() string {
	var cols string
	for i, c := range d.keys.cols {
		if i > 0 {
			cols += ", "
		}
		cols += ident(c.Name)
	}
	return cols
}

func scanKey(n int) pgx.RowToFunc[[]string] {
	return func(row pgx.CollectableRow) ([]string, error) {
		key := make([]string, n)
		dest := make([]any, n)
		for i := range key {
			dest[i] = &key[i]
		}
		return key, row.Scan(dest...)
	}
}
