package mtree

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/sourcegraph/conc/pool"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/diff"
)

// subject is the table a tree task works on, as every node has it.
type subject struct {
	tables []*engine.Table // per node, in node order
	table  *engine.Table
	keys   engine.KeyOrder
	mode   engine.HashMode
	hash   engine.RowHash
	// leaves is how the tree summarises its leaves (set once the build chose it, or from the
	// tree), and leafCap the most rows an ordered leaf's digest reads.
	leaves  diff.SummaryKind
	leafCap int64
}

// useLeaves sets how the subject's leaves are summarised, for a tree of leafRows rows a leaf. A
// leaf over the cap is split by the next rebalance that refreshes it (it splits leaves past twice
// leaf_rows), so only a node far from the others ever reaches it.
func (s *subject) useLeaves(kind diff.SummaryKind, leafRows int) {
	s.leaves, s.leafCap = kind, int64(diff.MaxOrderedLeafUnits)*int64(leafRows)
}

// summaries hashes r cut at bounds (ascending, strictly inside r) into len(bounds)+1 pieces, on
// one session, cut into parts consecutive ranges hashed at once.
func (s *subject) summaries(ctx context.Context, session *engine.Session, r engine.Range, bounds [][]string, parts int) ([]summary, error) {
	n := len(bounds) + 1
	out := make([]summary, n)
	per := (n + max(parts, 1) - 1) / max(parts, 1)
	p := pool.New().WithErrors().WithContext(ctx).WithCancelOnError()
	for first := 0; first < n; first += per {
		last := min(first+per, n) // pieces first..last-1
		sub := engine.Range{Lo: r.Lo, Hi: r.Hi}
		if first > 0 {
			sub.Lo = bounds[first-1]
		}
		if last < n {
			sub.Hi = bounds[last-1]
		}
		p.Go(func(ctx context.Context) error {
			if s.leaves == diff.SummaryOrdered {
				return s.orderedSummaries(ctx, session, sub, bounds[first:last-1], out[first:last])
			}
			sums, err := s.splitSummaries(ctx, session, sub, bounds[first:last-1])
			copy(out[first:last], sums)
			return err
		})
	}
	return out, p.Wait()
}

// orderedSummaries writes the ordered digests of r cut at bounds into out, in one query.
func (s *subject) orderedSummaries(ctx context.Context, session *engine.Session, r engine.Range, bounds [][]string, out []summary) error {
	var args []any
	var step *engine.IntStep
	// The step's bounds begin at Lo+W: Lo is one width below the first bound.
	if lo, w, ok := s.arithmetic(bounds); ok && lo >= math.MinInt64+w {
		step = &engine.IntStep{Lo: lo - w, W: w}
	}
	sql := engine.OrderedLeavesSQL(s.hash, s.keys, s.table.Qualified(), r, bounds, step, "true", s.leafCap, &args)
	err := s.readOrdered(ctx, session, sql, args, out)
	return engine.WithKeys(err, fmt.Sprintf("hash range %s", r), fmt.Sprintf("hash a range of %d leaves", len(bounds)+1))
}

// readOrdered runs a query of (leaf number, count, ordered digest) rows on the session, and
// writes them into out.
func (s *subject) readOrdered(ctx context.Context, session *engine.Session, sql string, args []any, out []summary) error {
	return session.Read(ctx, func(tx pgx.Tx) error {
		// The estimated cost of thousands of index scans crosses jit_optimize_above_cost, and
		// optimising the query costs more than JIT saves here (as in the table-diff's).
		if _, err := tx.Exec(ctx, "SET LOCAL jit = off"); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, sql, args...)
		if err != nil {
			return err
		}
		return s.collectOrdered(rows, out)
	})
}

// collectOrdered reads rows of (leaf number, count, digest) into out.
func (s *subject) collectOrdered(rows pgx.Rows, out []summary) error {
	var n, count int64
	var digest []byte
	_, err := pgx.ForEachRow(rows, []any{&n, &count, &digest}, func() error {
		if n < 0 || n >= int64(len(out)) {
			return fmt.Errorf("a leaf numbered %d of %d", n, len(out))
		}
		out[n] = s.orderedSum(count, digest)
		return nil
	})
	return err
}

// orderedSum is the summary of a leaf's count and ordered digest.
func (s *subject) orderedSum(count int64, digest []byte) summary {
	if count > s.leafCap {
		return summary{Count: count, Overflow: true}
	}
	return summary{Count: count, Digest: string(digest)}
}

