package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/ace-agent/ace-agent/sqlapi"
)

func newClusterCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Register a whole cluster's nodes; its status, health, map, configuration differences and leader",
	}
	cmd.AddCommand(newClusterImportCmd(g), newClusterStatusCmd(g), newClusterHealthCmd(g), newClusterMapCmd(g),
		newClusterConfigDiffCmd(g), newClusterLeaderCmd(g))
	return cmd
}

type importOpts struct {
	serviceFile, cluster, dbname string
}

func newClusterImportCmd(g *globals) *cobra.Command {
	var o importOpts
	cmd := &cobra.Command{
		Use:   "import --cluster NAME [--service-file FILE] [--dbname DB]",
		Short: "Register the nodes of a cluster defined in an ACE-style pg_service.conf",
		Long: `Register the nodes of a cluster defined in an ACE-style pg_service.conf: the section
[<cluster>] holds shared settings, and each section [<cluster>.<node>] defines a node named
<node>. host (or hostaddr), port, dbname, user, sslmode, sslcert, sslkey, sslrootcert and
connect_timeout are kept; passwords are not: put them in ~/.pgpass or PGPASSFILE. The agent's
driver does not know hostaddr: a hostaddr is written as host, unless there is a host too.

Without --service-file, the file is looked for where ACE looks: $ACE_PGSERVICEFILE,
$PGSERVICEFILE, ./pg_service.conf, ~/.pg_service.conf, /etc/pg_service.conf.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runClusterImport(cmd, g, o)
		},
	}
	cmd.Flags().StringVar(&o.serviceFile, "service-file", "", "the pg_service.conf to read")
	cmd.Flags().StringVar(&o.cluster, "cluster", "", "the cluster's name (required)")
	cmd.Flags().StringVarP(&o.dbname, "dbname", "d", "", "database name, overriding the file's dbname")
	_ = cmd.MarkFlagRequired("cluster")
	return cmd
}

func runClusterImport(cmd *cobra.Command, g *globals, o importOpts) error {
	path, err := findServiceFile(o.serviceFile)
	if err != nil {
		return err
	}
	nodes, err := readClusterNodes(path, o, cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	return withConn(cmd, g, func(ctx context.Context, conn *pgx.Conn) error {
		tx, err := conn.Begin(ctx)
		if err != nil {
			return fmt.Errorf("register the nodes of cluster %s: %w", o.cluster, err)
		}
		defer func() { _ = tx.Rollback(ctx) }()
		for _, n := range nodes {
			if err := sqlapi.AddNode(ctx, tx, sqlapi.RegisteredNode{Name: n.Name, ConnInfo: n.ConnInfo, Cluster: o.cluster}); err != nil {
				return explainNodeError(n.Name, fmt.Errorf("[%s]: %w", n.Section, err))
			}
		}
		if err := tx.Commit(ctx); err != nil {
			return fmt.Errorf("register the nodes of cluster %s: %w", o.cluster, err)
		}
		for _, n := range nodes {
			fmt.Fprintf(cmd.OutOrStdout(), "registered node %s (cluster %s): %s\n", n.Name, o.cluster, n.ConnInfo)
		}
		return nil
	})
}

// readClusterNodes parses the service file and prints its warnings to warn.
func readClusterNodes(path string, o importOpts, warn io.Writer) ([]serviceNode, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open service file: %w", err)
	}
	defer f.Close()
	sf, err := parseServiceFile(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	nodes, warnings, err := clusterNodes(sf, o.cluster, o.dbname)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, w := range warnings {
		fmt.Fprintf(warn, "warning: %s\n", w)
	}
	return nodes, nil
}

// findServiceFile returns the explicit file, or the first that exists where ACE looks.
func findServiceFile(explicit string) (string, error) {
	if explicit != "" {
		return explicit, nil
	}
	candidates := []string{os.Getenv("ACE_PGSERVICEFILE"), os.Getenv("PGSERVICEFILE"), "pg_service.conf"}
	if home, err := os.UserHomeDir(); err == nil {
		candidates = append(candidates, filepath.Join(home, ".pg_service.conf"))
	}
	candidates = append(candidates, "/etc/pg_service.conf")
	for _, c := range candidates {
		if c == "" {
			continue
		}
		if _, err := os.Stat(c); err == nil {
			return c, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("look for a service file: %w", err)
		}
	}
	return "", withHint(errors.New("no service file found"),
		"pass --service-file, or set ACE_PGSERVICEFILE or PGSERVICEFILE")
}
