package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/ace-agent/ace-agent/engine/mtree"
	"github.com/ace-agent/ace-agent/sqlapi"
)

func newMtreeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "mtree",
		Short: "Merkle trees kept fresh by the agents: build, diff, status, teardown",
		Long: `Merkle trees make a repeated diff of a large table cost what changed, not what exists. Each
node's agent streams its node's changes (a logical replication slot and a publication of the
tracked tables) and an mtree diff rehashes only the leaves those changes touched.`,
	}
	cmd.AddCommand(newMtreeBuildCmd(g), newMtreeDiffCmd(g), newMtreeStatusCmd(g),
		newMtreeTeardownCmd(g, "teardown"), newMtreeTeardownCmd(g, "teardown-table"))
	return cmd
}

type mtreeBuildOpts struct {
	nodes    string
	leafRows int
	quiet    bool
	json     bool
}

func newMtreeBuildCmd(g *globals) *cobra.Command {
	var o mtreeBuildOpts
	cmd := &cobra.Command{
		Use:   "build [flags] schema.table",
		Short: "Build a table's Merkle tree on every node and start tracking its changes",
		Long: `Build a table's Merkle tree on every node, with the same leaves everywhere, and start tracking
its changes. Building again rebuilds. Only the table's owner may build (the table is
published for change tracking), and each node's agent needs the REPLICATION attribute.

Exit codes: 0 built, 2 error.`,
		Example: `  ace-agent mtree build public.orders
  ace-agent mtree build public.orders --leaf-rows 5000`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			task, err := submitFollowing(cmd, g, sqlapi.TypeMtreeBuild,
				sqlapi.MtreeBuildArgs{TableName: args[0], Nodes: parseNodes(o.nodes), LeafRows: o.leafRows}, o.quiet)
			if err != nil {
				return err
			}
			return reportBuild(cmd.OutOrStdout(), task, o.json)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.nodes, "nodes", "n", "all", "nodes to build on: a comma-separated list, or all")
	f.IntVarP(&o.leafRows, "leaf-rows", "b", 0, "rows per leaf, 100..1000000 (default 250)")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "show no progress")
	f.BoolVar(&o.json, "json", false, "print the result as JSON")
	return cmd
}

func reportBuild(w io.Writer, t sqlapi.Task, asJSON bool) error {
	if t.Status != sqlapi.StatusCompleted {
		return errTaskEnded(t)
	}
	if asJSON {
		return printJSON(w, t.Result)
	}
	var r mtree.BuildResult
	if err := json.Unmarshal(t.Result, &r); err != nil {
		return fmt.Errorf("decode the result of task %s: %w", t.ID, err)
	}
	fmt.Fprintf(w, "✔ Merkle tree of %s built on %s: %d leaves of about %d rows (cut at %s's keys) in %s\n",
		r.TableName, strings.Join(r.Nodes, ", "), r.Leaves, r.LeafRows, r.ReferenceNode, r.TimeTaken)
	return nil
}

type mtreeDiffOpts struct {
	tableDiffOpts
	cdcTimeout time.Duration
}

