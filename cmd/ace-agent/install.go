package main

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/ace-agent/ace-agent/sqlapi"
)

func newInstallCmd(g *globals) *cobra.Command {
	var opts sqlapi.InstallOptions
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install or upgrade the ace schema on the local node",
		Long: `Install or upgrade the ace schema on the local node ($ACE_DSN). It is safe to run again.

Run it as the agent's own login: that role owns the schema. Install refuses a schema ace, or any
object in it, that another role owns, and a schema that grants CREATE to anyone else, naming the
owner and the fix. It gives up on a lock another session holds for longer than --lock-timeout,
naming that session.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withConn(cmd, g, func(ctx context.Context, conn *pgx.Conn) error {
				version, err := sqlapi.InstallWith(ctx, conn, opts)
				if err != nil {
					return fmt.Errorf("install the ace schema: %w", err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "ace schema installed on %s (version %d)\n", conn.Config().Database, version)
				return nil
			})
		},
	}
	cmd.Flags().DurationVar(&opts.LockTimeout, "lock-timeout", sqlapi.DefaultLockTimeout,
		"how long to wait for the install lock and for each table lock before giving up")
	return cmd
}
