package engine

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PinnedSettings are set on every connection that hashes or reads rows, so that every node
// renders and compares values the same way whatever its own configuration.
var PinnedSettings = map[string]string{
	"TimeZone":           "UTC",
	"DateStyle":          "ISO, YMD",
	"IntervalStyle":      "postgres",
	"extra_float_digits": "3",
	"bytea_output":       "hex",
	"lc_monetary":        "C", // money's text form follows it
	"search_path":        "pg_catalog, public",
	"application_name":   "ace-agent",
	"statement_timeout":  "0",
	"lock_timeout":       "0",
}

// Node is one database of the cluster, reached through a pool whose connections carry the
// pinned settings and, when a task runs as a user, that user's role.
type Node struct {
	Name string
	Pool *pgxpool.Pool
}

// NodeOptions says how to connect to a node.
type NodeOptions struct {
	Name     string
	ConnInfo string // libpq key/value string or URI; passwords come from the environment
	Role     string // SET ROLE to this on every connection; empty keeps the login role
	MaxConns int32
}

// OpenNode connects to a node and checks that the connection works, so an unreachable or
// misconfigured node is reported by name before any work starts.
func OpenNode(ctx context.Context, o NodeOptions) (*Node, error) {
	cfg, err := ParsePoolConfig(o.ConnInfo)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", o.Name, err)
	}
	for k, v := range PinnedSettings {
		cfg.ConnConfig.RuntimeParams[k] = v
	}
	if o.MaxConns > 0 {
		cfg.MaxConns = o.MaxConns
	}
	if o.Role != "" {
		role := o.Role
		cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
			if _, err := c.Exec(ctx, "SET ROLE "+pgx.Identifier{role}.Sanitize()); err != nil {
				return fmt.Errorf("set role %s: %w", role, err)
			}
			return nil
		}
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("node %s: connect: %w", o.Name, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("node %s (%s:%d): connect: %w", o.Name, cfg.ConnConfig.Host, cfg.ConnConfig.Port, err)
	}
	return &Node{Name: o.Name, Pool: pool}, nil
}

// Close releases the node's connections.
func (n *Node) Close() { n.Pool.Close() }

// ParsePoolConfig parses a libpq connection string for pgx. libpq's hostaddr, which pgx does not
// know (it would send it to the server as a setting), becomes the address every host name
// resolves to, so host still names the server for TLS.
func ParsePoolConfig(conninfo string) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(conninfo)
	if err != nil {
		return nil, fmt.Errorf("parse connection string: %w", err)
	}
	if addr, ok := cfg.ConnConfig.RuntimeParams["hostaddr"]; ok {
		delete(cfg.ConnConfig.RuntimeParams, "hostaddr")
		cfg.ConnConfig.LookupFunc = func(context.Context, string) ([]string, error) { return []string{addr}, nil }
	}
	return cfg, nil
}
