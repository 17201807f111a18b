package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

// compose.yaml cannot be run here (no Docker): its syntax and shape are checked instead.
func TestComposeFile(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(filepath.Join("..", "..", "compose.yaml"))
	require.NoError(t, err)
	var f struct {
		Services map[string]struct {
			Image       string            `yaml:"image"`
			Build       string            `yaml:"build"`
			Command     []string          `yaml:"command"`
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &f))
	for _, n := range []string{"n1", "n2", "n3"} {
		require.Equal(t, "postgres:15", f.Services[n].Image, n)
		agent := f.Services["agent-"+n]
		require.Equal(t, n, agent.Environment["ACE_NODE"])
		require.Contains(t, strings.Join(agent.Command, " "), "exec ace-agent run")
	}
	shim := f.Services["shim"]
	require.Equal(t, []string{"serve"}, shim.Command)
	for _, v := range []string{"ACE_DSN", "ACE_SHIM_CERT", "ACE_SHIM_KEY", "ACE_SHIM_CLIENT_CA"} {
		require.NotEmpty(t, shim.Environment[v], v)
	}
}

// The systemd units run the commands this binary has, from one shared environment file.
func TestSystemdUnits(t *testing.T) {
	t.Parallel()
	for unit, command := range map[string]string{"ace-agent.service": "run", "ace-agent-shim.service": "serve"} {
		raw, err := os.ReadFile(filepath.Join("..", "..", "packaging", "systemd", unit))
		require.NoError(t, err)
		require.Contains(t, string(raw), "ExecStart=/usr/bin/ace-agent "+command+"\n", unit)
		require.Contains(t, string(raw), "EnvironmentFile=/etc/ace/agent.env\n", unit)
		_, _, err = newRootCmd().Find([]string{command})
		require.NoError(t, err, "%s runs a command ace-agent has", unit)
	}
}
