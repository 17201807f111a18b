package repair

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
)

// These tests cover the pure logic of repair planning: what a repair intends for each key on
// each node, and what it does once it sees the node's row. They need no cluster.

// act is the part of a planned or decided action the tests compare.
type act struct{ Node, Action, Source, Reason string }

func acts(ps []planned) []act {
	out := []act{}
	for _, p := range ps {
		out = append(out, act{p.Node, p.Kind, p.Source, p.Reason})
	}
	return out
}

// diffRow is key 1 of a table with the given rows by node (absent nodes left out) and versions.
func diffRow(rows map[string]string, versions map[string]int) engine.DiffRow {
	d := engine.DiffRow{PK: json.RawMessage(`{"id": 1}`), PKSort: json.RawMessage(`[1]`), Rows: map[string]json.RawMessage{}, Versions: versions}
	for n, r := range rows {
		d.Rows[n] = json.RawMessage(r)
	}
	return d
}

const (
	rowA = `{"id": 1, "v": "a"}`
	rowB = `{"id": 1, "v": "b"}`
)

func TestPlanFromSourceOfTruth(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name     string
		opts     Options
		rows     map[string]string
		versions map[string]int
		want     []act
	}{
		{
			name:     "row missing on a target is inserted, identical target left alone",
			rows:     map[string]string{"n1": rowA, "n2": "null", "n3": rowA},
			versions: map[string]int{"n1": 1, "n3": 1},
			want:     []act{{"n2", ActionInsert, "n1", ""}},
		},
		{
			name:     "row only on a target is deleted, target without it left alone",
			rows:     map[string]string{"n1": "null", "n2": rowA, "n3": "null"},
			versions: map[string]int{"n2": 1},
			want:     []act{{"n2", ActionDelete, "n1", ""}},
		},
		{
			name:     "modified row is updated on every target that differs",
			rows:     map[string]string{"n1": rowA, "n2": rowB, "n3": rowB},
			versions: map[string]int{"n1": 1, "n2": 2, "n3": 2},
			want:     []act{{"n2", ActionUpdate, "n1", ""}, {"n3", ActionUpdate, "n1", ""}},
		},
		{
			name:     "upsert_only skips the delete of an extra row",
			opts:     Options{UpsertOnly: true},
			rows:     map[string]string{"n1": "null", "n2": rowA, "n3": "null"},
			versions: map[string]int{"n2": 1},
			want:     []act{{"n2", ActionSkip, "n1", ReasonUpsertOnly}},
		},
		{
			name:     "upsert_only still inserts and updates",
			opts:     Options{UpsertOnly: true},
			rows:     map[string]string{"n1": rowA, "n2": "null", "n3": rowB},
			versions: map[string]int{"n1": 1, "n3": 2},
			want:     []act{{"n2", ActionInsert, "n1", ""}, {"n3", ActionUpdate, "n1", ""}},
		},
		{
			name:     "insert_only skips the delete of an extra row",
			opts:     Options{InsertOnly: true},
			rows:     map[string]string{"n1": "null", "n2": rowA, "n3": "null"},
			versions: map[string]int{"n2": 1},
			want:     []act{{"n2", ActionSkip, "n1", ReasonInsertOnly}},
		},
		{
			name:     "insert_only inserts a missing row and skips the update of a modified one",
			opts:     Options{InsertOnly: true},
			rows:     map[string]string{"n1": rowA, "n2": "null", "n3": rowB},
			versions: map[string]int{"n1": 1, "n3": 2},
			want:     []act{{"n2", ActionInsert, "n1", ""}, {"n3", ActionSkip, "n1", ReasonInsertOnly}},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.opts.SourceOfTruth = "n1"
			r := &repairer{opts: c.opts, targets: []string{"n2", "n3"}}
			d := diffRow(c.rows, c.versions)
			got, err := r.plan(d)
			require.NoError(t, err)
			require.Equal(t, c.want, acts(got))
			for _, p := range got {
				require.Equal(t, []string{"1"}, p.key, "the key as text")
				require.JSONEq(t, `{"id": 1}`, string(p.PK))
				require.Equal(t, string(rowOf(d, p.Node)), string(p.expect), "expect is what the diff saw on %s", p.Node)
				require.Equal(t, string(rowOf(d, "n1")), string(p.After), "the source's row is what %s should hold", p.Node)
			}
		})
	}
}

