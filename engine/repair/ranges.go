package repair

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/engine"
)

// A differing key range (engine.KindMissingRange: rows some nodes hold identically and the
// others not at all) is repaired whole: its rows are copied with COPY from a holder into a target
// that holds none, in the target's repair transaction, under a compare-and-set checked in that
// transaction: the target still holds no row of the range, and the holder's rows, read by the
// copy's own statement, still have the count and hash lanes the diff saw. A range to delete is
// deleted only if the deleted rows have them. Otherwise nothing of the range is written and it
// is skipped as changed_since_diff.

// repairRanges repairs the batch's key ranges (repairRange), and returns its other rows.
func (r *repairer) repairRanges(ctx context.Context, batch []engine.DiffRow) ([]engine.DiffRow, error) {
	keys := batch[:0:0]
	for _, d := range batch {
		if d.Range == nil {
			keys = append(keys, d)
			continue
		}
		if r.aborted() || len(r.live()) == 0 {
			return nil, nil
		}
		if r.opts.Diff.HashVersion != engine.HashVersion {
			return nil, fmt.Errorf("the diff stored key ranges hashed with hash version %d, and this agent hashes with version %d, "+
				"so their compare-and-set cannot be checked: diff the table again", r.opts.Diff.HashVersion, engine.HashVersion)
		}
		if err := r.loadRangeKeys(ctx); err != nil {
			return nil, err
		}
		if r.rangeUnsupported() != "" {
			if err := r.expandRange(ctx, d); err != nil {
				return nil, err
			}
			continue
		}
		if err := r.repairRange(ctx, d); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// rangeUnsupported says why a repair cannot copy a diff's key ranges whole, so it lists their
// keys (expandRange); "" when it can.
func (r *repairer) rangeUnsupported() string {
	o := r.opts
	switch {
	case o.Plan != nil:
		return "a repair plan"
	case o.FixNulls:
		return "fix_nulls"
	case o.Bidirectional:
		return "bidirectional"
	case o.PreserveOrigin != "":
		return "preserve_origin"
	case r.rangeRLS != "":
		return "row-level security on node " + r.rangeRLS + " (COPY FROM refuses such a table)"
	}
	return ""
}

// repairRange decides a key range as a row of the diff would be decided (by the source of truth
// or the majority), and copies it to each target that lacks it and should hold it.
func (r *repairer) repairRange(ctx context.Context, d engine.DiffRow) error {
	var actions []Action
	for _, p := range r.planRange(d) {
		a := p.Action
		a.PK, a.PKSort, a.Range, a.After = d.PK, d.PKSort, d.Range, nil
		switch a.Kind {
		case ActionSkip:
		case ActionInsert:
			s := r.sessions[a.Node]
			if s == nil || s.failed != nil {
				continue
			}
			if !r.opts.DryRun {
				changed, err := r.copyRange(ctx, s, a.Source, d.Range)
				if err != nil {
					s.failed = fmt.Errorf("copy range %s from node %s: %w", d.Range.Range(), a.Source, err)
					continue
				}
				r.skipChanged(&a, changed)
			}
		case ActionDelete:
			s := r.sessions[a.Node]
			if s == nil || s.failed != nil {
				continue
			}
			if !r.opts.DryRun {
				changed, err := r.deleteRange(ctx, s, d.Range)
				if err != nil {
					s.failed = fmt.Errorf("delete range %s: %w", d.Range.Range(), err)
					continue
				}
				r.skipChanged(&a, changed)
			}
		default:
			return fmt.Errorf("the diff stored %d keys of range %s as one key range, on which the repair would %s on node %s: "+
				"diff the table again with ace.table_diff and repair that diff", d.Range.Rows, d.Range.Range(), a.Kind, a.Node)
		}
		actions = append(actions, a)
	}
	r.count(actions)
	if err := r.sink.WriteRepairActions(ctx, actions); err != nil {
		return fmt.Errorf("record repair actions: %w", err)
	}
	r.mu.Lock()
	r.keysDone += d.Range.Rows
	r.mu.Unlock()
	r.report("repairing")
	return nil
}

// skipChanged turns a range's action into a skip when its compare-and-set refused it, and
// says why in the repair's warnings.
func (r *repairer) skipChanged(a *Action, changed string) {
	if changed == "" {
		return
	}
	r.warn(fmt.Sprintf("key range %s was not repaired on node %s: %s", a.Range.Range(), a.Node, changed))
	a.Kind, a.Reason = ActionSkip, ReasonChangedSinceDiff
}

// planRange decides a key range as planFromSource decides a row. With latest_commit, the
// holders' rows are the only version there is (the others hold none), so it wins whatever its
// commit timestamps: the range is copied from a holder.
func (r *repairer) planRange(d engine.DiffRow) []planned {
	if r.opts.Strategy == StrategyLatestCommit {
		return r.planFrom(d, d.Range.Holders[0], "")
	}
	return r.planFromSource(d)
}

// copyRange copies the range's rows from node source into the target's transaction, and
// reports why it copied nothing ("" when it copied them): the target holds a row of the range
// now, or the source's rows there are not what the diff saw.
func (r *repairer) copyRange(ctx context.Context, s *repairSession, source string, kr *engine.KeyRange) (changed string, err error) {
	var args []any
	where := literalSQL(r.rangeKeys.Where(kr.Range(), &args), args)
	var held bool
	if err := s.conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+r.table.Qualified()+` WHERE `+where+`)`).Scan(&held); err != nil {
		return "", fmt.Errorf("look for rows of the range on node %s: %w", s.node.Name, err)
	}
	if held {
		return "node " + s.node.Name + " holds rows of the range now", nil
	}
	src := r.nodes[source]
	if src == nil {
		return "", fmt.Errorf("no connection to node %s, which holds the range", source)
	}
	if _, err := s.conn.Exec(ctx, "SAVEPOINT ace_range"); err != nil {
		return "", fmt.Errorf("savepoint: %w", err)
	}
	changed, err = r.copyFromSource(ctx, s, src, kr, where)
	if err == nil && changed == "" {
		_, err = s.conn.Exec(ctx, "RELEASE SAVEPOINT ace_range")
		return "", err
	}
	if _, rbErr := s.conn.Exec(context.WithoutCancel(ctx), "ROLLBACK TO SAVEPOINT ace_range"); rbErr != nil && err == nil {
		err = fmt.Errorf("roll back the copy of a changed range: %w", rbErr)
	}
	return changed, err
}

// deleteRange deletes the range's rows on a target that holds them, in its transaction, and
// keeps the deletion only if the deleted rows are the ones the diff saw there (their count and
// hash lanes, summed over what the DELETE returned, so no row changed between a check and the
// delete can slip through); otherwise it reports why and leaves the rows.
func (r *repairer) deleteRange(ctx context.Context, s *repairSession, kr *engine.KeyRange) (string, error) {
	var args []any
	where := r.rangeKeys.Where(kr.Range(), &args)
	if _, err := s.conn.Exec(ctx, "SAVEPOINT ace_range"); err != nil {
		return "", fmt.Errorf("savepoint: %w", err)
	}
	hash := engine.NewRowHash(r.table.Columns, r.opts.Diff.HashMode)
	sql := `WITH "?ace_del?" AS (DELETE FROM ` + r.table.Qualified() + ` WHERE ` + where + ` RETURNING *) ` +
		engine.SummarySQL("0", hash, hash.Source(`"?ace_del?"`, "true"))
	got := [3]string{"0", "0", "0"}
	rows, err := s.conn.Query(ctx, sql, args...)
	if err == nil {
		var bucket int
		var count int64
		var l1, l2 string
		_, err = pgx.ForEachRow(rows, []any{&bucket, &count, &l1, &l2}, func() error {
			got = [3]string{strconv.FormatInt(count, 10), l1, l2}
			return nil
		})
	}
	changed := ""
	if want := [3]string{strconv.FormatInt(kr.Rows, 10), kr.Lane1, kr.Lane2}; err == nil && got != want {
		changed = fmt.Sprintf("node %s holds %s rows of the range now (lanes %s, %s), the diff saw %d", s.node.Name, got[0], got[1], got[2], kr.Rows)
	}
	if err == nil && changed == "" {
		_, err = s.conn.Exec(ctx, "RELEASE SAVEPOINT ace_range")
		return "", err
	}
	if _, rbErr := s.conn.Exec(context.WithoutCancel(ctx), "ROLLBACK TO SAVEPOINT ace_range"); rbErr != nil && err == nil {
		err = fmt.Errorf("roll back the deletion of a changed range: %w", rbErr)
	}
	return changed, err
}

// copyFromSource streams the range from the source into the target: COPY TO STDOUT of the rows
// with each row's digest (the diff's row hash) on the source, into COPY FROM STDIN on the target
// with the digests taken off, summed on the way into the count and lanes the diff summed
// (rangeSum). It reports a difference from what the diff saw. The source is read in one
// statement, as the submitter, so the rows copied are the rows summed.
func (r *repairer) copyFromSource(ctx context.Context, s *repairSession, src *engine.Node, kr *engine.KeyRange, where string) (string, error) {
	conn, err := src.Pool.Acquire(ctx)
	if err != nil {
		return "", fmt.Errorf("connect to node %s: %w", src.Name, err)
	}
	defer conn.Release()
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return "", fmt.Errorf("begin on node %s: %w", src.Name, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if err := r.setLocalRole(ctx, tx); err != nil {
		return "", err
	}
	cols := columnList(r.writable)
	hash := engine.NewRowHash(r.table.Columns, r.opts.Diff.HashMode)
	read := `COPY (SELECT ` + cols + `, encode(` + hash.Digest + `, 'hex') FROM ` + hash.Source(r.table.Qualified(), where) + `) TO STDOUT`
	pr, pw := io.Pipe()
	sum := newRangeSum(pw)
	out := make(chan error, 1)
	go func() {
		_, err := tx.Conn().PgConn().CopyTo(ctx, sum, read)
		if err == nil {
			err = sum.flush()
		}
		pw.CloseWithError(err)
		out <- err
	}()
	_, err = s.conn.Conn().PgConn().CopyFrom(ctx, pr, `COPY `+r.table.Qualified()+` (`+cols+`) FROM STDIN`)
	pr.CloseWithError(errors.New("the copy into the target ended"))
	srcErr := <-out
	switch {
	case isCode(err, pgerrcode.UniqueViolation):
		return "node " + s.node.Name + " got a row of the range during the copy", nil
	case srcErr != nil && !errors.Is(srcErr, io.ErrClosedPipe):
		return "", fmt.Errorf("read the range on node %s: %w", src.Name, srcErr)
	case err != nil:
		return "", fmt.Errorf("write the range on node %s: %w", s.node.Name, err)
	}
	count, lane1, lane2 := sum.result()
	if count != kr.Rows || lane1 != kr.Lane1 || lane2 != kr.Lane2 {
		return fmt.Sprintf("node %s holds %d rows of the range now (lanes %s, %s), the diff saw %d", src.Name, count, lane1, lane2, kr.Rows), nil
	}
	return "", nil
}

func (r *repairer) setLocalRole(ctx context.Context, tx pgx.Tx) error {
	if r.opts.Role == "" {
		return nil
	}
	if _, err := tx.Exec(ctx, "SET LOCAL ROLE "+engine.Ident(r.opts.Role)); err != nil {
		return fmt.Errorf("set role %s: %w", r.opts.Role, err)
	}
	return nil
}

// loadRangeKeys builds, once, the key order the diff cut its ranges in: over every node of the
// diff (which a repair of a diff with key ranges has sessions to), after checking that each still
// has the table the diff saw and, in the set_role mode, that reading it runs no code a
// non-superuser owns.
func (r *repairer) loadRangeKeys(ctx context.Context) error {
	if r.rangeKeysLoaded {
		return nil
	}
	var tables []*engine.Table
	var names []string
	for _, name := range r.opts.Diff.Nodes {
		n := r.nodes[name]
		if n == nil {
			return fmt.Errorf("no connection to node %s of the diff, whose key order a key range is cut in", name)
		}
		t, err := engine.LoadTable(ctx, n, r.opts.Diff.Schema, r.opts.Diff.Table)
		if err != nil {
			return err
		}
		if err := r.sameAsDiff(t, name); err != nil {
			return err
		}
		// A holder is read as the submitter (SET ROLE in the set_role mode): its read is held to
		// the rules a diff's reads are.
		if r.opts.SetRoleSessions {
			if err := engine.CheckTableCode(ctx, n, t, "", engine.CodeUse{Read: true}); err != nil {
				return err
			}
		}
		tables, names = append(tables, t), append(names, name)
	}
	keys, err := engine.NewKeyOrder(tables, names)
	if err != nil {
		return err
	}
	r.rangeTables = map[string]*engine.Table{}
	for i, name := range names {
		r.rangeTables[name] = tables[i]
	}
	for _, t := range r.targets {
		var rls bool
		if err := r.nodes[t].Pool.QueryRow(ctx, `SELECT relrowsecurity FROM pg_class WHERE oid = $1::regclass`, r.table.Qualified()).Scan(&rls); err != nil {
			return fmt.Errorf("node %s: read whether %s has row-level security: %w", t, r.table.Display(), err)
		}
		if rls && r.rangeRLS == "" {
			r.rangeRLS = t
		}
	}
	r.rangeKeys, r.rangeKeysLoaded = keys, true
	return nil
}

func columnList(cols []engine.Column) string {
	out := ""
	for i, c := range cols {
		if i > 0 {
			out += ", "
		}
		out += engine.Ident(c.Name)
	}
	return out
}

// placeholder is a parameter reference of a predicate from engine.KeyOrder.Where, which quotes
// every identifier (so a "$" inside one follows a letter or a digit).
var placeholder = regexp.MustCompile(`(^|[^A-Za-z0-9_$"])\$([0-9]+)`)

// literalSQL puts the text parameters of a predicate in as literals: COPY takes no parameters.
// Where casts each parameter to its key column's type, so a literal reads as the parameter did.
func literalSQL(where string, args []any) string {
	return placeholder.ReplaceAllStringFunc(where, func(m string) string {
		sub := placeholder.FindStringSubmatch(m)
		n, _ := strconv.Atoi(sub[2])
		return sub[1] + engine.QuoteLiteral(fmt.Sprint(args[n-1]))
	})
}
