package report

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/internal/orderedjson"
)

func TestJSONDiffFile(t *testing.T) {
	t.Parallel()
	raw := render(t, "json")

	// Laid out exactly as json.Encoder with a two-space indent writes it, as ACE does.
	var compact, indented bytes.Buffer
	require.NoError(t, json.Compact(&compact, raw))
	require.NoError(t, json.Indent(&indented, compact.Bytes(), "", "  "))
	require.Equal(t, indented.String()+"\n", string(raw))

	file := orderedjson.Decode(t, raw)
	require.Equal(t, []string{"diffs", "summary"}, file.Keys)
	diffs := file.Object(t, "diffs")
	require.Equal(t, []string{"n1/n2", "n1/n3", "n2/n3"}, diffs.Keys)
	type key struct {
		Region string
		ID     float64
	}
	want := map[string]map[string][]key{
		"n1/n2": {"n1": {{"eu", 1}, {"eu", 3}, {"eu", 4}}, "n2": {{"eu", 1}, {"eu", 3}, {"eu", 4}, {"us", 5}}},
		"n1/n3": {"n1": {{"eu", 2}, {"eu", 3}, {"eu", 4}}, "n3": {{"eu", 3}, {"eu", 4}}},
		"n2/n3": {"n2": {{"eu", 1}, {"eu", 2}, {"us", 5}}, "n3": {{"eu", 1}}},
	}
	for pair, lists := range want {
		p := diffs.Object(t, pair)
		require.Equal(t, []string{"rows"}, p.Keys)
		rows := p.Object(t, "rows")
		require.Equal(t, []string{pair[:2], pair[3:]}, rows.Keys, pair)
		for node, keys := range lists {
			got := []key{}
			for _, r := range rows.List(t, node) {
				got = append(got, key{r.Value(t, "region").(string), r.Value(t, "id").(float64)})
			}
			require.Equal(t, keys, got, "%s list of %s", pair, node)
		}
	}

	// n1's eu/1: the columns in table order with ACE's value forms, then the metadata.
	r := diffs.Object(t, "n1/n2").Object(t, "rows").List(t, "n1")[0]
	require.Equal(t, append(append([]string{}, testColumns...), "_spock_metadata_"), r.Keys)
	require.Equal(t, changedOld, r.Value(t, "name"))
	require.Equal(t, `"3000.50"`, string(r.Values["amount"]), "numeric stays a string, scale kept")
	require.Equal(t, "2024-01-02T03:04:05.5Z", r.Value(t, "created"))
	require.Equal(t, true, r.Value(t, "flag"))
	meta := r.Object(t, "_spock_metadata_")
	require.Equal(t, []string{"commit_ts", "node_origin"}, meta.Keys)
	require.Equal(t, "2025-07-22T12:00:00.123456Z", meta.Value(t, "commit_ts"))
	require.Equal(t, "local", meta.Value(t, "node_origin"))
	// NULL and '' stay apart; a row without metadata has nulls.
	r = diffs.Object(t, "n1/n2").Object(t, "rows").List(t, "n1")[1]
	require.Equal(t, "null", string(r.Values["note"]))
	require.Equal(t, `{"commit_ts":null,"node_origin":null}`, compactJSON(t, r.Values["_spock_metadata_"]))
	r = diffs.Object(t, "n1/n2").Object(t, "rows").List(t, "n2")[1]
	require.Equal(t, `""`, string(r.Values["note"]))
	r = diffs.Object(t, "n1/n2").Object(t, "rows").List(t, "n1")[2]
	require.Equal(t, markup, r.Value(t, "note"))

	// The summary has the keys of a diff file written by ACE 2.1.1, in its order.
	sample, err := os.ReadFile("../../testdata/ace-diff-sample.json")
	require.NoError(t, err)
	sampleKeys := orderedjson.Decode(t, sample).Object(t, "summary").Keys
	s := file.Object(t, "summary")
	require.Equal(t, withKeyAfter(sampleKeys, "table", "table_filter"), s.Keys)
	require.Equal(t, "id < 1000", s.Value(t, "table_filter"))
	require.Equal(t, map[string]any{"n1/n2": 4.0, "n1/n3": 3.0, "n2/n3": 3.0}, s.Value(t, "diff_rows_count"))
	require.Equal(t, "2025-07-22T12:03:51Z", s.Value(t, "start_time"))
	require.Equal(t, "1.92s", s.Value(t, "time_taken"))
	require.Equal(t, []any{"region", "id"}, s.Value(t, "primary_key"))
}

