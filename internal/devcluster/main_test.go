package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// envDSNs reads the ACE_<NODE>_DSN exports of DIR/env.sh.
func envDSNs(t *testing.T, dir string) map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "env.sh"))
	require.NoError(t, err)
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, value, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "export "), "=")
		if ok && strings.HasPrefix(name, "ACE_") {
			out[name] = strings.Trim(value, "'")
		}
	}
	require.NoError(t, sc.Err())
	return out
}

// whereAndWho connects with dsn and says which database and role it reached.
func whereAndWho(t *testing.T, dsn string) (db, user string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	require.NoError(t, err)
	defer conn.Close(ctx)
	require.NoError(t, conn.QueryRow(ctx, `SELECT current_database(), current_user`).Scan(&db, &user))
	return db, user
}

// env.sh reaches what it says: after up, the superuser in postgres; after env (as make demo runs
// it), the demo's role in the demo's database, where the ace schema is, not postgres.
func TestEnvFileReachesTheNamedDatabase(t *testing.T) {
	t.Parallel()
	// Under the temporary directory itself, which the postgres OS user may enter (t.TempDir's is 0700).
	dir := filepath.Join(os.TempDir(), "devcluster-"+filepath.Base(t.TempDir()))
	require.NoError(t, run([]string{"up", "--dir", dir, "--nodes", "1"}, io.Discard))
	t.Cleanup(func() { _ = run([]string{"down", "--dir", dir}, io.Discard) })

	t.Run("after up", func(t *testing.T) {
		dsns := envDSNs(t, dir)
		require.Len(t, dsns, 1)
		db, user := whereAndWho(t, dsns["ACE_N1_DSN"])
		require.Equal(t, []string{"postgres", "postgres"}, []string{db, user})
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, dsns["ACE_N1_DSN"])
		require.NoError(t, err)
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, `CREATE DATABASE demo`)
		require.NoError(t, err)
		_, err = conn.Exec(ctx, `CREATE ROLE dba LOGIN`)
		require.NoError(t, err)
	})
	t.Run("after env", func(t *testing.T) {
		require.NoError(t, run([]string{"env", "--dir", dir, "--db", "demo", "--user", "dba"}, io.Discard))
		db, user := whereAndWho(t, envDSNs(t, dir)["ACE_N1_DSN"])
		require.Equal(t, []string{"demo", "dba"}, []string{db, user})
	})
}
