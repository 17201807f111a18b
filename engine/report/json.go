package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/ace-agent/ace-agent/engine"
)

// Indentation of the parts of an ACE diff file, as json.Encoder writes it with a two-space indent.
const (
	indentPair = "    "
	indentNode = "        "
	indentRow  = "          "
)

// diffFile streams a diff's rows into ACE's diff-file format:
//
//	{"diffs": {"n1/n2": {"rows": {"n1": [row…], "n2": [row…]}}, …}, "summary": {…}}
//
// A row is listed under a node pair when the two nodes differ on it, in the list of each node
// that has it. Each list is one pass over the rows in primary-key order.
type diffFile struct {
	out  errWriter
	rows Rows
	sum  *engine.DiffSummary
	conv []valueConverter // per column of sum.Columns
}

func writeJSON(w io.Writer, s *engine.DiffSummary, rows Rows) error {
	f := &diffFile{out: errWriter{w: w}, rows: rows, sum: s, conv: converters(s.ColumnTypes)}
	return f.write()
}

func (f *diffFile) write() error {
	out := &f.out
	out.str("{\n  \"diffs\": {")
	for i, pair := range nodePairs(f.sum.Nodes) {
		if i > 0 {
			out.str(",")
		}
		out.str("\n" + indentPair + jsonString(pairKey(pair)) + ": {\n      \"rows\": {")
		for j, node := range pair {
			if j > 0 {
				out.str(",")
			}
			out.str("\n" + indentNode + jsonString(node) + ": [")
			if err := f.writeList(node, pair); err != nil {
				return err
			}
		}
		out.str("\n      }\n    }")
	}
	out.str("\n  },\n  \"summary\": ")
	summary, err := json.MarshalIndent(aceSummaryOf(f.sum), "  ", "  ")
	if err != nil {
		return fmt.Errorf("encode diff summary: %w", err)
	}
	out.bytes(summary)
	out.str("\n}\n")
	if out.err != nil {
		return fmt.Errorf("write diff: %w", out.err)
	}
	return nil
}

// writeList writes the rows node holds that differ between the pair's two nodes.
func (f *diffFile) writeList(node string, pair [2]string) error {
	out := &f.out
	n := 0
	err := f.rows(func(r engine.DiffRow) error {
		if !has(r, node) || !pairDiffers(r, pair) {
			return nil
		}
		row, err := f.rowObject(r, node)
		if err != nil {
			return err
		}
		if n > 0 {
			out.str(",")
		}
		out.str("\n" + indentRow)
		out.bytes(row)
		n++
		return out.err
	})
	if err != nil {
		return err
	}
	if n > 0 {
		out.str("\n" + indentNode)
	}
	out.str("]")
	return nil
}

// rowObject renders node's version of the row as ACE does: the table's columns in order, then
// "_spock_metadata_", indented for its place in the file.
func (f *diffFile) rowObject(r engine.DiffRow, node string) ([]byte, error) {
	values, err := rowValues(r, node)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteByte('{')
	for i, col := range f.sum.Columns {
		v, ok := values[col]
		if !ok {
			v = json.RawMessage("null")
		}
		b.WriteString(jsonString(col) + ":")
		b.Write(f.conv[i](v))
		b.WriteByte(',')
	}
	meta, err := json.Marshal(aceMetaOf(r.Meta, node))
	if err != nil {
		return nil, fmt.Errorf("encode row metadata: %w", err)
	}
	b.WriteString(`"_spock_metadata_":`)
	b.Write(meta)
	b.WriteByte('}')
	var out bytes.Buffer
	if err := json.Indent(&out, b.Bytes(), indentRow, "  "); err != nil {
		return nil, fmt.Errorf("format the row %s of node %s: %w", r.PK, node, err)
	}
	return out.Bytes(), nil
}

// aceMeta is ACE's "_spock_metadata_" of a row.
type aceMeta struct {
	CommitTS   *string `json:"commit_ts"`
	NodeOrigin *string `json:"node_origin"`
}

func aceMetaOf(meta map[string]engine.RowMeta, node string) aceMeta {
	m, ok := meta[node]
	if !ok {
		return aceMeta{}
	}
	out := aceMeta{NodeOrigin: m.NodeOrigin}
	if m.CommitTS != nil {
		ts := m.CommitTS.UTC().Format(time.RFC3339Nano)
		out.CommitTS = &ts
	}
	return out
}

// aceSummary is the summary of an ACE diff file, with ACE's keys in ACE's order.
type aceSummary struct {
	Schema                string           `json:"schema"`
	Table                 string           `json:"table"`
	TableFilter           string           `json:"table_filter,omitempty"`
	Nodes                 []string         `json:"nodes"`
	BlockSize             int              `json:"block_size"`
	CompareUnitSize       int              `json:"compare_unit_size"`
	ConcurrencyFactor     float64          `json:"concurrency_factor"`
	MaxDiffRows           int64            `json:"max_diff_rows"`
	StartTime             string           `json:"start_time"`
	EndTime               string           `json:"end_time"`
	TimeTaken             string           `json:"time_taken"`
	DiffRowsCount         map[string]int64 `json:"diff_rows_count"`
	DiffRowLimitReached   bool             `json:"diff_row_limit_reached"`
	TotalRowsChecked      int64            `json:"total_rows_checked"`
	InitialRangesCount    int              `json:"initial_ranges_count"`
	MismatchedRangesCount int              `json:"mismatched_ranges_count"`
	PrimaryKey            []string         `json:"primary_key"`
}

func aceSummaryOf(s *engine.DiffSummary) aceSummary {
	out := aceSummary{
		Schema: s.Schema, Table: s.Table, TableFilter: s.TableFilter, Nodes: s.Nodes,
		BlockSize: s.BlockSize, CompareUnitSize: s.CompareUnitSize, ConcurrencyFactor: s.ConcurrencyFactor,
		MaxDiffRows: s.MaxDiffRows, StartTime: s.StartTime.UTC().Format(time.RFC3339),
		EndTime: s.EndTime.UTC().Format(time.RFC3339), TimeTaken: s.TimeTaken, DiffRowsCount: s.DiffRowsCount,
		DiffRowLimitReached: s.DiffRowLimitReached, TotalRowsChecked: s.TotalRowsChecked,
		InitialRangesCount: s.InitialRangesCount, MismatchedRangesCount: s.MismatchedRangesCount, PrimaryKey: s.PrimaryKey,
	}
	if out.Nodes == nil {
		out.Nodes = []string{}
	}
	if out.DiffRowsCount == nil {
		out.DiffRowsCount = map[string]int64{}
	}
	if out.PrimaryKey == nil {
		out.PrimaryKey = []string{}
	}
	return out
}
