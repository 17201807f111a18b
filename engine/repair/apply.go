package repair

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ace-agent/ace-agent/engine"
)

// decided is a planned action after looking at the node's row as it is now.
type decided struct {
	Action
	key  []string
	fill map[string]json.RawMessage
}

// applyBatch reads the batch's rows on the node (locking those it will change), decides each
// action against what is there now, and applies them unless this is a dry run.
func (r *repairer) applyBatch(ctx context.Context, s *repairSession, plans []planned) ([]Action, error) {
	if r.preserving() {
		return r.applyPreserving(ctx, s, plans)
	}
	return r.applyPlans(ctx, s, plans)
}

// applyPlans is applyBatch in the session's open transaction.
func (r *repairer) applyPlans(ctx context.Context, s *repairSession, plans []planned) ([]Action, error) {
	var out []Action
	var work []planned
	for _, p := range plans {
		if p.Kind == ActionSkip {
			p.Before = p.expect
			if p.After == nil {
				p.After = engine.NullRow
			}
			out = append(out, p.Action)
			continue
		}
		work = append(work, p)
	}
	if len(work) == 0 {
		return out, nil
	}
	current, err := r.currentRows(ctx, s, work)
	if err != nil {
		return nil, err
	}
	same, err := r.sameRows(ctx, s, work, current)
	if err != nil {
		return nil, err
	}
	var ops []decided
	for _, p := range work {
		d, err := r.decide(p, current[engine.KeyString(p.key)], same)
		if err != nil {
			return nil, err
		}
		if d.Kind == ActionSkip || r.opts.DryRun {
			out = append(out, d.Action)
			continue
		}
		ops = append(ops, d)
	}
	applied, err := r.apply(ctx, s, ops)
	if err != nil {
		return nil, err
	}
	return append(out, applied...), nil
}

// currentRows reads the node's current version of the keys: locked (FOR UPDATE) where the repair
// will update or delete, plain where it will insert (there is nothing to lock, and the role may
// only be allowed to insert).
func (r *repairer) currentRows(ctx context.Context, s *repairSession, work []planned) (map[string]json.RawMessage, error) {
	var lockKeys, plainKeys [][]string
	for _, p := range work {
		if p.Kind == ActionInsert {
			plainKeys = append(plainKeys, p.key)
		} else {
			lockKeys = append(lockKeys, p.key)
		}
	}
	out := map[string]json.RawMessage{}
	for _, part := range []struct {
		keys [][]string
		lock bool
	}{{lockKeys, !r.opts.DryRun}, {plainKeys, false}} {
		if len(part.keys) == 0 {
			continue
		}
		match, args := r.keys.MatchKeys(part.keys)
		sql := fmt.Sprintf(`SELECT %s, %s FROM %s WHERE %s`, r.keys.KeyText(), engine.JSONObjectExpr(r.table.Columns), r.table.Qualified(), match)
		if part.lock {
			sql += " FOR UPDATE"
		}
		if err := r.collect(ctx, s, sql, args, out); err != nil {
			return nil, fmt.Errorf("read the rows to repair: %w", err)
		}
	}
	return out, nil
}

// collect runs a query returning key text columns and a row's JSON, into out by key.
func (r *repairer) collect(ctx context.Context, s *repairSession, sql string, args []any, out map[string]json.RawMessage) error {
	rows, err := s.conn.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	n := r.keys.Len()
	for rows.Next() {
		key := make([]string, n)
		dest := make([]any, 0, n+1)
		for i := range key {
			dest = append(dest, &key[i])
		}
		var row []byte
		if err := rows.Scan(append(dest, &row)...); err != nil {
			return err
		}
		out[engine.KeyString(key)] = row
	}
	return rows.Err()
}

// sameRows returns a comparison of whole rows under ace-agent's value semantics, the one a diff
// uses: the rows' digests, computed on the node from their JSON cast back to the column types.
// It knows the rows of the batch (as the node holds them now, as the diff saw them, and as the
// repair wants them); any other row compares as JSON. A key the node does not hold needs no
// digest (an absent row equals only an absent one), so an insert costs none.
func (r *repairer) sameRows(ctx context.Context, s *repairSession, work []planned, current map[string]json.RawMessage) (func(a, b json.RawMessage) bool, error) {
	var docs []json.RawMessage
	for _, p := range work {
		if cur := current[engine.KeyString(p.key)]; !engine.IsNullRow(cur) {
			docs = append(docs, cur, p.expect, p.After)
		}
	}
	digests, err := engine.RowDigests(ctx, s.conn, r.table, docs)
	if err != nil {
		return nil, fmt.Errorf("hash the rows to repair on node %s: %w", s.node.Name, err)
	}
	return func(a, b json.RawMessage) bool {
		if engine.IsNullRow(a) || engine.IsNullRow(b) {
			return engine.IsNullRow(a) == engine.IsNullRow(b)
		}
		da, okA := digests[string(a)]
		db, okB := digests[string(b)]
		if !okA || !okB {
			return sameJSON(a, b)
		}
		return da == db
	}, nil
}

