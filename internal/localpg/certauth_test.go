package localpg_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/localpg"
)

// A CertAuth cluster trusts nobody: a certificate logs in as the role it names, or as a role
// MapIdentity granted it; plain connections and unmapped roles are refused.
func TestCertAuth(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	c, err := localpg.Start(ctx, localpg.Options{Nodes: 1, CertAuth: true})
	require.NoError(t, err)
	defer func() { require.NoError(t, c.Stop(context.Background())) }()
	n := c.Nodes[0]

	admin, err := pgx.Connect(ctx, n.DSN("postgres"))
	require.NoError(t, err, "the superuser's own certificate")
	defer admin.Close(ctx)
	_, err = admin.Exec(ctx, `CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN`)
	require.NoError(t, err)

	login := func(user, certCN string) (string, error) {
		dsn, err := n.DSNAs("postgres", user, certCN)
		require.NoError(t, err)
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return "", err
		}
		defer conn.Close(ctx)
		var who string
		err = conn.QueryRow(ctx, `SELECT session_user`).Scan(&who)
		return who, err
	}
	t.Run("own certificate", func(t *testing.T) {
		who, err := login("alice", "alice")
		require.NoError(t, err)
		require.Equal(t, "alice", who)
	})
	t.Run("another's certificate is refused until mapped", func(t *testing.T) {
		_, err := login("alice", "agent")
		require.ErrorContains(t, err, "certificate authentication failed")
		require.NoError(t, n.MapIdentity(ctx, "agent", "alice"))
		require.Eventually(t, func() bool { who, err := login("alice", "agent"); return err == nil && who == "alice" }, 10*time.Second, 50*time.Millisecond)
		_, err = login("bob", "agent")
		require.ErrorContains(t, err, "certificate authentication failed", "the map names alice only")
	})
	t.Run("no certificate, no login", func(t *testing.T) {
		_, err := pgx.Connect(ctx, "host=127.0.0.1 user=postgres dbname=postgres sslmode=disable port="+itoa(n.Port))
		require.Error(t, err)
	})
}

func itoa(i int) string { return strconv.Itoa(i) }
