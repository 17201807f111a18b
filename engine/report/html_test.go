package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
)

func TestHTML(t *testing.T) {
	t.Parallel()
	page := string(render(t, "html"))

	// Self-contained: no scripts, no external resources.
	for _, bad := range []string{"<script", "<link", "src=", "url(", "@import", "http:", "https:", "<b>"} {
		require.NotContains(t, page, bad)
	}
	require.Contains(t, page, `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">`)
	require.Contains(t, page, "<style>\n:root")

	// Summary.
	require.Contains(t, page, "<title>Diff report: public.t</title>")
	require.Contains(t, page, "<dt>Primary key</dt><dd>region, id</dd>")
	require.Contains(t, page, "<dt>Rows checked</dt><dd>15 (n1: 4, n2: 5, n3: 3)</dd>")
	require.Contains(t, page, "<dt>Filter</dt><dd>id &lt; 1000</dd>")
	require.Contains(t, page, "transient_diffs: 2")
	require.NotContains(t, page, "Stopped early")
	require.Contains(t, page, `<a href="#pair-3">n2/n3</a></td><td class="num">3</td>`)

	// A section per pair, with its kinds of differences.
	require.Equal(t, []string{"n1 and n2", "n1 and n3", "n2 and n3"}, submatches(page, `<h2>Differences between (\w+ and \w+) `))
	require.Equal(t, []string{"Missing on n1", "Missing on n3", "Missing on n3"}, submatches(page, `<h4>(Missing on \w+) `))
	require.Equal(t, 3, strings.Count(page, "<h3>Value differences"))
	require.Equal(t, 4, strings.Count(page, `<td class="missing" colspan="7"><strong>MISSING</strong>`))

	// Changed middles, escaping, NULL against ''.
	require.Contains(t, page, `<td class="value-diff">alpha-<span class="diff-chunk">OLD</span>-omega</td>`)
	require.Contains(t, page, `<td class="value-diff">alpha-<span class="diff-chunk">NEW</span>-omega</td>`)
	require.Contains(t, page, `<td class="value-diff"><span class="diff-chunk">&lt;b&gt;&#34;&amp;&#39;</span></td>`)
	require.Contains(t, page, `<td class="value-diff"><span class="null">NULL</span></td>`)
	require.Contains(t, page, `<td class="value-diff"><span class="empty">""</span></td>`)
	require.Contains(t, page, `<td class="key-column">eu</td><td class="key-column">1</td>`)
	require.Contains(t, page, `<td>3000.5</td>`, "3000.50 against 3000.5 is no difference")
	require.NotContains(t, page, `<td class="value-diff">3000`)
	require.Contains(t, page, `<th class="key-column">region<span class="type">text</span></th>`)
}

func TestHTMLSummaryFlags(t *testing.T) {
	t.Parallel()
	s := testSummary()
	s.DiffRowLimitReached, s.RecheckAfter, s.TableFilter = true, "", ""
	s.Schema, s.Table = `s"<x>`, "t&"
	s.Warnings = []string{"<careful>"}
	var b bytes.Buffer
	require.NoError(t, writeHTML(&b, s, sliceRows(nil, nil)))
	page := b.String()
	require.Contains(t, page, "<dt>Stopped early</dt><dd>yes: max_diff_rows (1,000,000) reached; more rows may differ</dd>")
	require.NotContains(t, page, "transient_diffs")
	require.NotContains(t, page, "<dt>Filter</dt>")
	require.Contains(t, page, "<title>Diff report: s&#34;&lt;x&gt;.t&amp;</title>")
	require.Contains(t, page, "<li>&lt;careful&gt;</li>")
	require.Equal(t, 3, strings.Count(page, `<p class="none">No differences between`))
}

func TestHTMLRowLimit(t *testing.T) {
	t.Parallel()
	s := testSummary()
	s.Nodes = []string{"n1", "n2"}
	var rows []engine.DiffRow
	for i := range 32 {
		r := engine.DiffRow{PK: json.RawMessage(fmt.Sprintf(`{"region":"eu","id":%d}`, i)),
			Rows:     map[string]json.RawMessage{"n1": row("eu", i, "a", "b", nil, nil, nil), "n2": row("eu", i, "a", "c", nil, nil, nil)},
			Versions: map[string]int{"n1": 1, "n2": 2}}
		if i%5 == 0 { // 7 rows only on n1
			r.Rows["n2"] = json.RawMessage("null")
			r.Versions = map[string]int{"n1": 1}
		}
		rows = append(rows, r)
	}
	var b bytes.Buffer
	passes := 0
	require.NoError(t, writeHTMLLimit(&b, s, sliceRows(rows, &passes), 10))
	require.Equal(t, 3, passes, "one to count, one per table shown")
	page := b.String()
	require.Equal(t, 10, strings.Count(page, `<tbody class="key">`))
	require.Contains(t, page, "Value differences <span class=\"count\">25</span>")
	require.Contains(t, page, "Showing 5 of 25: 20 more not shown. This report shows at most 10 rows per node pair")
	require.Contains(t, page, "Showing 5 of 7: 2 more not shown.")
	require.Equal(t, 5, strings.Count(page, `no row with this key on n2`))
}

func TestShare(t *testing.T) {
	t.Parallel()
	require.Equal(t, []int64{5, 0, 5}, share(10, []int64{25, 0, 7}))
	require.Equal(t, []int64{2, 3, 5}, share(10, []int64{2, 3, 100}))
	require.Equal(t, []int64{3, 3, 4}, share(10, []int64{100, 100, 100}))
	require.Equal(t, []int64{1, 2, 0}, share(10, []int64{1, 2, 0}))
	require.Equal(t, []int64{0, 0}, share(0, []int64{4, 5}))
}

func TestChangedMiddle(t *testing.T) {
	t.Parallel()
	for _, c := range [][5]string{
		{"alpha-OLD-omega", "alpha-NEW-omega", "alpha-", "OLD", "-omega"},
		{"héllo wörld", "héllo world", "héllo w", "ö", "rld"},
		{"aaa", "aa", "aa", "a", ""},
		{"aa", "aaa", "aa", "", ""},
		{"abc", "xyz", "", "abc", ""},
		{"日本語", "日本人", "日本", "語", ""},
		{"", "x", "", "", ""},
	} {
		pre, mid, post := changedMiddle(c[0], c[1])
		require.Equal(t, [3]string{c[2], c[3], c[4]}, [3]string{pre, mid, post}, "%q vs %q", c[0], c[1])
	}
	require.True(t, sameValue("numeric(12,2)", json.RawMessage(`"3000.50"`), json.RawMessage(`"3000.5"`)))
	require.True(t, sameValue("numeric", json.RawMessage(`"10.0"`), json.RawMessage(`"10"`)))
	require.False(t, sameValue("numeric", json.RawMessage(`"100"`), json.RawMessage(`"10"`)))
	require.False(t, sameValue("text", json.RawMessage(`"3000.50"`), json.RawMessage(`"3000.5"`)))
	require.False(t, sameValue("numeric", json.RawMessage(`null`), json.RawMessage(`"0"`)))
}

func submatches(s, re string) []string {
	var out []string
	for _, m := range regexp.MustCompile(re).FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	return out
}
