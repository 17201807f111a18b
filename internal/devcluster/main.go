// Command devcluster starts, reports and stops a local PostgreSQL cluster for
// development (make cluster-up / make cluster-down).
//
//	go run ./internal/devcluster up     --dir .cluster --nodes 3
//	go run ./internal/devcluster status --dir .cluster
//	go run ./internal/devcluster down   --dir .cluster
//	go run ./internal/devcluster dsn    --dir .cluster --node n1 --db app --user alice [--cert ace_agent]
//	go run ./internal/devcluster env    --dir .cluster --db app --user alice [--cert ace_agent]
//	go run ./internal/devcluster map    --dir .cluster --cert ace_agent --role alice
//	go run ./internal/devcluster server --dir .cluster --node n1 --db app
//
// The nodes authenticate every connection by client certificate (no trust), made in DIR/certs.
// up writes DIR/env.sh with one ACE_<NODE>_DSN export per node, for the superuser postgres in
// the database postgres; env writes it again for the database and role a cluster's ace schema
// and users are in (make demo: dba in demo), so what sources it reaches that schema; dsn prints a connection string for another role (with its own certificate, or with --cert
// another's); server prints one with neither (what ace.nodes holds); map lets a certificate log in as a role on every node (pg_ident.conf). Errors exit
// with code 2.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/ace-agent/ace-agent/internal/localpg"
)

const usage = "usage: devcluster up|down|status|dsn|env|server|map [--dir DIR] [--nodes N] [--node NODE --db DB --user ROLE] [--cert CN] [--role ROLE]"

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "devcluster: %v\n", err)
		os.Exit(2)
	}
}

func run(args []string, out io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	dir := fs.String("dir", ".cluster", "cluster directory (holds state, data dirs and env.sh)")
	nodes := fs.Int("nodes", 3, "number of nodes (up only)")
	node := fs.String("node", "n1", "node (dsn only)")
	db := fs.String("db", "postgres", "database (dsn and env only)")
	user := fs.String("user", "postgres", "role to log in as (dsn and env only)")
	cert := fs.String("cert", "", "common name of the client certificate to present (default: the role's own)")
	role := fs.String("role", "", "role the certificate may log in as (map only)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q; %s", fs.Args(), usage)
	}
	nodesSet := false
	fs.Visit(func(f *flag.Flag) { nodesSet = nodesSet || f.Name == "nodes" })
	// Ctrl-C during up lets localpg.Start clean up instead of leaving servers behind.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch args[0] {
	case "up":
		return up(ctx, out, *dir, *nodes, nodesSet)
	case "down":
		return down(ctx, out, *dir)
	case "status":
		return status(ctx, out, *dir)
	case "dsn":
		return dsn(out, *dir, *node, *db, *user, cmp.Or(*cert, *user))
	case "env":
		return env(out, *dir, envTarget{db: *db, user: *user, certCN: cmp.Or(*cert, *user)})
	case "server":
		return dsn(out, *dir, *node, *db, "", "")
	case "map":
		return mapIdentity(ctx, *dir, *cert, *role)
	default:
		return fmt.Errorf("unknown command %q; %s", args[0], usage)
	}
}

// up reuses an existing cluster (restarting stopped nodes, e.g. after a reboot) or starts a new one.
func up(ctx context.Context, out io.Writer, dir string, nodes int, nodesSet bool) error {
	c, err := localpg.Open(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		c, err = localpg.Start(ctx, localpg.Options{Nodes: nodes, Dir: dir, Log: os.Stderr, CertAuth: true})
		if err != nil {
			return err
		}
	case err != nil:
		return err
	default:
		if err := startAll(ctx, c); err != nil {
			return err
		}
		if nodesSet && len(c.Nodes) != nodes {
			fmt.Fprintf(os.Stderr, "devcluster: %s already has %d nodes; run down first to change that\n", c.Dir, len(c.Nodes))
		}
	}
	envPath, err := writeEnv(c, superuserEnv)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "source %s\n", envPath)
	printNodes(out, c)
	return nil
}

