package report

import (
	"bytes"
	"encoding/csv"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCSV(t *testing.T) {
	t.Parallel()
	raw := render(t, "csv")
	records, err := csv.NewReader(bytes.NewReader(raw)).ReadAll()
	require.NoError(t, err)
	require.Equal(t, []string{"node_pair", "node", "diff_type", "region", "id", "name", "note", "amount", "flag", "created",
		"_spock_metadata_.commit_ts", "_spock_metadata_.node_origin"}, records[0])

	// The records are the JSON file's node lists, in the same order.
	type line struct{ pair, node, diffType, region, id string }
	var got []line
	for _, r := range records[1:] {
		got = append(got, line{r[0], r[1], r[2], r[3], r[4]})
	}
	require.Equal(t, []line{
		{"n1/n2", "n1", "row_mismatch", "eu", "1"},
		{"n1/n2", "n1", "row_mismatch", "eu", "3"},
		{"n1/n2", "n1", "row_mismatch", "eu", "4"},
		{"n1/n2", "n2", "row_mismatch", "eu", "1"},
		{"n1/n2", "n2", "row_mismatch", "eu", "3"},
		{"n1/n2", "n2", "row_mismatch", "eu", "4"},
		{"n1/n2", "n2", "missing_on_n1", "us", "5"},
		{"n1/n3", "n1", "missing_on_n3", "eu", "2"},
		{"n1/n3", "n1", "row_mismatch", "eu", "3"},
		{"n1/n3", "n1", "row_mismatch", "eu", "4"},
		{"n1/n3", "n3", "row_mismatch", "eu", "3"},
		{"n1/n3", "n3", "row_mismatch", "eu", "4"},
		{"n2/n3", "n2", "row_mismatch", "eu", "1"},
		{"n2/n3", "n2", "missing_on_n3", "eu", "2"},
		{"n2/n3", "n2", "missing_on_n3", "us", "5"},
		{"n2/n3", "n3", "row_mismatch", "eu", "1"},
	}, got)

	// Values: stored text forms, NULL as \N, '' as an empty field, the text \N as \\N.
	require.Equal(t, []string{"n1/n2", "n1", "row_mismatch", "eu", "1", changedOld, "x", "3000.50", "true",
		ts, "2025-07-22T12:00:00.123456Z", "local"}, records[1])
	require.Equal(t, []string{"n1/n2", "n1", "row_mismatch", "eu", "3", "three", `\N`, `\N`, `\N`, `\N`, `\N`, `\N`}, records[2])
	require.Equal(t, "", records[5][6], "'' on n2")
	require.Equal(t, markup, records[3][6])
	require.Equal(t, `\\N`, records[7][6])
	require.Equal(t, "n1", records[4][11], "n2's row came from n1")

	// encoding/csv quotes what needs it.
	require.Contains(t, string(raw), `"<b>""&'"`)
}

func TestCSVNullMark(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		value string
		null  bool
		field string
	}{
		{"", false, ""},
		{"", true, `\N`},
		{`\N`, false, `\\N`},
		{`\\N`, false, `\\\N`},
		{`N`, false, `N`},
		{`\n`, false, `\n`},
		{`a\N`, false, `a\N`},
		{`\N `, false, `\N `},
		{`NULL`, false, `NULL`},
	} {
		field := csvNull
		if !c.null {
			field = csvEscape(c.value)
		}
		require.Equal(t, c.field, field, "%q", c.value)
		value, ok := CSVField(field)
		require.Equal(t, !c.null, ok, "%q", c.field)
		require.Equal(t, c.value, value, "%q", c.field)
	}
	require.Equal(t, `\N`, csvValue(nil), "a column the row lacks")
	require.Equal(t, `12.50`, csvValue([]byte(`12.50`)))
	require.Equal(t, `false`, csvValue([]byte(`false`)))
	require.Equal(t, `{"a": 1}`, csvValue([]byte(`"{\"a\": 1}"`)))
}
