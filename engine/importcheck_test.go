package engine_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine/diff"
	"github.com/ace-agent/ace-agent/internal/testcluster"
)

func TestImportChecksEveryRowAgainstTheTableBeforeStoringAny(t *testing.T) {
	t.Parallel()
	_, nodes := engineEnv(t, `CREATE TABLE imp (id int PRIMARY KEY, n numeric, at date)`)
	good := map[string]any{"id": 1, "n": "1.5", "at": "2024-01-01"}
	with := func(k string, v any) map[string]any {
		r := map[string]any{"id": 2, "n": "2", "at": "2024-01-02"}
		r[k] = v
		return r
	}
	without := func(k string) map[string]any {
		r := with("id", 2)
		delete(r, k)
		return r
	}
	bad := map[string]struct {
		file json.RawMessage
		msg  string
	}{
		"unknown column": {aceFile(t, "imp", []map[string]any{good, with("nope", 1)}, nil),
			`row 2 of node n1 in pair n1/n2: unknown column "nope": public.imp has no such column now (id, n, at)`},
		"missing column": {aceFile(t, "imp", []map[string]any{good}, []map[string]any{without("at")}),
			`row 1 of node n2 in pair n1/n2: no column "at"`},
		"missing key": {aceFile(t, "imp", []map[string]any{good, without("id")}, nil),
			`row 2 of node n1 in pair n1/n2: no column "id"`},
		"null key": {aceFile(t, "imp", []map[string]any{good, with("id", nil)}, nil),
			`row 2 of node n1 in pair n1/n2: no value for key column id`},
		"value of the wrong type": {aceFile(t, "imp", []map[string]any{good, with("at", "not a date")}, nil),
			`row 2 of node n1 in pair n1/n2: column "at": the value "not a date" is not a date`},
		"node outside its pair": {json.RawMessage(`{"diffs": {"n1/n2": {"rows": {"n3": []}}},
			"summary": {"schema": "public", "table": "imp", "nodes": ["n1", "n2", "n3"], "primary_key": ["id"]}}`),
			`pair n1/n2 lists rows of node n3, which is not one of the pair's nodes`},
	}
	for name, c := range bad {
		t.Run(name, func(t *testing.T) {
			sink := &testcluster.DiffSink{}
			_, err := diff.ImportACEDiff(context.Background(), nodes[0], c.file, sink, diff.ImportOptions{})
			require.ErrorContains(t, err, c.msg)
			require.Empty(t, sink.Rows, "nothing is stored from a file with a bad row")
		})
	}
}
