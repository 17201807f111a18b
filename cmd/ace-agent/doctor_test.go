package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/testcluster"
)

func TestDoctorNamesWhatTheWallLacks(t *testing.T) {
	t.Parallel()
	e := testcluster.NewSecure(t)
	alice := e.AddSubmitter("alice", true)
	carol := e.AddSubmitter("carol", false)
	n1 := e.Node("n1")

	t.Run("a submitter the agent cannot log in as", func(t *testing.T) {
		r := ace(t, n1.AgentDSN, "doctor")
		require.Equal(t, exitDiffers, r.code, r.String())
		require.Contains(t, r.stdout, "ok       the agent logs in as ace_agent, not a superuser")
		for _, n := range e.Nodes {
			require.Contains(t, r.stdout, "ok       node "+n.Name+" is reached over verified TLS")
			require.Contains(t, r.stdout, "ok       node "+n.Name+": the agent logs in as "+alice)
			require.Contains(t, r.stdout, "PROBLEM  node "+n.Name+": the agent cannot log in as "+carol)
		}
		require.Contains(t, r.stdout, "in pg_ident.conf ace ace_agent "+carol)
		require.Equal(t, 3, strings.Count(r.stdout, "PROBLEM"), r.String())
	})
	t.Run("a superuser agent", func(t *testing.T) {
		r := ace(t, n1.DSN, "doctor")
		require.Equal(t, exitDiffers, r.code, r.String())
		require.Contains(t, r.stdout, "PROBLEM  the agent logs in as postgres, a superuser")
	})
}
