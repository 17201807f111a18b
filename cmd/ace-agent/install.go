package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/ace-agent/ace-agent/sqlapi"
)

func newInstallCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "install",
		Short: "Install or upgrade the ace schema on the local node",
		Long:  "Install or upgrade the ace schema on the local node ($ACE_DSN). It is safe to run again.",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			conn, err := g.connect(ctx)
			if err != nil {
				return err
			}
			defer closeConn(conn)
			version, err := sqlapi.Install(ctx, conn)
			if err != nil {
				return fmt.Errorf("install the ace schema: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ace schema installed on %s (version %d)\n", conn.Config().Database, version)
			return nil
		},
	}
}
