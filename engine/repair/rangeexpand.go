package repair

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/engine"
)

// expandRange repairs a key range key by key, for a repair that cannot copy it whole (a plan,
// fix_nulls, bidirectional, preserve_origin, a target with row-level security): it reads the
// range's rows from a holder, as the submitter, in one statement, each as a differing row the
// diff would have listed (the holders' row, absent on the empty nodes), and repairs them with the
// keys, in batches. The rows read must have the count and hash lanes the diff saw; otherwise the
// range is skipped as changed_since_diff on every target, with nothing of it written.
func (r *repairer) expandRange(ctx context.Context, d engine.DiffRow) error {
	rows, changed, err := r.readRange(ctx, d)
	if err != nil {
		return err
	}
	if changed != "" {
		var actions []Action
		for _, t := range r.targets {
			actions = append(actions, Action{Node: t, Kind: ActionSkip, Reason: ReasonChangedSinceDiff, PK: d.PK, PKSort: d.PKSort, Range: d.Range})
		}
		r.count(actions)
		if err := r.sink.WriteRepairActions(ctx, actions); err != nil {
			return fmt.Errorf("record repair actions: %w", err)
		}
		r.warn(fmt.Sprintf("key range %s was not repaired: %s", d.Range.Range(), changed))
		r.mu.Lock()
		r.keysDone += d.Range.Rows
		r.mu.Unlock()
		return nil
	}
	for start := 0; start < len(rows); start += r.opts.BatchSize {
		if r.aborted() || len(r.live()) == 0 {
			return nil
		}
		if err := r.processKeys(ctx, rows[start:min(start+r.opts.BatchSize, len(rows))]); err != nil {
			return err
		}
	}
	return nil
}

// readRange reads a key range's rows on its first holder as differing rows, and reports how
// they differ from what the diff saw ("" when they have its count and lanes).
func (r *repairer) readRange(ctx context.Context, d engine.DiffRow) ([]engine.DiffRow, string, error) {
	holder := d.Range.Holders[0]
	src, tbl := r.nodes[holder], r.rangeTables[holder]
	conn, err := src.Pool.Acquire(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("connect to node %s: %w", holder, err)
	}
	defer conn.Release()
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, "", fmt.Errorf("begin on node %s: %w", holder, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if err := r.setLocalRole(ctx, tx); err != nil {
		return nil, "", err
	}
	var args []any
	where := r.rangeKeys.Where(d.Range.Range(), &args)
	hash := engine.NewRowHash(r.table.Columns, r.opts.Diff.HashMode)
	commitTS := "NULL::timestamptz"
	if tbl.CommitTS {
		commitTS = "pg_xact_commit_timestamp(xmin)"
	}
	sql := fmt.Sprintf(`SELECT %s, %s, %s, %s, %s FROM %s`, engine.JSONObjectExpr(tbl.PK), r.rangeKeys.KeySortJSON(),
		engine.JSONObjectExpr(tbl.Columns), hash.Digest, commitTS, hash.SourceWith(tbl.Qualified(), where, "xmin AS xmin"))
	q, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return nil, "", fmt.Errorf("read range %s on node %s: %w", d.Range.Range(), holder, err)
	}
	sum := newRangeSum(nil)
	var out []engine.DiffRow
	var pk, pkSort, row, digest []byte
	var ts *time.Time
	_, err = pgx.ForEachRow(q, []any{&pk, &pkSort, &row, &digest, &ts}, func() error {
		sum.add(digest)
		out = append(out, r.rangeKeyRow(d.Range, pk, pkSort, row, ts))
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("read range %s on node %s: %w", d.Range.Range(), holder, err)
	}
	if count, l1, l2 := sum.result(); count != d.Range.Rows || l1 != d.Range.Lane1 || l2 != d.Range.Lane2 {
		return nil, fmt.Sprintf("node %s holds %d rows of the range now (lanes %s, %s), the diff saw %d", holder, count, l1, l2, d.Range.Rows), nil
	}
	return out, "", nil
}

// rangeKeyRow is one key of a range as the diff would have listed it: every holder has the row
// (the same: their count and lanes are equal), the empty nodes do not. The commit timestamp read
// on one holder stands for all of them.
func (r *repairer) rangeKeyRow(kr *engine.KeyRange, pk, pkSort, row []byte, ts *time.Time) engine.DiffRow {
	d := engine.DiffRow{PK: clone(pk), PKSort: clone(pkSort), Kind: engine.KindMissing,
		Rows: map[string]json.RawMessage{}, Versions: map[string]int{}}
	rowJSON := json.RawMessage(clone(row))
	for _, h := range kr.Holders {
		d.Rows[h], d.Versions[h] = rowJSON, 1
		if ts != nil {
			if d.Meta == nil {
				d.Meta = map[string]engine.RowMeta{}
			}
			d.Meta[h] = engine.RowMeta{CommitTS: ts}
		}
	}
	for _, e := range kr.Empty {
		d.Rows[e] = engine.NullRow
	}
	return d
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

// add adds one digest (raw bytes) to the sums, as row does for a hex one.
func (s *rangeSum) add(digest []byte) {
	s.rows++
	s.lanes[0].add(int64(binary.BigEndian.Uint64(digest[:8])))
	s.lanes[1].add(int64(binary.BigEndian.Uint64(digest[8:16])))
}
