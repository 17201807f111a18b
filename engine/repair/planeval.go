package repair

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/big"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ace-agent/ace-agent/engine"
)

// A plan is applied in two passes over the diff's rows. The first (resolvePlan, before any
// session is opened) decides which rule each key gets, evaluating when predicates and
// pick_freshest's comparisons on a node, as the submitter, with the column types of the table;
// any key the plan cannot decide (no default, a kept side without the row) fails the repair
// there, before anything is written. The second pass (the repair's run) turns each key's choice
// into actions.

// choice is what the plan decided for one key.
type choice struct {
	rule   string
	action *PlanAction
	winner string // pick_freshest: the node whose version is freshest; "" if none is
}

// resolvePlan decides every key's rule and counts the matches per rule.
func (r *repairer) resolvePlan(ctx context.Context) error {
	r.report("evaluating the repair plan")
	plan, err := r.opts.Plan.bind(r.opts.Diff.Nodes)
	if err != nil {
		return fmt.Errorf("repair plan: %w", err)
	}
	r.rules = plan
	r.sides = sideNames{nodes: slices.Sorted(slices.Values(r.opts.Diff.Nodes))}
	if r.planNode, err = r.openPlanNode(ctx); err != nil {
		return err
	}
	defer r.closePlanNode()
	r.choices = map[string]choice{}
	r.ruleMatches = map[string]int64{}
	if err := r.checkWhens(ctx); err != nil {
		return err
	}
	var batch []engine.DiffRow
	flush := func() error {
		err := r.resolveBatch(ctx, batch)
		batch = batch[:0]
		return err
	}
	err = r.opts.Rows(ctx, func(d engine.DiffRow) error {
		batch = append(batch, d)
		if len(batch) < r.opts.BatchSize {
			return nil
		}
		return flush()
	})
	if err == nil && len(batch) > 0 {
		err = flush()
	}
	return err
}

// evalNode is where when predicates and typed comparisons run, as the submitter (planNode).
func (r *repairer) evalNode() *engine.Node { return r.planNode }

// openPlanNode is the first target's node as the submitter: its own sessions when they log in as
// the submitter, else (the set_role mode, Options.Role) a pool of one connection that SETs ROLE
// to the submitter, so no predicate runs with the agent's login.
func (r *repairer) openPlanNode(ctx context.Context) (*engine.Node, error) {
	base := r.nodes[r.targets[0]]
	if r.opts.Role == "" {
		return base, nil
	}
	cfg := base.Pool.Config().Copy()
	cfg.MaxConns, cfg.MinConns = 1, 0
	afterConnect, role := cfg.AfterConnect, r.opts.Role
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		if afterConnect != nil {
			if err := afterConnect(ctx, c); err != nil {
				return err
			}
		}
		_, err := c.Exec(ctx, "SET ROLE "+engine.Ident(role))
		return err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("node %s: connect as %s to evaluate the repair plan: %w", base.Name, role, err)
	}
	return &engine.Node{Name: base.Name, Pool: pool}, nil
}

func (r *repairer) closePlanNode() {
	if r.planNode != nil && r.planNode != r.nodes[r.targets[0]] {
		r.planNode.Pool.Close()
	}
	r.planNode = nil
}

// checkWhens puts every when predicate through the table_filter allow-list.
func (r *repairer) checkWhens(ctx context.Context) error {
	for _, rule := range r.rules.Rules {
		if strings.TrimSpace(rule.When) == "" {
			continue
		}
		if err := engine.CheckCondition(ctx, r.evalNode().Pool, r.table, r.whenCheckFrom(), engine.WrapFilter(rule.When)); err != nil {
			return fmt.Errorf("invalid repair plan: table %s rule (%s): invalid when expression: %w", r.table.Display(), rule.Name, err)
		}
	}
	return nil
}

