package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/ace-agent/ace-agent/agent"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// globals are the settings every command shares.
type globals struct {
	dsn string // --dsn; empty means $ACE_DSN
}

func newRootCmd() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "ace-agent",
		Short: "Find data drift between the nodes of a replicated PostgreSQL cluster",
		Long: `ace-agent finds data drift between the nodes of a replicated PostgreSQL cluster.
Every node has the ace schema installed and runs one agent; tasks are rows in ace.tasks,
submitted with SQL (SELECT ace.table_diff('public.t')) or with the commands below.

Exit codes: 0 success or in sync, 1 differences found, 2 error.`,
		Version:       agent.Version,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.PersistentFlags().StringVar(&g.dsn, "dsn", "", "libpq connection string of the local node (default $ACE_DSN)")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return fmt.Errorf("%w (see '%s --help')", err, cmd.CommandPath())
	})
	root.AddCommand(newInstallCmd(g), newRunCmd(g), newNodeCmd(g), newClusterCmd(g), newTableDiffCmd(g), newMtreeCmd(g),
		newDiffCmd(g), newTaskCmd(g), newVersionCmd(), newServeCmd(g), newTableRepairCmd(g), newTableRerunCmd(g), newRepairCmd(g), newRepairPlanCmd(g), newDoctorCmd(g),
		newSpockCmd(g),
		newSpockDiffCmd(g),
		newSchemaDiffCmd(g),
		newRepsetDiffCmd(g),
		newEventsCmd(g),
		newScheduleCmd(g), newRepairPolicyCmd(g))
	addTaskCommands(root, g, sqlapi.TaskSpecs)
	return root
}

// localDSN is the connection string of the local node: --dsn, else $ACE_DSN.
func (g *globals) localDSN() (string, error) {
	if g.dsn != "" {
		return g.dsn, nil
	}
	if dsn := os.Getenv("ACE_DSN"); dsn != "" {
		return dsn, nil
	}
	return "", withHint(errors.New("no connection to the local node"),
		"set ACE_DSN to a libpq connection string (for example 'host=localhost dbname=app') or pass --dsn")
}

// applyDSN makes --dsn, when given, the ACE_DSN of commands configured by the environment.
func (g *globals) applyDSN() error {
	if g.dsn == "" {
		return nil
	}
	if err := os.Setenv("ACE_DSN", g.dsn); err != nil {
		return fmt.Errorf("apply --dsn: %w", err)
	}
	return nil
}

// withConn runs fn on a connection to the local node.
func withConn(cmd *cobra.Command, g *globals, fn func(ctx context.Context, conn *pgx.Conn) error) error {
	ctx := cmd.Context()
	conn, err := g.connect(ctx)
	if err != nil {
		return err
	}
	defer closeConn(conn)
	return fn(ctx, conn)
}

// connect opens a connection to the local node.
func (g *globals) connect(ctx context.Context) (*pgx.Conn, error) {
	dsn, err := g.localDSN()
	if err != nil {
		return nil, err
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse the local node's connection string: %w", err)
	}
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = "ace-agent cli"
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to the local node: %w", err)
	}
	return conn, nil
}

// closeConn closes a connection, waiting at most a few seconds for the server.
func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}