func TestPlanLatestCommit(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) engine.RowMeta { ts := t0.Add(d); return engine.RowMeta{CommitTS: &ts} }
	for _, c := range []struct {
		name     string
		rows     map[string]string
		versions map[string]int
		meta     map[string]engine.RowMeta
		want     []act
	}{
		{
			name:     "newest version wins on every node that differs",
			rows:     map[string]string{"n1": rowA, "n2": rowA, "n3": rowB},
			versions: map[string]int{"n1": 1, "n2": 1, "n3": 2},
			meta:     map[string]engine.RowMeta{"n1": at(0), "n2": at(time.Second), "n3": at(2 * time.Second)},
			want:     []act{{"n1", ActionUpdate, "n3", ""}, {"n2", ActionUpdate, "n3", ""}},
		},
		{
			name:     "newest version is inserted where the row is missing",
			rows:     map[string]string{"n1": rowA, "n2": rowB, "n3": "null"},
			versions: map[string]int{"n1": 1, "n2": 2},
			meta:     map[string]engine.RowMeta{"n1": at(time.Second), "n2": at(0)},
			want:     []act{{"n2", ActionUpdate, "n1", ""}, {"n3", ActionInsert, "n1", ""}},
		},
		{
			name:     "one version committed twice at the same instant is not a tie",
			rows:     map[string]string{"n1": rowA, "n2": rowA, "n3": rowB},
			versions: map[string]int{"n1": 1, "n2": 1, "n3": 2},
			meta:     map[string]engine.RowMeta{"n1": at(time.Second), "n2": at(time.Second), "n3": at(0)},
			want:     []act{{"n3", ActionUpdate, "n1", ""}},
		},
		{
			name:     "two versions committed at the same instant are skipped, not guessed",
			rows:     map[string]string{"n1": rowA, "n2": rowB, "n3": rowA},
			versions: map[string]int{"n1": 1, "n2": 2, "n3": 1},
			meta:     map[string]engine.RowMeta{"n1": at(time.Second), "n2": at(time.Second), "n3": at(0)},
			want: []act{
				{"n1", ActionSkip, "", ReasonCommitTSTie}, {"n2", ActionSkip, "", ReasonCommitTSTie}, {"n3", ActionSkip, "", ReasonCommitTSTie},
			},
		},
		{
			name:     "a version without a commit timestamp is skipped, not guessed",
			rows:     map[string]string{"n1": rowA, "n2": rowB, "n3": "null"},
			versions: map[string]int{"n1": 1, "n2": 2},
			meta:     map[string]engine.RowMeta{"n1": at(time.Second), "n2": {}},
			want: []act{
				{"n1", ActionSkip, "", ReasonMissingCommitTS}, {"n2", ActionSkip, "", ReasonMissingCommitTS}, {"n3", ActionSkip, "", ReasonMissingCommitTS},
			},
		},
		{
			name:     "a version without meta at all is skipped",
			rows:     map[string]string{"n1": rowA, "n2": rowB, "n3": rowB},
			versions: map[string]int{"n1": 1, "n2": 2, "n3": 2},
			meta:     map[string]engine.RowMeta{"n1": at(time.Second), "n2": at(0)},
			want: []act{
				{"n1", ActionSkip, "", ReasonMissingCommitTS}, {"n2", ActionSkip, "", ReasonMissingCommitTS}, {"n3", ActionSkip, "", ReasonMissingCommitTS},
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := &repairer{opts: Options{Strategy: StrategyLatestCommit}, targets: []string{"n1", "n2", "n3"}}
			d := diffRow(c.rows, c.versions)
			d.Meta = c.meta
			got, err := r.plan(d)
			require.NoError(t, err)
			require.Equal(t, c.want, acts(got))
		})
	}
}

