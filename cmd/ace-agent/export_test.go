package main

import (
	"context"
	"encoding/csv"
	"github.com/ace-agent/ace-agent/internal/orderedjson"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/testcluster"
)

var exportColumns = []string{"id", "name", "amount", "created", "ts", "day", "flag", "note"}

func TestDiffExport(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	e.ExecAll(`CREATE TABLE t (id bigint PRIMARY KEY, name text, amount numeric(12,2), created timestamptz,
		ts timestamp(3), day date, flag boolean, note text)`)
	e.ExecAll(`INSERT INTO t SELECT g, 'name ' || g, g * 1.5, timestamptz '2024-01-02 03:04:05.123456+00' + g * interval '1 minute',
		timestamp '2024-01-02 03:04:05.5', date '2024-01-02' + g::int, g % 2 = 0, NULL FROM generate_series(1, 1000) g`)
	e.Node("n2").Exec(t, `UPDATE t SET name = 'changed' WHERE id = 500`)
	e.Node("n3").Exec(t, `DELETE FROM t WHERE id = 7`)
	n1 := e.Node("n1")
	n1.StartAgent(t)
	r := ace(t, n1.DSN, "table-diff", "-q", "public.t")
	require.Equal(t, exitDiffers, r.code, r)
	id := submittedID(t, r)

	dir := t.TempDir()
	r = aceIn(t, dir, n1.DSN, "diff", "export", id.String())
	require.Equal(t, exitOK, r.code, r)
	m := regexp.MustCompile(`^diff written to (public_t_diffs-\d{14}\.json) \(2 rows\)\n$`).FindStringSubmatch(r.stderr)
	require.NotNil(t, m, r)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "only the diff file, no temporary left")
	raw, err := os.ReadFile(filepath.Join(dir, m[1]))
	require.NoError(t, err)

	file := orderedjson.Decode(t, raw)
	require.Equal(t, []string{"diffs", "summary"}, file.Keys)
	checkExportedPairs(t, file.Object(t, "diffs"))
	checkExportedRow(t, file.Object(t, "diffs").Object(t, "n1/n2").Object(t, "rows").List(t, "n1")[0])
	checkExportedSummary(t, file.Object(t, "summary"))
	require.Equal(t, idsInDiffRows(t, n1, id), idsInExport(t, file.Object(t, "diffs")))

	// The same document on stdout.
	r = ace(t, n1.DSN, "diff", "export", id.String(), "-o", "-")
	require.Equal(t, exitOK, r.code, r)
	require.Equal(t, string(raw), r.stdout)
	require.Equal(t, "diff written to stdout (2 rows)\n", r.stderr)

	checkExportedCSV(t, n1, id)
	checkExportedHTML(t, n1, id)
}

// checkExportedCSV checks the CSV export: one record per row of each node list of the diff file.
func checkExportedCSV(t *testing.T, n1 *testcluster.Node, id uuid.UUID) {
	t.Helper()
	r := ace(t, n1.DSN, "diff", "export", "--format", "csv", "-o", "-", id.String())
	require.Equal(t, exitOK, r.code, r)
	require.Equal(t, "diff written to stdout (2 rows)\n", r.stderr)
	records, err := csv.NewReader(strings.NewReader(r.stdout)).ReadAll()
	require.NoError(t, err, r.stdout)
	require.Equal(t, append(append([]string{"node_pair", "node", "diff_type"}, exportColumns...),
		"_spock_metadata_.commit_ts", "_spock_metadata_.node_origin"), records[0])
	var got [][4]string
	for _, rec := range records[1:] {
		got = append(got, [4]string{rec[0], rec[1], rec[2], rec[3]})
	}
	require.Equal(t, [][4]string{
		{"n1/n2", "n1", "row_mismatch", "500"},
		{"n1/n2", "n2", "row_mismatch", "500"},
		{"n1/n3", "n1", "missing_on_n3", "7"},
		{"n2/n3", "n2", "missing_on_n3", "7"},
		{"n2/n3", "n2", "row_mismatch", "500"},
		{"n2/n3", "n3", "row_mismatch", "500"},
	}, got)
	// PostgreSQL's text forms, NULL as \N.
	require.Equal(t, []string{"name 500", "750.00", "2024-01-02 11:24:05.123456+00", "2024-01-02 03:04:05.5", "2025-05-16", "true", `\N`},
		records[1][4:11])
	require.Equal(t, "changed", records[2][4])
}

// checkExportedHTML checks the HTML export under ACE's file name.
func checkExportedHTML(t *testing.T, n1 *testcluster.Node, id uuid.UUID) {
	t.Helper()
	dir := t.TempDir()
	r := aceIn(t, dir, n1.DSN, "diff", "export", "--format", "html", id.String())
	require.Equal(t, exitOK, r.code, r)
	m := regexp.MustCompile(`^diff written to (public_t_diffs-\d{14}\.html) \(2 rows\)\n$`).FindStringSubmatch(r.stderr)
	require.NotNil(t, m, r)
	raw, err := os.ReadFile(filepath.Join(dir, m[1]))
	require.NoError(t, err)
	page := string(raw)
	require.Contains(t, page, "<title>Diff report: public.t</title>")
	for _, pair := range []string{"n1 and n2", "n1 and n3", "n2 and n3"} {
		require.Contains(t, page, "<h2>Differences between "+pair+" ")
	}
	require.Contains(t, page, `<td class="value-diff"><span class="diff-chunk">changed</span></td>`)
	require.Contains(t, page, `<td class="key-column">500</td>`)
	require.Equal(t, 2, strings.Count(page, `<strong>MISSING</strong> <span class="why">no row with this key on n3</span>`))
}