// metaColumns are the metadata a when predicate reads beside the table's columns, unless a
// column has that name.
func (r *repairer) metaColumns() map[string]string {
	out := map[string]string{}
	for name, typ := range map[string]string{commitTSKey: "timestamptz", nodeOriginKey: "text"} {
		if !slices.Contains(r.table.ColumnNames(), name) {
			out[name] = typ
		}
	}
	return out
}

// whenCheckFrom is the FROM list a when predicate is checked against: the table's row type, with
// the metadata, under every alias.
func (r *repairer) whenCheckFrom() string {
	meta := r.metaColumns()
	cols := []string{"*"}
	for _, name := range slices.Sorted(maps.Keys(meta)) {
		cols = append(cols, fmt.Sprintf("NULL::%s AS %s", meta[name], engine.Ident(name)))
	}
	var from []string
	for _, alias := range slices.Sorted(maps.Keys(r.sides.whenAliases())) {
		from = append(from, fmt.Sprintf("(SELECT %s FROM %s) AS %s", strings.Join(cols, ", "), r.table.Qualified(), engine.Ident(alias)))
	}
	return strings.Join(from, ", ")
}

// whenEvalSQL evaluates a predicate for a batch: $1 is an array of {"r": node -> row, "m": node
// -> metadata}; it returns the ordinals (from 1) of the elements it holds for. Each alias is a
// record of the table's row type (absent rows: all NULL), so values compare as their types.
func (r *repairer) whenEvalSQL(when string) string {
	casts := make([]string, 0, len(r.table.Columns)+2)
	for _, c := range r.table.Columns {
		casts = append(casts, engine.ElemCast(c)+" AS "+engine.Ident(c.Name))
	}
	meta := r.metaColumns()
	for _, name := range slices.Sorted(maps.Keys(meta)) {
		casts = append(casts, fmt.Sprintf(`("?ace_m?"->>%s)::%s AS %s`, engine.QuoteLiteral(name), meta[name], engine.Ident(name)))
	}
	aliases := r.sides.whenAliases()
	var from []string
	for _, alias := range slices.Sorted(maps.Keys(aliases)) {
		n := engine.QuoteLiteral(aliases[alias])
		from = append(from, fmt.Sprintf(`LATERAL (SELECT %s FROM (SELECT "?ace_e?"."?ace_d?"->'r'->%s AS %s, "?ace_e?"."?ace_d?"->'m'->%s AS "?ace_m?") "?ace_x?") AS %s`,
			strings.Join(casts, ", "), n, engine.ElemColumn, n, engine.Ident(alias)))
	}
	return fmt.Sprintf(`SELECT "?ace_e?"."?ace_o?" FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS "?ace_e?"("?ace_d?", "?ace_o?"), %s WHERE %s IS TRUE`,
		strings.Join(from, ", "), engine.WrapFilter(when))
}

// evalWhen returns, for each row of the batch, whether the predicate holds.
func (r *repairer) evalWhen(ctx context.Context, rule PlanRule, batch []engine.DiffRow) ([]bool, error) {
	elems := make([]map[string]any, len(batch))
	for i, d := range batch {
		elems[i] = map[string]any{"r": d.Rows, "m": d.Meta}
	}
	arg, err := json.Marshal(elems)
	if err != nil {
		return nil, fmt.Errorf("encode rows for when: %w", err)
	}
	rows, err := r.evalNode().Pool.Query(ctx, r.whenEvalSQL(rule.When), string(arg))
	if err != nil {
		return nil, fmt.Errorf("evaluate when of rule %s on node %s: %w", rule.Name, r.evalNode().Name, err)
	}
	ords, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("evaluate when of rule %s on node %s: %w", rule.Name, r.evalNode().Name, err)
	}
	out := make([]bool, len(batch))
	for _, o := range ords {
		out[o-1] = true
	}
	return out, nil
}