func TestPlanBidirectional(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name     string
		sot      string
		targets  []string
		rows     map[string]string
		versions map[string]int
		want     []act
	}{
		{
			name:     "row on one node is inserted where missing",
			targets:  []string{"n1", "n2", "n3"},
			rows:     map[string]string{"n1": "null", "n2": rowA, "n3": "null"},
			versions: map[string]int{"n2": 1},
			want:     []act{{"n1", ActionInsert, "n2", ""}, {"n3", ActionInsert, "n2", ""}},
		},
		{
			name:     "nodes that agree supply the missing row",
			targets:  []string{"n1", "n2", "n3"},
			rows:     map[string]string{"n1": rowA, "n2": rowA, "n3": "null"},
			versions: map[string]int{"n1": 1, "n2": 1},
			want:     []act{{"n3", ActionInsert, "n1", ""}},
		},
		{
			name:     "holders that disagree: the missing row is a conflict, the others are left as they are",
			targets:  []string{"n1", "n2", "n3"},
			rows:     map[string]string{"n1": rowA, "n2": rowB, "n3": "null"},
			versions: map[string]int{"n1": 1, "n2": 2},
			want: []act{
				{"n1", ActionSkip, "", ReasonBidirectional}, {"n2", ActionSkip, "", ReasonBidirectional}, {"n3", ActionSkip, "", ReasonConflictingVersions},
			},
		},
		{
			name:     "holders that disagree: the source of truth supplies the missing row",
			sot:      "n2",
			targets:  []string{"n1", "n3"},
			rows:     map[string]string{"n1": rowA, "n2": rowB, "n3": "null"},
			versions: map[string]int{"n1": 1, "n2": 2},
			want:     []act{{"n1", ActionSkip, "", ReasonBidirectional}, {"n3", ActionInsert, "n2", ""}},
		},
		{
			name:     "a source of truth without the row does not decide",
			sot:      "n3",
			targets:  []string{"n1", "n2"},
			rows:     map[string]string{"n1": rowA, "n2": "null", "n3": "null"},
			versions: map[string]int{"n1": 1},
			want:     []act{{"n2", ActionInsert, "n1", ""}},
		},
		{
			name:     "a row every node has is never updated",
			targets:  []string{"n1", "n2", "n3"},
			rows:     map[string]string{"n1": rowA, "n2": rowB, "n3": rowB},
			versions: map[string]int{"n1": 1, "n2": 2, "n3": 2},
			want: []act{
				{"n1", ActionSkip, "", ReasonBidirectional}, {"n2", ActionSkip, "", ReasonBidirectional}, {"n3", ActionSkip, "", ReasonBidirectional},
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := &repairer{opts: Options{Bidirectional: true, SourceOfTruth: c.sot}, targets: c.targets}
			d := diffRow(c.rows, c.versions)
			got, err := r.plan(d)
			require.NoError(t, err)
			require.Equal(t, c.want, acts(got))
			for _, p := range got {
				if p.Kind == ActionInsert {
					require.Equal(t, string(rowOf(d, p.Source)), string(p.After))
					require.Equal(t, "null", string(p.expect))
				}
			}
		})
	}
}

