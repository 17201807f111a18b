package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/pgtls"
	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/shim"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// healthProbe is a client of a shim on n1 with a certificate for an ordinary login role.
type healthProbe struct {
	url    string
	client *http.Client
}

// startProbe serves a shim on n1 until the test ends, for a client whose CN is a new plain role.
func startProbe(t *testing.T, e *testcluster.Env) *healthProbe {
	t.Helper()
	role := e.DB + "_probe"
	e.Node("n1").Exec(t, `CREATE ROLE `+pgx.Identifier{role}.Sanitize()+` LOGIN`)
	t.Cleanup(func() {
		_, _ = e.Node("n1").Pool.Exec(context.Background(), `DROP ROLE IF EXISTS `+pgx.Identifier{role}.Sanitize())
	})
	ca, err := pgtls.New(t.TempDir())
	require.NoError(t, err)
	cert, key := ca.ServerFiles()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := shim.New(ctx, shim.Config{DSN: e.Node("n1").DSN, Listen: "127.0.0.1:0", CertFile: cert, KeyFile: key,
		ClientCAFile: ca.CAFile(), ImportTimeout: time.Minute, PollInterval: 200 * time.Millisecond}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln, nil) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
		s.Close()
	})
	clientCert, clientKey, err := ca.Client(role)
	require.NoError(t, err)
	pair, err := tls.LoadX509KeyPair(clientCert, clientKey)
	require.NoError(t, err)
	roots := x509.NewCertPool()
	pem, err := os.ReadFile(ca.CAFile())
	require.NoError(t, err)
	require.True(t, roots.AppendCertsFromPEM(pem))
	return &healthProbe{url: "https://" + ln.Addr().String(), client: &http.Client{Timeout: time.Minute,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}}}}
}

// health asks GET /api/v1/cluster/health and returns the status code and the health.
func (p *healthProbe) health(t *testing.T) (int, sqlapi.Health) {
	t.Helper()
	resp, err := p.client.Get(p.url + "/api/v1/cluster/health")
	require.NoError(t, err)
	defer resp.Body.Close()
	var h sqlapi.Health
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&h))
	return resp.StatusCode, h
}

// agentAlive is what n1's collector last saw of a node's agent.
func agentAlive(t *testing.T, n1 *testcluster.Node, node string) bool {
	t.Helper()
	var alive bool
	require.NoError(t, n1.Pool.QueryRow(context.Background(), `SELECT agent_alive FROM ace.cluster_status() WHERE node_name = $1`, node).Scan(&alive))
	return alive
}