// emptyLeaf is the summary of no rows in the subject's leaves.
func (s *subject) emptyLeaf() summary {
	if s.leaves == diff.SummaryOrdered {
		return summary{}
	}
	return emptySum
}

func loadSubject(ctx context.Context, nodes []NodeLogins, table string) (*subject, error) {
	tables, mode, err := engine.LoadTables(ctx, dataNodes(nodes), table, nil)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(nodes))
	for i, n := range nodes {
		names[i] = n.Name()
	}
	keys, err := engine.NewKeyOrder(tables, names)
	if err != nil {
		return nil, err
	}
	return &subject{tables: tables, table: tables[0], keys: keys, mode: mode, hash: engine.NewRowHash(tables[0].Columns, mode)}, nil
}

// maxSearchedBounds caps the bounds one width_bucket searches for keys of variable width, whose
// array PostgreSQL walks element by element.
const maxSearchedBounds = 63

// fixedWidthKey reports whether the key is one column of a type width_bucket can binary-search.
func (s *subject) fixedWidthKey() bool {
	if s.keys.Len() != 1 {
		return false
	}
	switch s.keys.Columns()[0].BaseType {
	case "int2", "int4", "int8", "oid", "date", "timestamp", "timestamptz", "uuid", "time":
		return true
	}
	return false
}

// integerKey reports whether the key is one integer column.
func (s *subject) integerKey() bool {
	if s.keys.Len() != 1 {
		return false
	}
	switch s.keys.Columns()[0].BaseType {
	case "int2", "int4", "int8":
		return true
	}
	return false
}

// arithmetic reports whether bounds of an integer key are lo, lo+w, lo+2w…, with w > 0.
func (s *subject) arithmetic(bounds [][]string) (lo, w int64, ok bool) {
	if !s.integerKey() || len(bounds) < 2 {
		return 0, 0, false
	}
	vals := make([]int64, len(bounds))
	for i, b := range bounds {
		v, err := strconv.ParseInt(b[0], 10, 64)
		if err != nil {
			return 0, 0, false
		}
		vals[i] = v
	}
	w = vals[1] - vals[0]
	for i := 1; i < len(vals); i++ {
		if vals[i]-vals[i-1] != w {
			return 0, 0, false
		}
	}
	return vals[0], w, w > 0
}

// denseBounds returns every step-th key after the first for an integer key whose values are
// every integer from min to max on the session's node (then they are min+step, min+2*step…,
// without reading the keys in order), or ok = false.
func (s *subject) denseBounds(ctx context.Context, session *engine.Session, step int64) (bounds [][]string, ok bool, err error) {
	if !s.integerKey() {
		return nil, false, nil
	}
	k := engine.Ident(s.keys.Columns()[0].Name)
	var lo, hi *int64
	var count int64
	err = session.Read(ctx, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, fmt.Sprintf(`SELECT min(%[1]s)::int8, max(%[1]s)::int8, count(*) FROM %[2]s`, k, s.table.Qualified())).Scan(&lo, &hi, &count)
	})
	if err != nil || lo == nil || *hi-*lo+1 != count {
		return nil, false, err
	}
	for v := *lo + step; v <= *hi; v += step {
		bounds = append(bounds, []string{strconv.FormatInt(v, 10)})
	}
	return bounds, true, nil
}

// splitSummaries hashes r cut at bounds (ascending, strictly inside r) into len(bounds)+1
// pieces, on one session.
func (s *subject) splitSummaries(ctx context.Context, session *engine.Session, r engine.Range, bounds [][]string) ([]summary, error) {
	chunk := maxSearchedBounds
	if _, _, ok := s.arithmetic(bounds); ok || s.fixedWidthKey() {
		chunk = len(bounds) + 1
	}
	out := make([]summary, 0, len(bounds)+1)
	for first := 0; first <= len(bounds); first += chunk + 1 {
		last := min(first+chunk, len(bounds)) // the chunk's pieces are first..last
		sub := engine.Range{Lo: r.Lo, Hi: r.Hi}
		if first > 0 {
			sub.Lo = bounds[first-1]
		}
		if last < len(bounds) {
			sub.Hi = bounds[last]
		}
		sums, err := s.bucketSummaries(ctx, session, sub, bounds[first:last])
		if err != nil {
			return nil, err
		}
		out = append(out, sums...)
	}
	return out, nil
}

