package acefile

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// DiffFile is the diff-file format of pgEdge ACE (its table-diff's JSON output):
//
//	{"diffs": {"n1/n2": {"rows": {"n1": [row…], "n2": [row…]}}, …}, "summary": {…}}
//
// A row is listed under a node pair when the two nodes differ on it, in the list of each node
// that has it; a row is an object of the table's columns plus MetaKey.
type DiffFile struct {
	Diffs   map[string]Pair `json:"diffs"`
	Summary Summary         `json:"summary"`
}

// Pair is one node pair's differing rows, by node.
type Pair struct {
	Rows map[string][]json.RawMessage `json:"rows"`
}

// Summary is the summary of an ACE diff file, with ACE's keys in ACE's order.
type Summary struct {
	Schema                string           `json:"schema"`
	Table                 string           `json:"table"`
	TableFilter           string           `json:"table_filter,omitempty"`
	Nodes                 []string         `json:"nodes"`
	BlockSize             int              `json:"block_size"`
	CompareUnitSize       int              `json:"compare_unit_size"`
	ConcurrencyFactor     float64          `json:"concurrency_factor"`
	MaxDiffRows           int64            `json:"max_diff_rows"`
	StartTime             string           `json:"start_time"` // RFC 3339, UTC
	EndTime               string           `json:"end_time"`
	TimeTaken             string           `json:"time_taken"`
	DiffRowsCount         map[string]int64 `json:"diff_rows_count"`
	DiffRowLimitReached   bool             `json:"diff_row_limit_reached"`
	TotalRowsChecked      int64            `json:"total_rows_checked"`
	InitialRangesCount    int              `json:"initial_ranges_count"`
	MismatchedRangesCount int              `json:"mismatched_ranges_count"`
	PrimaryKey            []string         `json:"primary_key"`
}

// MetaKey is the key of a row's commit metadata in ACE's diff files.
const MetaKey = "_spock_metadata_"

// Meta is a row's MetaKey: what the node knows of the transaction that last wrote it.
type Meta struct {
	CommitTS   *string `json:"commit_ts"` // RFC 3339 with fractional seconds
	NodeOrigin *string `json:"node_origin"`
}

// CommitTime parses CommitTS; nil when there is none.
func (m Meta) CommitTime() (*time.Time, error) {
	if m.CommitTS == nil {
		return nil, nil
	}
	ts, err := time.Parse(time.RFC3339Nano, *m.CommitTS)
	if err != nil {
		return nil, fmt.Errorf("read commit_ts %q: %w", *m.CommitTS, err)
	}
	return &ts, nil
}

// ReadDiffFile decodes an ACE diff file, keeping numbers exact.
func ReadDiffFile(file []byte) (*DiffFile, error) {
	var f DiffFile
	dec := json.NewDecoder(bytes.NewReader(file))
	dec.UseNumber()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("read the ACE diff file: %w", err)
	}
	return &f, nil
}

// PairNames lists the file's node pairs, sorted.
func (f *DiffFile) PairNames() []string { return slices.Sorted(maps.Keys(f.Diffs)) }

// SplitPair splits a pair's name ("n1/n2") into its two nodes; ok is false when it has no "/".
func SplitPair(name string) (pair []string, ok bool) {
	pair = strings.SplitN(name, "/", 2)
	return pair, len(pair) == 2
}

// SplitRow separates a row's columns from its MetaKey; meta is nil when the row has none.
func SplitRow(raw json.RawMessage) (map[string]json.RawMessage, *Meta, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, nil, err
	}
	m, ok := fields[MetaKey]
	delete(fields, MetaKey)
	if !ok || isNull(m) {
		return fields, nil, nil
	}
	var meta Meta
	if err := json.Unmarshal(m, &meta); err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", MetaKey, err)
	}
	return fields, &meta, nil
}

// CheckRowShape checks that a row of the file has exactly the columns of table (named as
// display).
func CheckRowShape(fields map[string]json.RawMessage, columns []string, display string) error {
	for _, name := range slices.Sorted(maps.Keys(fields)) {
		if !slices.Contains(columns, name) {
			return fmt.Errorf("unknown column %q: %s has no such column now (%s); diff the table again", name, display, strings.Join(columns, ", "))
		}
	}
	for _, name := range columns {
		if _, ok := fields[name]; !ok {
			return fmt.Errorf("no column %q: a row of an ACE diff file has every column of the table, and %s has it now; diff the table again", name, display)
		}
	}
	return nil
}

// Key is a row's key as the key columns' compacted JSON, as ACE wrote them: rows of the file
// with the same Key are versions of one row.
func Key(fields map[string]json.RawMessage, pk []string) (string, error) {
	parts := make([]string, len(pk))
	for i, name := range pk {
		v, ok := fields[name]
		if !ok || isNull(v) {
			return "", fmt.Errorf("no value for key column %s", name)
		}
		var b bytes.Buffer
		if err := json.Compact(&b, v); err != nil {
			return "", err
		}
		parts[i] = b.String()
	}
	return strings.Join(parts, "\x00"), nil
}

// isNull reports whether raw is absent or JSON null.
func isNull(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || string(t) == "null"
}
