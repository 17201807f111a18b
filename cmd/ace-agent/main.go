// Command ace-agent is the one binary of ace-agent. It installs the ace schema on a node
// (install), runs the node's agent (run) and the HTTP shim (serve), checks the wall (doctor),
// registers the cluster's nodes (node, cluster import), and submits ACE-style tasks to the local
// node, shows their progress and prints their result (table-diff, table-repair, table-rerun,
// mtree, diff export, repair export, task).
//
// The local node is reached through $ACE_DSN, a libpq connection string, or --dsn.
//
// Exit codes: 0 success or tables in sync, 1 differences found, 2 error.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, a second one gets the default behaviour: it kills.
		<-ctx.Done()
		stop()
	}()
	code := execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// execute runs one command line and returns the process's exit code.
func execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	reportError(stderr, err)
	return exitCode(err)
}