func TestPlanFixNulls(t *testing.T) {
	t.Parallel()
	writable := []engine.Column{{Name: "id", PKPos: 1}, {Name: "a"}, {Name: "b"}}
	for _, c := range []struct {
		name     string
		sot      string
		rows     map[string]string
		versions map[string]int
		want     []act
		fills    map[string]string // node -> its fill as JSON
	}{
		{
			name: "NULLs are filled with the value the other nodes agree on",
			rows: map[string]string{
				"n1": `{"id": 1, "a": null, "b": "x"}`, "n2": `{"id": 1, "a": 5, "b": "x"}`, "n3": `{"id": 1, "a": 5, "b": null}`,
			},
			versions: map[string]int{"n1": 1, "n2": 2, "n3": 3},
			want:     []act{{"n1", ActionUpdate, "n2", ""}, {"n3", ActionUpdate, "n1", ""}},
			fills:    map[string]string{"n1": `{"a": 5}`, "n3": `{"b": "x"}`},
		},
		{
			name: "numbers agree by value",
			rows: map[string]string{
				"n1": `{"id": 1, "a": null, "b": "x"}`, "n2": `{"id": 1, "a": 1.50, "b": "x"}`, "n3": `{"id": 1, "a": 1.5, "b": "x"}`,
			},
			versions: map[string]int{"n1": 1, "n2": 2, "n3": 2},
			want:     []act{{"n1", ActionUpdate, "n2", ""}},
			fills:    map[string]string{"n1": `{"a": 1.50}`},
		},
		{
			name: "other nodes that disagree are a conflict",
			rows: map[string]string{
				"n1": `{"id": 1, "a": null, "b": "x"}`, "n2": `{"id": 1, "a": 5, "b": "x"}`, "n3": `{"id": 1, "a": 6, "b": "x"}`,
			},
			versions: map[string]int{"n1": 1, "n2": 2, "n3": 3},
			want:     []act{{"n1", ActionSkip, "", ReasonConflictingValues}},
		},
		{
			name: "the source of truth's value wins over the others",
			sot:  "n3",
			rows: map[string]string{
				"n1": `{"id": 1, "a": null, "b": "x"}`, "n2": `{"id": 1, "a": 5, "b": "x"}`, "n3": `{"id": 1, "a": 6, "b": "x"}`,
			},
			versions: map[string]int{"n1": 1, "n2": 2, "n3": 3},
			want:     []act{{"n1", ActionUpdate, "n3", ""}},
			fills:    map[string]string{"n1": `{"a": 6}`},
		},
		{
			name: "a source of truth without a value lets the others decide",
			sot:  "n3",
			rows: map[string]string{
				"n1": `{"id": 1, "a": null, "b": "x"}`, "n2": `{"id": 1, "a": 5, "b": "x"}`, "n3": `{"id": 1, "a": null, "b": "x"}`,
			},
			versions: map[string]int{"n1": 1, "n2": 2, "n3": 1},
			want:     []act{{"n1", ActionUpdate, "n2", ""}},
			fills:    map[string]string{"n1": `{"a": 5}`},
		},
		{
			name: "columns that agree are filled even when another conflicts",
			rows: map[string]string{
				"n1": `{"id": 1, "a": null, "b": null}`, "n2": `{"id": 1, "a": 5, "b": "x"}`, "n3": `{"id": 1, "a": 5, "b": "y"}`,
			},
			versions: map[string]int{"n1": 1, "n2": 2, "n3": 3},
			want:     []act{{"n1", ActionUpdate, "n2", ReasonConflictingValues}},
			fills:    map[string]string{"n1": `{"a": 5}`},
		},
		{
			name:     "a node without the row is skipped: fix_nulls never inserts",
			rows:     map[string]string{"n1": "null", "n2": `{"id": 1, "a": 5, "b": "x"}`, "n3": `{"id": 1, "a": 5, "b": "x"}`},
			versions: map[string]int{"n2": 1, "n3": 1},
			want:     []act{{"n1", ActionSkip, "", ReasonFixNulls}},
		},
		{
			name:     "a NULL nobody has a value for is left alone",
			rows:     map[string]string{"n1": `{"id": 1, "a": null, "b": "x"}`, "n2": `{"id": 1, "a": null, "b": "y"}`, "n3": `{"id": 1, "a": null, "b": "x"}`},
			versions: map[string]int{"n1": 1, "n2": 2, "n3": 1},
			want:     []act{},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := &repairer{opts: Options{FixNulls: true, SourceOfTruth: c.sot}, targets: []string{"n1", "n2", "n3"}, writable: writable}
			if c.sot != "" {
				r.targets = []string{"n1", "n2"}
			}
			got, err := r.plan(diffRow(c.rows, c.versions))
			require.NoError(t, err)
			require.Equal(t, c.want, acts(got))
			for _, p := range got {
				if want, ok := c.fills[p.Node]; ok {
					fill, err := json.Marshal(p.fill)
					require.NoError(t, err)
					require.JSONEq(t, want, string(fill), p.Node)
				} else {
					require.Nil(t, p.fill, p.Node)
				}
			}
		})
	}
}

func TestPlanErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		opts Options
		d    engine.DiffRow
	}{
		{
			name: "a stored key that is not an array of key values",
			opts: Options{SourceOfTruth: "n1"},
			d:    engine.DiffRow{PKSort: json.RawMessage(`{"id": 1}`)},
		},
		{
			name: "fix_nulls with a stored row that is not an object",
			opts: Options{FixNulls: true},
			d:    engine.DiffRow{PKSort: json.RawMessage(`[1]`), Rows: map[string]json.RawMessage{"n1": json.RawMessage(`[1]`)}, Versions: map[string]int{"n1": 1}},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := &repairer{opts: c.opts, targets: []string{"n2"}}
			_, err := r.plan(c.d)
			require.Error(t, err)
		})
	}
}

