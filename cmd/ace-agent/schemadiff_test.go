package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/testcluster"
)

// schema-diff exits 0 when the schemas match, 1 on differences, 2 on errors, in each compare
// mode; --skip-file is read on the client.
func TestSchemaDiffExitCodes(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	createTable(e, 100)
	n1 := e.Node("n1")
	n1.StartAgent(t)

	t.Run("identical", func(t *testing.T) {
		for _, mode := range []string{"data", "structure", "objects"} {
			r := ace(t, n1.DSN, "schema-diff", "public", "--compare", mode, "-q")
			require.Equal(t, exitOK, r.code, "%s: %s", mode, r)
		}
		r := ace(t, n1.DSN, "schema-diff", "public", "--ddl-only")
		require.Equal(t, exitOK, r.code, r)
		var pairs struct {
			Pairs map[string]struct{ Status string } `json:"pairs"`
		}
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &pairs), r)
		require.Len(t, pairs.Pairs, 3)
		require.Equal(t, "IDENTICAL", pairs.Pairs["n1/n2"].Status)
	})
	t.Run("differences", func(t *testing.T) {
		e.Node("n2").Exec(t, `CREATE TABLE public.extra (id int PRIMARY KEY)`)
		r := ace(t, n1.DSN, "schema-diff", "public", "--compare", "structure", "-q")
		require.Equal(t, exitDiffers, r.code, r)
		require.Contains(t, r.stdout, "missing   table public.extra", r)
		r = ace(t, n1.DSN, "schema-diff", "public", "-q")
		require.Equal(t, exitDiffers, r.code, r)
		require.Contains(t, r.stdout, "1 identical, 0 differ, 1 missing on some node", r)

		skip := filepath.Join(t.TempDir(), "skip.txt")
		require.NoError(t, os.WriteFile(skip, []byte("extra\n\n"), 0o600))
		r = ace(t, n1.DSN, "schema-diff", "public", "-q", "--skip-file", skip)
		require.Equal(t, exitOK, r.code, r)
		r = ace(t, n1.DSN, "schema-diff", "public", "-q", "-T", "public.extra", "--compare", "structure")
		require.Equal(t, exitOK, r.code, r)
	})
	t.Run("errors", func(t *testing.T) {
		r := ace(t, n1.DSN, "schema-diff", "nope")
		require.Equal(t, exitError, r.code, r)
		require.Contains(t, r.stderr, `schema "nope" does not exist on this node`, r)
		r = ace(t, n1.DSN, "schema-diff", "public", "--ddl-only", "--compare", "structure")
		require.Equal(t, exitError, r.code, r)
		r = ace(t, n1.DSN, "schema-diff", "public", "-T", "other.t")
		require.Equal(t, exitError, r.code, r)
		require.Contains(t, r.stderr, "is not a table of schema public", r)
	})
}
