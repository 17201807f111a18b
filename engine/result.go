package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"time"
)

// Kinds of differing rows.
const (
	KindMissing  = "missing"  // absent on at least one node
	KindModified = "modified" // present everywhere, not identical everywhere
	// KindMissingRange is a whole key range that some nodes (the holders) hold identically and
	// the others do not hold at all: every key in it is missing there. Stored as one row
	// (DiffRow.Range) instead of one per key; see KeyRange.
	KindMissingRange = "missing_range"
)

// KeyRange is a range of keys stored as one differing row: [Lo, Hi) (nil: open), the nodes
// holding the same Rows rows there (equal count and hash lanes on each), and the nodes holding
// none. A repair copies it whole, after checking, in its own transaction, that the holder still
// has this count and these lanes and the target still holds no row of it.
type KeyRange struct {
	Lo      []string `json:"lo"` // key column values as text; nil: open
	Hi      []string `json:"hi"`
	Rows    int64    `json:"rows"`  // rows each holder has in the range
	Lane1   string   `json:"lane1"` // the holders' summed hash lanes (SummarySQL)
	Lane2   string   `json:"lane2"`
	Holders []string `json:"holders"` // nodes holding the rows, sorted
	Empty   []string `json:"empty"`   // nodes holding none of them, sorted
}

// Range is the key range as a Range.
func (k *KeyRange) Range() Range { return Range{Lo: k.Lo, Hi: k.Hi} }

// DiffRow is one primary key whose row is not the same on every compared node.
type DiffRow struct {
	PK json.RawMessage `json:"pk"` // the key as a JSON object
	// PKSort is the key's values as a JSON array in key order; jsonb orders arrays element by
	// element, so sorting by it sorts by the key (jsonb orders object keys by length first).
	PKSort json.RawMessage            `json:"pk_sort"`
	Kind   string                     `json:"kind"` // KindMissing or KindModified
	Rows   map[string]json.RawMessage `json:"rows"` // node -> row as a JSON object, or JSON null where absent
	// Versions groups the nodes that hold the row: nodes with the same number hold identical
	// rows (by the row hash, so 3000.0 and 3000.00 are one version). Absent nodes are left out.
	Versions map[string]int     `json:"versions"`
	Meta     map[string]RowMeta `json:"meta,omitempty"`
	// Range is set for a KindMissingRange row, which stands for Range.Rows keys: then PK and
	// PKSort name the range's bounds, Rows lists every node with a null row and Versions numbers
	// the holders 1.
	Range *KeyRange `json:"range,omitempty"`
}

// Keys is how many keys the row stands for: one, or a range's rows.
func (d DiffRow) Keys() int64 {
	if d.Range != nil {
		return d.Range.Rows
	}
	return 1
}

// NullRow is a row that is absent on a node, as DiffRow.Rows holds it.
var NullRow = json.RawMessage("null")

// IsNullRow reports whether raw is an absent row: empty, or JSON null.
func IsNullRow(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || string(raw) == "null"
}

// RowMeta is what a node knows about the transaction that last wrote a row.
type RowMeta struct {
	CommitTS   *time.Time `json:"commit_ts"`
	NodeOrigin *string    `json:"node_origin"`
}

// Sink receives differing rows as they are found, in batches.
type Sink interface {
	WriteDiffRows(ctx context.Context, rows []DiffRow) error
}

// Progress is how far a diff has come.
type Progress struct {
	Phase         string `json:"phase"`
	BlocksTotal   int    `json:"blocks_total"`
	BlocksDone    int    `json:"blocks_done"`
	RowsHashed    int64  `json:"rows_hashed"`
	DifferingKeys int64  `json:"differing_keys"`
}

// ProgressFunc is told about progress; it must not block for long.
type ProgressFunc func(Progress)