// dsn prints the connection string of a role on a node, presenting the certificate certCN; with
// no role, the server's alone.
func dsn(out io.Writer, dir, node, db, user, certCN string) error {
	c, err := localpg.Open(dir)
	if err != nil {
		return err
	}
	for _, n := range c.Nodes {
		if n.Name == node {
			s, err := n.ServerDSN(db)
			if user != "" {
				s, err = n.DSNAs(db, user, certCN)
			}
			if err != nil {
				return err
			}
			fmt.Fprintln(out, s)
			return nil
		}
	}
	return fmt.Errorf("no node %s in %s", node, dir)
}

// mapIdentity lets the certificate certCN log in as role on every node.
func mapIdentity(ctx context.Context, dir, certCN, role string) error {
	if certCN == "" || role == "" {
		return errors.New("map needs --cert and --role")
	}
	c, err := localpg.Open(dir)
	if err != nil {
		return err
	}
	for _, n := range c.Nodes {
		if err := n.MapIdentity(ctx, certCN, role); err != nil {
			return err
		}
	}
	return nil
}

func startAll(ctx context.Context, c *localpg.Cluster) error {
	for _, n := range c.Nodes {
		if err := n.Start(ctx); err != nil {
			return err
		}
	}
	return nil
}

// envTarget is whom env.sh's connection strings log in as, and where.
type envTarget struct{ db, user, certCN string }

// superuserEnv is what up writes: the superuser in the database every cluster has.
var superuserEnv = envTarget{db: "postgres", user: "postgres", certCN: "postgres"}

// env rewrites DIR/env.sh for target, and says so.
func env(out io.Writer, dir string, target envTarget) error {
	c, err := localpg.Open(dir)
	if err != nil {
		return err
	}
	path, err := writeEnv(c, target)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "source %s  # ACE_<NODE>_DSN: %s in database %s\n", path, target.user, target.db)
	return nil
}

// writeEnv writes DIR/env.sh: one ACE_<NODE>_DSN export per node, logging in as target.
func writeEnv(c *localpg.Cluster, target envTarget) (string, error) {
	var b strings.Builder
	b.WriteString("# written by devcluster; source it to reach the local cluster\n")
	for _, n := range c.Nodes {
		dsn, err := n.DSNAs(target.db, target.user, target.certCN)
		if err != nil {
			return "", fmt.Errorf("write env file: %w", err)
		}
		fmt.Fprintf(&b, "export ACE_%s_DSN='%s'\n", strings.ToUpper(n.Name), dsn)
	}
	path := filepath.Join(c.Dir, "env.sh")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return "", fmt.Errorf("write env file: %w", err)
	}
	return path, nil
}

func printNodes(out io.Writer, c *localpg.Cluster) {
	for _, n := range c.Nodes {
		fmt.Fprintf(out, "%s  %s\n", n.Name, n.DSN("postgres"))
	}
}

func down(ctx context.Context, out io.Writer, dir string) error {
	c, err := localpg.Open(dir)
	if errors.Is(err, os.ErrNotExist) {
		return removeIfEmpty(out, dir)
	}
	if err != nil {
		return err
	}
	if err := c.Stop(ctx); err != nil {
		return err
	}
	fmt.Fprintf(out, "stopped %d nodes, removed %s\n", len(c.Nodes), c.Dir)
	return nil
}

// removeIfEmpty never deletes a non-empty directory without a state file:
// it may not be ours (think --dir .).
func removeIfEmpty(out io.Writer, dir string) error {
	err := os.Remove(dir)
	switch {
	case err == nil, errors.Is(err, os.ErrNotExist):
		fmt.Fprintf(out, "no cluster in %s\n", dir)
		return nil
	default:
		return fmt.Errorf("%s has no %s, refusing to delete it: %w", dir, localpg.StateFile, err)
	}
}

func status(ctx context.Context, out io.Writer, dir string) error {
	c, err := localpg.Open(dir)
	if errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(out, "no cluster in %s\n", dir)
		return nil
	}
	if err != nil {
		return err
	}
	for _, n := range c.Nodes {
		running, err := n.Running(ctx)
		if err != nil {
			return err
		}
		state := "stopped"
		if running {
			state = "running"
		}
		fmt.Fprintf(out, "%s  %-7s  %s\n", n.Name, state, n.DSN("postgres"))
	}
	return nil
}
