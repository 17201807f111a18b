package acefile

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"time"
)

// Indentation of the parts of an ACE diff file, as json.Encoder writes it with a two-space indent.
const (
	indentPair = "    "
	indentNode = "        "
	indentRow  = "          "
)

// Row is one node's version of a differing row, as WriteDiffFile writes it.
type Row struct {
	PK     json.RawMessage   // the key, to name the row in errors
	Values []json.RawMessage // the values of WriteDiffFile's columns, in their order, as ACE writes them
	Meta   Meta
}

// ListFunc emits, in primary-key order, the rows node holds that differ between pair's two nodes.
// It stops at, and returns, the first error emit returns.
type ListFunc func(pair [2]string, node string, emit func(Row) error) error

// WriteDiffFile streams a diff file to w as ACE lays it out: for each pair of NodePairs(s.Nodes),
// the list of each of its nodes, which list calls once each; then the summary. columns names
// the values of each Row.
func WriteDiffFile(w io.Writer, s Summary, columns []string, list ListFunc) error {
	out := &errWriter{w: w}
	out.str("{\n  \"diffs\": {")
	for i, pair := range NodePairs(s.Nodes) {
		if i > 0 {
			out.str(",")
		}
		out.str("\n" + indentPair + jsonString(PairKey(pair)) + ": {\n      \"rows\": {")
		for j, node := range pair {
			if j > 0 {
				out.str(",")
			}
			out.str("\n" + indentNode + jsonString(node) + ": [")
			if err := writeList(out, columns, node, pair, list); err != nil {
				return err
			}
		}
		out.str("\n      }\n    }")
	}
	out.str("\n  },\n  \"summary\": ")
	summary, err := json.MarshalIndent(s.withEmptyLists(), "  ", "  ")
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

// withEmptyLists writes absent lists and maps as empty ones, as ACE does.
func (s Summary) withEmptyLists() Summary {
	if s.Nodes == nil {
		s.Nodes = []string{}
	}
	if s.DiffRowsCount == nil {
		s.DiffRowsCount = map[string]int64{}
	}
	if s.PrimaryKey == nil {
		s.PrimaryKey = []string{}
	}
	return s
}

// writeList writes one node's list of a pair.
func writeList(out *errWriter, columns []string, node string, pair [2]string, list ListFunc) error {
	n := 0
	err := list(pair, node, func(r Row) error {
		row, err := rowObject(columns, r, node)
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

// rowObject renders a row as ACE does: the table's columns in order, then MetaKey, indented for
// its place in the file.
func rowObject(columns []string, r Row, node string) ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, col := range columns {
		b.WriteString(jsonString(col) + ":")
		b.Write(r.Values[i])
		b.WriteByte(',')
	}
	meta, err := json.Marshal(r.Meta)
	if err != nil {
		return nil, fmt.Errorf("encode row metadata: %w", err)
	}
	b.WriteString(jsonString(MetaKey) + ":")
	b.Write(meta)
	b.WriteByte('}')
	var out bytes.Buffer
	if err := json.Indent(&out, b.Bytes(), indentRow, "  "); err != nil {
		return nil, fmt.Errorf("format the row %s of node %s: %w", r.PK, node, err)
	}
	return out.Bytes(), nil
}

// MetaOf is the MetaKey of a row last written at commitTS (nil: unknown) by origin.
func MetaOf(commitTS *time.Time, origin *string) Meta {
	out := Meta{NodeOrigin: origin}
	if commitTS != nil {
		ts := commitTS.UTC().Format(time.RFC3339Nano)
		out.CommitTS = &ts
	}
	return out
}

// FormatTime is a summary's start_time or end_time.
func FormatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// ParseTime reads a summary's start_time or end_time; the zero time when it does not parse.
func ParseTime(s string) time.Time {
	t, _ := time.Parse(time.RFC3339, s)
	return t
}

// NodePairs lists the pairs of nodes, each pair and the list sorted by name, as ACE keys them.
func NodePairs(nodes []string) [][2]string {
	sorted := append([]string(nil), nodes...)
	sort.Strings(sorted)
	var pairs [][2]string
	for i, a := range sorted {
		for _, b := range sorted[i+1:] {
			pairs = append(pairs, [2]string{a, b})
		}
	}
	return pairs
}

// PairKey is a sorted pair's name in a diff file ("n1/n2").
func PairKey(pair [2]string) string { return pair[0] + "/" + pair[1] }

// errWriter remembers the first write error, so a long sequence of writes checks it once.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) bytes(b []byte) {
	if e.err == nil {
		_, e.err = e.w.Write(b)
	}
}

func (e *errWriter) str(s string) { e.bytes([]byte(s)) }

// jsonString quotes s as a JSON string.
func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
