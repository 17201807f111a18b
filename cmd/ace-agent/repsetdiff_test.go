package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/testcluster"
)

// repset-diff exits 0 when the set's tables match, 1 on differences, 2 on errors.
func TestRepsetDiffExitCodes(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	createTable(e, 100)
	for _, n := range []string{"n1", "n2", "n3"} {
		e.Node(n).Exec(t, `CREATE PUBLICATION rd_pub FOR ALL TABLES`)
	}
	n1 := e.Node("n1")
	n1.StartAgent(t)

	r := ace(t, n1.DSN, "repset-diff", "rd_pub", "-q")
	require.Equal(t, exitOK, r.code, r)
	require.Contains(t, r.stdout, "1 identical, 0 differ", r)

	e.Node("n2").Exec(t, `CREATE TABLE public.extra (id int PRIMARY KEY)`)
	r = ace(t, n1.DSN, "repset-diff", "rd_pub", "-q")
	require.Equal(t, exitDiffers, r.code, r)
	require.Contains(t, r.stdout, "1 missing on some node", r)
	r = ace(t, n1.DSN, "repset-diff", "rd_pub", "-q", "-T", "extra")
	require.Equal(t, exitOK, r.code, r)

	r = ace(t, n1.DSN, "repset-diff", "nosuchset", "-q")
	require.Equal(t, exitError, r.code, r)
	require.Contains(t, r.stderr, "pg_publication", r)
}
