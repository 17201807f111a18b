package acefile

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The sample ACE wrote reads into the types, and its rows split into columns and metadata.
func TestReadTheSampleACEWrote(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../../testdata/ace-diff-sample.json")
	require.NoError(t, err)
	f, err := ReadDiffFile(raw)
	require.NoError(t, err)
	require.NotEmpty(t, f.Summary.Nodes)
	require.NotEmpty(t, f.Summary.PrimaryKey)
	require.False(t, ParseTime(f.Summary.StartTime).IsZero())
	names := f.PairNames()
	require.NotEmpty(t, names)
	pair, ok := SplitPair(names[0])
	require.True(t, ok)
	rows := f.Diffs[names[0]].Rows[pair[0]]
	require.NotEmpty(t, rows)
	fields, meta, err := SplitRow(rows[0])
	require.NoError(t, err)
	require.NotContains(t, fields, MetaKey)
	require.NotNil(t, meta)
	ts, err := meta.CommitTime()
	require.NoError(t, err)
	require.NotNil(t, ts)
	_, err = Key(fields, f.Summary.PrimaryKey)
	require.NoError(t, err)
}

// What WriteDiffFile writes, ReadDiffFile reads back.
func TestWriteThenRead(t *testing.T) {
	t.Parallel()
	ts := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	origin := "n1"
	s := Summary{Schema: "public", Table: "t", Nodes: []string{"n2", "n1"}, PrimaryKey: []string{"id"},
		StartTime: FormatTime(ts), EndTime: FormatTime(ts), DiffRowsCount: map[string]int64{"n1/n2": 1}}
	list := func(pair [2]string, node string, emit func(Row) error) error {
		if node != "n1" {
			return nil
		}
		return emit(Row{PK: json.RawMessage(`{"id":1}`), Values: []json.RawMessage{json.RawMessage(`1`), json.RawMessage(`"a"`)}, Meta: MetaOf(&ts, &origin)})
	}
	var b bytes.Buffer
	require.NoError(t, WriteDiffFile(&b, s, []string{"id", "v"}, list))
	f, err := ReadDiffFile(b.Bytes())
	require.NoError(t, err)
	require.Equal(t, s, f.Summary)
	require.Equal(t, []string{"n1/n2"}, f.PairNames())
	require.Len(t, f.Diffs["n1/n2"].Rows["n1"], 1)
	require.Empty(t, f.Diffs["n1/n2"].Rows["n2"])
	fields, meta, err := SplitRow(f.Diffs["n1/n2"].Rows["n1"][0])
	require.NoError(t, err)
	require.NoError(t, CheckRowShape(fields, []string{"id", "v"}, "public.t"))
	require.Error(t, CheckRowShape(fields, []string{"id", "v", "w"}, "public.t"))
	k, err := Key(fields, []string{"id"})
	require.NoError(t, err)
	require.Equal(t, "1", k)
	got, err := meta.CommitTime()
	require.NoError(t, err)
	require.True(t, ts.Equal(*got))
	require.Equal(t, origin, *meta.NodeOrigin)
}
