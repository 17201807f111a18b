package shim

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ace-agent/ace-agent/engine"
)

// logins keeps one small pool per caller role, each logged in AS that role with the agent's
// client certificate (the node's pg_ident.conf maps it onto the members of ace_submitters), the
// way the agent's task sessions log in. Nothing runs under the agent's own login for a caller.
type logins struct {
	base *pgxpool.Config // ACE_DSN: the agent's login and certificate

	mu    sync.Mutex
	pools map[string]*pgxpool.Pool
}

// errLogin marks a refused login: the role does not exist, or the agent's certificate may not
// log in as it.
type errLogin struct {
	role string
	err  error
}

func (e *errLogin) Error() string {
	return fmt.Sprintf("cannot log in to the database as %s: %v (the CN must be a role that is a member of ace_submitters, "+
		"mapped onto the agent's certificate in pg_ident.conf; ace-agent doctor checks it)", e.role, e.err)
}

func (e *errLogin) Unwrap() error { return e.err }

func newLogins(dsn string) (*logins, error) {
	cfg, err := engine.ParsePoolConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("ACE_DSN: %w", err)
	}
	cfg.MaxConns = 4
	cfg.MaxConnIdleTime = 5 * time.Minute
	cfg.ConnConfig.RuntimeParams["application_name"] = "ace-agent shim"
	return &logins{base: cfg, pools: map[string]*pgxpool.Pool{}}, nil
}

// pool returns the pool logged in as role, made on first use.
func (l *logins) pool(role string) (*pgxpool.Pool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p, ok := l.pools[role]; ok {
		return p, nil
	}
	cfg := l.base.Copy()
	cfg.ConnConfig.User = role
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("make the connection pool of %s: %w", role, err)
	}
	l.pools[role] = p
	return p, nil
}

// acquire returns a connection logged in as role. A refused login is an *errLogin; the pool of a
// role that cannot log in is dropped, so a later fix (a new pg_ident.conf line) takes effect.
func (l *logins) acquire(ctx context.Context, role string) (*pgxpool.Conn, error) {
	p, err := l.pool(role)
	if err != nil {
		return nil, err
	}
	c, err := p.Acquire(ctx)
	if err == nil {
		return c, nil
	}
	if isLoginRefused(err) {
		l.drop(role, p)
		return nil, &errLogin{role: role, err: err}
	}
	return nil, fmt.Errorf("connect to the database as %s: %w", role, err)
}

func (l *logins) drop(role string, p *pgxpool.Pool) {
	l.mu.Lock()
	if l.pools[role] == p {
		delete(l.pools, role)
	}
	l.mu.Unlock()
	go p.Close()
}

func (l *logins) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for role, p := range l.pools {
		p.Close()
		delete(l.pools, role)
	}
}

// isLoginRefused reports an authentication failure (SQLSTATE class 28): no such role, no
// pg_hba.conf line, no pg_ident.conf mapping, a bad certificate.
func isLoginRefused(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && len(pgErr.Code) == 5 && pgErr.Code[:2] == "28"
}
