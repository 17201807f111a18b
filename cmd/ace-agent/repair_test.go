package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/acesample"
	"github.com/ace-agent/ace-agent/internal/testcluster"
)

var repairSubmittedRE = regexp.MustCompile(`table-repair task ([0-9a-f-]{36}) submitted`)

// driftEnv is public.t with 1000 rows, n2 and n3 drifted, and an agent on n1.
func driftEnv(t *testing.T) (*testcluster.Env, *testcluster.Node) {
	e := testcluster.New(t)
	createTable(e, 1000)
	e.Node("n2").Exec(t, `UPDATE t SET v = 'changed' WHERE id = 500`)
	e.Node("n3").Exec(t, `DELETE FROM t WHERE id = 7`)
	e.Node("n3").Exec(t, `INSERT INTO t VALUES (5000, 'extra')`)
	n1 := e.Node("n1")
	n1.StartAgent(t)
	return e, n1
}

func TestTableRepairCommand(t *testing.T) {
	t.Parallel()
	_, n1 := driftEnv(t)
	r := ace(t, n1.DSN, "table-diff", "public.t", "-q")
	require.Equal(t, exitDiffers, r.code, r)
	diff := submittedID(t, r).String()

	r = ace(t, n1.DSN, "table-repair", "--diff-task", diff, "-r", "n1", "--dry-run")
	require.Equal(t, exitOK, r.code, r)
	require.Contains(t, r.stdout, "DRY RUN: public.t (source_of_truth), nothing was changed\n")
	require.Contains(t, r.stdout, "  n3: 1 would be inserted, 0 would be updated, 1 would be deleted, 0 skipped\n")

	r = ace(t, n1.DSN, "table-rerun", "--diff-task", diff)
	require.Equal(t, exitDiffers, r.code, r)
	require.Contains(t, r.stdout, "✘ TABLES DO NOT MATCH: public.t\n")

	r = ace(t, n1.DSN, "table-repair", "public.t", "--diff-task", diff, "--source-of-truth", "n1", "--atomic")
	require.Equal(t, exitOK, r.code, r)
	id := repairSubmittedRE.FindStringSubmatch(r.stderr)
	require.NotNil(t, id, r)
	require.Contains(t, r.stdout, "✔ REPAIRED: public.t (source_of_truth)\n"+
		"  n2: 0 inserted, 1 updated, 0 deleted, 0 skipped\n"+
		"  n3: 1 inserted, 0 updated, 1 deleted, 0 skipped\n", r)

	r = ace(t, n1.DSN, "table-rerun", "--diff-task", diff)
	require.Equal(t, exitOK, r.code, r)
	require.Contains(t, r.stdout, "✔ All previously reported differences have been resolved: public.t on n1, n2, n3\n")
	r = ace(t, n1.DSN, "table-diff", "public.t")
	require.Equal(t, exitOK, r.code, r)

	r = ace(t, n1.DSN, "repair", "export", id[1], "-o", "-")
	require.Equal(t, exitOK, r.code, r)
	var report struct {
		OperationType string                                 `json:"operation_type"`
		Changes       map[string]map[string][]map[string]any `json:"changes"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &report), r)
	require.Equal(t, "table-repair", report.OperationType)
	require.EqualValues(t, 7, report.Changes["n3"]["upserted_rows"][0]["id"])
	require.EqualValues(t, 5000, report.Changes["n3"]["deleted_rows"][0]["id"])
}

func TestTableRepairExitCodes(t *testing.T) {
	t.Parallel()
	e, n1 := driftEnv(t)
	r := ace(t, n1.DSN, "table-diff", "public.t", "-q")
	diff := submittedID(t, r).String()

	r = ace(t, n1.DSN, "table-repair", "--diff-task", diff, "--bidirectional", "--upsert-only")
	require.Equal(t, exitError, r.code, r)
	require.Contains(t, r.stderr, "ace-agent: submit table-repair: bidirectional and upsert_only cannot be combined\nhint: ", r)
	r = ace(t, n1.DSN, "table-repair", "--diff-task", diff)
	require.Equal(t, exitError, r.code, r)
	require.Contains(t, r.stderr, "source_of_truth is required", r)
	r = ace(t, n1.DSN, "table-repair", "-r", "n1")
	require.Equal(t, exitError, r.code, r)
	require.Contains(t, r.stderr, "at least one of the flags in the group [diff-task diff-file] is required", r)
	r = ace(t, n1.DSN, "table-repair", "public.other", "--diff-task", diff, "-r", "n1")
	require.Equal(t, exitError, r.code, r)

	// A row that moved on after the diff is skipped: exit 1.
	e.Node("n2").Exec(t, `UPDATE t SET v = 'moved on' WHERE id = 500`)
	r = ace(t, n1.DSN, "table-repair", "--diff-task", diff, "-r", "n1")
	require.Equal(t, exitDiffers, r.code, r)
	require.Contains(t, r.stdout, "✘ NOT FULLY REPAIRED: public.t (source_of_truth)\n", r)
	require.Contains(t, r.stdout, "  n2: 0 inserted, 0 updated, 0 deleted, 1 skipped (changed_since_diff 1)\n", r)
	require.Contains(t, r.stdout, "1 row was left unrepaired", r)

	// A node that fails: exit 2, naming what each node got.
	e.Node("n2").Exec(t, `ALTER TABLE t ADD CONSTRAINT no_v500 CHECK (v <> 'v500') NOT VALID`)
	r = ace(t, n1.DSN, "table-repair", "--diff-task", diff, "-r", "n1", "--check-unchanged=false")
	require.Equal(t, exitError, r.code, r)
	require.Contains(t, r.stderr, "failed on n2: ", r)
	require.Contains(t, r.stderr, "hint: what each node got: SELECT * FROM ace.repair_rows(", r)
}

func TestTableRepairFromACEDiffFile(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	pools := map[string]*pgxpool.Pool{}
	for _, n := range e.Nodes {
		pools[n.Name] = n.Pool
	}
	require.NoError(t, acesample.Load(context.Background(), pools))
	n1 := e.Node("n1")
	n1.StartAgent(t)
	dir := t.TempDir()

	r := aceIn(t, dir, n1.DSN, "table-rerun", "-f", acesample.Path())
	require.Equal(t, exitDiffers, r.code, r)
	require.Regexp(t, `diff-import task [0-9a-f-]{36} submitted for `, r.stderr)
	require.Contains(t, r.stdout, "  n2/n3: 20 differing rows\n", r)

	r = aceIn(t, dir, n1.DSN, "table-repair", acesample.Table, "--diff-file", acesample.Path(), "-r", "n1", "-g")
	require.Equal(t, exitOK, r.code, r)
	require.Contains(t, r.stdout, "✔ REPAIRED: public.customers_sample (source_of_truth)\n", r)
	m := regexp.MustCompile(`repair report written to (\S+)`).FindStringSubmatch(r.stderr)
	require.NotNil(t, m, r)
	require.Regexp(t, `^reports/\d{4}-\d{2}-\d{2}/repair_report_\d{6}\.\d{3}\.json$`, m[1])
	raw, err := os.ReadFile(filepath.Join(dir, m[1]))
	require.NoError(t, err)
	var report map[string]any
	require.NoError(t, json.Unmarshal(raw, &report))
	require.Equal(t, "LIVE_RUN", report["mode"])

	r = ace(t, n1.DSN, "table-diff", acesample.Table)
	require.Equal(t, exitOK, r.code, r)
}
