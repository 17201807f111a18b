package shim

import (
	"context"
	"fmt"
	"net/http"
	"strings"
)

// errPrivileged refuses a CN whose role would see more through the shim than an ordinary
// submitter: the agent's own login, the owner of the ace schema (or a member of the owner), a
// superuser or a role with BYPASSRLS. Row-level security does not hold for them, so every
// user's tasks and diff rows would be theirs to read.
type errPrivileged struct {
	role    string
	reasons []string
}

func (e *errPrivileged) Error() string {
	return fmt.Sprintf("CN %q is refused: the role %s; the shim serves only ordinary roles, which row-level security limits "+
		"(use a certificate of a member of ace_submitters, and connect to PostgreSQL directly for administration)",
		e.role, strings.Join(e.reasons, ", and "))
}

// roleCheckSQL reads, on the caller's own login, what makes a role privileged. The ace
// schema's owner is the agent's login after a normal install, but whoever owns it is refused.
const roleCheckSQL = `SELECT r.rolsuper, r.rolbypassrls,
	coalesce(pg_has_role(r.oid, n.nspowner, 'MEMBER'), false), coalesce(n.nspowner::regrole::text, '')
FROM pg_roles r LEFT JOIN pg_namespace n ON n.nspname = 'ace'
WHERE r.rolname = session_user`

// admit lets a request through only when its CN logs in to the database as an ordinary role.
// It runs before any handler, so nothing of a refused caller's body is read.
func (s *Server) admit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.checkRole(r.Context(), callerCN(r)); err != nil {
			stopReading(w)
			dbError(w, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// checkRole logs in as role (an *errLogin if it cannot) and refuses a privileged role (an
// *errPrivileged).
func (s *Server) checkRole(ctx context.Context, role string) error {
	conn, err := s.logins.acquire(ctx, role)
	if err != nil {
		return err
	}
	defer conn.Release()
	var super, bypass, owner bool
	var ownerName string
	if err := conn.QueryRow(ctx, roleCheckSQL).Scan(&super, &bypass, &owner, &ownerName); err != nil {
		return fmt.Errorf("check the role %s: %w", role, err)
	}
	var reasons []string
	if role == s.agentUser {
		reasons = append(reasons, "is the agent's own login (ACE_DSN)")
	}
	if super {
		reasons = append(reasons, "is a superuser")
	}
	if bypass {
		reasons = append(reasons, "has BYPASSRLS")
	}
	if owner {
		reasons = append(reasons, fmt.Sprintf("owns the ace schema (its owner is %s)", ownerName))
	}
	if len(reasons) > 0 {
		return &errPrivileged{role: role, reasons: reasons}
	}
	return nil
}
