package main

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/spf13/cobra"

	"github.com/ace-agent/ace-agent/sqlapi"
)

func newNodeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Register, list and remove the cluster's nodes, and change their states (ace.nodes on the local node)",
	}
	cmd.AddCommand(newNodeAddCmd(g), newNodeListCmd(g), newNodeRemoveCmd(g))
	cmd.AddCommand(nodeStateCmds(g)...)
	return cmd
}

func newNodeAddCmd(g *globals) *cobra.Command {
	var cluster, state string
	cmd := &cobra.Command{
		Use:   "add NAME CONNINFO",
		Short: "Register a node, or change a registered node's connection string",
		Long: `Register a node, or change a registered node's connection string. CONNINFO is a libpq
connection string without a password: the agent takes passwords from its own environment
(~/.pgpass, PGPASSFILE, a service file).`,
		Example: `  ace-agent node add n2 'host=db2.example.com port=5432 dbname=app user=ace'`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withConn(cmd, g, func(ctx context.Context, conn *pgx.Conn) error {
				n := sqlapi.RegisteredNode{Name: args[0], ConnInfo: args[1], Cluster: cluster, State: sqlapi.NodeState(state)}
				if err := sqlapi.AddNode(ctx, conn, n); err != nil {
					return explainNodeError(n.Name, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "node %s registered (cluster %s)\n", n.Name, cluster)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&cluster, "cluster", "default", "name of the cluster the node belongs to")
	cmd.Flags().StringVar(&state, "state", "active", "a new node's state: active, or joining (it takes part only when named until 'node promote')")
	return cmd
}

// explainNodeError replaces the check-constraint errors of ace.nodes with advice. The password
// error drops the server's detail, which would repeat the password.
func explainNodeError(name string, err error) error {
	var pg *pgconn.PgError
	if !errors.As(err, &pg) {
		return err
	}
	switch pg.ConstraintName {
	case "conninfo_has_no_password":
		return withHint(fmt.Errorf("add node %s: the connection string must not contain a password", name),
			"put the password in ~/.pgpass or in the file PGPASSFILE names, for the user the agent runs as")
	case "node_name_format":
		return withHint(err, "a node name starts with a letter or _ and holds only letters, digits, _, . and -")
	}
	return err
}

func newNodeListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the registered nodes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withConn(cmd, g, func(ctx context.Context, conn *pgx.Conn) error {
				nodes, err := sqlapi.Nodes(ctx, conn)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tCLUSTER\tSTATE\tCONNINFO")
				for _, n := range nodes {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n.Name, n.Cluster, n.State+sqlapi.NodeState(orEmpty(": ", n.StateReason)), n.ConnInfo)
				}
				return tw.Flush()
			})
		},
	}
}

func newNodeRemoveCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a node from the registry",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withConn(cmd, g, func(ctx context.Context, conn *pgx.Conn) error {
				removed, err := sqlapi.RemoveNode(ctx, conn, args[0])
				if err != nil {
					return err
				}
				if !removed {
					return withHint(fmt.Errorf("node %s is not registered", args[0]), "'ace-agent node list' shows the registered nodes")
				}
				fmt.Fprintf(cmd.OutOrStdout(), "node %s removed\n", args[0])
				return nil
			})
		},
	}
}
