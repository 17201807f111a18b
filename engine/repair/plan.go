package repair

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/ace-agent/ace-agent/engine"
)

// planned is a repair's intention for one key on one node, before the node is looked at.
type planned struct {
	Action                            // Kind is what to do; After what the row should become
	key    []string                   // the key as text values
	expect json.RawMessage            // what the diff saw on the node ("null": absent)
	fill   map[string]json.RawMessage // fix_nulls: column -> value for columns that are NULL
	// A repair plan's rule may set the compare-and-set for its rows (allow_stale_repairs), and
	// may only insert (apply_from with mode insert).
	allowStale *bool
	insertOnly bool
	// commitTS is when the copied version (the source's) was committed, as the diff saw it; nil
	// when unknown or nothing is copied (preserve_origin groups rows by it).
	commitTS *time.Time
}

// plan decides, for every target node, what to do with one differing key.
func (r *repairer) plan(d engine.DiffRow) ([]planned, error) {
	key, err := engine.KeyFromJSON(d.PKSort)
	if err != nil {
		return nil, err
	}
	var out []planned
	switch {
	case r.rules != nil:
		out, err = r.planFromRules(d)
	case r.opts.FixNulls:
		out, err = r.planFixNulls(d)
	case r.opts.Bidirectional:
		out = r.planBidirectional(d)
	default:
		out = r.planFromSource(d)
	}
	if err != nil {
		return nil, err
	}
	for i := range out {
		out[i].key = key
		out[i].PK, out[i].PKSort = d.PK, d.PKSort
		out[i].expect = rowOf(d, out[i].Node)
		if m, ok := d.Meta[out[i].Source]; ok && out[i].Source != "" && present(d, out[i].Source) {
			out[i].commitTS = m.CommitTS
		}
	}
	return out, nil
}

func rowOf(d engine.DiffRow, node string) json.RawMessage {
	if raw, ok := d.Rows[node]; ok && !engine.IsNullRow(raw) {
		return raw
	}
	return engine.NullRow
}

func present(d engine.DiffRow, node string) bool {
	_, ok := d.Versions[node]
	return ok
}

func (r *repairer) skip(node, reason string) planned {
	return planned{Action: Action{Node: node, Kind: ActionSkip, Reason: reason}}
}

// planFromSource copies one node's version (the source of truth's, the latest committed one,
// or the majority's) to every target that differs from it.
func (r *repairer) planFromSource(d engine.DiffRow) []planned {
	src, reason := r.opts.SourceOfTruth, ""
	switch r.opts.Strategy {
	case StrategyLatestCommit:
		src, reason = latestCommit(d)
	case StrategyMajority:
		src, reason = majority(d, r.opts.Diff.Nodes)
	}
	return r.planFrom(d, src, reason)
}

// planFrom copies src's version of the row to every target that differs from it; with a
// reason, it skips them for it.
func (r *repairer) planFrom(d engine.DiffRow, src, reason string) []planned {
	var out []planned
	for _, t := range r.targets {
		if t == src || (src != "" && present(d, t) && present(d, src) && d.Versions[t] == d.Versions[src]) {
			continue
		}
		if reason != "" {
			out = append(out, r.skip(t, reason))
			continue
		}
		if p, ok := r.copyAction(d, src, t); ok {
			out = append(out, p)
		}
	}
	return out
}

// copyAction is what makes target t hold src's version of the row.
func (r *repairer) copyAction(d engine.DiffRow, src, t string) (planned, bool) {
	srcHas, tHas := present(d, src), present(d, t)
	p := planned{Action: Action{Node: t, Source: src, After: rowOf(d, src)}}
	switch {
	case !srcHas && !tHas:
		return p, false
	case !srcHas && r.opts.InsertOnly:
		p.Kind, p.Reason = ActionSkip, ReasonInsertOnly
	case !srcHas && r.opts.UpsertOnly:
		p.Kind, p.Reason = ActionSkip, ReasonUpsertOnly
	case !srcHas:
		p.Kind = ActionDelete
	case !tHas:
		p.Kind = ActionInsert
	case r.opts.InsertOnly:
		p.Kind, p.Reason = ActionSkip, ReasonInsertOnly
	default:
		p.Kind = ActionUpdate
	}
	return p, true
}

// latestCommit picks the node whose version was committed last. A version without a commit
// timestamp, or two different versions committed at the same instant, is an error for the key,
// returned as a skip reason.
func latestCommit(d engine.DiffRow) (winner, reason string) {
	var best time.Time
	nodes := slices.Sorted(maps.Keys(d.Versions))
	for _, n := range nodes {
		m, ok := d.Meta[n]
		if !ok || m.CommitTS == nil {
			return "", ReasonMissingCommitTS
		}
		if winner == "" || m.CommitTS.After(best) {
			winner, best = n, *m.CommitTS
		}
	}
	for _, n := range nodes {
		if d.Meta[n].CommitTS.Equal(best) && d.Versions[n] != d.Versions[winner] {
			return "", ReasonCommitTSTie
		}
	}
	return winner, ""
}

