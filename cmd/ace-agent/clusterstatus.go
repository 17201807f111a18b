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

	"github.com/ace-agent/ace-agent/sqlapi"
)

// The cluster's life on the command line (issue 19): what ace.cluster_status,
// ace.cluster_health, ace.cluster_config_diff and the leader functions say, node state changes,
// and the event log. Each command reads or calls the SQL function of the same name on the
// local node; nothing is computed here.

// encodeJSON writes v as indented JSON.
func encodeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newClusterStatusCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Every node as this node's agent last saw it (ace.cluster_status())",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withConn(cmd, g, func(ctx context.Context, conn *pgx.Conn) error {
				status, err := sqlapi.ClusterStatus(ctx, conn)
				if err != nil {
					return err
				}
				if asJSON {
					return encodeJSON(cmd.OutOrStdout(), status)
				}
				return printClusterStatus(cmd.OutOrStdout(), status)
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printClusterStatus(w io.Writer, status []sqlapi.NodeStatus) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tREACHABLE\tAGENT\tHEARTBEAT\tVERSION\tSCHEMA\tLEADER\tSAME CONFIG\tSUBSCRIPTIONS\tSLOT LAG\tWARNING")
	for _, s := range status {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Node, s.State, yesNo(s.Reachable), alive(s.AgentAlive),
			seconds(s.HeartbeatAgeSeconds), dashIfNil(s.Version), dashIfNil(s.SchemaVersion), yesNo(s.IsLeader), dashIfNil(s.SameConfig),
			subscriptions(s), dashIfNil(s.MaxSlotLagBytes), dashIfNil(s.Warning))
	}
	return tw.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func alive(b bool) string {
	if b {
		return "alive"
	}
	return "NOT ALIVE"
}

func seconds(s *float64) string {
	if s == nil {
		return "-"
	}
	return (time.Duration(*s * float64(time.Second))).Round(time.Millisecond).String() + " ago"
}

func subscriptions(s sqlapi.NodeStatus) string {
	if s.SubscriptionsTotal == nil {
		return "-"
	}
	return fmt.Sprintf("%d/%d enabled", *s.SubscriptionsEnabled, *s.SubscriptionsTotal)
}

// dashIfNil prints a value, or - for none.
func dashIfNil[T any](v *T) string {
	if v == nil {
		return "-"
	}
	if b, ok := any(*v).(bool); ok {
		return yesNo(b)
	}
	return fmt.Sprint(*v)
}

func newClusterHealthCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "health",
		Short: "healthy, degraded or unavailable, as this node sees the cluster (ace.cluster_health())",
		Long: `Print the cluster's health as this node sees it (ace.cluster_health()): healthy when every node
that is not joining is live, degraded when more than half of them are (a quorum), unavailable
otherwise. Exit code 0 when healthy, 1 when degraded, 2 when unavailable.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withConn(cmd, g, func(ctx context.Context, conn *pgx.Conn) error {
				h, err := sqlapi.ClusterHealth(ctx, conn)
				if err != nil {
					return err
				}
				if asJSON {
					err = encodeJSON(cmd.OutOrStdout(), h)
				} else {
					err = printHealth(cmd.OutOrStdout(), h)
				}
				if err != nil {
					return err
				}
				switch h.Health {
				case sqlapi.Healthy:
					return nil
				case sqlapi.Degraded:
					return errDiffers
				}
				return &codedError{code: exitError}
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printHealth(w io.Writer, h sqlapi.Health) error {
	quorum := "in quorum"
	if !h.InQuorum {
		quorum = "NO QUORUM"
	}
	_, err := fmt.Fprintf(w, "%s: %d of %d active nodes live, %s; missing: %s; leader: %s; ready: %s\n", h.Health, h.LiveNodes,
		h.ActiveNodes, quorum, noneIfEmpty(strings.Join(h.MissingNodes, ", ")), noneIfEmpty(dashIfNil(h.Leader)), yesNo(h.Ready))
	return err
}

func noneIfEmpty(s string) string {
	if s == "" || s == "-" {
		return "none"
	}
	return s
}

func newClusterMapCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "map",
		Short: "The registered nodes with their states, liveness and the leader",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withConn(cmd, g, func(ctx context.Context, conn *pgx.Conn) error {
				m, err := sqlapi.ReadClusterMap(ctx, conn)
				if err != nil {
					return err
				}
				if asJSON {
					return encodeJSON(cmd.OutOrStdout(), m)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NODE\tCLUSTER\tSTATE\tSINCE\tREASON\tLIVE\tLEADER\tCONNINFO")
				for _, n := range m.Nodes {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, n.Cluster, n.State, n.StateChangedAt.UTC().Format(time.RFC3339),
						dashIfNil(n.StateReason), yesNo(n.Live), yesNo(n.Leader), n.ConnInfo)
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newClusterConfigDiffCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config-diff",
		Short: "How each node's ace.nodes and ace.settings differ from this node's (exit 1 if they do)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withConn(cmd, g, func(ctx context.Context, conn *pgx.Conn) error {
				diff, err := sqlapi.ClusterConfigDiff(ctx, conn)
				if err != nil {
					return err
				}
				if len(diff) == 0 {
					fmt.Fprintln(cmd.OutOrStdout(), "every node's ace.nodes and ace.settings are this node's")
					return nil
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NODE\tITEM\tTHIS NODE\tTHAT NODE")
				for _, d := range diff {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", d.Node, d.Item, d.Expected, d.Actual)
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				return errDiffers
			})
		},
	}
	return cmd
}

func newClusterLeaderCmd(g *globals) *cobra.Command {
	var pin string
	var unpin bool
	cmd := &cobra.Command{
		Use:   "leader",
		Short: "The leader (ace.leader()); --pin NODE or --unpin changes the pin (the schema owner's only)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withConn(cmd, g, func(ctx context.Context, conn *pgx.Conn) error {
				if pin != "" || unpin {
					if _, err := sqlapi.SetLeader(ctx, conn, pin); err != nil {
						return err
					}
				}
				l, err := sqlapi.Leader(ctx, conn)
				if err != nil {
					return err
				}
				pinned := ""
				if l.Pinned != nil {
					pinned = fmt.Sprintf(" (pinned: %s)", *l.Pinned)
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "leader: %s%s; this node leads: %s\n", noneIfEmpty(dashIfNil(l.Leader)), pinned, yesNo(l.IsLeader))
				return err
			})
		},
	}
	cmd.Flags().StringVar(&pin, "pin", "", "pin the leader to this node while it is active with a live agent")
	cmd.Flags().BoolVar(&unpin, "unpin", false, "remove the pin")
	cmd.MarkFlagsMutuallyExclusive("pin", "unpin")
	return cmd
}

// newNodeStateCmd is node down, up or promote: one call of the state function, and the row it
// returns.
func newNodeStateCmd(g *globals, use, short string, change func(ctx context.Context, q sqlapi.Querier, name, reason string) (sqlapi.RegisteredNode, error)) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   use + " NAME",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withConn(cmd, g, func(ctx context.Context, conn *pgx.Conn) error {
				n, err := change(ctx, conn, args[0], reason)
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "node %s is %s%s\n", n.Name, n.State, orEmpty(": ", n.StateReason))
				return err
			})
		},
	}
	if use == "down" {
		cmd.Flags().StringVar(&reason, "reason", "", "why, for the event log and the error a task naming the node gets")
	}
	return cmd
}

func orEmpty(prefix string, s *string) string {
	if s == nil {
		return ""
	}
	return prefix + *s
}

func nodeStateCmds(g *globals) []*cobra.Command {
	return []*cobra.Command{
		newNodeStateCmd(g, "down", "Mark a node down: tasks leave it out by default and refuse it when named", sqlapi.MarkNodeDown),
		newNodeStateCmd(g, "up", "Mark a down node up again (active)", func(ctx context.Context, q sqlapi.Querier, name, _ string) (sqlapi.RegisteredNode, error) {
			return sqlapi.MarkNodeUp(ctx, q, name)
		}),
		newNodeStateCmd(g, "promote", "Make a joining node active: a default node of every task", func(ctx context.Context, q sqlapi.Querier, name, _ string) (sqlapi.RegisteredNode, error) {
			return sqlapi.PromoteNode(ctx, q, name)
		}),
	}
}

func newEventsCmd(g *globals) *cobra.Command {
	var after int64
	var kinds []string
	var follow bool
	cmd := &cobra.Command{
		Use:   "events",
		Short: "The cluster's event log (ace.events_since), as far as you may see it; --follow waits for more",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withConn(cmd, g, func(ctx context.Context, conn *pgx.Conn) error {
				return printEvents(ctx, conn, cmd.OutOrStdout(), after, kinds, follow)
			})
		},
	}
	cmd.Flags().Int64Var(&after, "after", 0, "show the events after this event id")
	cmd.Flags().StringSliceVar(&kinds, "kind", nil, "show only events of these kinds (repeat or comma-separate)")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing events as they are recorded, until interrupted")
	return cmd
}

// eventPoll is how often --follow re-reads without a notification: a notification only wakes
// it sooner.
const eventPoll = 5 * time.Second

// printEvents prints the events after `after`; with follow it LISTENs on ace_event (whose
// notifications carry nothing) and re-reads after each, or every eventPoll, until ctx ends.
func printEvents(ctx context.Context, conn *pgx.Conn, w io.Writer, after int64, kinds []string, follow bool) error {
	if follow {
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{sqlapi.EventChannel}.Sanitize()); err != nil {
			return fmt.Errorf("listen for events: %w", err)
		}
	}
	for {
		events, err := sqlapi.EventsSince(ctx, conn, after, kinds...)
		if err != nil {
			return err
		}
		for _, e := range events {
			if err := printEvent(w, e); err != nil {
				return err
			}
			after = e.ID
		}
		if !follow {
			return nil
		}
		waitCtx, cancel := context.WithTimeout(ctx, eventPoll)
		_, err = conn.WaitForNotification(waitCtx)
		cancel()
		if ctx.Err() != nil {
			return nil // interrupted: --follow ends there
		}
		if err != nil && waitCtx.Err() == nil {
			return fmt.Errorf("wait for events: %w", err)
		}
	}
}

func printEvent(w io.Writer, e sqlapi.Event) error {
	var about []string
	for _, part := range []struct{ name, value string }{{"node", e.NodeName}, {"table", e.TableName}} {
		if part.value != "" {
			about = append(about, part.name+"="+part.value)
		}
	}
	if e.TaskID != nil {
		about = append(about, "task="+e.TaskID.String())
	}
	detail := ""
	if len(e.Detail) > 0 {
		raw, err := json.Marshal(e.Detail)
		if err != nil {
			return fmt.Errorf("print event %d: %w", e.ID, err)
		}
		detail = " " + string(raw)
	}
	_, err := fmt.Fprintf(w, "%d\t%s\t%s\t%s\tby %s%s\n", e.ID, e.At.UTC().Format(time.RFC3339Nano), e.Kind, strings.Join(about, " "), e.Actor, detail)
	return err
}
