package report

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ace-agent/ace-agent/engine"
)

// HTMLRowLimit is the most rows the HTML report shows per node pair. The rest are counted
// and the page says how many it left out.
const HTMLRowLimit = 10000

var (
	//go:embed report.html.tmpl
	htmlTemplateText string
	//go:embed report.css
	htmlCSS string

	htmlTemplate = template.Must(template.Must(template.New("report").Parse(htmlTemplateText)).
			Parse(`{{define "css"}}` + htmlCSS + `{{end}}`))
)

// The HTML report is written in pieces, one template execution per piece and per differing
// key, so nothing but a few counters per node pair is held in memory:
//
//	head (summary) — for each pair: pair-start, value differences, missing rows, pair-end — foot
//
// It needs 1 + 3×pairs passes over the rows: one to count, and per pair one for the value
// differences and one for the rows missing on each of its nodes.
type htmlReport struct {
	out   io.Writer
	sum   *engine.DiffSummary
	rows  Rows
	limit int64
	cols  []columnView
	isKey []bool
}

// pairCounts is what one node pair differs on.
type pairCounts struct {
	mismatch int64    // rows both nodes hold, in different versions
	missing  [2]int64 // rows missing on pair[0], on pair[1]
}

func (c pairCounts) total() int64 { return c.mismatch + c.missing[0] + c.missing[1] }

func writeHTML(w io.Writer, s *engine.DiffSummary, rows Rows) error {
	return writeHTMLLimit(w, s, rows, HTMLRowLimit)
}

func writeHTMLLimit(w io.Writer, s *engine.DiffSummary, rows Rows, limit int64) error {
	r := &htmlReport{out: w, sum: s, rows: rows, limit: limit}
	return r.write()
}

func (h *htmlReport) write() error {
	keys := map[string]bool{}
	for _, k := range h.sum.PrimaryKey {
		keys[k] = true
	}
	for i, c := range h.sum.Columns {
		h.cols = append(h.cols, columnView{Name: c, Type: h.sum.ColumnTypes[i], Key: keys[c]})
		h.isKey = append(h.isKey, keys[c])
	}
	pairs := nodePairs(h.sum.Nodes)
	counts, err := h.count(pairs)
	if err != nil {
		return err
	}
	if err := h.exec("head", h.summaryView(pairs, counts)); err != nil {
		return err
	}
	for i, pair := range pairs {
		if err := h.writePair(i, pair, counts[i]); err != nil {
			return err
		}
	}
	return h.exec("foot", nil)
}

func (h *htmlReport) exec(name string, data any) error {
	if err := htmlTemplate.ExecuteTemplate(h.out, name, data); err != nil {
		return fmt.Errorf("write html report: %w", err)
	}
	return nil
}

// count makes one pass over the rows and counts, per pair, the rows of each kind.
func (h *htmlReport) count(pairs [][2]string) ([]pairCounts, error) {
	counts := make([]pairCounts, len(pairs))
	err := h.rows(func(r engine.DiffRow) error {
		for i, p := range pairs {
			if !pairDiffers(r, p) {
				continue
			}
			switch a, b := has(r, p[0]), has(r, p[1]); {
			case a && b:
				counts[i].mismatch++
			case b:
				counts[i].missing[0]++
			case a:
				counts[i].missing[1]++
			}
		}
		return nil
	})
	return counts, err
}

type summaryItem struct{ Label, Value, Class string }

type pairSummary struct {
	Key, Anchor string
	Count       string
}

type summaryView struct {
	Title     string
	Differing string
	Items     []summaryItem
	Warnings  []string
	Pairs     []pairSummary
}