// withKeyAfter inserts key after the key after in keys, unless it is there already.
func withKeyAfter(keys []string, after, key string) []string {
	var out []string
	for _, k := range keys {
		if k == key {
			return keys
		}
		out = append(out, k)
		if k == after {
			out = append(out, key)
		}
	}
	return out
}

func compactJSON(t *testing.T, raw []byte) string {
	t.Helper()
	var b bytes.Buffer
	require.NoError(t, json.Compact(&b, raw))
	return b.String()
}

func TestJSONEmptyDiff(t *testing.T) {
	t.Parallel()
	s := testSummary()
	s.Nodes = []string{"n2", "n1"}
	s.DiffRowsCount, s.PrimaryKey = nil, nil
	var b bytes.Buffer
	require.NoError(t, writeJSON(&b, s, sliceRows(nil, nil)))
	file := orderedjson.Decode(t, b.Bytes())
	rows := file.Object(t, "diffs").Object(t, "n1/n2").Object(t, "rows")
	require.Equal(t, "[]", string(rows.Values["n1"]))
	require.Equal(t, "[]", string(rows.Values["n2"]))
	require.Equal(t, map[string]any{}, file.Object(t, "summary").Value(t, "diff_rows_count"))
	require.Equal(t, []any{}, file.Object(t, "summary").Value(t, "primary_key"))
}

func TestConvertTime(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ typ, in, want string }{
		{"timestamp with time zone", `"2024-01-02 03:04:05.123456+00"`, `"2024-01-02T03:04:05.123456Z"`},
		{"timestamp with time zone", `"2024-01-02 03:04:05+05:30"`, `"2024-01-01T21:34:05Z"`},
		{"timestamp(3) with time zone", `"2024-01-02 03:04:05.1-03"`, `"2024-01-02T06:04:05.1Z"`},
		{"timestamp without time zone", `"2024-01-02 03:04:05"`, `"2024-01-02T03:04:05Z"`},
		{"date", `"2024-01-02"`, `"2024-01-02T00:00:00Z"`},
		{"date", `"infinity"`, `"infinity"`},
		{"timestamp with time zone", `"-infinity"`, `"-infinity"`},
		{"date", `"0044-03-15 BC"`, `"0044-03-15 BC"`},
		{"date", `null`, `null`},
		{"text", `"2024-01-02"`, `"2024-01-02"`},
		{"numeric(12,2)", `"3000.00"`, `"3000.00"`},
		{"bigint", `9007199254740993`, `9007199254740993`},
	} {
		t.Run(c.typ+" "+c.in, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, c.want, string(converterFor(c.typ)(json.RawMessage(c.in))), "%s %s", c.typ, c.in)
		})
	}
}

func TestPairDiffersAndMeta(t *testing.T) {
	t.Parallel()
	// n1 and n3 hold the same version, n2 another, n4 none.
	r := engine.DiffRow{Versions: map[string]int{"n1": 1, "n2": 2, "n3": 1}}
	for _, c := range []struct {
		pair [2]string
		want bool
	}{
		{[2]string{"n1", "n2"}, true}, {[2]string{"n1", "n3"}, false}, {[2]string{"n2", "n3"}, true},
		{[2]string{"n1", "n4"}, true}, {[2]string{"n4", "n5"}, false},
	} {
		t.Run(c.pair[0]+"/"+c.pair[1], func(t *testing.T) {
			t.Parallel()
			require.Equal(t, c.want, pairDiffers(r, c.pair), "%v", c.pair)
		})
	}
	require.Equal(t, [][2]string{{"a", "b"}, {"a", "c"}, {"b", "c"}}, nodePairs([]string{"c", "a", "b"}))

	raw, err := json.Marshal(aceMetaOf(nil, "n1"))
	require.NoError(t, err)
	require.Equal(t, `{"commit_ts":null,"node_origin":null}`, string(raw))
	ts := time.Date(2024, 1, 2, 3, 4, 5, 120000000, time.FixedZone("x", 3600))
	origin := "n2"
	raw, err = json.Marshal(aceMetaOf(map[string]engine.RowMeta{"n1": {CommitTS: &ts, NodeOrigin: &origin}}, "n1"))
	require.NoError(t, err)
	require.Equal(t, `{"commit_ts":"2024-01-02T02:04:05.12Z","node_origin":"n2"}`, string(raw))
}