func TestFillValue(t *testing.T) {
	t.Parallel()
	row := func(s string) map[string]json.RawMessage {
		f, err := rowFields(json.RawMessage(s))
		require.NoError(t, err)
		return f
	}
	for _, c := range []struct {
		name   string
		sot    string
		rows   map[string]map[string]json.RawMessage
		want   string // "" for nil
		wantOK bool
	}{
		{
			name: "source of truth first",
			sot:  "n3",
			rows: map[string]map[string]json.RawMessage{"n1": row(`{"a": null}`), "n2": row(`{"a": 1}`), "n3": row(`{"a": 2}`)},
			want: "2", wantOK: true,
		},
		{
			name: "else the one value the others agree on",
			rows: map[string]map[string]json.RawMessage{"n1": row(`{"a": null}`), "n2": row(`{"a": 1}`), "n3": row(`{"a": 1.0}`)},
			want: "1", wantOK: true,
		},
		{
			name: "NULLs elsewhere do not count as disagreement",
			rows: map[string]map[string]json.RawMessage{"n1": row(`{"a": null}`), "n2": row(`{"a": null}`), "n3": row(`{"a": "x"}`)},
			want: `"x"`, wantOK: true,
		},
		{
			name: "disagreement returns a value and false",
			rows: map[string]map[string]json.RawMessage{"n1": row(`{"a": null}`), "n2": row(`{"a": 1}`), "n3": row(`{"a": 2}`)},
			want: "1", wantOK: false,
		},
		{
			name: "nobody has a value: nil and false",
			rows: map[string]map[string]json.RawMessage{"n1": row(`{"a": null}`), "n2": row(`{}`)},
			want: "", wantOK: false,
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := &repairer{opts: Options{SourceOfTruth: c.sot}}
			v, ok := r.fillValue(c.rows, "n1", "a")
			require.Equal(t, c.wantOK, ok)
			if c.want == "" {
				require.Nil(t, v)
			} else {
				require.True(t, sameJSON(json.RawMessage(c.want), v), "got %s, want %s", v, c.want)
			}
		})
	}
}

