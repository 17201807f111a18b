package main

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ace-agent/ace-agent/sqlapi"
)

// addTaskCommands gives every command of the task registry that the hand-written tree lacks a
// generic one: the table as its argument, a flag per other argument of the task type (its JSON
// name with dashes), then submit, follow with progress, and print the result (a diff's verdict,
// or the result as JSON). A new task type thus gets its command from its registry entry; one
// that needs ACE's flag names or its own output gets a hand-written command instead.
func addTaskCommands(root *cobra.Command, g *globals, specs []sqlapi.TaskSpec) {
	for _, spec := range specs {
		for _, path := range spec.Commands {
			words := strings.Fields(path)
			parent := commandAt(root, words[:len(words)-1])
			if !slices.ContainsFunc(parent.Commands(), func(c *cobra.Command) bool { return c.Name() == words[len(words)-1] }) {
				parent.AddCommand(newRegistryTaskCmd(g, spec, words[len(words)-1]))
			}
		}
	}
}

// commandAt returns the command at path below root, adding groups that are missing.
func commandAt(root *cobra.Command, path []string) *cobra.Command {
	cmd := root
	for _, name := range path {
		i := slices.IndexFunc(cmd.Commands(), func(c *cobra.Command) bool { return c.Name() == name })
		if i < 0 {
			group := &cobra.Command{Use: name, Short: "Commands of " + name}
			cmd.AddCommand(group)
			cmd = group
			continue
		}
		cmd = cmd.Commands()[i]
	}
	return cmd
}

// tableArg is the argument a generic command takes as its positional argument.
const tableArg = "table_name"

func newRegistryTaskCmd(g *globals, spec sqlapi.TaskSpec, name string) *cobra.Command {
	var quiet, asJSON bool
	names := sqlapi.ArgNames(spec.Args())
	cmd := &cobra.Command{
		Use:   name + " [flags]",
		Short: fmt.Sprintf("Submit a %s task and follow it", spec.Type),
		Long: fmt.Sprintf(`Submit a %s task to the local node, whose agent runs it; show its progress and print its
result. The flags are the task's arguments (ace.%s's).

Exit codes: 0 done (a diff: in sync), 1 a diff found differences, 2 error.`, spec.Type, spec.Submit[0]),
		Args: cobra.NoArgs,
	}
	if slices.Contains(names, tableArg) {
		cmd.Use, cmd.Args = name+" [flags] schema.table", cobra.ExactArgs(1)
	}
	f := cmd.Flags()
	flags := taskFlags(f, spec.Args())
	f.BoolVarP(&quiet, "quiet", "q", false, "show no progress")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	cmd.RunE = func(cmd *cobra.Command, pos []string) error {
		args := map[string]any{}
		if len(pos) == 1 {
			args[tableArg] = pos[0]
		}
		for argName, value := range flags {
			if f.Changed(flagName(argName)) {
				args[argName] = value()
			}
		}
		task, err := submitFollowing(cmd, g, spec.Type, args, quiet)
		if err != nil {
			return err
		}
		if spec.Result == sqlapi.ResultDiff {
			return reportDiff(cmd.OutOrStdout(), cmd.ErrOrStderr(), task, asJSON)
		}
		if task.Status != sqlapi.StatusCompleted {
			return errTaskEnded(task)
		}
		return printJSON(cmd.OutOrStdout(), task.Result)
	}
	return cmd
}

func flagName(arg string) string { return strings.ReplaceAll(arg, "_", "-") }

// taskFlags defines a flag per argument of the argument struct but the table, and returns how
// to read each one's value as the args take it.
func taskFlags(f *pflag.FlagSet, args any) map[string]func() any {
	values := map[string]func() any{}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for field := range t.Fields() {
			name, _, _ := strings.Cut(field.Tag.Get("json"), ",")
			switch {
			case field.Anonymous && name == "":
				walk(field.Type)
			case name != tableArg && name != "-" && field.IsExported():
				values[name] = defineFlag(f, flagName(name), field.Type)
			}
		}
	}
	walk(reflect.Indirect(reflect.ValueOf(args)).Type())
	return values
}

// defineFlag defines one argument's flag by its Go type. Durations, timestamps, task ids and
// arguments of any type are given as text, for the SQL validator to read and judge.
func defineFlag(f *pflag.FlagSet, name string, t reflect.Type) func() any {
	usage := "the task's " + strings.ReplaceAll(name, "-", "_") + " argument"
	switch {
	case t == reflect.TypeFor[time.Duration]():
		v := f.Duration(name, 0, usage)
		return func() any { return v.Seconds() }
	case t.Kind() == reflect.Bool:
		v := f.Bool(name, false, usage)
		return func() any { return *v }
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		v := f.Int64(name, 0, usage)
		return func() any { return *v }
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		v := f.Float64(name, 0, usage)
		return func() any { return *v }
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String:
		v := f.String(name, "", usage+": a comma-separated list")
		return func() any { return parseNodes(*v) }
	}
	v := f.String(name, "", usage)
	return func() any { return *v }
}
