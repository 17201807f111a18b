package main

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/ace-agent/ace-agent/agent"
)

func newRunCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "run",
		Short: "Run the local node's agent until SIGINT or SIGTERM",
		Long: `Run the local node's agent: it claims the tasks submitted on this node and runs them, until
SIGINT or SIGTERM. Then it stops claiming, lets running tasks finish for ACE_SHUTDOWN_GRACE,
hands the others back to the queue, and exits 0. A second signal kills it at once.

It is configured by the environment (--dsn overrides ACE_DSN):

` + agent.Usage(),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := g.applyDSN(); err != nil {
				return err
			}
			cfg, err := agent.LoadConfig()
			if err != nil {
				return err
			}
			log, err := newLogger(cmd.ErrOrStderr(), cfg.LogLevel)
			if err != nil {
				return err
			}
			// The command's context ends on SIGINT or SIGTERM (see main).
			return agent.New(cfg, log).Run(cmd.Context())
		},
	}
}

// newLogger logs text lines at the given level (debug, info, warn or error).
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("ACE_LOG_LEVEL: %w", err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}
