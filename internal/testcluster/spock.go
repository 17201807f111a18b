package testcluster

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// CreateSpockTables creates on the node Spock 5's catalog tables, from Spock's own definitions
// (testdata/spock/spock5_catalog.sql): Spock is not packaged for Debian, and ace-agent detects
// Spock by these tables.
func (n *Node) CreateSpockTables(t testing.TB) {
	t.Helper()
	_, here, _, ok := runtime.Caller(0)
	require.True(t, ok, "locate the testcluster package's source")
	ddl, err := os.ReadFile(filepath.Join(filepath.Dir(here), "..", "..", "testdata", "spock", "spock5_catalog.sql"))
	require.NoError(t, err)
	n.Exec(t, string(ddl))
}
