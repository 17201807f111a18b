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
	"github.com/ace-agent/ace-agent/engine/report"
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
			report.GroupDigits(s.TotalRowsChecked), roundSeconds(s.TimeTakenSeconds))
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
		fmt.Fprintf(w, "  %s: %s differing %s\n", pair, report.GroupDigits(s.DiffRowsCount[pair]), report.Plural(s.DiffRowsCount[pair], "row", "rows"))
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
