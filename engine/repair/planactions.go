package repair

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/ace-agent/ace-agent/engine"
)

// planFromRules turns the plan's choice for a key into what each target gets. Every planned
// action carries the rule's name, and the rule's allow_stale_repairs.
func (r *repairer) planFromRules(d engine.DiffRow) ([]planned, error) {
	c, ok := r.choices[string(d.PKSort)]
	if !ok {
		return nil, fmt.Errorf("key %s was not decided by the repair plan's first pass: the diff's rows changed during the repair", d.PK)
	}
	a := c.action
	var out []planned
	switch a.Type {
	case planKeep:
		out = r.copyFrom(d, a.Node, false)
	case planApplyFrom:
		out = r.copyFrom(d, a.From, a.Mode == modeInsert)
	case planBidirectional:
		out = r.planBidirectional(d)
		for i := range out {
			out[i].insertOnly = true // it only fills in missing rows, even over a stale check
		}
	case planDelete:
		for _, t := range r.targets {
			if present(d, t) {
				out = append(out, planned{Action: Action{Node: t, Kind: ActionDelete, After: engine.NullRow}})
			}
		}
	case planSkip:
		for _, t := range r.targets {
			out = append(out, r.skip(t, ReasonPlanSkip))
		}
	case planCustom:
		var err error
		if out, err = r.planCustom(d, c); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("rule %s: unsupported action type %q", c.rule, a.Type)
	}
	for i := range out {
		out[i].Rule = c.rule
		out[i].allowStale = a.AllowStaleRepairs
	}
	return out, nil
}

// copyFrom makes every target that differs from src hold src's row; with insertOnly, only the
// targets without the row get it.
func (r *repairer) copyFrom(d engine.DiffRow, src string, insertOnly bool) []planned {
	var out []planned
	for _, t := range r.targets {
		if t == src || (present(d, t) && d.Versions[t] == d.Versions[src]) || (insertOnly && present(d, t)) {
			continue
		}
		if p, ok := r.copyAction(d, src, t); ok {
			p.insertOnly = insertOnly
			out = append(out, p)
		}
	}
	return out
}

// planCustom builds the custom row for every target and writes it where it differs: custom_row
// (with its templates), then coalesce_priority, then pick_freshest's winner, then the key; any
// column still missing keeps the target's own value (NULL where the target lacks the row).
func (r *repairer) planCustom(d engine.DiffRow, c choice) ([]planned, error) {
	a := c.action
	rows := map[string]map[string]json.RawMessage{}
	for _, n := range r.opts.Diff.Nodes {
		f, err := rowFields(rowOf(d, n))
		if err != nil {
			return nil, fmt.Errorf("decode the row %s of node %s: %w", d.PK, n, err)
		}
		rows[n] = f
	}
	if pf := freshestOf(a); pf != nil && c.winner == "" {
		var out []planned
		for _, t := range r.targets {
			out = append(out, r.skip(t, ReasonFreshestTie))
		}
		return out, nil
	}
	base, err := r.customBase(d, a, rows, c.winner)
	if err != nil {
		return nil, fmt.Errorf("rule %s: %w", c.rule, err)
	}
	var out []planned
	for _, t := range r.targets {
		row := maps.Clone(base)
		for _, col := range r.table.Columns {
			if _, ok := row[col.Name]; !ok {
				row[col.Name] = fieldOf(rows[t], col.Name)
			}
		}
		after, err := json.Marshal(row)
		if err != nil {
			return nil, fmt.Errorf("encode the custom row %s: %w", d.PK, err)
		}
		if present(d, t) && sameJSON(rowOf(d, t), after) {
			continue
		}
		kind := ActionUpdate
		if !present(d, t) {
			kind = ActionInsert
		}
		out = append(out, planned{Action: Action{Node: t, Kind: kind, Source: c.winner, After: after}})
	}
	return out, nil
}

// customBase is the part of a custom row every target shares.
func (r *repairer) customBase(d engine.DiffRow, a *PlanAction, rows map[string]map[string]json.RawMessage, winner string) (map[string]json.RawMessage, error) {
	out := map[string]json.RawMessage{}
	for col, v := range a.CustomRow {
		val, err := expandTemplate(v, rows)
		if err != nil {
			return nil, fmt.Errorf("custom_row.%s: %w", col, err)
		}
		out[col] = val
	}
	if a.Helpers != nil {
		for _, col := range r.table.Columns {
			if _, ok := out[col.Name]; ok || len(a.Helpers.CoalescePriority) == 0 {
				continue
			}
			out[col.Name] = engine.NullRow
			for _, n := range a.Helpers.CoalescePriority {
				if v := fieldOf(rows[n], col.Name); !engine.IsNullRow(v) {
					out[col.Name] = v
					break
				}
			}
		}
		if winner != "" {
			for _, col := range r.table.Columns {
				if _, ok := out[col.Name]; !ok {
					out[col.Name] = fieldOf(rows[winner], col.Name)
				}
			}
		}
	}
	for col, v := range pkValues(d) {
		if _, ok := out[col]; !ok {
			out[col] = v
		}
	}
	return out, nil
}

func fieldOf(row map[string]json.RawMessage, col string) json.RawMessage {
	if v, ok := row[col]; ok && v != nil {
		return v
	}
	return engine.NullRow
}

// expandTemplate fills a custom_row value's {{node.column}} templates: a value that is one
// template alone takes that value as it is (NULL and types kept); templates inside text are
// replaced by the value's text.
func expandTemplate(v json.RawMessage, rows map[string]map[string]json.RawMessage) (json.RawMessage, error) {
	var text string
	if json.Unmarshal(v, &text) != nil || !templateRef.MatchString(text) {
		return v, nil
	}
	lookup := func(m []string) json.RawMessage {
		return fieldOf(rows[m[1]], strings.TrimSpace(m[2]))
	}
	if m := templateRef.FindStringSubmatch(text); m != nil && strings.TrimSpace(text) == m[0] {
		return lookup(m), nil
	}
	out := templateRef.ReplaceAllStringFunc(text, func(s string) string {
		val := lookup(templateRef.FindStringSubmatch(s))
		var str string
		switch {
		case engine.IsNullRow(val):
			return ""
		case json.Unmarshal(val, &str) == nil:
			return str
		}
		return string(val)
	})
	return json.Marshal(out)
}

// ruleMatchCounts is rule_matches: keys decided per rule, override or default.
func (r *repairer) ruleMatchCounts() map[string]int64 {
	if r.ruleMatches == nil {
		return nil
	}
	out := map[string]int64{}
	for _, k := range slices.Sorted(maps.Keys(r.ruleMatches)) {
		out[k] = r.ruleMatches[k]
	}
	return out
}
