package engine

import (
	"context"
	"crypto/tls"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pinnedSettings are set on every connection that hashes or reads rows, so that every node
// renders and compares values the same way whatever its own configuration.
var pinnedSettings = map[string]string{
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
	// User logs in as this role instead of the connection string's user: the submitter's own
	// login, so nothing that runs in the session can outrank the submitter.
	User string
	// ClientCerts are presented over TLS when the connection string names no certificate of its
	// own: the agent's certificate, which the node's pg_ident.conf maps onto submitting roles.
	ClientCerts []tls.Certificate
	Role        string // SET ROLE to this on every connection; empty keeps the login role
	MaxConns    int32
	// Settings are run-time settings of this node's connections beyond the pinned ones.
	Settings map[string]string
}

// OpenNode connects to a node and checks that the connection works, so an unreachable or
// misconfigured node is reported by name before any work starts.
func OpenNode(ctx context.Context, o NodeOptions) (*Node, error) {
	cfg, err := ParsePoolConfig(o.ConnInfo)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", o.Name, err)
	}
	for k, v := range pinnedSettings {
		cfg.ConnConfig.RuntimeParams[k] = v
	}
	for k, v := range o.Settings {
		cfg.ConnConfig.RuntimeParams[k] = v
	}
	if o.User != "" {
		cfg.ConnConfig.User = o.User
		for _, fb := range cfg.ConnConfig.Fallbacks {
			fb.TLSConfig = withClientCerts(fb.TLSConfig, o.ClientCerts)
		}
		cfg.ConnConfig.TLSConfig = withClientCerts(cfg.ConnConfig.TLSConfig, o.ClientCerts)
	}
	if o.MaxConns > 0 {
		cfg.MaxConns = o.MaxConns
	}
	role := o.Role
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		if err := KeepLocal(ctx, c); err != nil {
			return err
		}
		if role == "" {
			return nil
		}
		if _, err := c.Exec(ctx, "SET ROLE "+pgx.Identifier{role}.Sanitize()); err != nil {
			return fmt.Errorf("set role %s: %w", role, err)
		}
		return nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("node %s: connect: %w", o.Name, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		if o.User != "" {
			return nil, fmt.Errorf("node %s (%s:%d): log in as %s: %w (task sessions log in as the submitting role: on %s, make %s a member of ace_submitters and map the agent's certificate to it in pg_ident.conf, then run ace-agent doctor)",
				o.Name, cfg.ConnConfig.Host, cfg.ConnConfig.Port, o.User, err, o.Name, o.User)
		}
		return nil, fmt.Errorf("node %s (%s:%d): connect: %w", o.Name, cfg.ConnConfig.Host, cfg.ConnConfig.Port, err)
	}
	return &Node{Name: o.Name, Pool: pool}, nil
}

// withClientCerts returns c presenting certs, unless c is nil (no TLS) or names certificates of
// its own.
func withClientCerts(c *tls.Config, certs []tls.Certificate) *tls.Config {
	if c == nil || len(c.Certificates) > 0 || len(certs) == 0 {
		return c
	}
	c = c.Clone()
	c.Certificates = certs
	return c
}

// ClientCerts returns the TLS client certificates a connection string presents (sslcert and
// sslkey), if any.
func ClientCerts(conninfo string) ([]tls.Certificate, error) {
	cfg, err := ParsePoolConfig(conninfo)
	if err != nil {
		return nil, err
	}
	if cfg.ConnConfig.TLSConfig == nil {
		return nil, nil
	}
	return cfg.ConnConfig.TLSConfig.Certificates, nil
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