// majority picks a node holding the version that more than half of the diff's nodes hold, the
// row's absence being a version too (then the winner is a node without the row, and the
// minority's rows are deleted). No such version is an error for the key, returned as a skip
// reason.
func majority(d engine.DiffRow, nodes []string) (winner, reason string) {
	votes := map[int]int{} // version -> nodes holding it; 0 is absence
	for _, n := range nodes {
		votes[d.Versions[n]]++
	}
	for _, n := range slices.Sorted(slices.Values(nodes)) {
		if 2*votes[d.Versions[n]] > len(nodes) {
			return n, ""
		}
	}
	return "", ReasonNoMajority
}

// planBidirectional inserts a missing row on every target from the nodes that have it, when
// they agree (or the source of truth has it). Rows every node has are left as they are.
func (r *repairer) planBidirectional(d engine.DiffRow) []planned {
	holders := slices.Sorted(maps.Keys(d.Versions))
	versions := map[int]bool{}
	for _, n := range holders {
		versions[d.Versions[n]] = true
	}
	src := ""
	switch {
	case len(versions) == 1:
		src = holders[0]
	case r.opts.SourceOfTruth != "" && present(d, r.opts.SourceOfTruth):
		src = r.opts.SourceOfTruth
	}
	var out []planned
	for _, t := range r.targets {
		switch {
		case !present(d, t) && src != "":
			out = append(out, planned{Action: Action{Node: t, Kind: ActionInsert, Source: src, After: rowOf(d, src)}})
		case !present(d, t):
			out = append(out, r.skip(t, ReasonConflictingVersions))
		case len(versions) > 1:
			out = append(out, r.skip(t, ReasonBidirectional))
		}
	}
	return out
}

// planFixNulls fills, on every target that has the row, the columns that are NULL there and
// not NULL on another node: from the source of truth when it has a value, else from the other
// nodes when they agree.
func (r *repairer) planFixNulls(d engine.DiffRow) ([]planned, error) {
	rows := map[string]map[string]json.RawMessage{}
	for _, n := range slices.Sorted(maps.Keys(d.Versions)) {
		f, err := rowFields(rowOf(d, n))
		if err != nil {
			return nil, fmt.Errorf("decode the row %s of node %s: %w", d.PK, n, err)
		}
		rows[n] = f
	}
	var out []planned
	for _, t := range r.targets {
		if rows[t] == nil {
			if len(rows) > 0 {
				out = append(out, r.skip(t, ReasonFixNulls))
			}
			continue
		}
		if p, ok := r.fillNulls(rows, t); ok {
			out = append(out, p)
		}
	}
	return out, nil
}

func (r *repairer) fillNulls(rows map[string]map[string]json.RawMessage, t string) (planned, bool) {
	fill := map[string]json.RawMessage{}
	conflict := false
	for _, c := range r.writable {
		if c.PKPos > 0 || !engine.IsNullRow(rows[t][c.Name]) {
			continue
		}
		v, ok := r.fillValue(rows, t, c.Name)
		if ok {
			fill[c.Name] = v
		}
		conflict = conflict || (!ok && v != nil)
	}
	switch {
	case len(fill) > 0:
		p := planned{Action: Action{Node: t, Kind: ActionUpdate, Source: fillSource(rows, t, fill)}, fill: fill}
		if conflict {
			p.Reason = ReasonConflictingValues
		}
		return p, true
	case conflict:
		return r.skip(t, ReasonConflictingValues), true
	}
	return planned{}, false
}

// fillValue is the value for column c of target t: the source of truth's if it has one, else
// the one value the other nodes agree on. A nil value with false means nobody has one; a
// non-nil value with false means they disagree.
func (r *repairer) fillValue(rows map[string]map[string]json.RawMessage, t, c string) (json.RawMessage, bool) {
	if sot := rows[r.opts.SourceOfTruth]; sot != nil && !engine.IsNullRow(sot[c]) {
		return sot[c], true
	}
	var found json.RawMessage
	for _, n := range slices.Sorted(maps.Keys(rows)) {
		v := rows[n][c]
		if n == t || engine.IsNullRow(v) {
			continue
		}
		if found != nil && !sameJSON(found, v) {
			return found, false
		}
		found = v
	}
	return found, found != nil
}

// fillSource names a node that holds the filled values, for the report.
func fillSource(rows map[string]map[string]json.RawMessage, t string, fill map[string]json.RawMessage) string {
	for _, n := range slices.Sorted(maps.Keys(rows)) {
		if n == t {
			continue
		}
		all := true
		for c, v := range fill {
			all = all && sameJSON(rows[n][c], v)
		}
		if all {
			return n
		}
	}
	return ""
}

// mergeFill returns row with the given columns set where they are NULL.
func mergeFill(row json.RawMessage, fill map[string]json.RawMessage) (json.RawMessage, error) {
	fields, err := rowFields(row)
	if err != nil || fields == nil {
		return row, err
	}
	for c, v := range fill {
		if engine.IsNullRow(fields[c]) {
			fields[c] = v
		}
	}
	return json.Marshal(fields)
}
