package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/sqlapi"
)

type tableRerunOpts struct {
	diff diffRef
	json bool
}

func newTableRerunCmd(g *globals) *cobra.Command {
	var o tableRerunOpts
	cmd := &cobra.Command{
		Use:   "table-rerun [flags] [schema.table] (--diff-task ID | --diff-file FILE)",
		Short: "Recheck exactly the rows a diff found, on the same nodes",
		Long: `Recheck exactly the keys a diff found, on the diff's nodes, at a fresh snapshot of each. The
differences that persist are stored as a diff of their own, which table-repair can act on.
--diff-file imports an ACE diff file first.

Exit codes: 0 all previously reported differences are gone, 1 some persist, 2 error.`,
		Example: `  ace-agent table-rerun --diff-task 109d16d3-5d16-48cd-b94f-fc5edfd6a97c
  ace-agent table-rerun -f public_orders_diffs-20250101120000.json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runTableRerun(cmd, g, &o, args)
		},
	}
	o.diff.flags(cmd)
	cmd.Flags().BoolVarP(&o.diff.quiet, "quiet", "q", false, "show no progress")
	cmd.Flags().BoolVar(&o.json, "json", false, "print the result as JSON")
	return cmd
}

func runTableRerun(cmd *cobra.Command, g *globals, o *tableRerunOpts, args []string) error {
	stderr := cmd.ErrOrStderr()
	return withConn(cmd, g, func(ctx context.Context, conn *pgx.Conn) error {
		diff, err := o.diff.resolve(ctx, conn, stderr)
		if err != nil {
			return err
		}
		rerunArgs := sqlapi.TableRerunArgs{DiffTask: diff}
		if len(args) == 1 {
			rerunArgs.TableName = args[0]
		}
		task, err := submitAndFollow(ctx, conn, sqlapi.TypeTableRerun, rerunArgs, o.diff.quiet, stderr)
		if err != nil {
			return err
		}
		return reportRerun(cmd.OutOrStdout(), stderr, task, o.json)
	})
}

func reportRerun(stdout, stderr io.Writer, t sqlapi.Task, asJSON bool) error {
	if t.Status != sqlapi.StatusCompleted {
		return errTaskEnded(t)
	}
	var s engine.DiffSummary
	if err := json.Unmarshal(t.Result, &s); err != nil {
		return fmt.Errorf("decode the result of task %s: %w", t.ID, err)
	}
	for _, w := range s.Warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	switch {
	case asJSON:
		if err := printJSON(stdout, t.Result); err != nil {
			return err
		}
	case s.InSync():
		fmt.Fprintf(stdout, "✔ All previously reported differences have been resolved: %s on %s\n", s.TableName, strings.Join(s.Nodes, ", "))
	default:
		printVerdict(stdout, t.ID.String(), &s)
		fmt.Fprintf(stdout, "repair them with: ace-agent table-repair --diff-task %s --source-of-truth NODE\n", t.ID)
	}
	if !s.InSync() {
		return errDiffers
	}
	return nil
}

func sortStrings(s []string) { sort.Strings(s) }
