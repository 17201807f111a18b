package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/ace-agent/ace-agent/agent"
	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// submittersGroup is the role whose members may submit tasks: pg_hba.conf admits them (and only
// them) to the agent's certificate, mapped in pg_ident.conf.
const submittersGroup = "ace_submitters"

func newDoctorCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "doctor",
		Short: "Check that task sessions can log in as every submitter on every node",
		Long: `Check the wall between submitters and the agent, from the local node ($ACE_DSN):
the agent's own login is not a superuser, on every node the schema ace and everything in it
belong to that login alone (as install demands) and are in no publication and no Spock or
pglogical replication set, every node is reached over verified TLS, and on
every node the agent's certificate logs in as each member of ace_submitters (the pg_hba.conf
and pg_ident.conf lines docs/security.md's "The wall" section shows). Names what is missing.

Exit codes: 0 all is well, 1 something is missing, 2 error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dsn, err := g.localDSN()
			if err != nil {
				return err
			}
			problems, err := doctor(cmd.Context(), cmd.OutOrStdout(), dsn)
			if err != nil {
				return err
			}
			if problems > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "\n%d problem(s) found\n", problems)
				return errDiffers
			}
			fmt.Fprintln(cmd.OutOrStdout(), "\nall checks passed")
			return nil
		},
	}
}

// doctor runs the checks and prints one line per check; it returns how many failed.
func doctor(ctx context.Context, w io.Writer, dsn string) (int, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, fmt.Errorf("connect to the local node: %w", err)
	}
	defer closeConn(conn)
	d := &doctorRun{w: w}
	if os.Getenv("ACE_IMPERSONATION") == agent.ImpersonateSetRole {
		d.fail("ACE_IMPERSONATION=set_role: task sessions are the agent's login with SET ROLE, which code a submitter reaches can undo; use the default login mode unless every submitter is trusted")
	}
	if err := d.checkAgentLogin(ctx, conn); err != nil {
		return 0, err
	}
	if usable, err := d.checkLocalSchemaOwner(ctx, conn); err != nil || !usable {
		return d.problems, err
	}
	submitters, err := membersOf(ctx, conn, submittersGroup)
	if err != nil {
		return 0, err
	}
	if len(submitters) == 0 {
		d.fail(fmt.Sprintf("no role is a member of %s: create it (CREATE ROLE %[1]s NOLOGIN) and GRANT %[1]s TO each role that submits tasks", submittersGroup))
	}
	nodes, err := sqlapi.Nodes(ctx, conn)
	if err != nil {
		return 0, err
	}
	certs, err := engine.ClientCerts(dsn)
	if err != nil {
		return 0, err
	}
	agentCN := certName(certs)
	if err := d.checkPeerSchemaOwners(ctx, conn.Config().User, nodes, certs); err != nil {
		return 0, err
	}
	for _, n := range nodes {
		ci := n.ConnInfo
		if n.Name == os.Getenv("ACE_NODE") {
			ci = dsn
		}
		d.checkTLS(n.Name, ci)
		for _, role := range submitters {
			d.checkLogin(ctx, n.Name, ci, role, agentCN, certs)
		}
	}
	return d.problems, nil
}

type doctorRun struct {
	w        io.Writer
	problems int
}

func (d *doctorRun) ok(msg string) { fmt.Fprintf(d.w, "ok       %s\n", msg) }

func (d *doctorRun) fail(msg string) {
	d.problems++
	fmt.Fprintf(d.w, "PROBLEM  %s\n", msg)
}

func (d *doctorRun) checkAgentLogin(ctx context.Context, conn *pgx.Conn) error {
	var user string
	var super, replication, readable, trees bool
	if err := conn.QueryRow(ctx, `SELECT current_user, rolsuper, rolreplication, has_schema_privilege('ace', 'USAGE')
		FROM pg_roles WHERE rolname = current_user`).Scan(&user, &super, &replication, &readable); err != nil {
		return fmt.Errorf("read the agent's login role: %w", err)
	}
	// A schema ace the agent cannot use is reported by checkSchemaOwners.
	if readable {
		if err := conn.QueryRow(ctx, `SELECT to_regclass('ace.mtrees') IS NOT NULL`).Scan(&trees); err != nil {
			return fmt.Errorf("read the agent's login role: %w", err)
		}
	}
	if trees {
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM ace.mtrees)`).Scan(&trees); err != nil {
			return fmt.Errorf("read the agent's login role: %w", err)
		}
	}
	if super {
		d.fail(fmt.Sprintf("the agent logs in as %s, a superuser: give it a login of its own without superuser that owns the ace schema", user))
		return nil
	}
	d.ok(fmt.Sprintf("the agent logs in as %s, not a superuser", user))
	switch {
	case replication:
		d.ok(fmt.Sprintf("%s has REPLICATION, which Merkle trees' change streams need", user))
	case trees:
		d.fail(fmt.Sprintf("%s lacks REPLICATION, so it cannot stream the changes of the Merkle trees built here: ALTER ROLE %s REPLICATION; on every node", user, user))
	default:
		fmt.Fprintf(d.w, "note     %s lacks REPLICATION: Merkle trees (ace-agent mtree) need it: ALTER ROLE %s REPLICATION;\n", user, user)
	}
	return nil
}

