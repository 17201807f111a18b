package repair

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// A repair plan is ACE's rule file for one table, as ace.validate_repair_plan normalised it:
// row overrides, then the first matching rule, then the table's default, then the plan's. Every
// place that names a side takes ACE's positional n1/n2 (the first and second node of a pair, in
// name order) or a node's name. Positions are read only in a diff of two nodes: with more, which
// node a position means is not defined, so the plan is refused, naming the node-name form.

// Plan action types: ACE's, and keep (by node name).
const (
	planKeepN1        = "keep_n1"
	planKeepN2        = "keep_n2"
	planKeep          = "keep"
	planApplyFrom     = "apply_from"
	planBidirectional = "bidirectional"
	planCustom        = "custom"
	planSkip          = "skip"
	planDelete        = "delete"
)

// apply_from modes.
const (
	modeReplace = "replace"
	modeUpsert  = "upsert"
	modeInsert  = "insert"
)

// Names of the defaults in rule_matches and ace.repair_rows, as ACE names them.
const (
	ruleTableDefault  = "table_default"
	ruleGlobalDefault = "global_default"
)

// commitTSKey is pick_freshest's key (and a when column) for the commit timestamp of a node's
// version; node_origin is the other metadata a when may read.
const (
	commitTSKey   = "commit_ts"
	nodeOriginKey = "node_origin"
)

// Plan is one table's repair plan, with the plan's global default.
type Plan struct {
	Name          string // the saved plan's name; "" for a plan given inline
	Rules         []PlanRule
	Overrides     []PlanOverride
	TableDefault  *PlanAction
	GlobalDefault *PlanAction
}

// PlanRule is a rule: selectors, all of which must match, and the action.
type PlanRule struct {
	Name           string      `json:"name"`
	PKIn           []PKMatcher `json:"pk_in"`
	DiffTypes      []string    `json:"diff_type"`
	ColumnsChanged []string    `json:"columns_changed"`
	When           string      `json:"when"`
	Action         PlanAction  `json:"action"`
}

// PKMatcher matches keys equal to one of Equals (values, or arrays for composite keys), or in
// Range, bounds included.
type PKMatcher struct {
	Equals []json.RawMessage `json:"equals"`
	Range  *struct {
		From json.RawMessage `json:"from"`
		To   json.RawMessage `json:"to"`
	} `json:"range"`
}

// PlanOverride decides one key.
type PlanOverride struct {
	Name   string                     `json:"name"`
	PK     map[string]json.RawMessage `json:"pk"`
	Action PlanAction                 `json:"action"`
}

// PlanAction is what a matched key gets.
type PlanAction struct {
	Type      string                     `json:"type"`
	Node      string                     `json:"node,omitempty"` // keep
	From      string                     `json:"from,omitempty"` // apply_from
	Mode      string                     `json:"mode,omitempty"` // apply_from
	CustomRow map[string]json.RawMessage `json:"custom_row,omitempty"`
	Helpers   *PlanHelpers               `json:"helpers,omitempty"`
	// AllowStaleRepairs overrides the repair's check_unchanged for this action's rows: false
	// keeps the compare-and-set on, true lets the rows be written although they changed.
	AllowStaleRepairs *bool `json:"allow_stale_repairs,omitempty"`
}

// PlanHelpers fill the columns of a custom row that custom_row does not give.
type PlanHelpers struct {
	CoalescePriority []string      `json:"coalesce_priority,omitempty"`
	PickFreshest     *PickFreshest `json:"pick_freshest,omitempty"`
}

// PickFreshest takes the version whose Key (a column, or commit_ts) is greatest; Tie decides
// equal keys.
type PickFreshest struct {
	Key string `json:"key"`
	Tie string `json:"tie,omitempty"`
}

// ParsePlan reads a plan as ace.validate_repair_plan returns it for one table (its tables
// holding that table alone). name is the saved plan's name, if any.
func ParsePlan(doc json.RawMessage, name string) (*Plan, error) {
	var f struct {
		DefaultAction *PlanAction `json:"default_action"`
		Tables        map[string]struct {
			DefaultAction *PlanAction    `json:"default_action"`
			Rules         []PlanRule     `json:"rules"`
			RowOverrides  []PlanOverride `json:"row_overrides"`
		} `json:"tables"`
	}
	if err := json.Unmarshal(doc, &f); err != nil {
		return nil, fmt.Errorf("read the repair plan: %w", err)
	}
	if len(f.Tables) != 1 {
		return nil, fmt.Errorf("the repair plan must hold the repaired table alone (as ace.validate_repair_plan(plan, table_name) returns it), not %d tables", len(f.Tables))
	}
	p := &Plan{Name: name, GlobalDefault: f.DefaultAction}
	for _, t := range f.Tables {
		p.Rules, p.Overrides, p.TableDefault = t.Rules, t.RowOverrides, t.DefaultAction
	}
	return p, nil
}

