package main

import (
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

func TestTableDiffInSync(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	createTable(e, 1000)
	n1 := e.Node("n1")
	n1.StartAgent(t)

	r := ace(t, n1.DSN, "table-diff", "public.t")
	require.Equal(t, exitOK, r.code, r)
	require.Contains(t, r.stdout, "✔ TABLES MATCH: public.t on n1, n2, n3 (1,000 rows checked in ", r)
	submittedID(t, r)
}

func TestTableDiffDifferences(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	createTable(e, 1000)
	e.Node("n2").Exec(t, `UPDATE t SET v = 'changed' WHERE id = 500`)
	e.Node("n3").Exec(t, `DELETE FROM t WHERE id = 7`)
	n1 := e.Node("n1")
	n1.StartAgent(t)

	r := ace(t, n1.DSN, "table-diff", "public.t")
	require.Equal(t, exitDiffers, r.code, r)
	id := submittedID(t, r)
	require.Equal(t, "✘ TABLES DO NOT MATCH: public.t\n"+
		"  n1/n2: 1 differing row\n"+
		"  n1/n3: 1 differing row\n"+
		"  n2/n3: 2 differing rows\n"+
		"see them with: SELECT * FROM ace.diff_rows('"+id.String()+"');\n"+
		"or: ace-agent diff export "+id.String()+"\n", r.stdout)
	// Not a terminal: progress comes as plain lines after the "submitted" line.
	require.GreaterOrEqual(t, len(strings.Split(strings.TrimSpace(r.stderr), "\n")), 2, r)
	require.NotContains(t, r.stderr, "\r")

	// Flags after the table name, a subset of the nodes, JSON output, no progress.
	r = ace(t, n1.DSN, "table-diff", "public.t", "--nodes", "n1,n2", "--json", "-q")
	require.Equal(t, exitDiffers, r.code, r)
	require.Equal(t, 1, strings.Count(r.stderr, "\n"), "only the submitted line: %s", r)
	var s engine.DiffSummary
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &s), r)
	require.Equal(t, []string{"n1", "n2"}, s.Nodes)
	require.EqualValues(t, 1, s.DifferingKeys)
	require.Equal(t, map[string]int64{"n1/n2": 1}, s.DiffRowsCount)
}

func TestTableDiffSubmitErrors(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	createTable(e, 10)
	dsn := e.Node("n1").DSN

	r := ace(t, dsn, "table-diff", "public.nope")
	require.Equal(t, exitError, r.code, r)
	require.Equal(t, "ace-agent: submit table-diff: table \"public.nope\" does not exist on this node\n"+
		"hint: Check the name and the schema, for example public.orders.\n", r.stderr)
	require.Empty(t, r.stdout)

	r = ace(t, dsn, "table-diff", "--nodes", "n1,n9", "public.t")
	require.Equal(t, exitError, r.code, r)
	require.Contains(t, r.stderr, "ace-agent: submit table-diff: unknown node(s): n9\nhint: Registered nodes are listed in ace.nodes", r)

	r = ace(t, dsn, "table-diff", "public.t", "--block-size", "-5")
	require.Equal(t, exitError, r.code, r)
	require.Contains(t, r.stderr, "block_size must be a positive integer", r)
}

func TestTableDiffFailedTask(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	for _, name := range []string{"n1", "n2"} {
		e.Node(name).Exec(t, `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	}
	n1 := e.Node("n1")
	n1.StartAgent(t)

	r := ace(t, n1.DSN, "table-diff", "public.t", "-q")
	require.Equal(t, exitError, r.code, r)
	id := submittedID(t, r)
	require.Contains(t, r.stderr, "ace-agent: table-diff task "+id.String()+" failed: ", r)
	require.Contains(t, r.stderr, "n3", r)
	require.Empty(t, r.stdout)
}

func TestTableDiffInterrupted(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	createTable(e, 10)
	n1 := e.Node("n1") // no agent: the task stays queued

	p := startProc(t, cliEnv(n1.DSN), "table-diff", "public.t")
	require.Eventually(t, func() bool { return strings.Contains(p.out.String(), "queued, waiting for an agent") },
		time.Minute, 20*time.Millisecond)
	p.signal(t, syscall.SIGINT)
	require.Equal(t, exitError, p.wait(t, 30*time.Second), p.out.String())
	out := p.out.String()
	id := submittedID(t, cliResult{stderr: out})
	require.Contains(t, out, "warning: no agent is running on this node")
	require.Contains(t, out, "ace-agent: interrupted: task "+id.String()+" keeps running on the node\n")
	require.Contains(t, out, "hint: cancel it with SELECT ace.cancel('"+id.String()+"'); or: ace-agent task cancel "+id.String())
	require.Equal(t, sqlapi.StatusQueued, getTask(t, n1, id).Status)

	r := ace(t, n1.DSN, "task", "cancel", id.String())
	require.Equal(t, exitOK, r.code, r)
	require.Equal(t, "task "+id.String()+": CANCELLED\n", r.stdout)
}