// resolveBatch decides the rule of every key of a batch.
func (r *repairer) resolveBatch(ctx context.Context, batch []engine.DiffRow) error {
	whens := map[int][]bool{}
	for i, rule := range r.rules.Rules {
		if strings.TrimSpace(rule.When) == "" {
			continue
		}
		held, err := r.evalWhen(ctx, rule, batch)
		if err != nil {
			return err
		}
		whens[i] = held
	}
	choices := make([]choice, len(batch))
	for j, d := range batch {
		c, err := r.choose(d, func(i int) bool { return whens[i] == nil || whens[i][j] })
		if err != nil {
			return err
		}
		if err := r.checkChoice(d, c); err != nil {
			return err
		}
		choices[j] = c
	}
	if err := r.pickFreshest(ctx, batch, choices); err != nil {
		return err
	}
	for j, d := range batch {
		r.choices[string(d.PKSort)] = choices[j]
		r.ruleMatches[choices[j].rule]++
	}
	return nil
}

// choose is the plan's precedence: an override, the first matching rule, the table's default,
// the plan's.
func (r *repairer) choose(d engine.DiffRow, whenHolds func(rule int) bool) (choice, error) {
	for i := range r.rules.Overrides {
		o := &r.rules.Overrides[i]
		if r.overrideMatches(d, o) {
			return choice{rule: o.Name, action: &o.Action}, nil
		}
	}
	for i := range r.rules.Rules {
		rule := &r.rules.Rules[i]
		if r.selectorsMatch(d, rule) && whenHolds(i) {
			return choice{rule: rule.Name, action: &rule.Action}, nil
		}
	}
	if r.rules.TableDefault != nil {
		return choice{rule: ruleTableDefault, action: r.rules.TableDefault}, nil
	}
	if r.rules.GlobalDefault != nil {
		return choice{rule: ruleGlobalDefault, action: r.rules.GlobalDefault}, nil
	}
	return choice{}, fmt.Errorf("no default action configured in repair plan: key %s matches no row override or rule, and the plan has no default_action; nothing was written", d.PK)
}

// selectorsMatch checks a rule's selectors other than when.
func (r *repairer) selectorsMatch(d engine.DiffRow, rule *PlanRule) bool {
	if len(rule.PKIn) > 0 && !r.pkIn(d, rule.PKIn) {
		return false
	}
	if len(rule.DiffTypes) > 0 && !slices.ContainsFunc(rule.DiffTypes, func(t string) bool { return diffTypeHolds(d, r.opts.Diff.Nodes, t) }) {
		return false
	}
	if len(rule.ColumnsChanged) > 0 && !slices.ContainsFunc(rule.ColumnsChanged, func(c string) bool { return columnChanged(d, r.opts.Diff.Nodes, c) }) {
		return false
	}
	return true
}

// diffTypeHolds: row_mismatch when every node has the row, missing_on_<node> when that node
// lacks it. ACE's deleted_on_* are accepted but never hold (a diff cannot tell a deletion).
func diffTypeHolds(d engine.DiffRow, nodes []string, t string) bool {
	if t == "row_mismatch" {
		return !slices.ContainsFunc(nodes, func(n string) bool { return !present(d, n) })
	}
	if n, ok := strings.CutPrefix(t, "missing_on_"); ok {
		return slices.Contains(nodes, n) && !present(d, n)
	}
	return false
}

// columnChanged: the column's value is not the same on every node (a node without the row has
// none, which differs from any value).
func columnChanged(d engine.DiffRow, nodes []string, col string) bool {
	var first json.RawMessage
	firstSet, firstPresent := false, false
	for _, n := range nodes {
		fields, _ := rowFields(rowOf(d, n))
		var v json.RawMessage
		if fields != nil {
			v = fields[col]
			if v == nil {
				v = engine.NullRow
			}
		}
		if !firstSet {
			first, firstPresent, firstSet = v, fields != nil, true
			continue
		}
		if (fields != nil) != firstPresent || (fields != nil && !sameJSON(first, v)) {
			return true
		}
	}
	return false
}