// DiffSummary is a table-diff's outcome. The keys shared with ACE's diff-file summary have the
// same names and meanings, except total_rows_checked, which is a real count.
type DiffSummary struct {
	Schema                string           `json:"schema"`
	Table                 string           `json:"table"`
	TableName             string           `json:"table_name"`
	TableFilter           string           `json:"table_filter,omitempty"`
	Nodes                 []string         `json:"nodes"`
	BlockSize             int              `json:"block_size"`
	CompareUnitSize       int              `json:"compare_unit_size"`
	ConcurrencyFactor     float64          `json:"concurrency_factor"`
	MaxDiffRows           int64            `json:"max_diff_rows"`
	StartTime             time.Time        `json:"start_time"`
	EndTime               time.Time        `json:"end_time"`
	TimeTaken             string           `json:"time_taken"`
	TimeTakenSeconds      float64          `json:"time_taken_seconds"`
	DiffRowsCount         map[string]int64 `json:"diff_rows_count"`
	DiffRowLimitReached   bool             `json:"diff_row_limit_reached"`
	TotalRowsChecked      int64            `json:"total_rows_checked"`
	RowsPerNode           map[string]int64 `json:"rows_per_node"`
	InitialRangesCount    int              `json:"initial_ranges_count"`
	MismatchedRangesCount int              `json:"mismatched_ranges_count"`
	PrimaryKey            []string         `json:"primary_key"`
	Columns               []string         `json:"columns"`
	ColumnTypes           []string         `json:"column_types"`
	// CompareColumns is the table-diff's columns option: when set, only these columns and the
	// key were compared (Columns lists them), and the rows stored hold only them.
	CompareColumns []string            `json:"compare_columns,omitempty"`
	DifferingKeys  int64               `json:"differing_keys"`
	AgainstOrigin  string              `json:"against_origin,omitempty"`
	OriginIDs      map[string][]uint32 `json:"against_origin_ids,omitempty"` // per node: the origins that stand for it
	OriginOnly     bool                `json:"origin_only,omitempty"`
	Until          *time.Time          `json:"until,omitempty"`
	RecheckAfter   string              `json:"recheck_after,omitempty"`
	TransientDiffs int64               `json:"transient_diffs"` // differences gone by the recheck: replication in flight
	HashMode       HashMode            `json:"hash_mode"`
	// KeyRanges is how many differing rows are key ranges stored whole (KindMissingRange).
	KeyRanges   int64 `json:"key_ranges,omitempty"`
	HashVersion int   `json:"hash_version"`
	// LeafSummary is how the table-diff's blocks summarised their leaves on every node (see
	// engine.LeafDigestSQL): "ordered" digests or additive "lanes"; empty for other diffs.
	LeafSummary string   `json:"leaf_summary,omitempty"`
	Warnings    []string `json:"warnings,omitempty"`
	ReportFile  string   `json:"report_file,omitempty"` // the output report, on the agent\'s host
	// Mtree describes how a Merkle tree diff used the trees; nil for a table-diff.
	Mtree *MtreeStats `json:"mtree,omitempty"`
}

// MtreeStats is what a Merkle tree diff did with the trees.
type MtreeStats struct {
	Leaves           int               `json:"leaves"`
	LeafRows         int               `json:"leaf_rows"`
	LeafSummary      string            `json:"leaf_summary"`     // "ordered" digests or additive "lanes"
	LeavesRefreshed  map[string]int    `json:"leaves_refreshed"` // per node: stale leaves hashed again
	MismatchedLeaves int               `json:"mismatched_leaves"`
	SettledLeaves    int               `json:"settled_by_changed_keys"` // mismatched leaves whose changed keys explained them
	Splits           int               `json:"splits"`
	Merges           int               `json:"merges"`
	CaughtUpTo       map[string]string `json:"caught_up_to"` // per node: the WAL position the tree reflects at least
	CatchUpSeconds   float64           `json:"catch_up_seconds"`
	// PhaseSeconds times the phases: prepare, catch_up, lock, refresh, rebalance, compare, narrow.
	PhaseSeconds map[string]float64 `json:"phase_seconds"`
}

// InSync reports whether no differences were found.
func (s *DiffSummary) InSync() bool { return s.DifferingKeys == 0 }