func newMtreeDiffCmd(g *globals) *cobra.Command {
	var o mtreeDiffOpts
	cmd := &cobra.Command{
		Use:   "diff [flags] schema.table",
		Short: "Compare a table's Merkle trees across the nodes, then the rows of the leaves that differ",
		Long: `Compare a table's Merkle trees. Every node's tree is first brought up to the WAL position the
node had when the diff began (its agent must be running); the diff then compares parents,
leaves and rows. Its result, rows, export, repair and rerun are those of a table-diff.

Exit codes: 0 the tables match, 1 they differ, 2 error.`,
		Example: `  ace-agent mtree diff public.orders
  ace-agent mtree diff public.orders --cdc-timeout 2m --output html`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			task, err := submitFollowing(cmd, g, sqlapi.TypeMtreeDiff, o.args(args[0]), o.quiet)
			if err != nil {
				return err
			}
			return reportDiff(cmd.OutOrStdout(), cmd.ErrOrStderr(), task, o.json)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.nodes, "nodes", "n", "all", "nodes to compare: a comma-separated list, or all")
	f.IntVarP(&o.compareUnitSize, "compare-unit-size", "u", 0, "rows per range compared row by row inside a differing leaf")
	f.StringVarP(&o.tableFilter, "table-filter", "F", "", "SQL predicate: report only differing rows it matches")
	f.Int64Var(&o.maxDiffRows, "max-diff-rows", 0, "stop once a node pair has this many differing rows (default: no limit)")
	f.Float64VarP(&o.concurrencyFactor, "concurrency-factor", "c", 0, "ranges narrowed at once = CPUs × this, in (0, 4]")
	f.IntVarP(&o.maxConnections, "max-connections", "M", 0, "cap on connections per node (default: derived)")
	f.StringVar(&o.againstOrigin, "against-origin", "", "only rows whose last write came from this node (needs track_commit_timestamp)")
	f.StringVar(&o.until, "until", "", "only rows committed at or before this RFC 3339 time (needs track_commit_timestamp)")
	f.StringVarP(&o.output, "output", "o", "", "also write a report when the diff ends: json, html or csv (in the agent's ACE_REPORT_DIR)")
	f.DurationVar(&o.recheckAfter, "recheck-after", 0, "recheck the differences after this long and report only those that persist")
	f.DurationVar(&o.cdcTimeout, "cdc-timeout", 0, "how long to wait for every node's change stream to catch up (default 1m)")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "show no progress")
	f.BoolVar(&o.json, "json", false, "print the result as JSON instead of the verdict")
	return cmd
}

func (o *mtreeDiffOpts) args(table string) sqlapi.MtreeDiffArgs {
	a := sqlapi.MtreeDiffArgs{DiffArgs: o.diffArgs(table)}
	if o.cdcTimeout > 0 {
		a.CDCTimeout = fmt.Sprintf("%f seconds", o.cdcTimeout.Seconds())
	}
	return a
}

func newMtreeStatusCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [schema.table]",
		Short: "Show every node's Merkle trees and change stream",
		Long: `Show, per table and node: leaves, rows, the largest leaf, stale leaves, pending changes, the
stream's confirmed position and lag, the WAL its slot retains, the agent's last heartbeat, when
the tree was built and its hash version. The local agent collects it from every node each
heartbeat (reported_at says when).

Exit codes: 0 no warning, 1 a node reports a warning, 2 error.`,
		Example: `  ace-agent mtree status
  ace-agent mtree status public.orders --json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			table := ""
			if len(args) == 1 {
				table = args[0]
			}
			return withConn(cmd, g, func(_ context.Context, conn *pgx.Conn) error { return printTreeStatus(cmd, conn, table, asJSON) })
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the rows as JSON")
	return cmd
}

func printTreeStatus(cmd *cobra.Command, conn *pgx.Conn, table string, asJSON bool) error {
	ctx := cmd.Context()
	rows, err := conn.Query(ctx, `SELECT to_jsonb(s) FROM ace.mtree_status(nullif($1, '')) s`, table)
	if err != nil {
		return fmt.Errorf("read ace.mtree_status: %w", err)
	}
	docs, err := pgx.CollectRows(rows, pgx.RowTo[map[string]any])
	if err != nil {
		return fmt.Errorf("read ace.mtree_status: %w", err)
	}
	out := cmd.OutOrStdout()
	if asJSON {
		b, _ := json.MarshalIndent(docs, "", "  ")
		fmt.Fprintln(out, string(b))
	} else {
		tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TABLE\tNODE\tSTATUS\tLEAVES\tROWS\tLARGEST\tSTALE\tPENDING\tLAG\tRETAINED\tHEARTBEAT\tWARNING")
		for _, d := range docs {
			fmt.Fprintf(tw, "%v\t%v\t%v\t%v\t%v\t%v\t%v\t%v\t%v\t%v\t%v\t%v\n", d["table_name"], d["node_name"], d["status"], d["leaves"], d["row_count"],
				d["largest_leaf_rows"], d["dirty_leaves"], d["pending_changes"], bytesText(d["lag_bytes"]), bytesText(d["retained_wal_bytes"]),
				orDash(d["heartbeat_at"]), orDash(d["warning"]))
		}
		_ = tw.Flush()
		if len(docs) == 0 {
			fmt.Fprintln(cmd.ErrOrStderr(), "no Merkle tree reported yet: build one with 'ace-agent mtree build schema.table' (the agents report every heartbeat)")
		}
	}
	for _, d := range docs {
		if d["warning"] != nil {
			return errDiffers
		}
	}
	return nil
}

func bytesText(v any) string {
	f, ok := v.(float64)
	if !ok {
		return "-"
	}
	switch {
	case f >= 1<<30:
		return fmt.Sprintf("%.1f GB", f/(1<<30))
	case f >= 1<<20:
		return fmt.Sprintf("%.1f MB", f/(1<<20))
	case f >= 1<<10:
		return fmt.Sprintf("%.1f kB", f/(1<<10))
	}
	return fmt.Sprintf("%.0f B", f)
}

func orDash(v any) any {
	if v == nil {
		return "-"
	}
	return v
}

func newMtreeTeardownCmd(g *globals, use string) *cobra.Command {
	var nodes string
	var quiet, asJSON bool
	one := use == "teardown-table"
	cmd := &cobra.Command{
		Use:   use,
		Short: "Stop tracking every table, and drop each node's slot and publications",
		Long: `Stop tracking every table: the trees go, each node's agent stops its change stream, the
