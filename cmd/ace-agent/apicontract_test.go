package main

import (
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// One option, three places: the SQL function's arguments, the task's Go argument struct (its JSON
// names are the args keys) and the CLI command's flags (dashes for underscores), for every task
// type of the registry that has a command. An option added to one of them must be added to all
// three; the exceptions are named here, with the reason.
var apiExceptions = map[sqlapi.TaskType]struct{ notInSQL, notInGo, notInCLI []string }{
	sqlapi.TypeTableRepair: {
		// The server resolves table_name and diff_nodes from the diff task when the repair is
		// submitted. --diff-file submits a diff-import task (ace.diff_import) first and repairs
		// that: the SQL path makes the same two calls. --repair-plan takes a plan file (YAML or
		// JSON, sent as plan) or a saved plan's name (sent as repair_plan), as ACE's flag takes a file.
		notInSQL: []string{"table_name", "diff_nodes", "diff_file"},
		notInGo:  []string{"diff_file"},
		notInCLI: []string{"table_name", "diff_nodes", "plan"},
	},
	sqlapi.TypeTableRerun: {
		// A rerun rechecks its diff's table, nodes, filter and columns: the server fills them from
		// the diff task. --diff-file imports a diff file first, as for a repair.
		notInSQL: []string{"table_name", "nodes", "table_filter", "max_diff_rows", "columns", "diff_file"},
		notInGo:  []string{"diff_file"},
		notInCLI: []string{"nodes", "table_filter", "max_diff_rows", "columns"},
	},
	sqlapi.TypeSpockDiff: {
		// ACE's --output, whose one value (json) is the format of the file the command writes.
		notInSQL: []string{"output"},
		notInGo:  []string{"output"},
	},
	sqlapi.TypeSchemaDiff: {
		// The schema is the positional argument. --skip-file is read by the CLI into skip_tables
		// (the server opens no path a caller names); --output is ACE's flag, json only.
		notInSQL: []string{"skip_file", "output"},
		notInGo:  []string{"skip_file", "output"},
		notInCLI: []string{"schema_name"},
	},
	sqlapi.TypeRepsetDiff: {
		// The set is the positional argument; --skip-file and --output as for schema-diff.
		notInSQL: []string{"skip_file", "output"},
		notInGo:  []string{"skip_file", "output"},
		notInCLI: []string{"repset"},
	},
}

// presentationFlags only change what the CLI prints.
var presentationFlags = []string{"quiet", "json"}

func TestSQLGoAndCLIOptionsAgree(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	root := newRootCmd()
	for _, spec := range sqlapi.TaskSpecs {
		if len(spec.Commands) == 0 {
			continue
		}
		t.Run(string(spec.Type), func(t *testing.T) {
			x := apiExceptions[spec.Type]
			// The table is the commands' positional argument.
			x.notInCLI = append(x.notInCLI, "table_name")
			function, command := spec.Submit[0], spec.Commands[0]
			sqlNames := functionArgs(t, e, function)
			for _, procedure := range spec.Submit[1:] {
				require.Equal(t, sqlNames, functionArgs(t, e, procedure), "ace.%s and CALL ace.%s take the same options", function, procedure)
			}
			goNames := jsonNames(spec.Args())
			cliNames := flagNames(t, root, command)
			for _, name := range union(sqlNames, goNames, cliNames) {
				if !slices.Contains(x.notInSQL, name) {
					require.Contains(t, sqlNames, name, "ace.%s has no argument %s", function, name)
				}
				if !slices.Contains(x.notInGo, name) {
					require.Contains(t, goNames, name, "%T has no field %s", spec.Args(), name)
				}
				if !slices.Contains(x.notInCLI, name) {
					require.Contains(t, cliNames, name, "ace-agent %s has no flag --%s", command, strings.ReplaceAll(name, "_", "-"))
				}
			}
		})
	}
}

// functionArgs lists the input arguments of the ace function or procedure name, INOUT results of
// a CALL form left out.
func functionArgs(t *testing.T, e *testcluster.Env, name string) []string {
	t.Helper()
	rows, err := e.Node("n1").Pool.Query(t.Context(), `
		SELECT a.n FROM pg_proc p
		CROSS JOIN LATERAL unnest(p.proargnames, coalesce(p.proargmodes, array_fill('i'::"char", ARRAY[cardinality(p.proargnames)]))) AS a(n, m)
		WHERE p.pronamespace = 'ace'::regnamespace AND p.proname = $1
		  AND (a.m = 'i' OR (a.m = 'b' AND a.n NOT IN ('task_id', 'status', 'differing_rows', 'outcome', 'summary')))`, name)
	require.NoError(t, err)
	var names []string
	for rows.Next() {
		var n string
		require.NoError(t, rows.Scan(&n))
		names = append(names, n)
	}
	require.NoError(t, rows.Err())
	require.NotEmpty(t, names, "ace.%s exists", name)
	sort.Strings(names)
	return names
}

func jsonNames(v any) []string {
	names := sqlapi.ArgNames(v)
	sort.Strings(names)
	return names
}

func flagNames(t *testing.T, root *cobra.Command, command string) []string {
	t.Helper()
	cmd, _, err := root.Find(strings.Fields(command))
	require.NoError(t, err)
	var names []string
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if !slices.Contains(presentationFlags, f.Name) {
			names = append(names, strings.ReplaceAll(f.Name, "-", "_"))
		}
	})
	sort.Strings(names)
	return names
}

func union(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		for _, s := range l {
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	sort.Strings(out)
	return out
}
