package main

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/ace-agent/ace-agent/sqlapi"
)

// newSpockCmd is the spock group: exceptions (hand-written: it reads ace.spock_exceptions) and
// exception-sync (hand-written: its exit code says whether exceptions are pending); the
// registry adds exception-update.
func newSpockCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "spock",
		Short: "Spock's exception log: sync statuses, list, update",
		Long: `Spock's apply workers log the changes they could not apply in spock.exception_log. exception-sync
gives each logged exception its PENDING statuses on every node and collects them, exceptions
lists what your latest sync collected, and exception-update sets an exception's status.`,
	}
	cmd.AddCommand(newSpockExceptionsCmd(g), newSpockExceptionSyncCmd(g))
	return cmd
}

func newSpockExceptionsCmd(g *globals) *cobra.Command {
	var node, status string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "exceptions [flags]",
		Short: "List the Spock exceptions your latest exception-sync of each node collected",
		Long: `List the Spock exceptions your latest exception-sync of each node collected
(ace.spock_exceptions). Row images and error messages are shown only for tables you may SELECT.

Exit codes: 0 none listed, 1 exceptions listed, 2 error.`,
		Example: `  ace-agent spock exceptions
  ace-agent spock exceptions --node n2 --status pending --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withConn(cmd, g, func(_ context.Context, conn *pgx.Conn) error {
				return printSpockExceptions(cmd, conn, node, status, asJSON)
			})
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "only this node's exceptions")
	cmd.Flags().StringVar(&status, "status", "", "only exceptions of this status (PENDING, RESOLVED, …)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the rows as JSON")
	return cmd
}

func printSpockExceptions(cmd *cobra.Command, conn *pgx.Conn, node, status string, asJSON bool) error {
	rows, err := conn.Query(cmd.Context(), `SELECT to_jsonb(e) FROM ace.spock_exceptions(nullif($1, ''), nullif($2, '')) e`, node, status)
	if err != nil {
		return fmt.Errorf("read ace.spock_exceptions: %w", err)
	}
	docs, err := pgx.CollectRows(rows, pgx.RowTo[map[string]any])
	if err != nil {
		return fmt.Errorf("read ace.spock_exceptions: %w", err)
	}
	out := cmd.OutOrStdout()
	if asJSON {
		b, _ := json.MarshalIndent(docs, "", "  ")
		fmt.Fprintln(out, string(b))
	} else {
		tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tORIGIN\tCOMMIT_TS\tXID\tCOMMAND\tRETRY_ERRORED_AT\tTABLE\tOPERATION\tSTATUS\tERROR")
		for _, d := range docs {
			fmt.Fprintf(tw, "%v\t%v\t%v\t%v\t%v\t%v\t%v.%v\t%v\t%v\t%v\n", d["node_name"], d["remote_origin"], d["remote_commit_ts"],
				d["remote_xid"], d["command_counter"], d["retry_errored_at"], orDash(d["table_schema"]), orDash(d["table_name"]),
				orDash(d["operation"]), orDash(d["status"]), orDash(d["error_message"]))
		}
		_ = tw.Flush()
	}
	if len(docs) > 0 {
		return errDiffers
	}
	return nil
}

func newSpockExceptionSyncCmd(g *globals) *cobra.Command {
	var nodes string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "exception-sync [flags]",
		Short: "Give every logged Spock exception its PENDING statuses, and collect them",
		Long: `On each node, as you: add the PENDING rows of spock.exception_status and
spock.exception_status_detail that spock.exception_log's entries lack, then collect the node's
exceptions for 'ace-agent spock exceptions' (ace.spock_exception_sync). A node without Spock's
tables fails the task.

Exit codes: 0 no exception pending, 1 exceptions pending, 2 error.`,
		Example: `  ace-agent spock exception-sync
  ace-agent spock exception-sync --nodes n1,n2`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			task, err := submitFollowing(cmd, g, sqlapi.TypeSpockExceptionSync,
				sqlapi.SpockExceptionSyncArgs{Nodes: parseNodes(nodes)}, quiet)
			if err != nil {
				return err
			}
			if task.Status != sqlapi.StatusCompleted {
				return errTaskEnded(task)
			}
			if err := printJSON(cmd.OutOrStdout(), task.Result); err != nil {
				return err
			}
			return pendingVerdict(task.Result)
		},
	}
	cmd.Flags().StringVar(&nodes, "nodes", "all", "comma-separated node names, or all")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "show no progress")
	return cmd
}

// pendingVerdict is errDiffers when a sync's result counts a PENDING exception on some node.
func pendingVerdict(result json.RawMessage) error {
	var r struct {
		Nodes map[string]struct {
			ByStatus map[string]int `json:"by_status"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal(result, &r); err != nil {
		return fmt.Errorf("read the sync's result: %w", err)
	}
	for _, n := range r.Nodes {
		if n.ByStatus["PENDING"] > 0 {
			return errDiffers
		}
	}
	return nil
}
