package main

import (
	"github.com/spf13/cobra"

	"github.com/ace-agent/ace-agent/shim"
)

func newServeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "Run the mTLS HTTP shim (ACE's REST API) beside the local node's agent",
		Long: `Run the mTLS HTTP shim: ACE's REST routes (/ace/… of the Python ACE, /api/v1/… of ACE Go)
as inserts into the local node's ace.tasks, until SIGINT or SIGTERM. Every request needs a
client certificate signed by ACE_SHIM_CLIENT_CA; its CN is the role that submits, and the shim
logs in to the database as that role with the agent's certificate (ACE_DSN), exactly as the
agent's task sessions do. /metrics and /healthz are served in plain HTTP on
ACE_SHIM_METRICS_LISTEN (127.0.0.1 by default).

It is configured by the environment (--dsn overrides ACE_DSN):

` + shim.Usage(),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := g.applyDSN(); err != nil {
				return err
			}
			cfg, err := shim.LoadConfig()
			if err != nil {
				return err
			}
			log, err := newLogger(cmd.ErrOrStderr(), cfg.LogLevel)
			if err != nil {
				return err
			}
			s, err := shim.New(cmd.Context(), cfg, log)
			if err != nil {
				return err
			}
			defer s.Close()
			// The command's context ends on SIGINT or SIGTERM (see main).
			return s.ListenAndServe(cmd.Context())
		},
	}
}