publications are dropped, and so is each node's slot. Nothing is left behind, even after a
failed build, and a node whose agent is down is cleaned up too.

Exit codes: 0 done, 2 error.`,
		Example: "  ace-agent mtree teardown",
		Args:    cobra.NoArgs,
	}
	if one {
		cmd.Use = "teardown-table [flags] schema.table"
		cmd.Short = "Stop tracking one table: drop its trees and publications"
		cmd.Long = `Stop tracking one table: its trees go and its publications are dropped; a node left with no
tracked table loses its slot too.

Exit codes: 0 done, 2 error.`
		cmd.Example = "  ace-agent mtree teardown-table public.orders"
		cmd.Args = cobra.ExactArgs(1)
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		a := sqlapi.MtreeTeardownArgs{Nodes: parseNodes(nodes)}
		if one {
			a.TableName = args[0]
		}
		task, err := submitFollowing(cmd, g, sqlapi.TypeMtreeTeardown, a, quiet)
		if err != nil {
			return err
		}
		if task.Status != sqlapi.StatusCompleted {
			return errTaskEnded(task)
		}
		if asJSON {
			return printJSON(cmd.OutOrStdout(), task.Result)
		}
		var r mtree.TeardownResult
		if err := json.Unmarshal(task.Result, &r); err != nil {
			return fmt.Errorf("decode the result of task %s: %w", task.ID, err)
		}
		for node, tables := range r.Tables {
			fmt.Fprintf(cmd.OutOrStdout(), "%s: stopped tracking %s\n", node, orNone(tables))
		}
		if len(r.SlotsDropped) > 0 {
			fmt.Fprintf(cmd.OutOrStdout(), "slots dropped on %s\n", strings.Join(r.SlotsDropped, ", "))
		}
		for _, note := range r.Notices {
			fmt.Fprintln(cmd.OutOrStdout(), note)
		}
		return nil
	}
	f := cmd.Flags()
	f.StringVarP(&nodes, "nodes", "n", "all", "nodes to tear down on: a comma-separated list, or all")
	f.BoolVarP(&quiet, "quiet", "q", false, "show no progress")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func orNone(list []string) string {
	if len(list) == 0 {
		return "nothing"
	}
	return strings.Join(list, ", ")
}
