package report

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
)

// The test diff: table public.t (region text, id bigint, name text, note text, amount
// numeric(12,2), flag boolean, created timestamptz), primary key (region, id), on n1, n2, n3.
//
//	eu/1  n2 changed the middle of name: alpha-OLD-omega → alpha-NEW-omega
//	eu/2  missing on n3
//	eu/3  note is NULL on n1 and '' on n2 and n3
//	eu/4  note is <b>"&' on n1 and plain on n2 and n3
//	us/5  only on n2 (missing on n1 and n3); note is the text \N
const (
	changedOld = "alpha-OLD-omega"
	changedNew = "alpha-NEW-omega"
	markup     = `<b>"&'`
)

var testColumns = []string{"region", "id", "name", "note", "amount", "flag", "created"}

func testSummary() *engine.DiffSummary {
	start := time.Date(2025, 7, 22, 12, 3, 51, 0, time.UTC)
	return &engine.DiffSummary{
		Schema: "public", Table: "t", TableName: "public.t",
		Nodes:     []string{"n1", "n2", "n3"},
		BlockSize: 100000, CompareUnitSize: 10000, ConcurrencyFactor: 0.5, MaxDiffRows: 1000000,
		StartTime: start, EndTime: start.Add(1920 * time.Millisecond), TimeTaken: "1.92s", TimeTakenSeconds: 1.92,
		DiffRowsCount:    map[string]int64{"n1/n2": 4, "n1/n3": 3, "n2/n3": 3},
		TotalRowsChecked: 15, RowsPerNode: map[string]int64{"n1": 4, "n2": 5, "n3": 3},
		InitialRangesCount: 2, PrimaryKey: []string{"region", "id"},
		Columns:       testColumns,
		ColumnTypes:   []string{"text", "bigint", "text", "text", "numeric(12,2)", "boolean", "timestamp with time zone"},
		DifferingKeys: 5, TableFilter: "id < 1000", RecheckAfter: "5s", TransientDiffs: 2,
	}
}

// row builds a stored row: values in testColumns order, nil for NULL.
func row(values ...any) json.RawMessage {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, v := range values {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(testColumns[i])
		b.Write(k)
		b.WriteByte(':')
		val, err := json.Marshal(v)
		if err != nil {
			panic(err)
		}
		b.Write(val)
	}
	b.WriteByte('}')
	return b.Bytes()
}

const ts = "2024-01-02 03:04:05.5+00"

func testRows() []engine.DiffRow {
	commit := time.Date(2025, 7, 22, 12, 0, 0, 123456000, time.UTC)
	local, n1 := "local", "n1"
	meta := map[string]engine.RowMeta{"n1": {CommitTS: &commit, NodeOrigin: &local}, "n2": {CommitTS: &commit, NodeOrigin: &n1}}
	amount := json.RawMessage(`"3000.50"`)
	return []engine.DiffRow{
		{PK: json.RawMessage(`{"region":"eu","id":1}`), Kind: engine.KindModified, Meta: meta,
			Rows: map[string]json.RawMessage{
				"n1": row("eu", 1, changedOld, "x", amount, true, ts),
				"n2": row("eu", 1, changedNew, "x", json.RawMessage(`"3000.5"`), true, ts),
				"n3": row("eu", 1, changedOld, "x", amount, true, ts),
			},
			Versions: map[string]int{"n1": 1, "n2": 2, "n3": 1}},
		{PK: json.RawMessage(`{"region":"eu","id":2}`), Kind: engine.KindMissing, Meta: meta,
			Rows: map[string]json.RawMessage{
				"n1": row("eu", 2, "two", "y", amount, false, ts),
				"n2": row("eu", 2, "two", "y", amount, false, ts),
				"n3": json.RawMessage("null"),
			},
			Versions: map[string]int{"n1": 1, "n2": 1}},
		{PK: json.RawMessage(`{"region":"eu","id":3}`), Kind: engine.KindModified,
			Rows: map[string]json.RawMessage{
				"n1": row("eu", 3, "three", nil, nil, nil, nil),
				"n2": row("eu", 3, "three", "", nil, nil, nil),
				"n3": row("eu", 3, "three", "", nil, nil, nil),
			},
			Versions: map[string]int{"n1": 1, "n2": 2, "n3": 2}},
		{PK: json.RawMessage(`{"region":"eu","id":4}`), Kind: engine.KindModified,
			Rows: map[string]json.RawMessage{
				"n1": row("eu", 4, "four", markup, amount, true, ts),
				"n2": row("eu", 4, "four", "plain", amount, true, ts),
				"n3": row("eu", 4, "four", "plain", amount, true, ts),
			},
			Versions: map[string]int{"n1": 1, "n2": 2, "n3": 2}},
		{PK: json.RawMessage(`{"region":"us","id":5}`), Kind: engine.KindMissing,
			Rows: map[string]json.RawMessage{
				"n1": json.RawMessage("null"),
				"n2": row("us", 5, "five", `\N`, amount, false, ts),
				"n3": json.RawMessage("null"),
			},
			Versions: map[string]int{"n2": 1}},
	}
}

// sliceRows streams rows and counts the passes.
func sliceRows(rows []engine.DiffRow, passes *int) Rows {
	return func(fn func(engine.DiffRow) error) error {
		if passes != nil {
			*passes++
		}
		for _, r := range rows {
			if err := fn(r); err != nil {
				return err
			}
		}
		return nil
	}
}

func render(t *testing.T, format string) []byte {
	t.Helper()
	var b bytes.Buffer
	require.NoError(t, Write(context.Background(), &b, format, testSummary(), sliceRows(testRows(), nil)))
	return b.Bytes()
}
