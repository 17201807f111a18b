package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/ace-agent/ace-agent/agent"
	"github.com/ace-agent/ace-agent/engine"
)

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version and the row-hash version (diffs of another hash version cannot be repaired)",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "ace-agent %s (hash version %d, %s, %s/%s)\n",
				agent.Version, engine.HashVersion, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		},
	}
}
