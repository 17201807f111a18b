package report

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
)

func TestFileName(t *testing.T) {
	t.Parallel()
	at := time.Date(2025, 7, 22, 12, 3, 51, 0, time.FixedZone("x", 7200))
	s := &engine.DiffSummary{Schema: "my.schema", Table: "a.b/c"}
	require.Equal(t, "my_schema_a_b_c_diffs-20250722120351.json", FileName(s, "json", at))
	require.Equal(t, "my_schema_a_b_c_diffs-20250722100351.html", FileName(s, "html", at.UTC()))
	require.Equal(t, "public_t_diffs-20250722120351.csv", FileName(testSummary(), "csv", at))
}

func TestTaskFileNameIsUniquePerTask(t *testing.T) {
	t.Parallel()
	at := time.Date(2025, 7, 22, 12, 3, 51, 0, time.UTC)
	id := uuid.MustParse("0b7e6a52-3a6c-4f55-9b1e-2f0c8a4d5e61")
	require.Equal(t, "my_schema_a_b_c_diffs-20250722120351-0b7e6a52-3a6c-4f55-9b1e-2f0c8a4d5e61.json",
		TaskFileName(&engine.DiffSummary{Schema: "my.schema", Table: "a.b/c"}, "json", at, id))
	// Tables that ACE's name alone cannot tell apart, diffed in the same second.
	abc, abC := &engine.DiffSummary{Schema: "a", Table: "b_c"}, &engine.DiffSummary{Schema: "a_b", Table: "c"}
	require.Equal(t, FileName(abc, "csv", at), FileName(abC, "csv", at))
	require.NotEqual(t, TaskFileName(abc, "csv", at, uuid.New()), TaskFileName(abC, "csv", at, uuid.New()))
}

func TestWriteErrors(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	var b bytes.Buffer
	err := Write(ctx, &b, "xml", testSummary(), sliceRows(testRows(), nil))
	require.EqualError(t, err, `unsupported report format "xml": use json, html, csv`)

	s := testSummary()
	s.ColumnTypes = s.ColumnTypes[1:]
	require.ErrorContains(t, Write(ctx, &b, "json", s, sliceRows(nil, nil)), "does not list the table's columns")

	boom := errors.New("boom")
	failing := func(func(engine.DiffRow) error) error { return boom }
	// The subtests share b and, below, cctx: they run sequentially, without t.Parallel.
	for _, f := range Formats {
		t.Run("failing rows/"+f, func(t *testing.T) {
			require.ErrorIs(t, Write(ctx, &b, f, testSummary(), failing), boom, f)
		})
	}

	// A cancelled context stops a pass.
	cctx, cancel := context.WithCancel(ctx)
	passes := 0
	rows := func(fn func(engine.DiffRow) error) error {
		cancel()
		return sliceRows(testRows(), &passes)(fn)
	}
	for _, f := range Formats {
		t.Run("cancelled/"+f, func(t *testing.T) {
			require.ErrorIs(t, Write(cctx, &b, f, testSummary(), rows), context.Canceled, f)
		})
	}

	// A row that is not a JSON object.
	bad := testRows()[:1]
	bad[0].Rows["n1"] = []byte(`[1]`)
	for _, f := range Formats {
		t.Run("not an object/"+f, func(t *testing.T) {
			require.ErrorContains(t, Write(ctx, &b, f, testSummary(), sliceRows(bad, nil)), "decode the row", f)
		})
	}
}

// TestPasses checks that every format streams: it reads the rows a fixed number of times,
// whatever their number.
func TestPasses(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		format string
		want   int
	}{
		{"json", 6}, {"csv", 6}, {"html", 1 + 3*3},
	} {
		t.Run(c.format, func(t *testing.T) {
			t.Parallel()
			passes := 0
			var b bytes.Buffer
			require.NoError(t, Write(t.Context(), &b, c.format, testSummary(), sliceRows(testRows(), &passes)))
			require.LessOrEqual(t, passes, c.want, c.format)
		})
	}
}
