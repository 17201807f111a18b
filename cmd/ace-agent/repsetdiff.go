package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/ace-agent/ace-agent/sqlapi"
)

type repsetDiffOpts struct {
	parentDiffOpts
	provider string
}

// newRepsetDiffCmd is ACE's repset-diff: every table of a replication set or publication, each
// restricted to the rows the set replicates.
func newRepsetDiffCmd(g *globals) *cobra.Command {
	var o repsetDiffOpts
	cmd := &cobra.Command{
		Use:   "repset-diff [flags] repset",
		Short: "Diff every table of a replication set across the cluster's nodes",
		Long: `Diff every table of a replication set: a Spock or pglogical replication set, or a
publication (FOR ALL TABLES included), read on each node. Each table is diffed in a child
table-diff task under the set's row filter (ANDed with --table-filter), so rows the set never
replicates are not drift. A table in the set on some nodes only is listed as missing; one whose
row filter differs between the nodes as failed.

Exit codes: 0 identical, 1 differences (or tables missing from the set on some node), 2 error
(or a table could not be diffed).`,
		Example: `  ace-agent repset-diff default
  ace-agent repset-diff orders_pub --provider native -T public.audit_log`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runRepsetDiff(cmd, g, &o, args[0])
		},
	}
	f := cmd.Flags()
	o.bind(f, "", "SQL predicate every table is compared under, ANDed with the set's row filter")
	f.StringVar(&o.provider, "provider", "", "spock, pglogical or native (default: detected on each node)")
	return cmd
}

func runRepsetDiff(cmd *cobra.Command, g *globals, o *repsetDiffOpts, repset string) error {
	if err := o.checkOutput("repset-diff"); err != nil {
		return err
	}
	skip, err := o.skip()
	if err != nil {
		return err
	}
	args := sqlapi.RepsetDiffArgs{Repset: repset, Nodes: parseNodes(o.nodes), SkipTables: skip, Provider: o.provider,
		ChildDiffArgs: o.childArgs()}
	task, err := submitFollowing(cmd, g, sqlapi.TypeRepsetDiff, args, o.quiet)
	if err != nil {
		return err
	}
	if task.Status != sqlapi.StatusCompleted {
		return errTaskEnded(task)
	}
	return reportRepsetDiff(cmd.OutOrStdout(), task, o.json)
}

// reportRepsetDiff prints the result and returns errDiffers on differences, or an error when a
// table could not be diffed.
func reportRepsetDiff(w io.Writer, task sqlapi.Task, asJSON bool) error {
	var v schemaDiffVerdict
	if err := json.Unmarshal(task.Result, &v); err != nil {
		return fmt.Errorf("decode the result of task %s: %w", task.ID, err)
	}
	if asJSON {
		if err := printJSON(w, task.Result); err != nil {
			return err
		}
	} else {
		v.Compare = sqlapi.CompareData
		fmt.Fprintln(w, v.describe(task))
	}
	if len(v.Failed) > 0 {
		return fmt.Errorf("repset-diff task %s: %d table(s) could not be diffed, first %s: %s", task.ID, len(v.Failed), v.Failed[0].Table, v.Failed[0].Error)
	}
	if len(v.Differed)+len(v.Missing) > 0 {
		return errDiffers
	}
	return nil
}