// pkValues is the key as column -> JSON value.
func pkValues(d engine.DiffRow) map[string]json.RawMessage {
	var m map[string]json.RawMessage
	_ = json.Unmarshal(d.PK, &m)
	return m
}

func (r *repairer) overrideMatches(d engine.DiffRow, o *PlanOverride) bool {
	pk := pkValues(d)
	if len(o.PK) != len(pk) {
		return false
	}
	for col, v := range o.PK {
		if !sameKeyValue(pk[col], v) {
			return false
		}
	}
	return true
}

// pkIn matches a key against pk_in: equals with a value (a simple key) or an array of values in
// key order (a composite key); range for simple keys.
func (r *repairer) pkIn(d engine.DiffRow, matchers []PKMatcher) bool {
	names := r.table.PKNames()
	pk := pkValues(d)
	for _, m := range matchers {
		for _, eq := range m.Equals {
			if len(names) == 1 && sameKeyValue(pk[names[0]], eq) {
				return true
			}
			var tuple []json.RawMessage
			if len(names) > 1 && json.Unmarshal(eq, &tuple) == nil && len(tuple) == len(names) &&
				!slices.ContainsFunc(names, func(c string) bool { return !sameKeyValue(pk[c], tuple[slices.Index(names, c)]) }) {
				return true
			}
		}
		if m.Range != nil && len(names) == 1 && compareKeyValue(pk[names[0]], m.Range.From) >= 0 && compareKeyValue(pk[names[0]], m.Range.To) <= 0 {
			return true
		}
	}
	return false
}

// keyScalar reads a key value: a number (by value), else its text.
func keyScalar(raw json.RawMessage) (*big.Rat, string) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if r, ok := new(big.Rat).SetString(s); ok {
			return r, s
		}
		return nil, s
	}
	if r, ok := new(big.Rat).SetString(strings.TrimSpace(string(raw))); ok {
		return r, string(raw)
	}
	return nil, string(raw)
}

// sameKeyValue compares a key value with a plan's: numbers by value, else as text.
func sameKeyValue(a, b json.RawMessage) bool {
	return a != nil && b != nil && compareKeyValue(a, b) == 0
}

// compareKeyValue orders a key value against a plan's bound: by number when both are numbers,
// else by text.
func compareKeyValue(a, b json.RawMessage) int {
	ra, sa := keyScalar(a)
	rb, sb := keyScalar(b)
	if ra != nil && rb != nil {
		return ra.Cmp(rb)
	}
	return strings.Compare(sa, sb)
}

// checkChoice refuses what ACE refuses at run time: keeping or applying from a node without the
// row, and insert mode on a row every node has.
func (r *repairer) checkChoice(d engine.DiffRow, c choice) error {
	a := c.action
	switch {
	case a.Type == planKeep && !present(d, a.Node):
		return fmt.Errorf("rule %s: keep %s used on row missing from %s (pk %s); nothing was written", c.rule, a.Node, a.Node, d.PK)
	case a.Type == planApplyFrom && a.Mode == modeInsert && diffTypeHolds(d, r.opts.Diff.Nodes, "row_mismatch"):
		return fmt.Errorf("rule %s: apply_from insert mode cannot be used on mismatched rows (pk %s); nothing was written", c.rule, d.PK)
	case a.Type == planApplyFrom && !present(d, a.From) && a.Mode != modeInsert:
		return fmt.Errorf("rule %s: apply_from %s used on row missing from %s (pk %s); nothing was written", c.rule, a.From, a.From, d.PK)
	}
	return nil
}

// pickFreshest decides the freshest version of every key whose action has pick_freshest: by
// commit timestamp, or by the key column compared as its type on a node.
func (r *repairer) pickFreshest(ctx context.Context, batch []engine.DiffRow, choices []choice) error {
	byColumn := map[string][]int{}
	for j, c := range choices {
		pf := freshestOf(c.action)
		switch {
		case pf == nil:
		case pf.Key == commitTSKey && !slices.Contains(r.table.ColumnNames(), commitTSKey):
			choices[j].winner = freshestByCommit(batch[j], pf.Tie)
		default:
			byColumn[pf.Key] = append(byColumn[pf.Key], j)
		}
	}
	for _, col := range slices.Sorted(maps.Keys(byColumn)) {
		if err := r.freshestByColumn(ctx, col, batch, choices, byColumn[col]); err != nil {
			return err
		}
	}
	return nil
}

