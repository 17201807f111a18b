package report

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ace-agent/ace-agent/engine"
)

// CSV layout. The header is
//
//	node_pair,node,diff_type,<the table's columns in table order>,_spock_metadata_.commit_ts,_spock_metadata_.node_origin
//
// and there is one record per row of each node list of the JSON diff file: for each node pair
// (sorted as in the JSON file), for each node of the pair, each row that node holds and the
// pair differs on, in primary-key order. diff_type is row_mismatch when both nodes of the pair
// hold the row, and missing_on_<other node> when only this node does (the node without the row
// has no record for it).
//
// Values are the stored ones: numbers and booleans as JSON writes them, everything else in
// PostgreSQL's text form (timestamps stay in PostgreSQL's ISO form, unlike the JSON file).
// The file is RFC 4180 (encoding/csv, \n line ends). NULL is written as \N, as COPY does, so
// that it differs from the empty string, which is an empty field. A value that is itself one
// or more backslashes followed by N gets one more backslash: \N is NULL, \\N is the text \N.
// With NULL '\N', PostgreSQL's COPY … (FORMAT csv, HEADER) reads the table columns back.
const (
	csvNull          = `\N`
	csvCommitTSCol   = "_spock_metadata_.commit_ts"
	csvNodeOriginCol = "_spock_metadata_.node_origin"
)

// Values of the diff_type column.
const (
	DiffTypeMismatch      = "row_mismatch"
	DiffTypeMissingPrefix = "missing_on_"
)

func writeCSV(w io.Writer, s *engine.DiffSummary, rows Rows) error {
	cw := csv.NewWriter(w)
	header := append([]string{"node_pair", "node", "diff_type"}, s.Columns...)
	header = append(header, csvCommitTSCol, csvNodeOriginCol)
	if err := cw.Write(header); err != nil {
		return fmt.Errorf("write csv: %w", err)
	}
	record := make([]string, len(header))
	for _, pair := range nodePairs(s.Nodes) {
		for i, node := range pair {
			other := pair[1-i]
			err := rows(func(r engine.DiffRow) error {
				if !has(r, node) || !pairDiffers(r, pair) {
					return nil
				}
				values, err := rowValues(r, node)
				if err != nil {
					return err
				}
				record = record[:0]
				diffType := DiffTypeMismatch
				if !has(r, other) {
					diffType = DiffTypeMissingPrefix + other
				}
				record = append(record, pairKey(pair), node, diffType)
				for _, col := range s.Columns {
					record = append(record, csvValue(values[col]))
				}
				meta := r.Meta[node]
				ts, origin := csvNull, csvNull
				if meta.CommitTS != nil {
					ts = meta.CommitTS.UTC().Format(time.RFC3339Nano)
				}
				if meta.NodeOrigin != nil {
					origin = csvEscape(*meta.NodeOrigin)
				}
				record = append(record, ts, origin)
				if err := cw.Write(record); err != nil {
					return fmt.Errorf("write csv: %w", err)
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("write csv: %w", err)
	}
	return nil
}

// csvValue is a stored value's CSV field: \N for NULL (or a column the row does not have), a
// string's text, a number's or boolean's JSON text.
func csvValue(v json.RawMessage) string {
	if len(v) == 0 || string(v) == "null" {
		return csvNull
	}
	if v[0] == '"' {
		var s string
		if err := json.Unmarshal(v, &s); err == nil {
			return csvEscape(s)
		}
	}
	return string(v)
}

// csvEscape gives a text that reads as the NULL mark (\N, \\N, …) one more backslash.
func csvEscape(s string) string {
	if isNullMark(s) {
		return `\` + s
	}
	return s
}

// isNullMark reports whether s is one or more backslashes followed by N.
func isNullMark(s string) bool {
	body, ok := strings.CutSuffix(s, "N")
	return ok && body != "" && strings.Trim(body, `\`) == ""
}

// CSVField reads a field of the CSV report back: ok is false for NULL.
func CSVField(field string) (value string, ok bool) {
	if field == csvNull {
		return "", false
	}
	if isNullMark(field) {
		return field[1:], true
	}
	return field, true
}
