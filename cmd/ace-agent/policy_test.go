package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// TestRepairPolicyCommands: create, list, run (with --wait and its exit codes), pause, resume and
// drop.
func TestRepairPolicyCommands(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	createTable(e, 10)
	n1 := e.Node("n1")
	for _, n := range e.Nodes {
		n.StartAgent(t)
	}
	e.Node("n2").Exec(t, `UPDATE t SET v = 'drift' WHERE id = 4`)

	r := ace(t, n1.DSN, "repair-policy", "create", "fix", "public.t", "--strategy", "source_of_truth", "--source-of-truth", "n1",
		"--every", "1h", "--recheck-after", "0s")
	require.Equal(t, exitOK, r.code, r)
	require.Regexp(t, `^repair policy fix saved: first due at \d{4}-`, r.stdout)
	r = ace(t, n1.DSN, "repair-policy", "create", "held", "public.t", "--strategy", "source_of_truth", "--source-of-truth", "n1",
		"--max-rows", "1", "--recheck-after", "0s")
	require.Equal(t, exitOK, r.code, r)
	require.Contains(t, r.stdout, "no timer")
	r = ace(t, n1.DSN, "repair-policy", "create", "bad", "public.t", "--strategy", "majority", "--nodes", "n1,n2")
	require.Equal(t, exitError, r.code, r)
	require.Contains(t, r.stderr, "strategy majority needs three or more active nodes")

	e.Node("n3").Exec(t, `UPDATE t SET v = 'drift' WHERE id = 5`)
	r = ace(t, n1.DSN, "repair-policy", "run", "held", "--wait", "--quiet")
	require.Equal(t, exitDiffers, r.code, r)
	require.Regexp(t, `run \S+: held: (at least )?2 keys differ, more than max_rows \(1\)`, r.stdout)

	r = ace(t, n1.DSN, "repair-policy", "run", "fix", "--wait", "--quiet")
	require.Equal(t, exitOK, r.code, r)
	require.Contains(t, r.stdout, ": repaired (2 differing, 0 inserted, 2 updated, 0 deleted, 0 still differ)")
	r = ace(t, n1.DSN, "repair-policy", "run", "held", "--wait", "--quiet")
	require.Equal(t, exitOK, r.code, r)
	require.Regexp(t, `run \S+: in_sync\n$`, r.stdout)

	r = ace(t, n1.DSN, "repair-policy", "pause", "fix")
	require.Equal(t, exitOK, r.code, r)
	r = ace(t, n1.DSN, "repair-policy", "list")
	require.Equal(t, exitOK, r.code, r)
	require.Regexp(t, `(?m)^NAME +OWNER +TABLE +STRATEGY +TRIGGER +WHEN +ENABLED +NEXT DUE +LAST OUTCOME +LAST REASON$`, r.stdout)
	require.Regexp(t, `(?m)^fix +postgres +public\.t +source_of_truth +schedule +every 01:00:00 +false +\S+ +repaired\s*$`, r.stdout)
	require.Regexp(t, `(?m)^held +postgres +public\.t +source_of_truth +schedule +by hand +false +in_sync\s*$`, r.stdout)
	r = ace(t, n1.DSN, "repair-policy", "resume", "fix")
	require.Equal(t, exitOK, r.code, r)
	r = ace(t, n1.DSN, "repair-policy", "list", "--json")
	require.Equal(t, exitOK, r.code, r)
	var listed []sqlapi.RepairPolicy
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &listed), r)
	require.Len(t, listed, 2)
	require.True(t, listed[0].Enabled)

	r = ace(t, n1.DSN, "repair-policy", "drop", "fix")
	require.Equal(t, exitOK, r.code, r)
	r = ace(t, n1.DSN, "repair-policy", "drop", "fix")
	require.Equal(t, exitError, r.code, r)
	require.Contains(t, r.stderr, `you have no repair policy "fix"`)
}

// TestRepairPolicyImportOfACEAutoRepair: ACE's auto_repair_config becomes one paused
// spock_exceptions policy per table, latest_commit, every repair_frequency, with notes.
func TestRepairPolicyImportOfACEAutoRepair(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	createTable(e, 10)
	e.ExecAll(`CREATE TABLE u (id int PRIMARY KEY)`)
	n1 := e.Node("n1")
	file := filepath.Join(t.TempDir(), "ace.yaml")
	require.NoError(t, os.WriteFile(file, []byte(`default_cluster: demo
auto_repair_config: {enabled: false, cluster_name: "demo", dbname: "app", poll_frequency: 10m, repair_frequency: 15m}
`), 0o600))

	r := ace(t, n1.DSN, "repair-policy", "import", file, "--dry-run")
	require.Equal(t, exitOK, r.code, r)
	var specs []sqlapi.RepairPolicySpec
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &specs), r)
	require.Len(t, specs, 2, "every table with a primary key")
	require.Equal(t, sqlapi.RepairPolicySpec{Name: "auto_repair_public_t", TableName: "public.t", Strategy: "latest_commit",
		Trigger: "spock_exceptions", Every: "900 seconds", Scope: "node", Enabled: new(false)}, specs[0])
	require.Contains(t, r.stderr, "poll_frequency \"10m\" has no use of its own")
	require.Contains(t, r.stderr, "the policies are made paused")

	r = ace(t, n1.DSN, "repair-policy", "import", file, "--tables", "public.u")
	require.Equal(t, exitOK, r.code, r)
	require.Contains(t, r.stdout, "repair policy auto_repair_public_u imported")
	all, err := sqlapi.RepairPolicies(t.Context(), n1.Pool)
	require.NoError(t, err)
	require.Len(t, all, 1)
	require.Equal(t, "spock_exceptions", all[0].Trigger)
	require.False(t, all[0].Enabled)
	require.Equal(t, "00:15:00", *all[0].Every)

	require.NoError(t, os.WriteFile(file, []byte("default_cluster: demo\n"), 0o600))
	r = ace(t, n1.DSN, "repair-policy", "import", file)
	require.Equal(t, exitError, r.code, r)
	require.Contains(t, r.stderr, "no auto_repair_config block")
}
