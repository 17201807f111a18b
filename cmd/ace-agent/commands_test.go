package main

import (
	"encoding/json"
	"regexp"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

func TestNodeCommands(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	dsn := e.Node("n1").DSN

	r := ace(t, dsn, "node", "add", "x", "host=127.0.0.1 port=1 dbname=x", "--cluster", "c1")
	require.Equal(t, exitOK, r.code, r)
	require.Equal(t, "node x registered (cluster c1)\n", r.stdout)

	r = ace(t, dsn, "node", "list")
	require.Equal(t, exitOK, r.code, r)
	require.Regexp(t, `^NAME +CLUSTER +STATE +CONNINFO\n`, r.stdout)
	require.Regexp(t, `(?m)^n1 +default +active +host=127\.0\.0\.1 port=\d+ user=postgres dbname=`+e.DB+` sslmode=disable$`, r.stdout)
	require.Regexp(t, `(?m)^x +c1 +active +host=127\.0\.0\.1 port=1 dbname=x$`, r.stdout)

	r = ace(t, dsn, "node", "add", "y", "host=h password=p")
	require.Equal(t, exitError, r.code, r)
	require.Contains(t, r.stderr, "ace-agent: add node y: the connection string must not contain a password", r)
	require.Contains(t, r.stderr, "\nhint: put the password in ~/.pgpass", r)
	require.NotContains(t, r.stderr, "password=p", "the password is not echoed")

	r = ace(t, dsn, "node", "remove", "x")
	require.Equal(t, exitOK, r.code, r)
	require.Equal(t, "node x removed\n", r.stdout)
	r = ace(t, dsn, "node", "remove", "x")
	require.Equal(t, exitError, r.code, r)
	require.Contains(t, r.stderr, "ace-agent: node x is not registered\n", r)
}

func TestTaskShowAndCancel(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	createTable(e, 10)
	n1 := e.Node("n1") // no agent: the task stays queued
	id := submitDiff(t, n1, "public.t")

	show := func() sqlapi.Task {
		t.Helper()
		r := ace(t, n1.DSN, "task", "show", id.String())
		require.Equal(t, exitOK, r.code, r)
		var task sqlapi.Task
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &task), r)
		return task
	}
	task := show()
	require.Equal(t, id, task.ID)
	require.Equal(t, sqlapi.TypeTableDiff, task.Type)
	require.Equal(t, sqlapi.StatusQueued, task.Status)
	require.JSONEq(t, `{"table_name": "public.t", "nodes": ["n1", "n2", "n3"], "override_block_size": false}`, string(task.Args))

	r := ace(t, n1.DSN, "task", "cancel", id.String())
	require.Equal(t, exitOK, r.code, r)
	require.Equal(t, "task "+id.String()+": CANCELLED\n", r.stdout)
	require.Equal(t, sqlapi.StatusCancelled, show().Status)

	missing := uuid.NewString()
	for _, args := range [][]string{{"task", "show", missing}, {"task", "cancel", missing}} {
		r := ace(t, n1.DSN, args...)
		require.Equal(t, exitError, r.code, r)
		require.Contains(t, r.stderr, "task "+missing+" does not exist", r)
	}
}

func TestInstall(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t) // installed already: installing again is a no-op
	r := ace(t, e.Node("n2").DSN, "install")
	require.Equal(t, exitOK, r.code, r)
	require.Regexp(t, regexp.MustCompile(`^ace schema installed on `+e.DB+` \(version \d+\)\n$`), r.stdout)
}

func TestHelpVersionAndUsageErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"help", "run"}, {"run", "--help"}} {
		r := ace(t, "", args...)
		require.Equal(t, exitOK, r.code, r)
		for _, v := range []string{"ACE_DSN", "ACE_NODE", "ACE_POLL_INTERVAL", "ACE_SHUTDOWN_GRACE", "ACE_LOG_LEVEL"} {
			require.Contains(t, r.stdout, v, r)
		}
	}

	r := ace(t, "", "help", "serve")
	require.Equal(t, exitOK, r.code, r)
	for _, v := range []string{"ACE_DSN", "ACE_SHIM_LISTEN", "ACE_SHIM_CLIENT_CA", "ACE_SHIM_CRL", "ACE_SHIM_ALLOWED_CNS", "ACE_SHIM_METRICS_LISTEN"} {
		require.Contains(t, r.stdout, v, r)
	}

	r = ace(t, "", "version")
	require.Equal(t, exitOK, r.code, r)
	require.Regexp(t, `^ace-agent \S+ \(hash version \d+, go`, r.stdout)

	r = ace(t, "", "table-diff", "public.t")
	require.Equal(t, exitError, r.code, r)
	require.Equal(t, "ace-agent: no connection to the local node\n"+
		"hint: set ACE_DSN to a libpq connection string (for example 'host=localhost dbname=app') or pass --dsn\n", r.stderr)

	r = ace(t, "", "run")
	require.Equal(t, exitError, r.code, r)
	require.Contains(t, r.stderr, "ace-agent: read configuration", r)

	for _, args := range [][]string{{"bogus"}, {"table-diff"}, {"table-diff", "--bogus", "public.t"}} {
		r := ace(t, "", args...)
		require.Equal(t, exitError, r.code, r)
		require.Regexp(t, `^ace-agent: `, r.stderr)
	}
}

func TestDSNFlagOverridesEnvironment(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	r := ace(t, "host=127.0.0.1 port=1 dbname=nowhere connect_timeout=2", "--dsn", e.Node("n1").DSN, "node", "list")
	require.Equal(t, exitOK, r.code, r)
	require.Contains(t, r.stdout, "n3")
}

// A new testcluster.Env per test keeps its tasks and nodes apart from the other tests'.
var _ = testcluster.New