// decide turns a planned action into what to do given the node's row now (cur): nothing when the
// node already holds the wanted row, a skip when the row moved on since the diff (and the check is
// on), else the insert, update or delete that gets it there.
func (r *repairer) decide(p planned, cur json.RawMessage, same func(a, b json.RawMessage) bool) (decided, error) {
	if cur == nil {
		cur = engine.NullRow
	}
	d := decided{Action: p.Action, key: p.key, fill: p.fill}
	d.Before = cur
	want := p.After
	if p.fill != nil {
		if engine.IsNullRow(cur) {
			return d.skipped(ReasonChangedSinceDiff, engine.NullRow), nil
		}
		merged, err := mergeFill(cur, p.fill)
		if err != nil {
			return d, fmt.Errorf("fill the row %s: %w", p.PK, err)
		}
		want = merged
	} else if p.Kind == ActionDelete {
		want = engine.NullRow
	}
	d.After = want
	switch {
	case same(cur, want):
		return d.skipped(ReasonAlreadyInSync, want), nil
	case p.checkUnchanged(r.opts.CheckUnchanged) && !same(cur, p.expect):
		return d.skipped(ReasonChangedSinceDiff, want), nil
	case p.fill != nil:
		d.Kind = ActionUpdate
	case engine.IsNullRow(want):
		d.Kind = ActionDelete
	case engine.IsNullRow(cur):
		d.Kind = ActionInsert
	case r.opts.Bidirectional:
		return d.skipped(ReasonBidirectional, want), nil
	case r.opts.InsertOnly || p.insertOnly:
		return d.skipped(ReasonInsertOnly, want), nil
	default:
		d.Kind = ActionUpdate
	}
	return d, nil
}

// checkUnchanged is whether the compare-and-set guards this row: the repair's check_unchanged,
// unless the plan's rule says otherwise with allow_stale_repairs.
func (p planned) checkUnchanged(repairWide bool) bool {
	if p.allowStale != nil {
		return !*p.allowStale
	}
	return repairWide
}

func (d decided) skipped(reason string, after json.RawMessage) decided {
	d.Kind, d.Reason, d.After = ActionSkip, reason, after
	d.fill = nil
	return d
}

// apply runs the decided inserts, updates, fills and deletes on the node and returns them with
// the rows as they are afterwards. A row a statement did not touch (it changed under the repair)
// becomes a changed_since_diff skip.
func (r *repairer) apply(ctx context.Context, s *repairSession, ops []decided) ([]Action, error) {
	groups := map[string][]decided{}
	for _, d := range ops {
		kind := d.Kind
		if d.fill != nil {
			kind = "fill"
		}
		groups[kind] = append(groups[kind], d)
	}
	var out []Action
	for _, kind := range []string{ActionDelete, ActionUpdate, "fill", ActionInsert} {
		group := groups[kind]
		if len(group) == 0 {
			continue
		}
		sql, args, err := r.statement(kind, group)
		if err != nil {
			return nil, err
		}
		after := map[string]json.RawMessage{}
		if err := r.collect(ctx, s, sql, args, after); err != nil {
			return nil, fmt.Errorf("%s %d rows: %w%s", strings.TrimSuffix(kind, "e")+"ing", len(group), err, r.ruleHint(s, err))
		}
		out = append(out, r.outcomes(kind, group, after)...)
	}
	return out, nil
}

func (r *repairer) outcomes(kind string, group []decided, after map[string]json.RawMessage) []Action {
	out := make([]Action, 0, len(group))
	for _, d := range group {
		row, ok := after[engine.KeyString(d.key)]
		switch {
		case !ok:
			d = d.skipped(ReasonChangedSinceDiff, d.After)
		case kind == ActionDelete:
			d.After = engine.NullRow
		default:
			d.After = row
		}
		out = append(out, d.Action)
	}
	return out
}