// bucketSummaries hashes r cut at inner bounds in one query.
func (s *subject) bucketSummaries(ctx context.Context, session *engine.Session, r engine.Range, inner [][]string) ([]summary, error) {
	var args []any
	where := s.keys.Where(r, &args)
	bucket := "0"
	switch lo, w, ok := s.arithmetic(inner); {
	case ok:
		// Bounds lo, lo+w, lo+2w…: the bucket is computed, not searched for. The CASE keeps
		// k - lo from overflowing for keys far outside.
		k, n := engine.Ident(s.keys.Columns()[0].Name), len(inner)
		first := len(args) + 1
		args = append(args, lo, lo+int64(n-1)*w, w)
		bucket = fmt.Sprintf("CASE WHEN %[1]s < $%[2]d::int8 THEN 0 WHEN %[1]s >= $%[3]d::int8 THEN %[5]d ELSE (%[1]s::int8 - $%[2]d::int8) / $%[4]d::int8 + 1 END",
			k, first, first+1, first+2, n)
	case len(inner) > 0:
		bucket = fmt.Sprintf("width_bucket(%s, %s)", s.keys.KeyExpr(), s.keys.ParamKeyArray(len(args)+1))
		args = engine.AppendKeyArrays(args, inner, s.keys.Len())
	}
	out := make([]summary, len(inner)+1)
	for i := range out {
		out[i] = emptySum
	}
	sql := engine.SummarySQL(bucket, s.hash, s.hash.Source(s.table.Qualified(), where))
	err := session.Read(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, sql, args...)
		if err != nil {
			return engine.WithKeys(err, fmt.Sprintf("hash range %s", r), fmt.Sprintf("hash a range of %d leaves", len(inner)+1))
		}
		var b int
		var sum summary
		_, err = pgx.ForEachRow(rows, []any{&b, &sum.Count, &sum.Lane1, &sum.Lane2}, func() error {
			out[b] = sum
			return nil
		})
		return err
	})
	return out, err
}

// splitKeys returns every step-th key of r on a session, in key order, skipping the first: the
// lower bounds of pieces of about step rows after the first.
func (s *subject) splitKeys(ctx context.Context, session *engine.Session, r engine.Range, step int64) ([][]string, error) {
	var args []any
	where := s.keys.Where(r, &args)
	args = append(args, max(step, 1))
	cols := make([]string, s.keys.Len())
	for i, c := range s.keys.Columns() {
		cols[i] = engine.Ident(c.Name)
	}
	sql := fmt.Sprintf(`SELECT %s FROM (SELECT %s, row_number() OVER (ORDER BY %s) AS "?ace_rn?" FROM %s WHERE %s) s
		WHERE "?ace_rn?" %% $%d = 1 AND "?ace_rn?" > 1 ORDER BY "?ace_rn?"`,
		s.keys.KeyText(), strings.Join(cols, ", "), s.keys.OrderBy(), s.table.Qualified(), where, len(args))
	var keys [][]string
	err := session.Read(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, sql, args...)
		if err != nil {
			return engine.WithKeys(err, fmt.Sprintf("split range %s", r), "split a range into leaves")
		}
		keys, err = pgx.CollectRows(rows, engine.ScanKey(s.keys.Len()))
		return err
	})
	return keys, err
}

// piecesOf turns bounds inside r into the ranges they cut r into.
func piecesOf(r engine.Range, bounds [][]string) []engine.Range {
	out := make([]engine.Range, len(bounds)+1)
	lo := r.Lo
	for i, b := range bounds {
		out[i] = engine.Range{Lo: lo, Hi: b}
		lo = b
	}
	out[len(bounds)] = engine.Range{Lo: lo, Hi: r.Hi}
	return out
}