func TestDecide(t *testing.T) {
	t.Parallel()
	same := func(a, b json.RawMessage) bool { return sameJSON(a, b) }
	const (
		nullRow = "null"
		filled  = `{"id": 1, "a": 5}`
		holey   = `{"id": 1, "a": null}`
	)
	for _, c := range []struct {
		name       string
		opts       Options
		action     string // planned
		after      string // planned After ("" for none)
		expect     string // what the diff saw
		fill       map[string]json.RawMessage
		cur        *string // the node's row now; nil for no row read
		wantAction string
		wantReason string
		wantAfter  string
	}{
		{
			name: "insert of a missing row", action: ActionInsert, after: rowA, expect: nullRow, cur: ptr(nullRow),
			wantAction: ActionInsert, wantAfter: rowA,
		},
		{
			name: "no row read counts as absent", action: ActionInsert, after: rowA, expect: nullRow,
			wantAction: ActionInsert, wantAfter: rowA,
		},
		{
			name: "update of a differing row", action: ActionUpdate, after: rowA, expect: rowB, cur: ptr(rowB),
			wantAction: ActionUpdate, wantAfter: rowA,
		},
		{
			name: "delete of an extra row", action: ActionDelete, after: nullRow, expect: rowA, cur: ptr(rowA),
			wantAction: ActionDelete, wantAfter: nullRow,
		},
		{
			name: "already in sync: the node holds the wanted row, whatever the key order", action: ActionUpdate, after: rowA, expect: rowB,
			cur:        ptr(`{"v": "a", "id": 1}`),
			wantAction: ActionSkip, wantReason: ReasonAlreadyInSync, wantAfter: rowA,
		},
		{
			name: "already in sync: a row to delete is gone", action: ActionDelete, after: nullRow, expect: rowA, cur: ptr(nullRow),
			wantAction: ActionSkip, wantReason: ReasonAlreadyInSync, wantAfter: nullRow,
		},
		{
			name: "changed since the diff with check_unchanged", opts: Options{CheckUnchanged: true},
			action: ActionUpdate, after: rowA, expect: rowB, cur: ptr(`{"id": 1, "v": "c"}`),
			wantAction: ActionSkip, wantReason: ReasonChangedSinceDiff, wantAfter: rowA,
		},
		{
			name: "row inserted since the diff with check_unchanged", opts: Options{CheckUnchanged: true},
			action: ActionInsert, after: rowA, expect: nullRow, cur: ptr(rowB),
			wantAction: ActionSkip, wantReason: ReasonChangedSinceDiff, wantAfter: rowA,
		},
		{
			name: "unchanged since the diff with check_unchanged", opts: Options{CheckUnchanged: true},
			action: ActionUpdate, after: rowA, expect: rowB, cur: ptr(`{"v": "b", "id": 1.0}`),
			wantAction: ActionUpdate, wantAfter: rowA,
		},
		{
			name:   "changed since the diff without check_unchanged is overwritten",
			action: ActionUpdate, after: rowA, expect: rowB, cur: ptr(`{"id": 1, "v": "c"}`),
			wantAction: ActionUpdate, wantAfter: rowA,
		},
		{
			name: "row that appeared since a planned insert is updated", action: ActionInsert, after: rowA, expect: nullRow, cur: ptr(rowB),
			wantAction: ActionUpdate, wantAfter: rowA,
		},
		{
			name: "row that vanished since a planned update is inserted", action: ActionUpdate, after: rowA, expect: rowB, cur: ptr(nullRow),
			wantAction: ActionInsert, wantAfter: rowA,
		},
		{
			name: "bidirectional never updates a row that appeared", opts: Options{Bidirectional: true},
			action: ActionInsert, after: rowA, expect: nullRow, cur: ptr(rowB),
			wantAction: ActionSkip, wantReason: ReasonBidirectional, wantAfter: rowA,
		},
		{
			name: "insert_only never updates a row that appeared", opts: Options{InsertOnly: true},
			action: ActionInsert, after: rowA, expect: nullRow, cur: ptr(rowB),
			wantAction: ActionSkip, wantReason: ReasonInsertOnly, wantAfter: rowA,
		},
		{
			name: "fill of a NULL column", action: ActionUpdate, expect: holey, cur: ptr(holey),
			fill:       map[string]json.RawMessage{"a": json.RawMessage("5")},
			wantAction: ActionUpdate, wantAfter: filled,
		},
		{
			name: "fill of a column that has a value now is already in sync", action: ActionUpdate, expect: holey,
			cur:        ptr(`{"id": 1, "a": 7}`),
			fill:       map[string]json.RawMessage{"a": json.RawMessage("5")},
			wantAction: ActionSkip, wantReason: ReasonAlreadyInSync, wantAfter: `{"id": 1, "a": 7}`,
		},
		{
			name: "fill of a row that is gone", action: ActionUpdate, expect: holey, cur: ptr(nullRow),
			fill:       map[string]json.RawMessage{"a": json.RawMessage("5")},
			wantAction: ActionSkip, wantReason: ReasonChangedSinceDiff, wantAfter: nullRow,
		},
		{
			name: "fill of a row changed since the diff with check_unchanged", opts: Options{CheckUnchanged: true},
			action: ActionUpdate, expect: holey, cur: ptr(`{"id": 1, "a": null, "b": 2}`),
			fill:       map[string]json.RawMessage{"a": json.RawMessage("5")},
			wantAction: ActionSkip, wantReason: ReasonChangedSinceDiff, wantAfter: `{"id": 1, "a": 5, "b": 2}`,
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := &repairer{opts: c.opts}
			p := planned{
				Action: Action{Node: "n2", Kind: c.action, Source: "n1", PK: json.RawMessage(`{"id": 1}`)},
				key:    []string{"1"}, expect: json.RawMessage(c.expect), fill: c.fill,
			}
			if c.after != "" {
				p.After = json.RawMessage(c.after)
			}
			var cur json.RawMessage
			if c.cur != nil {
				cur = json.RawMessage(*c.cur)
			}
			d, err := r.decide(p, cur, same)
			require.NoError(t, err)
			require.Equal(t, c.wantAction, d.Kind)
			require.Equal(t, c.wantReason, d.Reason)
			require.JSONEq(t, c.wantAfter, string(d.After))
			if c.cur == nil {
				require.Equal(t, "null", string(d.Before))
			} else {
				require.Equal(t, *c.cur, string(d.Before), "Before is the node's row now")
			}
			require.Equal(t, []string{"1"}, d.key)
			if d.Kind == ActionSkip {
				require.Nil(t, d.fill, "a skip fills nothing")
			}
		})
	}

	t.Run("fill of a row that is not an object is an error", func(t *testing.T) {
		t.Parallel()
		r := &repairer{}
		p := planned{Action: Action{Kind: ActionUpdate}, fill: map[string]json.RawMessage{"a": json.RawMessage("5")}}
		_, err := r.decide(p, json.RawMessage(`[1, 2]`), same)
		require.Error(t, err)
	})
}

