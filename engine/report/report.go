// Package report renders a diff's results as ACE's diff-file JSON, a self-contained HTML report,
// or CSV.
//
// Every format streams: the differing rows are read through Rows, possibly several times (once
// per node list of the JSON file, a few times per node pair of the HTML report), and never
// collected, so memory does not grow with the size of the diff.
package report

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/acefile"
)

// Rows streams a diff's differing rows in primary-key order; Write may call it more than once.
// Each call must yield the same rows in the same order (read them in one snapshot).
type Rows func(fn func(engine.DiffRow) error) error

// Formats lists the supported formats.
var Formats = []string{"json", "html", "csv"}

// Write renders the diff in format ("json" = ACE's diff file, "html", "csv") to w. Memory
// does not grow with the number of rows: Write streams, and makes several passes over rows.
func Write(ctx context.Context, w io.Writer, format string, s *engine.DiffSummary, rows Rows) error {
	if !slices.Contains(Formats, format) {
		return fmt.Errorf("unsupported report format %q: use %s", format, strings.Join(Formats, ", "))
	}
	if s == nil {
		return fmt.Errorf("no diff summary")
	}
	if len(s.Columns) == 0 || len(s.Columns) != len(s.ColumnTypes) {
		return fmt.Errorf("the diff summary of %s.%s does not list the table's columns and their types", s.Schema, s.Table)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 1<<16)
	rows = withContext(ctx, rows)
	var err error
	switch format {
	case "json":
		err = writeJSON(bw, s, rows)
	case "html":
		err = writeHTML(bw, s, rows)
	case "csv":
		err = writeCSV(bw, s, rows)
	}
	if err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write %s report: %w", format, err)
	}
	return nil
}

// FileName is ACE's default name for a diff file: <schema>_<table>_diffs-<YYYYMMDDHHMMSS>.<ext>,
// with dots (and path separators) in the names replaced by _, stamped with t in t's location.
// The extension is the format's name.
func FileName(s *engine.DiffSummary, format string, t time.Time) string {
	safe := strings.NewReplacer(".", "_", "/", "_", `\`, "_", "\x00", "_")
	return fmt.Sprintf("%s_%s_diffs-%s.%s", safe.Replace(s.Schema), safe.Replace(s.Table), t.Format("20060102150405"), format)
}

// TaskFileName is the name of one task's report: ACE's name (FileName) with the task's id before
// the extension, <schema>_<table>_diffs-<YYYYMMDDHHMMSS>-<task id>.<ext>. FileName alone is not
// unique: tables whose names differ only in where the dot is (a.b_c, a_b.c) share it, and so do
// two diffs of one table that end in the same second.
func TaskFileName(s *engine.DiffSummary, format string, t time.Time, taskID uuid.UUID) string {
	return strings.TrimSuffix(FileName(s, format, t), "."+format) + "-" + taskID.String() + "." + format
}

// withContext stops a pass over the rows once ctx is done.
func withContext(ctx context.Context, rows Rows) Rows {
	return func(fn func(engine.DiffRow) error) error {
		return rows(func(r engine.DiffRow) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			return fn(r)
		})
	}
}

// nodePairs lists the pairs of nodes, each pair and the list sorted by name, as ACE keys them.
func nodePairs(nodes []string) [][2]string { return acefile.NodePairs(nodes) }

func pairKey(pair [2]string) string { return acefile.PairKey(pair) }

// pairDiffers reports whether the pair's nodes differ on the row: one has it and the other not,
// or both have different versions of it.
func pairDiffers(r engine.DiffRow, pair [2]string) bool {
	va, okA := r.Versions[pair[0]]
	vb, okB := r.Versions[pair[1]]
	return okA != okB || (okA && va != vb)
}

// has reports whether node holds the row.
func has(r engine.DiffRow, node string) bool {
	_, ok := r.Versions[node]
	return ok
}

// rowValues decodes node's version of the row into its columns' stored values: JSON numbers
// and booleans, PostgreSQL's text form as a JSON string, or JSON null.
func rowValues(r engine.DiffRow, node string) (map[string]json.RawMessage, error) {
	var values map[string]json.RawMessage
	if err := json.Unmarshal(r.Rows[node], &values); err != nil {
		return nil, fmt.Errorf("decode the row %s of node %s: %w", r.PK, node, err)
	}
	return values, nil
}