// sideNames resolves the names a plan gives sides against the diff's nodes.
type sideNames struct {
	nodes []string // the diff's nodes, in name order
}

var positional = map[string]int{"n1": 0, "n2": 1}

// node is the node a side name means. where says, for errors, where the name was given; fix is
// the form to write instead of a position.
func (s sideNames) node(name, where, fix string) (string, error) {
	pos, isPos := positional[strings.ToLower(name)]
	named := slices.Contains(s.nodes, name)
	switch {
	case named && (!isPos || len(s.nodes) != 2 || s.nodes[pos] == name):
		return name, nil
	case named:
		return "", fmt.Errorf("%s: %s is both a node's name and, as ACE reads it, the position of node %s in this diff of %s: "+
			"the plan is ambiguous; name the node instead (%s)", where, name, s.nodes[pos], strings.Join(s.nodes, " and "), fix)
	case isPos && len(s.nodes) == 2:
		return s.nodes[pos], nil
	case isPos:
		return "", fmt.Errorf("%s: %s is a position (ACE's n1/n2: the first or second node of a pair), and in a diff of %d nodes (%s) "+
			"the node it means is not defined: name the node instead (%s)", where, name, len(s.nodes), strings.Join(s.nodes, ", "), fix)
	}
	return "", fmt.Errorf("%s: %s is not one of the diff's nodes (%s)", where, name, strings.Join(s.nodes, ", "))
}

// bind returns the plan with every side named by a node of the diff, or the first name it
// cannot read.
func (p *Plan) bind(nodes []string) (*Plan, error) {
	s := sideNames{nodes: slices.Sorted(slices.Values(nodes))}
	out := &Plan{Name: p.Name}
	var err error
	if out.GlobalDefault, err = s.bindDefault(p.GlobalDefault, "default_action"); err != nil {
		return nil, err
	}
	if out.TableDefault, err = s.bindDefault(p.TableDefault, "table.default_action"); err != nil {
		return nil, err
	}
	for _, o := range p.Overrides {
		where := fmt.Sprintf("row_override (%s)", o.Name)
		if o.Action, err = s.bindAction(o.Action, where); err != nil {
			return nil, err
		}
		out.Overrides = append(out.Overrides, o)
	}
	for _, r := range p.Rules {
		where := fmt.Sprintf("rule (%s)", r.Name)
		if r.Action, err = s.bindAction(r.Action, where); err != nil {
			return nil, err
		}
		if r.DiffTypes, err = s.bindDiffTypes(r.DiffTypes, where); err != nil {
			return nil, err
		}
		if err := s.checkWhen(r.When, where); err != nil {
			return nil, err
		}
		out.Rules = append(out.Rules, r)
	}
	return out, nil
}

func (s sideNames) bindDefault(a *PlanAction, where string) (*PlanAction, error) {
	if a == nil {
		return nil, nil
	}
	b, err := s.bindAction(*a, where)
	return &b, err
}

