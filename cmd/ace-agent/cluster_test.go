package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pg_service.conf")
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

func TestClusterImport(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	n1 := e.Node("n1")
	file := writeFile(t, fmt.Sprintf(`# an ACE service file
[prod]
dbname = %s
user=postgres
password = s3cret
sslmode=disable
application_name=ace

[prod.a1]
host=127.0.0.1
PORT=%d
; a comment
[prod.a2]
hostaddr = 127.0.0.1
port = %d

[other.x]
host=elsewhere
`, e.DB, e.Node("n2").Instance.Port, e.Node("n3").Instance.Port))

	r := ace(t, n1.DSN, "cluster", "import", "--service-file", file, "--cluster", "prod")
	require.Equal(t, exitOK, r.code, r)
	require.Equal(t, fmt.Sprintf("registered node a1 (cluster prod): host=127.0.0.1 port=%d dbname=%s user=postgres sslmode=disable\n"+
		"registered node a2 (cluster prod): host=127.0.0.1 port=%d dbname=%s user=postgres sslmode=disable\n",
		e.Node("n2").Instance.Port, e.DB, e.Node("n3").Instance.Port, e.DB), r.stdout)
	require.Contains(t, r.stderr, "warning: [prod] has a password, which is not stored in ace.nodes: put it in ~/.pgpass or in the file PGPASSFILE names")
	require.Contains(t, r.stderr, "warning: [prod]: ignoring application_name")
	require.NotContains(t, r.stderr, "hostaddr", "a lone hostaddr is the host")

	nodes, err := sqlapi.Nodes(context.Background(), n1.Pool)
	require.NoError(t, err)
	imported := map[string]sqlapi.RegisteredNode{}
	for _, n := range nodes {
		require.NotContains(t, n.ConnInfo, "s3cret")
		if strings.HasPrefix(n.Name, "a") {
			imported[n.Name] = n
		}
	}
	require.Len(t, imported, 2)
	for _, n := range imported {
		require.Equal(t, "prod", n.Cluster)
		conn, err := pgx.Connect(context.Background(), n.ConnInfo)
		require.NoError(t, err, n.ConnInfo)
		var db string
		require.NoError(t, conn.QueryRow(context.Background(), `SELECT current_database()`).Scan(&db))
		require.Equal(t, e.DB, db)
		require.NoError(t, conn.Close(context.Background()))
	}

	// --dbname overrides the file's, and a value with a space is quoted.
	r = ace(t, n1.DSN, "cluster", "import", "--service-file", file, "--cluster", "prod", "--dbname", "my db")
	require.Equal(t, exitOK, r.code, r)
	nodes, err = sqlapi.Nodes(context.Background(), n1.Pool)
	require.NoError(t, err)
	for _, n := range nodes {
		if strings.HasPrefix(n.Name, "a") {
			cfg, err := pgconn.ParseConfig(n.ConnInfo)
			require.NoError(t, err)
			require.Equal(t, "my db", cfg.Database)
		}
	}
}

func TestClusterImportErrors(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	dsn := e.Node("n1").DSN
	file := writeFile(t, "[prod]\ndbname=app\n[prod.a1]\nhost=h1\n[prod.a2]\nport=5432\n[bad.x]\nhost=h\n")

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--cluster", "nope"}, "has no [nope.<node>] section for cluster nope"},
		{[]string{"--cluster", "prod"}, "node a2 ([prod.a2]) has no host"},
		{[]string{"--cluster", "bad"}, "node x ([bad.x]) has no dbname: set it in the service file or pass --dbname"},
		{nil, `required flag(s) "cluster" not set`},
	} {
		r := ace(t, dsn, append([]string{"cluster", "import", "--service-file", file}, c.args...)...)
		require.Equal(t, exitError, r.code, r)
		require.Contains(t, r.stderr, c.want, r)
	}
	nodes, err := sqlapi.Nodes(context.Background(), e.Node("n1").Pool)
	require.NoError(t, err)
	require.Len(t, nodes, 3, "nothing registered")

	r := ace(t, dsn, "cluster", "import", "--service-file", filepath.Join(t.TempDir(), "missing.conf"), "--cluster", "prod")
	require.Equal(t, exitError, r.code, r)
	require.Contains(t, r.stderr, "open service file", r)
}

func TestParseServiceFile(t *testing.T) {
	t.Parallel()
	f, err := parseServiceFile(strings.NewReader("# c\n; c\n\n[s]\n Key = a value \nx=\n[s]\ny=1\n"))
	require.NoError(t, err)
	require.Equal(t, serviceFile{"s": {"key": "a value", "x": "", "y": "1"}}, f)

	_, err = parseServiceFile(strings.NewReader("host=h\n"))
	require.ErrorContains(t, err, "line 1: \"host=h\" comes before any [section]")
	_, err = parseServiceFile(strings.NewReader("[s]\nnonsense\n"))
	require.ErrorContains(t, err, "line 2: expected key=value")
	_, err = parseServiceFile(strings.NewReader("[s\n"))
	require.ErrorContains(t, err, "no closing ]")
}

func TestQuoteConnValue(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"plain", "with space", `it's`, `back\slash`, `'\ both`, "tab\there"} {
		q := quoteConnValue(v)
		cfg, err := pgconn.ParseConfig("host=h dbname=" + q)
		require.NoError(t, err, q)
		require.Equal(t, v, cfg.Database, q)
	}
	require.Equal(t, "plain", quoteConnValue("plain"))
	require.Equal(t, `'it\'s'`, quoteConnValue("it's"))
}
