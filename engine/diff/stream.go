package diff

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/sourcegraph/conc/pool"

	"github.com/ace-agent/ace-agent/engine"
)

// streamPieceRows is about how many rows one query of a streamed range reads per node.
const streamPieceRows = 5000

// emptyOnSomeNode reports whether a range holds rows on some node and none on another: then every
// row in it differs, and narrowing by hashes would only hash it again and again on its way down
// to keys it already knows.
func emptyOnSomeNode(counts []int64) bool {
	var empty, full bool
	for _, c := range counts {
		empty, full = empty || c == 0, full || c > 0
	}
	return empty && full
}

// stream reports every differing row of a range that is empty on some node, reading the rows
// with their digests directly instead of narrowing: the range is cut into pieces of about
// streamPieceRows rows by the keys of the node with the most rows there, and each piece is one
// query per node. Every node is read, the empty ones included, so no count is trusted to mean
// absence; the digests group the nodes that have a row into versions, as the narrowing would.
func (d *differ) stream(ctx context.Context, r engine.Range, counts []int64) error {
	most := 0
	for i, c := range counts {
		if c > counts[most] {
			most = i
		}
	}
	bounds, err := d.splitKeys(ctx, most, r, streamPieceRows)
	if err != nil {
		return engine.WithKeys(err, fmt.Sprintf("split range %s", r), "split a range")
	}
	pieces := block{rng: r, bounds: bounds}
	p := pool.New().WithErrors().WithContext(ctx).WithCancelOnError().WithMaxGoroutines(d.opts.Workers)
	for i := range len(bounds) + 1 {
		p.Go(func(ctx context.Context) error { return d.streamPiece(ctx, pieces.leafRange(i)) })
	}
	return p.Wait()
}

// streamedRow is one node's row of a streamed range: its digest and what a differing row holds.
type streamedRow struct {
	keyHash
	fetchedRow
}

// streamPiece reads a piece's rows on every node and reports those not identical everywhere.
func (d *differ) streamPiece(ctx context.Context, r engine.Range) error {
	if d.allPairsLimited() {
		return errLimitReached
	}
	var args []any
	where := d.keys.Where(r, &args)
	perNode := make([]map[string]streamedRow, len(d.nodes))
	err := d.onAllNodes(ctx, func(ctx context.Context, i int) error {
		return d.sessions[i].Read(ctx, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, d.streamSQL(i, where), args...)
			if err != nil {
				return fmt.Errorf("node %s: %w", d.nodes[i].Name, err)
			}
			perNode[i], err = d.collectStreamed(rows, d.tables[i].CommitTS)
			return err
		})
	})
	if err != nil {
		return engine.WithKeys(err, fmt.Sprintf("read the rows of range %s", r), "read the rows of a range")
	}
	hashes := make([]map[string]keyHash, len(perNode))
	fetched := make([]map[string]fetchedRow, len(perNode))
	for i, m := range perNode {
		hashes[i], fetched[i] = make(map[string]keyHash, len(m)), make(map[string]fetchedRow, len(m))
		for k, row := range m {
			hashes[i][k], fetched[i][k] = row.keyHash, row.fetchedRow
		}
	}
	diffs := differingKeys(hashes)
	if d.holdKeys {
		return d.reportKeys(ctx, diffs)
	}
	kept := d.admit(diffs)
	out := make([]engine.DiffRow, len(kept))
	for i, k := range kept {
		out[i] = d.diffRow(k, fetched)
	}
	d.sinkMu.Lock()
	err = d.sink.WriteDiffRows(context.WithoutCancel(ctx), out)
	d.sinkMu.Unlock()
	if err != nil {
		return fmt.Errorf("store differing rows: %w", err)
	}
	if len(kept) < len(diffs) && d.allPairsLimited() {
		return errLimitReached
	}
	return nil
}

// streamSQL reads, on node i, the key, digest and differing-row columns of every row matching
// where. The hash's source names the rows' xmin as a column of its own, so the commit metadata
// can read it there; the filter and the fences read the table itself, as everywhere else.
func (d *differ) streamSQL(i int, where string) string {
	meta := "NULL::timestamptz, NULL::text"
	if d.tables[i].CommitTS {
		meta = `pg_xact_commit_timestamp(xmin), ` + originNameSQL
	}
	return fmt.Sprintf(`SELECT %s, %s, %s, %s, %s, %s FROM %s`,
		d.keys.KeyText(), d.hash.Digest, engine.JSONObjectExpr(d.table.PK), d.keys.KeySortJSON(), engine.JSONObjectExpr(d.table.Columns), meta,
		d.hash.SourceWith(d.table.Qualified(), where+" AND "+d.filterFor(i), "xmin AS xmin"))
}

func (d *differ) collectStreamed(rows pgx.Rows, withMeta bool) (map[string]streamedRow, error) {
	defer rows.Close()
	n := len(d.keys.Columns())
	out := map[string]streamedRow{}
	for rows.Next() {
		var s streamedRow
		s.key = make([]string, n)
		dest := make([]any, 0, n+6)
		for i := range s.key {
			dest = append(dest, &s.key[i])
		}
		var digest []byte
		var ts *time.Time
		var origin *string
		if err := rows.Scan(append(dest, &digest, &s.pk, &s.pkSort, &s.row, &ts, &origin)...); err != nil {
			return nil, err
		}
		s.hash = string(digest)
		if withMeta {
			s.meta = &engine.RowMeta{CommitTS: ts, NodeOrigin: origin}
		}
		out[engine.KeyString(s.key)] = s
	}
	return out, rows.Err()
}
