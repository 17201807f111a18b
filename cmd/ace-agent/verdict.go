package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// reportDiff prints a finished table-diff's verdict, or its result as JSON, and returns
// errDiffers when the tables differ.
func reportDiff(stdout, stderr io.Writer, t sqlapi.Task, asJSON bool) error {
	if t.Status != sqlapi.StatusCompleted {
		return errTaskEnded(t)
	}
	var s engine.DiffSummary
	if err := json.Unmarshal(t.Result, &s); err != nil {
		return fmt.Errorf("decode the result of task %s: %w", t.ID, err)
	}
	for _, w := range s.Warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	if asJSON {
		if err := printJSON(stdout, t.Result); err != nil {
			return err
		}
	} else {
		printVerdict(stdout, t.ID.String(), &s)
	}
	if !s.InSync() {
		return errDiffers
	}
	return nil
}

func printVerdict(w io.Writer, id string, s *engine.DiffSummary) {
	if s.InSync() {
		fmt.Fprintf(w, "✔ TABLES MATCH: %s on %s (%s rows checked in %s)\n", s.TableName, strings.Join(s.Nodes, ", "),
			groupDigits(s.TotalRowsChecked), roundSeconds(s.TimeTakenSeconds))
		return
	}
	fmt.Fprintf(w, "✘ TABLES DO NOT MATCH: %s\n", s.TableName)
	pairs := make([]string, 0, len(s.DiffRowsCount))
	for pair, n := range s.DiffRowsCount {
		if n > 0 {
			pairs = append(pairs, pair)
		}
	}
	sort.Strings(pairs)
	for _, pair := range pairs {
		fmt.Fprintf(w, "  %s: %s differing %s\n", pair, groupDigits(s.DiffRowsCount[pair]), plural(s.DiffRowsCount[pair], "row", "rows"))
	}
	if s.DiffRowLimitReached {
		fmt.Fprintf(w, "  (max_diff_rows %d reached: more rows may differ)\n", s.MaxDiffRows)
	}
	fmt.Fprintf(w, "see them with: SELECT * FROM ace.diff_rows('%s');\n", id)
	fmt.Fprintf(w, "or: ace-agent diff export %s\n", id)
}

// printJSON writes a JSON document indented, on one line per key.
func printJSON(w io.Writer, raw json.RawMessage) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return fmt.Errorf("format JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// roundSeconds renders a duration to a tenth of a second, or to the millisecond below one second.
func roundSeconds(secs float64) string {
	d := time.Duration(secs * float64(time.Second))
	if d >= time.Second {
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Millisecond).String()
}

// groupDigits writes n with thousands separators: 1234567 -> 1,234,567.
func groupDigits(n int64) string {
	s := fmt.Sprint(n)
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

func plural(n int64, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
