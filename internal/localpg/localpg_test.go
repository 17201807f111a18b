package localpg_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/localpg"
)

func show(ctx context.Context, t *testing.T, i *localpg.Instance, setting string) string {
	t.Helper()
	conn, err := pgx.Connect(ctx, i.DSN("postgres"))
	require.NoError(t, err, "connect to %s", i.Name)
	defer conn.Close(ctx)
	var v string
	require.NoError(t, conn.QueryRow(ctx, "SHOW "+setting).Scan(&v))
	return v
}

func TestClusterLifecycle(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	c, err := localpg.Start(ctx, localpg.Options{Nodes: 2, Log: t.Output()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Stop(context.Background()) }) // only matters if an assertion fails
	require.Len(t, c.Nodes, 2)
	require.NotEqual(t, c.Nodes[0].Port, c.Nodes[1].Port)

	for _, n := range c.Nodes {
		require.Equal(t, "logical", show(ctx, t, n, "wal_level"), n.Name)
		require.Equal(t, "on", show(ctx, t, n, "track_commit_timestamp"), n.Name)
	}

	n2 := c.Node("n2")
	require.NoError(t, n2.Stop(ctx))
	_, err = pgx.Connect(ctx, n2.DSN("postgres"))
	require.Error(t, err, "n2 is stopped")
	require.Equal(t, "logical", show(ctx, t, c.Nodes[0], "wal_level"), "n1 unaffected")

	require.NoError(t, n2.Start(ctx))
	require.Equal(t, "on", show(ctx, t, n2, "track_commit_timestamp"))

	o, err := localpg.Open(c.Dir)
	require.NoError(t, err)
	require.Equal(t, c.Nodes[1].Port, o.Node("n2").Port)
	running, err := o.Node("n2").Running(ctx)
	require.NoError(t, err)
	require.True(t, running)

	require.NoError(t, c.Stop(ctx))
	require.NoDirExists(t, c.Dir)
}

func TestSettingsOverride(t *testing.T) {
	t.Parallel()
	c := localpg.StartT(t, localpg.Options{Nodes: 1, Settings: map[string]string{"max_connections": "50"}})
	require.Equal(t, "50", show(t.Context(), t, c.Nodes[0], "max_connections"))
	require.Equal(t, "", show(t.Context(), t, c.Nodes[0], "unix_socket_directories"))
}

func TestStartFailureCleansUp(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("localpg-fail-%d", time.Now().UnixNano()))
	_, err := localpg.Start(t.Context(), localpg.Options{
		Nodes: 2, Dir: dir, Settings: map[string]string{"wal_level": "bogus"},
	})
	require.Error(t, err)
	t.Log(err)
	require.ErrorContains(t, err, "start n1 on port")
	require.ErrorContains(t, err, "wal_level", "error carries the server log tail")
	require.NoDirExists(t, dir)
}

func TestDSN(t *testing.T) {
	t.Parallel()
	i := &localpg.Instance{Port: 5555}
	require.Equal(t, "host=127.0.0.1 port=5555 user=postgres dbname=app sslmode=disable", i.DSN("app"))
	require.Equal(t, `host=127.0.0.1 port=5555 user=postgres dbname='it\'s x' sslmode=disable`, i.DSN("it's x"))
}
