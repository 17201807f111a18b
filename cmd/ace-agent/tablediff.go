package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/ace-agent/ace-agent/sqlapi"
)

type tableDiffOpts struct {
	nodes             string
	blockSize         int
	compareUnitSize   int
	tableFilter       string
	maxDiffRows       int64
	concurrencyFactor float64
	maxConnections    int
	againstOrigin     string
	until             string
	output            string
	recheckAfter      time.Duration
	overrideBlockSize bool
	columns           []string
	quiet             bool
	json              bool
}

func newTableDiffCmd(g *globals) *cobra.Command {
	var o tableDiffOpts
	cmd := &cobra.Command{
		Use:   "table-diff [flags] schema.table",
		Short: "Compare a table across the cluster's nodes",
		Long: `Compare a table across the cluster's nodes. The diff is submitted to the local node, whose
agent runs it; this command shows its progress and prints the verdict. The differing rows stay
in the local node's ace schema: query them with ace.diff_rows(task_id), or write an ACE diff
file with 'ace-agent diff export'.

Exit codes: 0 the tables match, 1 they differ, 2 error.`,
		Example: `  ace-agent table-diff public.orders
  ace-agent table-diff public.orders --nodes n1,n2 --table-filter "created_at > now() - interval '1 day'"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runTableDiff(cmd, g, &o, args[0])
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.nodes, "nodes", "n", "all", "nodes to compare: a comma-separated list, or all")
	f.IntVarP(&o.blockSize, "block-size", "b", 0, "rows per initial block (default: the agent's)")
	f.IntVarP(&o.compareUnitSize, "compare-unit-size", "u", 0, "rows per block compared row by row (default: the agent's)")
	f.StringVarP(&o.tableFilter, "table-filter", "F", "", "SQL predicate: compare only the rows it matches")
	f.Int64Var(&o.maxDiffRows, "max-diff-rows", 0, "stop once a node pair has this many differing rows (default: no limit)")
	f.Float64VarP(&o.concurrencyFactor, "concurrency-factor", "c", 0, "blocks hashed at once per node = CPUs × this, in (0, 4] (default: the agent's)")
	f.IntVarP(&o.maxConnections, "max-connections", "M", 0, "cap on connections per node (default: derived)")
	f.StringVar(&o.againstOrigin, "against-origin", "", "only rows whose last write came from this node (needs track_commit_timestamp)")
	f.StringVar(&o.until, "until", "", "only rows committed at or before this RFC 3339 time (needs track_commit_timestamp)")
	f.StringVarP(&o.output, "output", "o", "", "also write a report when the diff ends: json, html or csv (in the agent's ACE_REPORT_DIR)")
	f.DurationVar(&o.recheckAfter, "recheck-after", 0, "recheck the differences after this long and report only those that persist, e.g. 30s")
	f.BoolVarP(&o.overrideBlockSize, "override-block-size", "B", false, "allow a block size outside 1000..1000000")
	f.StringSliceVar(&o.columns, "columns", nil, "compare only these columns (comma-separated) and the key; such a diff cannot be repaired from")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "show no progress")
	f.BoolVar(&o.json, "json", false, "print the result as JSON instead of the verdict")
	return cmd
}

func (o *tableDiffOpts) args(table string) sqlapi.TableDiffArgs {
	return sqlapi.TableDiffArgs{DiffArgs: o.diffArgs(table), BlockSize: o.blockSize, OverrideBlockSize: o.overrideBlockSize, Columns: o.columns}
}

// diffArgs are the diff options every diff command shares.
func (o *tableDiffOpts) diffArgs(table string) sqlapi.DiffArgs {
	return sqlapi.DiffArgs{
		TableName:         table,
		Nodes:             parseNodes(o.nodes),
		CompareUnitSize:   o.compareUnitSize,
		TableFilter:       o.tableFilter,
		MaxDiffRows:       o.maxDiffRows,
		ConcurrencyFactor: o.concurrencyFactor,
		MaxConnections:    o.maxConnections,
		AgainstOrigin:     o.againstOrigin,
		Until:             o.until,
		Output:            o.output,
		RecheckAfter:      recheckSeconds(o.recheckAfter),
	}
}

// recheckSeconds sends recheck_after as seconds, or leaves it out.
func recheckSeconds(d time.Duration) any {
	if d <= 0 {
		return nil
	}
	return d.Seconds()
}

// parseNodes reads a comma-separated node list; "all" or nothing means every registered node.
func parseNodes(s string) []string {
	var nodes []string
	for _, n := range strings.Split(s, ",") {
		if n = strings.TrimSpace(n); n != "" {
			nodes = append(nodes, n)
		}
	}
	if len(nodes) == 1 && nodes[0] == "all" {
		return nil
	}
	return nodes
}

func runTableDiff(cmd *cobra.Command, g *globals, o *tableDiffOpts, table string) error {
	task, err := submitFollowing(cmd, g, sqlapi.TypeTableDiff, o.args(table), o.quiet)
	if err != nil {
		return err
	}
	return reportDiff(cmd.OutOrStdout(), cmd.ErrOrStderr(), task, o.json)
}

// submitFollowing connects to the local node, submits a task there and follows it to its end:
// what a command that only submits one task does.
func submitFollowing(cmd *cobra.Command, g *globals, typ sqlapi.TaskType, args any, quiet bool) (task sqlapi.Task, err error) {
	err = withConn(cmd, g, func(ctx context.Context, conn *pgx.Conn) error {
		task, err = submitAndFollow(ctx, conn, typ, args, quiet, cmd.ErrOrStderr())
		return err
	})
	return task, err
}

// submitAndFollow submits a task on the local node and follows it to its end. Interrupted
// after the submission, it says the task keeps running and how to cancel it.
func submitAndFollow(ctx context.Context, conn *pgx.Conn, typ sqlapi.TaskType, args any, quiet bool, stderr io.Writer) (sqlapi.Task, error) {
	id, err := sqlapi.Submit(ctx, conn, typ, args)
	if err != nil {
		return sqlapi.Task{}, err
	}
	fmt.Fprintf(stderr, "%s task %s submitted\n", typ, id)
	task, err := followTask(ctx, conn, id, quiet, stderr)
	if err != nil && ctx.Err() != nil {
		return task, withHint(fmt.Errorf("interrupted: task %s keeps running on the node", id),
			fmt.Sprintf("cancel it with SELECT ace.cancel('%s'); or: ace-agent task cancel %s", id, id))
	}
	return task, err
}

// followTask waits for a submitted task to end, showing its progress unless quiet.
func followTask(ctx context.Context, conn *pgx.Conn, id uuid.UUID, quiet bool, stderr io.Writer) (sqlapi.Task, error) {
	var onChange func(sqlapi.Task)
	if !quiet {
		if err := warnIfNoAgent(ctx, conn, stderr); err != nil {
			return sqlapi.Task{}, err
		}
		p := newProgressPrinter(stderr)
		defer p.finish()
		onChange = p.update
	}
	task, err := sqlapi.Wait(ctx, conn, id, time.Second, onChange)
	if err != nil {
		return task, fmt.Errorf("wait for task %s: %w", id, err)
	}
	return task, nil
}

// warnIfNoAgent tells the user when no agent has heartbeaten on this node lately: the task
// waits in the queue until one runs.
func warnIfNoAgent(ctx context.Context, conn *pgx.Conn, w io.Writer) error {
	var alive bool
	err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM ace.agents
		WHERE stopped_at IS NULL AND heartbeat_at > clock_timestamp() - interval '2 minutes')`).Scan(&alive)
	if err != nil {
		return fmt.Errorf("look for a running agent: %w", err)
	}
	if !alive {
		fmt.Fprintln(w, "warning: no agent is running on this node; the task waits until one starts ('ace-agent run')")
	}
	return nil
}

// errTaskEnded reports a task that did not complete.
func errTaskEnded(t sqlapi.Task) error {
	reason := "no reason recorded"
	if t.Error != nil {
		reason = *t.Error
	}
	if t.Status == sqlapi.StatusCancelled {
		return fmt.Errorf("%s task %s was cancelled: %s", t.Type, t.ID, reason)
	}
	return fmt.Errorf("%s task %s %s: %s", t.Type, t.ID, strings.ToLower(string(t.Status)), reason)
}