// checkExportedPairs checks which node lists hold which rows: id 7 is missing on n3, and n2's
// id 500 differs from n1's and n3's.
func checkExportedPairs(t *testing.T, diffs orderedjson.Object) {
	t.Helper()
	require.Equal(t, []string{"n1/n2", "n1/n3", "n2/n3"}, diffs.Keys)
	want := map[string]map[string][]float64{
		"n1/n2": {"n1": {500}, "n2": {500}},
		"n1/n3": {"n1": {7}, "n3": {}},
		"n2/n3": {"n2": {7, 500}, "n3": {500}},
	}
	for pair, lists := range want {
		p := diffs.Object(t, pair)
		require.Equal(t, []string{"rows"}, p.Keys)
		rows := p.Object(t, "rows")
		require.Equal(t, []string{pair[:2], pair[3:]}, rows.Keys, pair)
		for node, ids := range lists {
			got := []float64{}
			for _, row := range rows.List(t, node) {
				got = append(got, row.Value(t, "id").(float64))
			}
			require.Equal(t, ids, got, "%s list of %s", pair, node)
		}
	}
	require.Equal(t, "changed", diffs.Object(t, "n1/n2").Object(t, "rows").List(t, "n2")[0].Value(t, "name"))
}

// checkExportedRow checks n1's row 500: columns in table order with ACE's value forms, then
// the metadata.
func checkExportedRow(t *testing.T, row orderedjson.Object) {
	t.Helper()
	require.Equal(t, append(append([]string{}, exportColumns...), "_spock_metadata_"), row.Keys)
	require.Equal(t, `500`, string(row.Values["id"]))
	require.Equal(t, "name 500", row.Value(t, "name"))
	require.Equal(t, "750.00", row.Value(t, "amount"))
	require.Equal(t, "2024-01-02T11:24:05.123456Z", row.Value(t, "created"))
	require.Equal(t, "2024-01-02T03:04:05.5Z", row.Value(t, "ts"))
	require.Equal(t, "2025-05-16T00:00:00Z", row.Value(t, "day"))
	require.Equal(t, true, row.Value(t, "flag"))
	require.Nil(t, row.Value(t, "note"))
	meta := row.Object(t, "_spock_metadata_")
	require.Equal(t, []string{"commit_ts", "node_origin"}, meta.Keys)
	ts, err := time.Parse(time.RFC3339Nano, meta.Value(t, "commit_ts").(string))
	require.NoError(t, err)
	require.WithinDuration(t, time.Now(), ts, 10*time.Minute)
	require.Equal(t, "local", meta.Value(t, "node_origin"))
}

func checkExportedSummary(t *testing.T, s orderedjson.Object) {
	t.Helper()
	// The summary keys, in order, of a diff file written by ACE 2.1.1 itself.
	sample, err := os.ReadFile("../../testdata/ace-diff-sample.json")
	require.NoError(t, err)
	require.Equal(t, orderedjson.Decode(t, sample).Object(t, "summary").Keys, s.Keys)
	require.Equal(t, "public", s.Value(t, "schema"))
	require.Equal(t, "t", s.Value(t, "table"))
	require.Equal(t, []any{"n1", "n2", "n3"}, s.Value(t, "nodes"))
	require.Equal(t, map[string]any{"n1/n2": 1.0, "n1/n3": 1.0, "n2/n3": 2.0}, s.Value(t, "diff_rows_count"))
	require.Equal(t, 1000.0, s.Value(t, "total_rows_checked"))
	require.Equal(t, []any{"id"}, s.Value(t, "primary_key"))
	_, err = time.Parse(time.RFC3339, s.Value(t, "start_time").(string))
	require.NoError(t, err)
}

func idsInDiffRows(t *testing.T, n *testcluster.Node, id uuid.UUID) []float64 {
	t.Helper()
	rows, err := n.Pool.Query(context.Background(), `SELECT (pk->>'id')::float8 FROM ace.diff_rows($1)`, id)
	require.NoError(t, err)
	var ids []float64
	for rows.Next() {
		var v float64
		require.NoError(t, rows.Scan(&v))
		ids = append(ids, v)
	}
	require.NoError(t, rows.Err())
	return ids
}

func idsInExport(t *testing.T, diffs orderedjson.Object) []float64 {
	t.Helper()
	seen := map[float64]bool{}
	for _, pair := range diffs.Keys {
		rows := diffs.Object(t, pair).Object(t, "rows")
		for _, node := range rows.Keys {
			for _, row := range rows.List(t, node) {
				seen[row.Value(t, "id").(float64)] = true
			}
		}
	}
	ids := []float64{}
	for v := range seen {
		ids = append(ids, v)
	}
	sort.Float64s(ids)
	return ids
}

func TestDiffExportErrors(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	createTable(e, 10)
	n1 := e.Node("n1") // no agent: submitted tasks stay queued
	queued := submitDiff(t, n1, "public.t")

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"diff", "export", "nope"}, `ace-agent: invalid task id "nope"`},
		{[]string{"diff", "export", uuid.NewString()}, "does not exist"},
		{[]string{"diff", "export", queued.String()}, "ace-agent: task " + queued.String() + " is QUEUED, not COMPLETED\nhint: only a completed"},
		{[]string{"diff", "export", "--format", "xml", queued.String()}, `unsupported format "xml": use one of json, html, csv`},
	} {
		r := ace(t, n1.DSN, c.args...)
		require.Equal(t, exitError, r.code, r)
		require.Contains(t, r.stderr, c.want, r)
	}
}
