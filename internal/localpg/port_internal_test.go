package localpg

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestStartRetriesTakenPort occupies the port a node is told to use and
// checks that startFresh moves it to another one.
func TestStartRetriesTakenPort(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	binDir, err := resolveBinDir(ctx, "")
	require.NoError(t, err)
	r, err := newRunner(binDir)
	require.NoError(t, err)
	dir, err := prepareDir("", r)
	require.NoError(t, err)
	c := newCluster(dir, r, Options{Nodes: 1, Log: t.Output()})
	t.Cleanup(func() { _ = c.Stop(context.Background()) })

	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port

	n := c.Nodes[0]
	require.NoError(t, n.initdb(ctx, DefaultSettings()))
	n.Port = taken
	require.ErrorIs(t, n.startOnce(ctx), errPortInUse)
	require.NoError(t, n.startFresh(ctx))
	require.NotEqual(t, taken, n.Port)
	require.NoError(t, n.waitReady(ctx))
}
