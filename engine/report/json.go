package report

import (
	"encoding/json"
	"io"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/acefile"
)

// writeJSON streams a diff's rows into ACE's diff-file format (acefile.WriteDiffFile): each
// node list of the file is one pass over the rows in primary-key order.
func writeJSON(w io.Writer, s *engine.DiffSummary, rows Rows) error {
	conv := converters(s.ColumnTypes) // per column of s.Columns
	list := func(pair [2]string, node string, emit func(acefile.Row) error) error {
		return rows(func(r engine.DiffRow) error {
			if !has(r, node) || !pairDiffers(r, pair) {
				return nil
			}
			row, err := aceRow(r, node, s.Columns, conv)
			if err != nil {
				return err
			}
			return emit(row)
		})
	}
	return acefile.WriteDiffFile(w, aceSummaryOf(s), s.Columns, list)
}

// aceRow is node's version of the row with its values as ACE writes them.
func aceRow(r engine.DiffRow, node string, columns []string, conv []valueConverter) (acefile.Row, error) {
	values, err := rowValues(r, node)
	if err != nil {
		return acefile.Row{}, err
	}
	out := acefile.Row{PK: r.PK, Values: make([]json.RawMessage, len(columns)), Meta: aceMetaOf(r.Meta, node)}
	for i, col := range columns {
		v, ok := values[col]
		if !ok {
			v = json.RawMessage("null")
		}
		out.Values[i] = conv[i](v)
	}
	return out, nil
}

// aceMetaOf is node's "_spock_metadata_" of a row.
func aceMetaOf(meta map[string]engine.RowMeta, node string) acefile.Meta {
	m, ok := meta[node]
	if !ok {
		return acefile.Meta{}
	}
	return acefile.MetaOf(m.CommitTS, m.NodeOrigin)
}

// aceSummaryOf is a diff's summary as ACE's diff file has it.
func aceSummaryOf(s *engine.DiffSummary) acefile.Summary {
	return acefile.Summary{
		Schema: s.Schema, Table: s.Table, TableFilter: s.TableFilter, Nodes: s.Nodes,
		BlockSize: s.BlockSize, CompareUnitSize: s.CompareUnitSize, ConcurrencyFactor: s.ConcurrencyFactor,
		MaxDiffRows: s.MaxDiffRows, StartTime: acefile.FormatTime(s.StartTime),
		EndTime: acefile.FormatTime(s.EndTime), TimeTaken: s.TimeTaken, DiffRowsCount: s.DiffRowsCount,
		DiffRowLimitReached: s.DiffRowLimitReached, TotalRowsChecked: s.TotalRowsChecked,
		InitialRangesCount: s.InitialRangesCount, MismatchedRangesCount: s.MismatchedRangesCount, PrimaryKey: s.PrimaryKey,
	}
}