// statement builds the SQL of one kind of change for a group of rows. Values travel as one jsonb
// array and are cast column by column to the column's type, so every type takes its own text
// form and a jsonb column is not mistaken for a JSON string.
func (r *repairer) statement(kind string, group []decided) (string, []any, error) {
	if kind == ActionDelete {
		keys := make([][]string, len(group))
		for i, d := range group {
			keys[i] = d.key
		}
		match, args := r.keys.MatchKeys(keys)
		return fmt.Sprintf(`DELETE FROM %s WHERE %s RETURNING %s, %s`, r.table.Qualified(), match,
			r.keys.KeyText(), engine.JSONObjectExpr(r.table.Columns)), args, nil
	}
	elems := make([]json.RawMessage, len(group))
	for i, d := range group {
		elems[i] = d.After
		if d.fill != nil {
			var err error
			if elems[i], err = fillElement(d.PK, d.fill); err != nil {
				return "", nil, err
			}
		}
	}
	arg, err := json.Marshal(elems)
	if err != nil {
		return "", nil, fmt.Errorf("encode rows to write: %w", err)
	}
	returning := " RETURNING " + r.keys.KeyText() + ", " + engine.JSONObjectExpr(r.table.Columns)
	switch kind {
	case ActionInsert:
		return r.insertSQL() + returning, []any{string(arg)}, nil
	case ActionUpdate:
		return r.updateSQL(false) + returning, []any{string(arg)}, nil
	}
	return r.updateSQL(true) + returning, []any{string(arg)}, nil
}

// tableAlias names the target table inside repair statements; no table column can clash with it.
const tableAlias = `"?ace_t?"`

func (r *repairer) insertSQL() string {
	var cols, vals []string
	for _, c := range r.writable {
		cols = append(cols, engine.Ident(c.Name))
		vals = append(vals, engine.ElemCast(c))
	}
	return fmt.Sprintf(`INSERT INTO %s AS %s (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM jsonb_array_elements($1::jsonb) AS %s(%s)
		ON CONFLICT (%s) DO NOTHING`, r.table.Qualified(), tableAlias, strings.Join(cols, ", "), strings.Join(vals, ", "),
		engine.ElemAlias, engine.ElemColumn, r.keys.ColumnList())
}

// updateSQL sets every written column to the element's value, or with fill only fills the
// columns the element names and only where they are still NULL.
func (r *repairer) updateSQL(fill bool) string {
	var sets []string
	for _, c := range r.writable {
		if c.PKPos > 0 {
			continue
		}
		col := engine.Ident(c.Name)
		if fill {
			sets = append(sets, fmt.Sprintf("%s = CASE WHEN %s ? %s THEN coalesce(%s.%s, %s) ELSE %s.%s END",
				col, engine.ElemColumn, engine.QuoteLiteral(c.Name), tableAlias, col, engine.ElemCast(c), tableAlias, col))
		} else {
			sets = append(sets, col+" = "+engine.ElemCast(c))
		}
	}
	if len(sets) == 0 {
		// Only key columns: nothing to change, but the statement still returns the rows.
		sets = append(sets, engine.Ident(r.table.PK[0].Name)+" = "+tableAlias+"."+engine.Ident(r.table.PK[0].Name))
	}
	var lhs, rhs []string
	for _, c := range r.table.PK {
		lhs = append(lhs, tableAlias+"."+engine.Ident(c.Name))
		rhs = append(rhs, engine.ElemCast(c))
	}
	return fmt.Sprintf(`UPDATE %s AS %s SET %s FROM jsonb_array_elements($1::jsonb) AS %s(%s) WHERE (%s) = (%s)`,
		r.table.Qualified(), tableAlias, strings.Join(sets, ", "), engine.ElemAlias, engine.ElemColumn,
		strings.Join(lhs, ", "), strings.Join(rhs, ", "))
}

// fillElement is a fix_nulls element: the key's columns and the values to fill.
func fillElement(pk json.RawMessage, fill map[string]json.RawMessage) (json.RawMessage, error) {
	fields, err := rowFields(pk)
	if err != nil {
		return nil, fmt.Errorf("decode key %s: %w", pk, err)
	}
	if fields == nil {
		fields = map[string]json.RawMessage{}
	}
	for c, v := range fill {
		fields[c] = v
	}
	return json.Marshal(fields)
}

// ruleHint explains an error PostgreSQL raises when a statement of a repair that writes normally
// meets one of the table's rules (a DO INSTEAD rule refuses RETURNING, any INSERT or UPDATE rule
// refuses ON CONFLICT).
func (r *repairer) ruleHint(s *repairSession, err error) string {
	var pg *pgconn.PgError
	if r.modes[s.node.Name] != WriteNormal || !errors.As(err, &pg) || pg.Code != pgerrcode.FeatureNotSupported ||
		!(strings.Contains(pg.Message, "RETURNING") || strings.Contains(pg.Message, "ON CONFLICT")) {
		return ""
	}
	return " (the table has rules, and this repair writes normally, so they apply: it leaves the rows alone rather than write past " +
		"them; only a role that may set session_replication_role writes as replication does, without rules)"
}

// isCode reports whether err is a PostgreSQL error with the given SQLSTATE.
func isCode(err error, code string) bool {
	var pg *pgconn.PgError
	return errors.As(err, &pg) && pg.Code == code
}