func freshestOf(a *PlanAction) *PickFreshest {
	if a.Type != planCustom || a.Helpers == nil {
		return nil
	}
	return a.Helpers.PickFreshest
}

// freshestByCommit: the latest commit timestamp wins; a version with one beats one without;
// equal (or none) goes to tie.
func freshestByCommit(d engine.DiffRow, tie string) string {
	var best []string
	var bestTS *engine.RowMeta
	for _, n := range slices.Sorted(maps.Keys(d.Versions)) {
		m := d.Meta[n]
		switch {
		case bestTS == nil || (m.CommitTS != nil && (bestTS.CommitTS == nil || m.CommitTS.After(*bestTS.CommitTS))):
			best, bestTS = []string{n}, &m
		case (m.CommitTS == nil && bestTS.CommitTS == nil) || (m.CommitTS != nil && bestTS.CommitTS != nil && m.CommitTS.Equal(*bestTS.CommitTS)):
			best = append(best, n)
		}
	}
	return oneOrTie(d, best, tie)
}

// oneOrTie is the one best node, else tie when it holds the row, else none.
func oneOrTie(d engine.DiffRow, best []string, tie string) string {
	if len(best) == 1 {
		return best[0]
	}
	if tie != "" && present(d, tie) {
		return tie
	}
	return ""
}

// freshestByColumn ranks the nodes' values of col for the given keys on a node, as col's type.
func (r *repairer) freshestByColumn(ctx context.Context, col string, batch []engine.DiffRow, choices []choice, idx []int) error {
	c, ok := r.columnNamed(col)
	if !ok {
		return fmt.Errorf("pick_freshest key %s is neither a column of %s nor commit_ts", col, r.table.Display())
	}
	elems := make([]map[string]json.RawMessage, len(idx))
	for i, j := range idx {
		elems[i] = map[string]json.RawMessage{}
		for n := range batch[j].Versions {
			elems[i][n] = rowOf(batch[j], n)
		}
	}
	arg, err := json.Marshal(elems)
	if err != nil {
		return fmt.Errorf("encode rows for pick_freshest: %w", err)
	}
	sql := fmt.Sprintf(`SELECT o, n, v IS NULL, dense_rank() OVER (PARTITION BY o ORDER BY v DESC NULLS LAST)
		FROM (SELECT e.o, x.key AS n, %s AS v
		      FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS e(d, o), jsonb_each(e.d) AS x(key, %s)) s`,
		engine.ElemCast(c), engine.ElemColumn)
	rows, err := r.evalNode().Pool.Query(ctx, sql, string(arg))
	if err != nil {
		return fmt.Errorf("compare pick_freshest key %s on node %s: %w", col, r.evalNode().Name, err)
	}
	best := map[int64][]string{}
	var o, rank int64
	var n string
	var isNull bool
	_, err = pgx.ForEachRow(rows, []any{&o, &n, &isNull, &rank}, func() error {
		if rank == 1 && !isNull {
			best[o] = append(best[o], n)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("compare pick_freshest key %s on node %s: %w", col, r.evalNode().Name, err)
	}
	for i, j := range idx {
		b := best[int64(i+1)]
		slices.Sort(b)
		choices[j].winner = oneOrTie(batch[j], b, freshestOf(choices[j].action).Tie)
	}
	return nil
}

func (r *repairer) columnNamed(name string) (engine.Column, bool) {
	for _, c := range r.table.Columns {
		if c.Name == name {
			return c, true
		}
	}
	return engine.Column{}, false
}
