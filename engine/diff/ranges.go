package diff

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/big"
	"slices"

	"github.com/ace-agent/ace-agent/engine"
)

// rangeRowsAllowed reports whether this diff may store empty ranges as range rows
// (TableDiffOptions.RangeRows): only a diff of whole rows of the whole table, every row counted
// and stored at once, so that a range's count and lanes say all a repair needs to know and the
// repair can copy it with nothing left out.
func (d *differ) rangeRowsAllowed() bool {
	o := d.opts
	return o.RangeRows && d.summaryKind != SummaryOrdered && o.Leaves == nil && o.MaxDiffRows == 0 && o.RecheckAfter == 0 && len(o.Columns) == 0 &&
		d.filter == "true" && d.untilSQL == "" && d.originSQL == nil
}

// storeRanges stores, as one range row each (engine.KindMissingRange), the runs of consecutive
// mismatched pieces of b that some nodes hold identically (equal count and lanes) and the
// others not at all, and returns the mismatched pieces left to narrow or stream. A run ends
// where the holders change.
func (d *differ) storeRanges(ctx context.Context, b block, hashes []map[int]bucketHash, mismatched map[int][]int64) (map[int][]int64, error) {
	if !d.rangeRowsAllowed() {
		return mismatched, nil
	}
	left := map[int][]int64{}
	var out []engine.DiffRow
	var run *rangeRun
	flush := func() {
		switch {
		case run == nil:
		case run.rows <= int64(2*d.opts.CompareUnitSize): // small: its keys are worth listing
			for p := run.first; p <= run.last; p++ {
				left[p] = mismatched[p]
			}
		default:
			out = append(out, d.rangeRow(run))
		}
		run = nil
	}
	for _, piece := range slices.Sorted(maps.Keys(mismatched)) {
		holders, h, ok := identicalHolders(hashes, piece)
		if !ok {
			flush()
			left[piece] = mismatched[piece]
			continue
		}
		if run != nil && (run.last+1 != piece || !slices.Equal(run.holders, holders)) {
			flush()
		}
		if run == nil {
			run = &rangeRun{rng: b.leafRange(piece), first: piece, holders: holders, lane1: new(big.Int), lane2: new(big.Int)}
		}
		if err := run.add(piece, b.leafRange(piece).Hi, h); err != nil {
			return nil, err
		}
	}
	flush()
	if len(out) == 0 {
		return left, nil
	}
	d.countRanges(out)
	d.sinkMu.Lock()
	err := d.sink.WriteDiffRows(context.WithoutCancel(ctx), out)
	d.sinkMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("store differing ranges: %w", err)
	}
	d.report()
	return left, nil
}

// rangeRun is consecutive pieces of one block that the same nodes hold identically.
type rangeRun struct {
	rng          engine.Range
	first, last  int
	holders      []int
	rows         int64
	lane1, lane2 *big.Int
}

// add extends the run by a piece ending at hi, whose holders' summary is h.
func (r *rangeRun) add(piece int, hi []string, h bucketHash) error {
	l1, ok1 := new(big.Int).SetString(h.lane1, 10)
	l2, ok2 := new(big.Int).SetString(h.lane2, 10)
	if !ok1 || !ok2 {
		return fmt.Errorf("read the hash lanes %q and %q of a range: not integers", h.lane1, h.lane2)
	}
	r.last, r.rng.Hi = piece, hi
	r.rows += h.count
	r.lane1.Add(r.lane1, l1)
	r.lane2.Add(r.lane2, l2)
	return nil
}

// identicalHolders reports the nodes holding rows in a piece when every one of them holds the
// same rows (equal count and lanes), and the others none; ok is false otherwise.
func identicalHolders(hashes []map[int]bucketHash, piece int) (holders []int, h bucketHash, ok bool) {
	for i, m := range hashes {
		nh := m[piece]
		if nh.count == 0 {
			continue
		}
		if holders != nil && nh != h {
			return nil, bucketHash{}, false
		}
		holders, h = append(holders, i), nh
	}
	return holders, h, len(holders) > 0 && len(holders) < len(hashes)
}

// rangeRow is the stored form of a run.
func (d *differ) rangeRow(r *rangeRun) engine.DiffRow {
	kr := &engine.KeyRange{Lo: r.rng.Lo, Hi: r.rng.Hi, Rows: r.rows, Lane1: r.lane1.String(), Lane2: r.lane2.String()}
	row := engine.DiffRow{Kind: engine.KindMissingRange, Range: kr, Rows: map[string]json.RawMessage{}, Versions: map[string]int{}}
	for i, n := range d.nodes {
		row.Rows[n.Name] = engine.NullRow
		if slices.Contains(r.holders, i) {
			kr.Holders = append(kr.Holders, n.Name)
			row.Versions[n.Name] = 1
		} else {
			kr.Empty = append(kr.Empty, n.Name)
		}
	}
	row.PK, row.PKSort = rangeKeyJSON(kr)
	return row
}

// rangeKeyJSON is what a range row stores as its key: its bounds as an object, and its low bound
// as the sort key, so that ordering by key puts it near its keys.
func rangeKeyJSON(kr *engine.KeyRange) (pk, pkSort json.RawMessage) {
	pk, _ = json.Marshal(map[string][]string{"range_from": kr.Lo, "range_to": kr.Hi})
	lo := kr.Lo
	if lo == nil {
		lo = []string{}
	}
	pkSort, _ = json.Marshal(lo)
	return pk, pkSort
}

// countRanges counts the range rows' keys as differing, for each holder against each empty node.
func (d *differ) countRanges(rows []engine.DiffRow) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, row := range rows {
		kr := row.Range
		for _, h := range kr.Holders {
			for _, e := range kr.Empty {
				d.pairs[pairKey(h, e)] += kr.Rows
			}
		}
		d.prog.DifferingKeys += kr.Rows
		d.keyRanges++
	}
}
