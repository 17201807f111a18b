package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/testcluster"
)

// The spock commands (issue 18) on n1 and n2 stubbed with Spock 5's tables, one exception of
// two commands on n2.
func TestSpockCommands(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	n1, n2 := e.Node("n1"), e.Node("n2")
	n1.CreateSpockTables(t)
	n2.CreateSpockTables(t)
	n2.Exec(t, `INSERT INTO spock.exception_log (remote_origin, remote_commit_ts, remote_xid, command_counter,
			retry_errored_at, table_schema, table_name, operation, error_message) VALUES
		(1001, '2024-03-15T12:34:56Z', 123456, 1, '2024-03-15T12:35:00Z', 'public', 't', 'INSERT', 'duplicate key'),
		(1001, '2024-03-15T12:34:56Z', 123456, 2, '2024-03-15T12:35:00Z', 'public', 't', 'INSERT', 'duplicate key')`)
	startAgentProc(t, n1)

	t.Run("exceptions before any sync lists none", func(t *testing.T) {
		r := ace(t, n1.DSN, "spock", "exceptions")
		require.Equal(t, exitOK, r.code, r.String())
	})
	t.Run("a node without Spock is an error", func(t *testing.T) {
		r := ace(t, n1.DSN, "spock", "exception-sync", "--nodes", "n1,n3", "-q")
		require.Equal(t, exitError, r.code, r.String())
		require.Contains(t, r.stderr, "spock is not installed on node n3")
	})
	t.Run("sync finds the pending exception", func(t *testing.T) {
		r := ace(t, n1.DSN, "spock", "exception-sync", "--nodes", "n1,n2", "-q")
		require.Equal(t, exitDiffers, r.code, r.String())
		require.Contains(t, r.stdout, `"PENDING": 2`)
		r = ace(t, n1.DSN, "spock", "exceptions", "--node", "n2", "--status", "pending")
		require.Equal(t, exitDiffers, r.code, r.String())
		require.Contains(t, r.stdout, "public.t")
	})
	t.Run("exception-update resolves it, and a new sync finds nothing pending", func(t *testing.T) {
		r := ace(t, n1.DSN, "spock", "exception-update", "-q", "--node-name", "n2", "--remote-origin", "1001",
			"--remote-commit-ts", "2024-03-15T12:34:56Z", "--remote-xid", "123456", "--status", "RESOLVED",
			"--resolution-details", `{"details": "fixed by hand"}`)
		require.Equal(t, exitOK, r.code, r.String())
		require.Contains(t, r.stdout, `"detail_rows": 2`)
		r = ace(t, n1.DSN, "spock", "exception-sync", "--nodes", "n1,n2", "-q")
		require.Equal(t, exitOK, r.code, r.String())
		require.Contains(t, r.stdout, `"RESOLVED": 2`)
	})
	t.Run("exception-update of a key that is not there is an error", func(t *testing.T) {
		r := ace(t, n1.DSN, "spock", "exception-update", "-q", "--node-name", "n2", "--remote-origin", "1001",
			"--remote-commit-ts", "2024-03-15T12:34:57Z", "--remote-xid", "123456", "--status", "RESOLVED")
		require.Equal(t, exitError, r.code, r.String())
		require.Contains(t, r.stderr, "no Spock exception on node n2")
	})
}