func (h *htmlReport) summaryView(pairs [][2]string, counts []pairCounts) summaryView {
	s := h.sum
	v := summaryView{Title: s.Schema + "." + s.Table, Warnings: s.Warnings}
	if s.DifferingKeys > 0 {
		v.Differing = fmt.Sprintf("%s differing %s.", GroupDigits(s.DifferingKeys), Plural(s.DifferingKeys, "row", "rows"))
	}
	add := func(label, value string) { v.Items = append(v.Items, summaryItem{Label: label, Value: value}) }
	add("Table", s.Schema+"."+s.Table)
	add("Nodes", strings.Join(s.Nodes, ", "))
	add("Primary key", strings.Join(s.PrimaryKey, ", "))
	checked := GroupDigits(s.TotalRowsChecked)
	if len(s.RowsPerNode) > 0 {
		var per []string
		for _, n := range slices.Sorted(maps.Keys(s.RowsPerNode)) {
			per = append(per, n+": "+GroupDigits(s.RowsPerNode[n]))
		}
		checked += " (" + strings.Join(per, ", ") + ")"
	}
	add("Rows checked", checked)
	add("Differing rows", GroupDigits(s.DifferingKeys))
	if s.DiffRowLimitReached {
		v.Items = append(v.Items, summaryItem{Label: "Stopped early", Class: "alert",
			Value: fmt.Sprintf("yes: max_diff_rows (%s) reached; more rows may differ", GroupDigits(s.MaxDiffRows))})
	}
	if s.RecheckAfter != "" {
		v.Items = append(v.Items, summaryItem{Label: "Transient differences", Class: "alert",
			Value: fmt.Sprintf("transient_diffs: %s (gone when rechecked after %s: replication in flight)", GroupDigits(s.TransientDiffs), s.RecheckAfter)})
	}
	add("Time taken", s.TimeTaken)
	add("Started", formatTime(s.StartTime))
	add("Finished", formatTime(s.EndTime))
	if s.TableFilter != "" {
		add("Filter", s.TableFilter)
	}
	if s.BlockSize > 0 {
		add("Block size", GroupDigits(int64(s.BlockSize)))
	}
	if s.MaxDiffRows > 0 {
		add("Max diff rows", GroupDigits(s.MaxDiffRows))
	}
	if s.AgainstOrigin != "" {
		origin := s.AgainstOrigin
		if s.OriginOnly {
			origin += " (origin only)"
		}
		add("Against origin", origin)
	}
	if s.Until != nil {
		add("Until", formatTime(*s.Until))
	}
	for i, p := range pairs {
		v.Pairs = append(v.Pairs, pairSummary{Key: pairKey(p), Anchor: pairAnchor(i), Count: GroupDigits(counts[i].total())})
	}
	return v
}

func pairAnchor(i int) string { return "pair-" + strconv.Itoa(i+1) }

type pairView struct {
	A, B, Anchor string
	Count        string
	Total        int64
}

type headingView struct {
	Level int
	Text  string
	Count string
}

type moreView struct {
	Shown, Total, Hidden, Limit string
}

func (h *htmlReport) writePair(i int, pair [2]string, c pairCounts) error {
	total := c.total()
	if err := h.exec("pair-start", pairView{A: pair[0], B: pair[1], Anchor: pairAnchor(i),
		Count: GroupDigits(total) + " " + Plural(total, "row", "rows"), Total: total}); err != nil {
		return err
	}
	shown := share(h.limit, []int64{c.mismatch, c.missing[0], c.missing[1]})
	if c.mismatch > 0 {
		if err := h.exec("heading", headingView{Level: 3, Text: "Value differences", Count: GroupDigits(c.mismatch)}); err != nil {
			return err
		}
		if err := h.writeKeys(pair, c.mismatch, shown[0], func(r engine.DiffRow) bool {
			return has(r, pair[0]) && has(r, pair[1])
		}); err != nil {
			return err
		}
	}
	if m := c.missing[0] + c.missing[1]; m > 0 {
		if err := h.exec("heading", headingView{Level: 3, Text: "Missing rows", Count: GroupDigits(m)}); err != nil {
			return err
		}
		for j, node := range pair {
			if c.missing[j] == 0 {
				continue
			}
			other := pair[1-j]
			if err := h.exec("heading", headingView{Level: 4, Text: "Missing on " + node, Count: GroupDigits(c.missing[j])}); err != nil {
				return err
			}
			if err := h.writeKeys(pair, c.missing[j], shown[1+j], func(r engine.DiffRow) bool {
				return has(r, other) && !has(r, node)
			}); err != nil {
				return err
			}
		}
	}
	return h.exec("pair-end", nil)
}

// errEnough ends a pass over the rows once a table has all the rows it shows.
var errEnough = errors.New("enough rows")

// writeKeys writes a table of the first show rows that match, of total.
func (h *htmlReport) writeKeys(pair [2]string, total, show int64, match func(engine.DiffRow) bool) error {
	if show == 0 {
		return h.exec("more", moreView{Shown: "0", Total: GroupDigits(total), Hidden: GroupDigits(total), Limit: GroupDigits(h.limit)})
	}
	if err := h.exec("table-start", h.cols); err != nil {
		return err
	}
	var n int64
	err := h.rows(func(r engine.DiffRow) error {
		if !pairDiffers(r, pair) || !match(r) {
			return nil
		}
		if n >= show {
			return errEnough
		}
		lines, err := h.keyView(r, pair)
		if err != nil {
			return err
		}
		n++
		return h.exec("key", lines)
	})
	if err != nil && !errors.Is(err, errEnough) {
		return err
	}
	if err := h.exec("table-end", nil); err != nil {
		return err
	}
	if n < total {
		return h.exec("more", moreView{Shown: GroupDigits(n), Total: GroupDigits(total),
			Hidden: GroupDigits(total - n), Limit: GroupDigits(h.limit)})
	}
	return nil
}

type columnView struct {
	Name, Type string
	Key        bool
}