// rangeSummaries reads the summaries of ranges from a session: ordered digests in one query
// (orderedRanges); lanes up to maxBranches ranges a query and every query in one batch, one
// branch per range, each reading its range by the key's index and naming its bucket. Either way
// a query is planned and run once for many ranges instead of once per range: a refresh after a
// few scattered changes hashes many small leaves, and then the plan and start-up of a query per
// leaf cost more than hashing its rows.
func (s *subject) rangeSummaries(ctx context.Context, session *engine.Session, ranges []engine.Range) ([]summary, error) {
	out := make([]summary, len(ranges))
	for i := range out {
		out[i] = s.emptyLeaf()
	}
	if len(ranges) == 0 {
		return out, nil
	}
	if s.leaves == diff.SummaryOrdered {
		return out, s.orderedRanges(ctx, session, ranges, out)
	}
	batch := &pgx.Batch{}
	for first := 0; first < len(ranges); first += maxBranches {
		sql, args := s.branchesSQL(ranges[first:min(first+maxBranches, len(ranges))], first)
		batch.Queue(sql, args...)
	}
	err := session.Read(ctx, func(tx pgx.Tx) error {
		results := tx.SendBatch(ctx, batch)
		defer results.Close()
		for first := 0; first < len(ranges); first += maxBranches {
			last := min(first+maxBranches, len(ranges)) - 1
			rows, err := results.Query()
			if err != nil {
				return engine.WithKeys(err, fmt.Sprintf("hash ranges %s to %s", ranges[first], ranges[last]), fmt.Sprintf("hash ranges %d to %d", first+1, last+1))
			}
			if err := s.collectBranches(rows, out); err != nil {
				return engine.WithKeys(err, fmt.Sprintf("hash ranges %s to %s", ranges[first], ranges[last]), fmt.Sprintf("hash ranges %d to %d", first+1, last+1))
			}
		}
		return results.Close()
	})
	return out, err
}

// maxBranches is the most ranges one query of rangeSummaries reads: its plan grows with them.
const maxBranches = 64

// orderedRanges writes the ordered digests of ranges into out, in one query: the closed ranges
// as a LATERAL over their list (engine.KeyOrder.RangeList), each open one (the first or the
// last leaf) on its own.
func (s *subject) orderedRanges(ctx context.Context, session *engine.Session, ranges []engine.Range, out []summary) error {
	var args []any
	var parts []string
	var los, his [][]string
	var closed []int64
	for j, r := range ranges {
		if r.Lo != nil && r.Hi != nil {
			los, his, closed = append(los, r.Lo), append(his, r.Hi), append(closed, int64(j))
			continue
		}
		parts = append(parts, fmt.Sprintf(`SELECT %d::int8, "?ace_x?".* FROM (%s) "?ace_x?"`, j,
			engine.LeafDigestSQL(s.hash, s.table.Qualified(), s.keys.Where(r, &args), s.keys.OrderBy(), s.leafCap)))
	}
	if len(closed) > 0 {
		from, where := s.keys.RangeList(len(args) + 1)
		args = engine.AppendKeyArrays(engine.AppendKeyArrays(args, los, s.keys.Len()), his, s.keys.Len())
		args = append(args, closed)
		parts = append(parts, fmt.Sprintf(`SELECT ($%d::int8[])["?ace_l?"."?ace_k?"], "?ace_x?".* FROM %s, LATERAL (%s) "?ace_x?"`,
			len(args), from, engine.LeafDigestSQL(s.hash, s.table.Qualified(), where, s.keys.OrderBy(), s.leafCap)))
	}
	err := s.readOrdered(ctx, session, strings.Join(parts, "\nUNION ALL\n"), args, out)
	return engine.WithKeys(err, fmt.Sprintf("hash %d ranges from %s", len(ranges), ranges[0]), fmt.Sprintf("hash %d ranges", len(ranges)))
}

// collectBranches reads the summaries of a branchesSQL query into out, by bucket.
func (s *subject) collectBranches(rows pgx.Rows, out []summary) error {
	var b int
	var sum summary
	_, err := pgx.ForEachRow(rows, []any{&b, &sum.Count, &sum.Lane1, &sum.Lane2}, func() error {
		out[b] = sum
		return nil
	})
	return err
}

// branchesSQL is the summary query of ranges, whose buckets are numbered from first.
func (s *subject) branchesSQL(ranges []engine.Range, first int) (string, []any) {
	var args []any
	branches := make([]string, len(ranges))
	for j, r := range ranges {
		src := s.hash.SourceWith(s.table.Qualified(), s.keys.Where(r, &args), fmt.Sprintf(`%d AS "?ace_leaf?"`, first+j))
		branches[j] = strings.TrimSuffix(src, ` AS "?ace_r?"`)
	}
	source := "(" + strings.Join(branches, " UNION ALL ") + `) AS "?ace_r?"`
	return engine.SummarySQL(`"?ace_leaf?"`, s.hash, source), args
}
