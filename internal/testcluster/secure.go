package testcluster

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/localpg"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// The secure cluster authenticates every connection by client certificate, made at test time:
// no trust. It is set up the way docs/security.md's "The wall" section says: the agent logs in as
// AgentRole, a role without superuser that owns the ace schema, and pg_ident.conf maps the
// agent's certificate onto each submitter (members of SubmittersRole); a submitter logs in with
// a certificate of her own.
const (
	AgentRole      = "ace_agent"
	SubmittersRole = "ace_submitters"
)

var secure struct {
	once    sync.Once
	cluster *localpg.Cluster
	err     error
}

func secureCluster(t testing.TB) *localpg.Cluster {
	t.Helper()
	secure.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		secure.cluster, secure.err = localpg.Start(ctx, localpg.Options{Nodes: NodeCount, CertAuth: true})
		if secure.err != nil {
			return
		}
		for _, inst := range secure.cluster.Nodes {
			if secure.err = execAdmin(ctx, inst, "postgres", fmt.Sprintf(`CREATE ROLE %s LOGIN REPLICATION; CREATE ROLE %s NOLOGIN;
				GRANT pg_signal_backend TO %[1]s`, AgentRole, SubmittersRole)); secure.err != nil {
				return
			}
		}
	})
	require.NoError(t, secure.err, "start the certificate-authenticated cluster")
	return secure.cluster
}

func execAdmin(ctx context.Context, inst *localpg.Instance, db, sql string) error {
	conn, err := pgx.Connect(ctx, inst.DSN(db))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

// NewSecure creates the test's database on every node of the secure cluster: the ace schema
// installed by the agent's own login, which owns it, and every node registered with a
// connection string that names no user and no certificate (the agent brings both).
func NewSecure(t testing.TB) *Env {
	t.Helper()
	c := secureCluster(t)
	ctx := context.Background()
	e := &Env{T: t, DB: testDBName(t)}
	for _, inst := range c.Nodes {
		db := pgx.Identifier{e.DB}.Sanitize()
		require.NoError(t, execAdmin(ctx, inst, "postgres", "CREATE DATABASE "+db))
		require.NoError(t, execAdmin(ctx, inst, "postgres", fmt.Sprintf(`GRANT CREATE ON DATABASE %s TO %s`, db, AgentRole)))
		agentDSN, err := inst.DSNAs(e.DB, AgentRole, AgentRole)
		require.NoError(t, err)
		n := &Node{Name: inst.Name, DSN: inst.DSN(e.DB), AgentDSN: agentDSN, Instance: inst}
		n.Pool, err = pgxpool.New(ctx, n.DSN)
		require.NoError(t, err)
		t.Cleanup(n.Pool.Close)
		e.Nodes = append(e.Nodes, n)
	}
	for _, n := range e.Nodes {
		conn, err := pgx.Connect(ctx, n.AgentDSN)
		require.NoError(t, err)
		_, err = sqlapi.Install(ctx, conn)
		require.NoError(t, err)
		for _, peer := range e.Nodes {
			require.NoError(t, sqlapi.AddNode(ctx, conn, sqlapi.RegisteredNode{Name: peer.Name, ConnInfo: peer.NodeConnInfo()}))
		}
		require.NoError(t, conn.Close(ctx))
	}
	return e
}

// NodeConnInfo is how ace.nodes reaches the node on a secure cluster: TLS with the server
// verified, no user and no certificate.
func (n *Node) NodeConnInfo() string {
	ci, err := n.Instance.ServerDSN(n.dbName())
	if err != nil {
		return n.DSN
	}
	return ci
}

func (n *Node) dbName() string {
	cfg, err := pgx.ParseConfig(n.DSN)
	if err != nil {
		return ""
	}
	return cfg.Database
}

// AddSubmitter creates a login role (named after the test's database) that may submit tasks:
// a member of SubmittersRole, with its own certificate; mapped says whether the agent's
// certificate may log in as it (a line in every node's pg_ident.conf).
func (e *Env) AddSubmitter(name string, mapped bool) string {
	e.T.Helper()
	role := e.DB + "_" + name
	e.ExecAll(fmt.Sprintf(`DO $$ BEGIN CREATE ROLE %s LOGIN IN ROLE %s; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
		GRANT USAGE ON SCHEMA public TO %[1]s`, pgx.Identifier{role}.Sanitize(), SubmittersRole))
	if !mapped {
		return role
	}
	ctx := context.Background()
	for _, n := range e.Nodes {
		require.NoError(e.T, n.Instance.MapIdentity(ctx, AgentRole, role))
		dsn, err := n.Instance.DSNAs(e.DB, role, AgentRole)
		require.NoError(e.T, err)
		require.Eventually(e.T, func() bool {
			conn, err := pgx.Connect(ctx, dsn)
			if err == nil {
				conn.Close(ctx)
			}
			return err == nil
		}, 10*time.Second, 20*time.Millisecond, "the reloaded pg_ident.conf of %s lets the agent log in as %s", n.Name, role)
	}
	return role
}

// ConnectAs opens a connection to the node as role, with the role's own certificate.
func (n *Node) ConnectAs(t testing.TB, role string) *pgx.Conn {
	t.Helper()
	dsn, err := n.Instance.DSNAs(n.dbName(), role, role)
	require.NoError(t, err)
	conn, err := pgx.Connect(context.Background(), dsn)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}