// checkLocalSchemaOwner wants the local node's schema ace to be the agent's login's alone, as
// install does: whoever else owns it, or an object in it, can change what the agent and every
// submitter run. It reports whether the agent can use the schema, without which the other
// checks cannot read the nodes.
func (d *doctorRun) checkLocalSchemaOwner(ctx context.Context, conn *pgx.Conn) (usable bool, err error) {
	where := "the local node"
	if node := os.Getenv("ACE_NODE"); node != "" {
		where = "node " + node
	}
	if err := d.reportSchemaOwners(ctx, where, conn); err != nil {
		return false, err
	}
	if err := d.reportReplicated(ctx, where, conn); err != nil {
		return false, err
	}
	if err := conn.QueryRow(ctx, `SELECT has_schema_privilege('ace', 'USAGE') AND to_regclass('ace.nodes') IS NOT NULL`).Scan(&usable); err != nil {
		return false, fmt.Errorf("read schema ace: %w", err)
	}
	if !usable {
		d.fail(fmt.Sprintf("%s: the agent's login cannot use schema ace: install it as the agent's login (ace-agent install)", where))
	}
	return usable, nil
}

// checkPeerSchemaOwners makes the same check on every other node, logged in there as the
// agent's login with its certificate.
func (d *doctorRun) checkPeerSchemaOwners(ctx context.Context, user string, nodes []sqlapi.RegisteredNode, certs []tls.Certificate) error {
	for _, n := range nodes {
		if n.Name == os.Getenv("ACE_NODE") {
			continue
		}
		peer, err := engine.OpenNode(ctx, engine.NodeOptions{Name: n.Name, ConnInfo: n.ConnInfo, User: user, ClientCerts: certs, MaxConns: 1})
		if err != nil {
			d.fail(fmt.Sprintf("node %s: cannot check who owns schema ace as %s: %v", n.Name, user, firstLine(err)))
			continue
		}
		err = d.reportSchemaOwners(ctx, "node "+n.Name, peer.Pool)
		if err == nil {
			err = d.reportReplicated(ctx, "node "+n.Name, peer.Pool)
		}
		peer.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func (d *doctorRun) reportSchemaOwners(ctx context.Context, where string, q sqlapi.Querier) error {
	problems, err := sqlapi.SchemaOwnershipProblems(ctx, q)
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	for _, p := range problems {
		d.fail(where + ": " + p)
	}
	if len(problems) == 0 {
		d.ok(where + ": schema ace and everything in it belong to the agent's login alone")
	}
	return nil
}

// reportReplicated wants the node's ace schema in no publication and no Spock or pglogical
// replication set: each node's queue and results are its own, and replicated they would be
// run, or overwritten, on the other nodes.
func (d *doctorRun) reportReplicated(ctx context.Context, where string, q sqlapi.Querier) error {
	problems, err := sqlapi.ReplicationProblems(ctx, q)
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	for _, p := range problems {
		d.fail(where + ": " + p)
	}
	if len(problems) == 0 {
		d.ok(where + ": schema ace is in no publication or replication set")
	}
	return nil
}

// checkTLS wants a node reached over TLS with the server verified: the agent's certificate is
// what lets it log in as submitters, and it must not be presented to an impostor.
func (d *doctorRun) checkTLS(node, conninfo string) {
	cfg, err := engine.ParsePoolConfig(conninfo)
	switch {
	case err != nil:
		d.fail(fmt.Sprintf("node %s: %v", node, err))
	case cfg.ConnConfig.TLSConfig == nil || cfg.ConnConfig.TLSConfig.InsecureSkipVerify && cfg.ConnConfig.TLSConfig.VerifyPeerCertificate == nil:
		d.fail(fmt.Sprintf("node %s is not reached over verified TLS: add sslmode=verify-full and sslrootcert=… to its connection string (ace-agent node add)", node))
	default:
		d.ok(fmt.Sprintf("node %s is reached over verified TLS", node))
	}
}

func (d *doctorRun) checkLogin(ctx context.Context, node, conninfo, role, agentCN string, certs []tls.Certificate) {
	n, err := engine.OpenNode(ctx, engine.NodeOptions{Name: node, ConnInfo: conninfo, User: role, ClientCerts: certs, MaxConns: 1})
	if err != nil {
		d.fail(fmt.Sprintf("node %s: the agent cannot log in as %s: %v\n         fix on %s: in pg_hba.conf  hostssl all +%s <agent's address> cert map=ace\n                   in pg_ident.conf ace %s %s   (then SELECT pg_reload_conf())",
			node, role, firstLine(err), node, submittersGroup, agentCN, role))
		return
	}
	n.Close()
	d.ok(fmt.Sprintf("node %s: the agent logs in as %s", node, role))
}

// certName is the common name of the agent's client certificate: the system user pg_ident.conf
// maps onto submitters.
func certName(certs []tls.Certificate) string {
	if len(certs) == 0 || len(certs[0].Certificate) == 0 {
		return "<the agent's certificate CN>"
	}
	c, err := x509.ParseCertificate(certs[0].Certificate[0])
	if err != nil {
		return "<the agent's certificate CN>"
	}
	return c.Subject.CommonName
}

// firstLine is what the server said, without the advice OpenNode adds (doctor gives its own).
func firstLine(err error) string {
	s := err.Error()
	if i := strings.Index(s, " (task sessions log in"); i > 0 {
		s = s[:i]
	}
	if i := strings.Index(s, "server error: "); i > 0 {
		s = s[i+len("server error: "):]
	}
	return s
}

// membersOf lists the login roles that are members of group, directly or not. Superusers are
// left out: they count as members of every role, and the agent must not log in as one.
func membersOf(ctx context.Context, conn *pgx.Conn, group string) ([]string, error) {
	rows, err := conn.Query(ctx, `SELECT r.rolname::text FROM pg_roles r
		WHERE r.rolcanlogin AND NOT r.rolsuper AND r.rolname <> $1 AND pg_has_role(r.oid, (SELECT oid FROM pg_roles WHERE rolname = $1), 'MEMBER')
		ORDER BY 1`, group)
	if err != nil {
		return nil, fmt.Errorf("list the members of %s: %w", group, err)
	}
	roles, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("list the members of %s: %w", group, err)
	}
	return roles, nil
}
