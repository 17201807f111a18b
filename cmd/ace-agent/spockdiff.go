package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/ace-agent/ace-agent/engine/spockdiff"
	"github.com/ace-agent/ace-agent/sqlapi"
)

type spockDiffOpts struct {
	nodes  string
	output string
	quiet  bool
}

func newSpockDiffCmd(g *globals) *cobra.Command {
	var o spockDiffOpts
	cmd := &cobra.Command{
		Use:   "spock-diff [flags]",
		Short: "Compare the replication configuration of the cluster's nodes",
		Long: `Compare the replication configuration of the nodes: each node's subscriptions and the
replication sets (or publications) each table is in, on Spock, pglogical or native logical
replication. The task is submitted to the local node, whose agent reads every node's catalog
logged in as you. The result is written as ACE's file, spock_diffs-<timestamp>.json in the
current directory, and
summed up on stdout; it stays in ace.tasks too (SELECT result FROM ace.tasks WHERE task_id = ...).

Exit codes: 0 the nodes replicate alike, 1 they differ, 2 error.`,
		Example: `  ace-agent spock-diff
  ace-agent spock-diff --nodes n1,n2`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSpockDiff(cmd, g, &o)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.nodes, "nodes", "n", "all", "nodes to compare: a comma-separated list, or all")
	f.StringVarP(&o.output, "output", "o", "json", "the file's format: json (the only one, as in ACE)")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "show no progress")
	return cmd
}

func runSpockDiff(cmd *cobra.Command, g *globals, o *spockDiffOpts) error {
	if o.output != "json" {
		return withHint(fmt.Errorf("--output %q is not a spock-diff format", o.output), "spock-diff writes JSON only: leave --output out")
	}
	task, err := submitFollowing(cmd, g, sqlapi.TypeSpockDiff, sqlapi.SpockDiffArgs{Nodes: parseNodes(o.nodes)}, o.quiet)
	if err != nil {
		return err
	}
	if task.Status != sqlapi.StatusCompleted {
		return errTaskEnded(task)
	}
	var r spockdiff.Result
	if err := json.Unmarshal(task.Result, &r); err != nil {
		return fmt.Errorf("decode the result of task %s: %w", task.ID, err)
	}
	path, err := writeSpockDiffFile(".", task.Result, time.Now())
	if err != nil {
		return err
	}
	printSpockDiff(cmd.OutOrStdout(), &r)
	fmt.Fprintf(cmd.ErrOrStderr(), "spock-diff written to %s\n", path)
	if r.Mismatch() {
		return errDiffers
	}
	return nil
}

// writeSpockDiffFile writes the result under ACE's file name, indented as ACE writes it.
func writeSpockDiffFile(dir string, result json.RawMessage, now time.Time) (string, error) {
	var r any
	if err := json.Unmarshal(result, &r); err != nil {
		return "", fmt.Errorf("decode the spock-diff result: %w", err)
	}
	out, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encode the spock-diff file: %w", err)
	}
	path := filepath.Join(dir, "spock_diffs-"+now.Format("20060102150405")+".json")
	if err := os.WriteFile(path, append(out, '\n'), 0o644); err != nil {
		return "", fmt.Errorf("write the spock-diff file: %w", err)
	}
	return path, nil
}

// printSpockDiff sums up each pair of nodes and what differs between them.
func printSpockDiff(w io.Writer, r *spockdiff.Result) {
	fmt.Fprintf(w, "replication: %s\n", r.Provider)
	pairs := make([]string, 0, len(r.Diffs))
	for p := range r.Diffs {
		pairs = append(pairs, p)
	}
	slices.Sort(pairs)
	for _, p := range pairs {
		d := r.Diffs[p]
		if !d.Mismatch {
			fmt.Fprintf(w, "✔ %s: %s\n", p, d.Message)
			continue
		}
		fmt.Fprintf(w, "✘ %s: %s\n", p, d.Message)
		s := d.Details.Subscriptions
		for _, m := range slices.Concat(s.MissingOnNode1, s.MissingOnNode2) {
			fmt.Fprintf(w, "    missing: %s\n", m)
		}
		for _, x := range s.Different {
			fmt.Fprintf(w, "    differ: %s: %s (enabled %t, sets %v, forward %v) vs %s (enabled %t, sets %v, forward %v)\n", x.Name,
				x.Node1.SubName, x.Node1.SubEnabled, x.Node1.ReplicationSets, x.Node1.ForwardOrigins,
				x.Node2.SubName, x.Node2.SubEnabled, x.Node2.ReplicationSets, x.Node2.ForwardOrigins)
		}
		for _, t := range d.Details.ReplicationSets.TablePlacementDiffs {
			fmt.Fprintf(w, "    table %s: %s vs %s\n", t.TableName, t.Node1RepSet, t.Node2RepSet)
		}
	}
}
