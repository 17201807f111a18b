package repair

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/engine"
)

// A repair keeps the table owner's rules. Writing with session_replication_role = replica (as
// logical replication applies changes) switches off ordinary triggers, foreign keys' checks and
// rules, which the submitter could not do with statements of their own; so a repair writes that
// way only where the submitting role may set session_replication_role itself (a superuser, or a
// role granted SET ON PARAMETER session_replication_role, PostgreSQL 15 and later). Anywhere
// else it writes normally: foreign keys, rules and triggers apply, a violation fails the node's
// transaction, and no replication origin is used (pg_replication_origin_session_setup is a
// privilege of its own), so the changes replicate like any other write. The submitting role is
// Options.Role when the sessions SET ROLE to it, else the sessions' own login.

// decideWriteModes decides how the repair writes on every target and, with SetRoleSessions,
// refuses a table whose code a non-superuser owns and the repair would run, before any session
// is opened.
func (r *repairer) decideWriteModes(ctx context.Context) error {
	for _, t := range r.targets {
		n := r.nodes[t]
		mode, err := r.writeModeOn(ctx, n)
		if err != nil {
			return fmt.Errorf("node %s: decide how the repair may write: %w", t, err)
		}
		r.modes[t] = mode
		if !r.opts.SetRoleSessions {
			continue
		}
		use := engine.CodeUse{Read: true, Cast: true}
		if !r.opts.DryRun {
			use.Write, use.Firing = true, firingStates(mode, r.opts.FireTriggers)
		}
		if err := engine.CheckTableCode(ctx, n, r.table, r.opts.Role, use); err != nil {
			return fmt.Errorf("repair refused: %w", err)
		}
	}
	return nil
}

// writeModeOn is WriteReplica when the submitting role may set session_replication_role on
// node n, else WriteNormal; "" for a dry run, which writes nothing.
func (r *repairer) writeModeOn(ctx context.Context, n *engine.Node) (string, error) {
	if r.opts.DryRun {
		return "", nil
	}
	var major int
	if err := n.Pool.QueryRow(ctx, `SELECT current_setting('server_version_num')::int / 10000`).Scan(&major); err != nil {
		return "", fmt.Errorf("read the server version: %w", err)
	}
	mayByGrant := "false"
	if major >= 15 {
		mayByGrant = "has_parameter_privilege(r.oid, 'session_replication_role', 'SET')"
	}
	var role string
	var may bool
	err := n.Pool.QueryRow(ctx, `SELECT r.rolname::text, r.rolsuper OR `+mayByGrant+`
		FROM pg_roles r WHERE r.rolname = coalesce(nullif($1::text, ''), current_user)`, r.opts.Role).Scan(&role, &may)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("role %s does not exist there", r.opts.Role)
	}
	if err != nil {
		return "", fmt.Errorf("read the submitting role's privileges: %w", err)
	}
	if may {
		return WriteReplica, nil
	}
	return WriteNormal, nil
}

// writeNormally makes sure a session that writes normally does not inherit another
// session_replication_role from its login's defaults.
func writeNormally(ctx context.Context, s *repairSession) error {
	var current string
	if err := s.conn.QueryRow(ctx, `SELECT current_setting('session_replication_role')`).Scan(&current); err != nil {
		return fmt.Errorf("read session_replication_role: %w", err)
	}
	if current == "origin" {
		return nil
	}
	if _, err := s.conn.Exec(ctx, "SET session_replication_role = origin"); err != nil {
		return fmt.Errorf("the session's login defaults to session_replication_role = %s, which the repair must not write with, and cannot set it back to origin: %w", current, err)
	}
	return nil
}

// writeModeWarning tells which nodes the repair wrote normally on, and what that means.
func (r *repairer) writeModeWarning() string {
	var normal []string
	for _, t := range r.targets {
		if r.modes[t] == WriteNormal {
			normal = append(normal, t)
		}
	}
	if len(normal) == 0 {
		return ""
	}
	slices.Sort(normal)
	return fmt.Sprintf("wrote normally on %s: the submitting role may not set session_replication_role (only a superuser, or a role "+
		"granted SET ON PARAMETER session_replication_role, may), so the table's foreign keys, rules and triggers applied and the "+
		"changes replicate like any other write", strings.Join(normal, ", "))
}

// firingStates are the triggers (by pg_trigger.tgenabled) that fire when a repair writes in
// mode: ENABLE ALWAYS and ENABLE REPLICA ones as replication does; ordinary and ENABLE ALWAYS
// ones when it writes normally or fires triggers (session_replication_role = local).
func firingStates(mode string, fireTriggers bool) []string {
	if mode == WriteReplica && !fireTriggers {
		return []string{"A", "R"}
	}
	return []string{"O", "A"}
}