// bindAction names the action's sides by node: keep_n1 and keep_n2 become keep.
func (s sideNames) bindAction(a PlanAction, where string) (PlanAction, error) {
	example := s.nodes[len(s.nodes)-1]
	var err error
	switch a.Type {
	case planKeepN1, planKeepN2:
		side := strings.TrimPrefix(a.Type, "keep_")
		fix := fmt.Sprintf(`{"type": "keep", "node": %q}`, example)
		if len(s.nodes) != 2 {
			return a, fmt.Errorf("%s: %s keeps a position (ACE's n1/n2: the first or second node of a pair), and in a diff of %d nodes (%s) "+
				"the node it means is not defined: name the node instead (%s)", where, a.Type, len(s.nodes), strings.Join(s.nodes, ", "), fix)
		}
		a.Node = s.nodes[positional[side]]
		a.Type = planKeep
	case planKeep:
		a.Node, err = s.node(a.Node, where+" keep", fmt.Sprintf(`"node": %q`, example))
	case planApplyFrom:
		a.From, err = s.node(a.From, where+" apply_from", fmt.Sprintf(`"from": %q`, example))
	}
	if err != nil {
		return a, err
	}
	if a.CustomRow, err = s.bindTemplates(a.CustomRow, where); err != nil || a.Helpers == nil {
		return a, err
	}
	h := *a.Helpers
	h.CoalescePriority = slices.Clone(h.CoalescePriority)
	for i, n := range h.CoalescePriority {
		if h.CoalescePriority[i], err = s.node(n, where+" coalesce_priority", "coalesce_priority: ["+strings.Join(s.nodes, ", ")+"]"); err != nil {
			return a, err
		}
	}
	if h.PickFreshest != nil && h.PickFreshest.Tie != "" {
		pf := *h.PickFreshest
		if pf.Tie, err = s.node(pf.Tie, where+" pick_freshest.tie", fmt.Sprintf("tie: %s", example)); err != nil {
			return a, err
		}
		h.PickFreshest = &pf
	}
	a.Helpers = &h
	return a, nil
}

// templateRef is a {{side.column}} template in a custom row's string value.
var templateRef = regexp.MustCompile(`\{\{\s*([^.{}\s]+)\.([^{}]+?)\s*\}\}`)

// bindTemplates rewrites the sides of a custom row's templates to node names.
func (s sideNames) bindTemplates(row map[string]json.RawMessage, where string) (map[string]json.RawMessage, error) {
	if row == nil {
		return nil, nil
	}
	out := map[string]json.RawMessage{}
	for col, raw := range row {
		var text string
		if json.Unmarshal(raw, &text) != nil || !templateRef.MatchString(text) {
			out[col] = raw
			continue
		}
		var err error
		text = templateRef.ReplaceAllStringFunc(text, func(m string) string {
			g := templateRef.FindStringSubmatch(m)
			n, e := s.node(g[1], fmt.Sprintf("%s custom_row.%s", where, col), fmt.Sprintf("{{%s.%s}}", s.nodes[0], g[2]))
			if e != nil && err == nil {
				err = e
			}
			return "{{" + n + "." + g[2] + "}}"
		})
		if err != nil {
			return nil, err
		}
		out[col], _ = json.Marshal(text)
	}
	return out, nil
}

// bindDiffTypes names missing_on_<side> and deleted_on_<side> by node.
func (s sideNames) bindDiffTypes(types []string, where string) ([]string, error) {
	var out []string
	for _, t := range types {
		for _, prefix := range []string{"missing_on_", "deleted_on_"} {
			if side, ok := strings.CutPrefix(t, prefix); ok {
				n, err := s.node(side, where+" diff_type", prefix+s.nodes[0])
				if err != nil {
					return nil, err
				}
				t = prefix + n
			}
		}
		out = append(out, t)
	}
	return out, nil
}

// whenSideRef finds the sides a when predicate reads (side.column), outside quoted literals.
var whenSideRef = regexp.MustCompile(`(?i)(?:^|[^\w."])(n[12])\s*\.`)

// checkWhen refuses a when that reads a position where positions are not defined. The
// predicate's aliases are whenAliases; PostgreSQL checks the rest.
func (s sideNames) checkWhen(when, where string) error {
	unquoted := regexp.MustCompile(`'(?:[^']|'')*'`).ReplaceAllString(when, "''")
	for _, m := range whenSideRef.FindAllStringSubmatch(unquoted, -1) {
		if _, err := s.node(strings.ToLower(m[1]), where+" when", fmt.Sprintf("%s.<column>", engineIdentHint(s.nodes[0]))); err != nil {
			return err
		}
	}
	return nil
}

// whenAliases are the names a when predicate reads nodes' rows by: every node's name, and in a
// diff of two nodes the positions n1 and n2 where no node has that name.
func (s sideNames) whenAliases() map[string]string {
	out := map[string]string{}
	for _, n := range s.nodes {
		out[n] = n
	}
	if len(s.nodes) == 2 {
		for side, pos := range positional {
			if _, taken := out[side]; !taken {
				out[side] = s.nodes[pos]
			}
		}
	}
	return out
}

// engineIdentHint is a node name as a when predicate must write it.
func engineIdentHint(name string) string {
	if regexp.MustCompile(`^[a-z_][a-z0-9_]*$`).MatchString(name) {
		return name
	}
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}
