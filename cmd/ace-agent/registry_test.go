package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// Every CLI command the task registry names is in the command tree.
func TestRegistryCommandsExist(t *testing.T) {
	t.Parallel()
	root := newRootCmd()
	for _, spec := range sqlapi.TaskSpecs {
		for _, path := range spec.Commands {
			t.Run(path, func(t *testing.T) {
				cmd, rest, err := root.Find(strings.Fields(path))
				require.NoError(t, err)
				require.Empty(t, rest)
				require.Equal(t, "ace-agent "+path, cmd.CommandPath(), "%s's command", spec.Type)
				require.NotNil(t, cmd.RunE, "ace-agent %s runs something", path)
			})
		}
	}
}

// A task type without a hand-written command gets one from its registry entry: the table as its
// argument, a flag per other argument, and the task submitted, followed and reported.
func TestRegistryCommandFromArguments(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	createTable(e, 10)
	n1 := e.Node("n1")
	n1.StartAgent(t)
	spec, ok := sqlapi.Spec(sqlapi.TypeTableDiff)
	require.True(t, ok)
	spec.Commands = []string{"example group-diff"}
	root := &cobra.Command{Use: "ace-agent", SilenceErrors: true, SilenceUsage: true}
	addTaskCommands(root, &globals{dsn: n1.DSN}, []sqlapi.TaskSpec{spec})

	cmd, _, err := root.Find([]string{"example", "group-diff"})
	require.NoError(t, err)
	var flags []string
	cmd.Flags().VisitAll(func(f *pflag.Flag) { flags = append(flags, f.Name) })
	var want []string
	for _, name := range sqlapi.ArgNames(spec.Args()) {
		if name != "table_name" {
			want = append(want, strings.ReplaceAll(name, "_", "-"))
		}
	}
	require.ElementsMatch(t, append(want, "quiet", "json"), flags)

	var stdout, stderr bytes.Buffer
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	root.SetArgs([]string{"example", "group-diff", "public.t", "--nodes", "n1,n2", "--max-diff-rows", "5",
		"--recheck-after", "2 seconds", "--table-filter", "id > 2", "--json", "--quiet"})
	require.NoError(t, root.ExecuteContext(t.Context()), "stderr: %s", stderr.String())
	id := submittedID(t, cliResult{stderr: stderr.String()})
	task := getTask(t, n1, id)
	require.Equal(t, sqlapi.StatusCompleted, task.Status)
	var args map[string]any
	require.NoError(t, json.Unmarshal(task.Args, &args))
	require.Equal(t, "public.t", args["table_name"])
	require.Equal(t, []any{"n1", "n2"}, args["nodes"])
	require.EqualValues(t, 5, args["max_diff_rows"])
	require.EqualValues(t, 2, args["recheck_after"])
	require.Equal(t, "id > 2", args["table_filter"])
	require.NotContains(t, args, "block_size", "flags not given are left to the SQL defaults")
	var summary map[string]any
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &summary), stdout.String())
	require.Contains(t, summary, "table_name", "--json prints the diff's summary")
}