func ptr[T any](v T) *T { return &v }

func TestMergeFill(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, row, fill, want string
	}{
		{name: "fills a NULL column", row: `{"id": 1, "a": null, "b": 2}`, fill: `{"a": "x"}`, want: `{"id": 1, "a": "x", "b": 2}`},
		{name: "fills a column the row lacks", row: `{"id": 1}`, fill: `{"a": 1.50}`, want: `{"id": 1, "a": 1.50}`},
		{name: "keeps a value the row has", row: `{"id": 1, "a": 7}`, fill: `{"a": 5}`, want: `{"id": 1, "a": 7}`},
		{name: "keeps numbers exact", row: `{"id": 12345678901234567890, "a": null}`, fill: `{"a": 0.10}`, want: `{"id": 12345678901234567890, "a": 0.10}`},
		{name: "an absent row stays absent", row: `null`, fill: `{"a": 5}`, want: `null`},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var fill map[string]json.RawMessage
			require.NoError(t, json.Unmarshal([]byte(c.fill), &fill))
			got, err := mergeFill(json.RawMessage(c.row), fill)
			require.NoError(t, err)
			require.JSONEq(t, c.want, string(got))
			if c.name == "keeps numbers exact" {
				require.Contains(t, string(got), "12345678901234567890")
				require.Contains(t, string(got), "0.10")
			}
		})
	}
	t.Run("a row that is not an object is an error", func(t *testing.T) {
		t.Parallel()
		_, err := mergeFill(json.RawMessage(`"text"`), map[string]json.RawMessage{"a": json.RawMessage("1")})
		require.Error(t, err)
	})
}

func TestSameJSON(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		a, b string
		want bool
	}{
		{"numbers by value: trailing zeros", `1.5`, `1.50`, true},
		{"numbers by value: integer and decimal", `1`, `1.0`, true},
		{"numbers by value: exponent", `1e2`, `100`, true},
		{"numbers by value: big integers stay exact", `12345678901234567890`, `12345678901234567891`, false},
		{"different numbers", `1.5`, `1.51`, false},
		{"object key order does not matter", `{"a": 1, "b": [1, {"c": 2, "d": 3}]}`, `{"b": [1, {"d": 3, "c": 2.0}], "a": 1.00}`, true},
		{"array order matters", `[1, 2]`, `[2, 1]`, false},
		{"an extra key differs", `{"a": 1}`, `{"a": 1, "b": null}`, false},
		{"a number is not its text", `1`, `"1"`, false},
		{"empty document is null", ``, `null`, true},
		{"null is not an empty object", `null`, `{}`, false},
		{"invalid documents compare as bytes", `{bad`, `{bad`, true},
		{"invalid and valid differ", `{bad`, `{}`, false},
		{"booleans", `true`, `false`, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, c.want, sameJSON(json.RawMessage(c.a), json.RawMessage(c.b)))
			require.Equal(t, c.want, sameJSON(json.RawMessage(c.b), json.RawMessage(c.a)), "symmetric")
		})
	}
}

func TestRowFields(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name    string
		in      string
		want    map[string]string // nil: no fields
		wantErr bool
	}{
		{name: "an object keeps each value's JSON", in: `{"a": 1.50, "b": null, "c": {"x": [1]}}`, want: map[string]string{"a": "1.50", "b": "null", "c": `{"x": [1]}`}},
		{name: "null is no row", in: `null`},
		{name: "empty is no row", in: ``},
		{name: "an array is an error", in: `[1]`, wantErr: true},
		{name: "invalid JSON is an error", in: `{`, wantErr: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got, err := rowFields(json.RawMessage(c.in))
			if c.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			if c.want == nil {
				require.Nil(t, got)
				return
			}
			asText := map[string]string{}
			for k, v := range got {
				asText[k] = string(v)
			}
			require.Equal(t, c.want, asText)
		})
	}
}