// lineView is one node's line of a key: its row's cells, or a MISSING mark.
type lineView struct {
	Node    string
	Missing bool
	Span    int
	Cells   []cellView
}

// cellView is one value: NULL, the empty string, or text whose changed middle (Chunk) is
// marked when HasChunk.
type cellView struct {
	Class            string
	Null, Empty      bool
	Pre, Chunk, Post string
	HasChunk         bool
}

// keyView renders the pair's two lines of a differing key.
func (h *htmlReport) keyView(r engine.DiffRow, pair [2]string) ([]lineView, error) {
	var values [2]map[string]json.RawMessage
	for i, node := range pair {
		if !has(r, node) {
			continue
		}
		v, err := rowValues(r, node)
		if err != nil {
			return nil, err
		}
		values[i] = v
	}
	lines := make([]lineView, 2)
	for i, node := range pair {
		lines[i] = lineView{Node: node}
		if values[i] == nil {
			lines[i].Missing, lines[i].Span = true, len(h.cols)
			continue
		}
		lines[i].Cells = make([]cellView, len(h.cols))
	}
	for c, col := range h.cols {
		a, b := values[0][col.Name], values[1][col.Name]
		differs := values[0] != nil && values[1] != nil && !sameValue(col.Type, a, b)
		for i, mine := range [2]json.RawMessage{a, b} {
			if values[i] == nil {
				continue
			}
			other := [2]json.RawMessage{b, a}[i]
			cell := displayCell(mine, other, differs)
			switch {
			case h.isKey[c]:
				cell.Class = "key-column"
			case differs:
				cell.Class = "value-diff"
			}
			lines[i].Cells[c] = cell
		}
	}
	return lines, nil
}

// displayCell renders a stored value; when the cell differs from other, the part between the
// common prefix and suffix of the two texts is the chunk.
func displayCell(mine, other json.RawMessage, differs bool) cellView {
	text, null := displayText(mine)
	if null {
		return cellView{Null: true}
	}
	if text == "" {
		return cellView{Empty: true}
	}
	if !differs {
		return cellView{Pre: text}
	}
	otherText, otherNull := displayText(other)
	if otherNull {
		return cellView{Chunk: text, HasChunk: true}
	}
	pre, chunk, post := changedMiddle(text, otherText)
	return cellView{Pre: pre, Chunk: chunk, Post: post, HasChunk: chunk != ""}
}

// displayText is a stored value as a person reads it: a string's text, a number's or
// boolean's JSON text; null reports NULL.
func displayText(v json.RawMessage) (text string, null bool) {
	if len(v) == 0 || string(v) == "null" {
		return "", true
	}
	if v[0] == '"' {
		var s string
		if err := json.Unmarshal(v, &s); err == nil {
			return s, false
		}
	}
	return string(v), false
}

// changedMiddle splits s into the prefix and suffix it shares with other and the middle
// between them, on runes, so a multi-byte character is never cut.
func changedMiddle(s, other string) (pre, middle, post string) {
	a, b := []rune(s), []rune(other)
	p := 0
	for p < len(a) && p < len(b) && a[p] == b[p] {
		p++
	}
	q := 0
	for q < len(a)-p && q < len(b)-p && a[len(a)-1-q] == b[len(b)-1-q] {
		q++
	}
	return string(a[:p]), string(a[p : len(a)-q]), string(a[len(a)-q:])
}

// numericType matches numeric and decimal column types, with or without a typmod.
var numericType = regexp.MustCompile(`^(numeric|decimal)(\(.*\))?$`)

// sameValue reports whether two stored values of a column are equal. Numerics that differ only
// in trailing fractional zeros are equal, as they are to the diff itself.
func sameValue(colType string, a, b json.RawMessage) bool {
	if bytes.Equal(a, b) {
		return true
	}
	if !numericType.MatchString(colType) {
		return false
	}
	as, aNull := displayText(a)
	bs, bNull := displayText(b)
	return !aNull && !bNull && trimScale(as) == trimScale(bs)
}

func trimScale(s string) string {
	if !strings.Contains(s, ".") || strings.ContainsAny(s, "eE") {
		return s
	}
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

// share splits limit between buckets of the given sizes, as evenly as their sizes allow: a
// bucket smaller than its share gets all it holds and leaves the rest to the others.
func share(limit int64, sizes []int64) []int64 {
	order := make([]int, len(sizes))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(x, y int) bool { return sizes[order[x]] < sizes[order[y]] })
	out := make([]int64, len(sizes))
	left := limit
	for k, i := range order {
		fair := left / int64(len(order)-k)
		out[i] = min(sizes[i], fair)
		left -= out[i]
	}
	return out
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05.000 UTC")
}

// GroupDigits writes n with thousands separators: 1234567 → 1,234,567.
func GroupDigits(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// Plural picks the word for a count of n.
func Plural(n int64, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