// TestKilledAgentsAndTheClusterCommands: agents run as processes. One killed with SIGKILL is
// not alive at n1's next collections (long before STALE_AFTER, 60 s here: its backends went
// with it), an agent_lost event is recorded and the cluster is degraded; a second one killed
// makes it unavailable, and the shim's readiness probe answers 503. The cluster commands show it.
func TestKilledAgentsAndTheClusterCommands(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	createTable(e, 10)
	n1 := e.Node("n1")
	procs := map[string]*proc{}
	for _, n := range e.Nodes {
		procs[n.Name] = startAgentProc(t, n, "ACE_STALE_AFTER=60s")
	}
	probe := startProbe(t, e)
	require.Eventually(t, func() bool {
		code, h := probe.health(t)
		return code == http.StatusOK && h.Health == sqlapi.Healthy
	}, time.Minute, 50*time.Millisecond, "the cluster becomes healthy")

	t.Run("a healthy cluster on the command line", func(t *testing.T) {
		r := ace(t, n1.DSN, "cluster", "health")
		require.Equal(t, exitOK, r.code, r)
		require.Equal(t, "healthy: 3 of 3 active nodes live, in quorum; missing: none; leader: n1; ready: yes\n", r.stdout)
		r = ace(t, n1.DSN, "cluster", "status")
		require.Equal(t, exitOK, r.code, r)
		require.Regexp(t, `(?m)^n2 +active +yes +alive `, r.stdout)
		r = ace(t, n1.DSN, "cluster", "map")
		require.Equal(t, exitOK, r.code, r)
		require.Regexp(t, `(?m)^n1 +default +active .* yes +yes +host=`, r.stdout)
		r = ace(t, n1.DSN, "cluster", "config-diff")
		require.Equal(t, exitOK, r.code, r)
		r = ace(t, n1.DSN, "cluster", "leader")
		require.Equal(t, "leader: n1; this node leads: yes\n", r.stdout)
	})

	t.Run("node down and up, followed by events --follow", func(t *testing.T) {
		follow := startProc(t, cliEnv(n1.DSN), "events", "--follow", "--kind", "node_down,node_up")
		r := ace(t, n1.DSN, "node", "down", "n2", "--reason", "disk")
		require.Equal(t, exitOK, r.code, r)
		require.Equal(t, "node n2 is down: disk\n", r.stdout)
		r = ace(t, n1.DSN, "table-diff", "public.t", "--nodes", "n1,n2")
		require.Equal(t, exitError, r.code, r)
		require.Contains(t, r.stderr, "node n2 is marked down (disk); mark it up with ace.mark_node_up('n2') or leave it out")
		r = ace(t, n1.DSN, "cluster", "health")
		require.Equal(t, exitDiffers, r.code, "degraded: %s", r)
		r = ace(t, n1.DSN, "node", "up", "n2")
		require.Equal(t, "node n2 is active\n", r.stdout)
		require.Eventually(t, func() bool { return strings.Contains(follow.out.String(), "node_up") }, time.Minute, 50*time.Millisecond)
		follow.signal(t, syscall.SIGINT)
		require.Equal(t, exitOK, follow.wait(t, 30*time.Second))
		require.Regexp(t, `(?m)^\d+\t\S+\tnode_down\tnode=n2\tby postgres \{"reason":"disk"\}\n\d+\t\S+\tnode_up\tnode=n2\tby postgres$`, follow.out.String())
	})

	t.Run("one agent killed: not alive long before STALE_AFTER, lost, degraded", func(t *testing.T) {
		procs["n3"].signal(t, syscall.SIGKILL)
		require.Equal(t, -1, procs["n3"].wait(t, 30*time.Second))
		require.Eventually(t, func() bool { return !agentAlive(t, n1, "n3") }, 30*time.Second, 50*time.Millisecond,
			"n3's agent is seen dead by its session, well within STALE_AFTER (60 s)")
		require.Eventually(t, func() bool {
			events, err := sqlapi.EventsSince(context.Background(), n1.Pool, 0, "agent_lost")
			require.NoError(t, err)
			return len(events) == 1 && events[0].NodeName == "n3"
		}, 30*time.Second, 50*time.Millisecond, "agent_lost is recorded")
		code, h := probe.health(t)
		require.Equal(t, http.StatusOK, code)
		require.Equal(t, sqlapi.Degraded, h.Health)
		require.Equal(t, []string{"n3"}, h.MissingNodes)
		r := ace(t, n1.DSN, "cluster", "status")
		require.Regexp(t, `(?m)^n3 +active +yes +NOT ALIVE .*no live agent of node n3 here`, r.stdout)
		r = ace(t, n1.DSN, "events", "--kind", "agent_lost")
		require.Equal(t, exitOK, r.code, r)
		require.Contains(t, r.stdout, "agent_lost\tnode=n3")
	})

	t.Run("a second one killed: unavailable, the probe answers 503", func(t *testing.T) {
		procs["n2"].signal(t, syscall.SIGKILL)
		require.Equal(t, -1, procs["n2"].wait(t, 30*time.Second))
		require.Eventually(t, func() bool {
			code, h := probe.health(t)
			return code == http.StatusServiceUnavailable && h.Health == sqlapi.Unavailable && !h.InQuorum && !h.Ready
		}, 30*time.Second, 50*time.Millisecond, "the readiness probe answers 503")
		r := ace(t, n1.DSN, "cluster", "health")
		require.Equal(t, exitError, r.code, r)
		require.Contains(t, r.stdout, "unavailable: 1 of 3 active nodes live, NO QUORUM; missing: n2, n3")
	})
}
