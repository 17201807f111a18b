package engine_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/internal/testcluster"
)

// Sessions of a task, as the agent opens them in its two modes.
const (
	loginMode   = "login"    // the sessions log in as the submitting role
	setRoleMode = "set_role" // they log in as the agent (here a superuser) and SET ROLE
)

var sessionModes = []string{loginMode, setRoleMode}

// nodesAs opens the env's nodes as role, in the given mode, as the agent would: logged in as
// role, or logged in as the superuser with SET ROLE role on every connection. On a secure env
// (certificates only) a login as role presents the agent's certificate, which pg_ident.conf maps
// onto role (add it with e.AddSubmitter(name, true)); the superuser presents its own, and stands
// for an agent that logs in as a superuser in set_role mode.
func nodesAs(t *testing.T, e *testcluster.Env, role, mode string) []*engine.Node {
	t.Helper()
	var nodes []*engine.Node
	for _, n := range e.Nodes {
		o := engine.NodeOptions{Name: n.Name, ConnInfo: n.DSN, MaxConns: 4}
		switch {
		case mode != loginMode:
			o.Role = role
		case role == "postgres":
		case n.AgentDSN != n.DSN:
			certs, err := engine.ClientCerts(n.AgentDSN)
			require.NoError(t, err)
			require.NotEmpty(t, certs, "the agent's certificate")
			o.ConnInfo, o.User, o.ClientCerts = n.NodeConnInfo(), role, certs
		default:
			o.ConnInfo = strings.Replace(n.DSN, "user=postgres", "user="+role, 1)
		}
		node, err := engine.OpenNode(context.Background(), o)
		require.NoError(t, err)
		t.Cleanup(node.Close)
		nodes = append(nodes, node)
	}
	return nodes
}

// markerFile is a path the server may create a file at. An attack that escapes to the agent's
// (superuser) login proves it by COPY … TO PROGRAM 'cat > <marker>'.
func markerFile(t *testing.T, name string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ace-marker-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o777))
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return filepath.Join(dir, name)
}

// escapeBody is PL/pgSQL that steps back to the session's login and, if that is a superuser,
// runs a program that creates marker (one that reads what COPY sends, so the pipe never breaks).
func escapeBody(marker string) string {
	return `BEGIN RESET ROLE; EXECUTE format('COPY (SELECT 1) TO PROGRAM %L', 'cat > ` + marker + `'); RETURN true; END`
}

func requireNoFile(t *testing.T, path string) {
	t.Helper()
	_, err := os.Stat(path)
	require.True(t, os.IsNotExist(err), "%s exists: the attack's code ran with the agent's login", path)
}

func requireFile(t *testing.T, path string) {
	t.Helper()
	_, err := os.Stat(path)
	require.NoError(t, err, "the control: the attack's code does escape when it runs")
}
