package repair

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/diff"
)

// preserve_origin: a recovery repair that keeps, on every row it copies, the failed node as the
// row's origin and the original commit's timestamp, so that a later against_origin diff still
// attributes the rows to the failed node. A commit timestamp belongs to a transaction, so the
// rows of each original commit are written in a transaction of their own, under a replication
// origin that stands for the failed node on the target, after
// pg_replication_origin_xact_setup('0/0', the commit's timestamp): origin LSN 0/0 never moves
// the origin's replay position, so a subscription from the failed node, when it comes back,
// resumes where it stopped. Rows without an original commit (deletes, unknown timestamps) are
// written as the repair writes any row. Every transaction commits as it ends, so the repair
// cannot be atomic, and each batch's committed rows are recorded as applied at once.

// preserveFunctions are the functions a preserve_origin repair calls as the submitting role.
var preserveFunctions = []string{
	"pg_replication_origin_session_setup(text)", "pg_replication_origin_session_reset()",
	"pg_replication_origin_xact_setup(pg_lsn, timestamp with time zone)",
}

const createOriginFunction = "pg_replication_origin_create(text)"

func (r *repairer) preserving() bool { return r.opts.PreserveOrigin != "" && !r.opts.DryRun }

// preparePreserve finds, on every target, the origin that stands for the failed node, and checks
// that the submitting role may use it, before any session is opened.
func (r *repairer) preparePreserve(ctx context.Context) error {
	if !r.preserving() {
		return nil
	}
	r.preserveOrigins, r.createOrigins = map[string]string{}, map[string]bool{}
	for _, t := range r.targets {
		name, exists, err := originStandingFor(ctx, r.nodes[t], r.opts.PreserveOrigin)
		if err != nil {
			return fmt.Errorf("preserve_origin: node %s: find the replication origin that stands for %s: %w", t, r.opts.PreserveOrigin, err)
		}
		need := slices.Clone(preserveFunctions)
		if !exists {
			need = append(need, createOriginFunction)
		}
		if err := r.checkFunctionPrivileges(ctx, r.nodes[t], need); err != nil {
			return err
		}
		r.preserveOrigins[t], r.createOrigins[t] = name, !exists
	}
	return nil
}

// originStandingFor is the replication origin on node n that stands for node failed: the one
// with the lowest id among those an against_origin diff resolves to (the origin of n's
// subscription from it), or else an origin named after the failed node, which the diff resolves
// by its name; exists says whether it is there already.
func originStandingFor(ctx context.Context, n *engine.Node, failed string) (name string, exists bool, err error) {
	err = pgx.BeginTxFunc(ctx, n.Pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		ids, err := diff.OriginIDs(ctx, tx, n.Name, failed)
		if err != nil {
			return err
		}
		ids = slices.DeleteFunc(ids, func(id uint32) bool { return id == 0 })
		if len(ids) == 0 {
			return tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = $1)`, failed).Scan(&exists)
		}
		exists = true
		return tx.QueryRow(ctx, `SELECT roname FROM pg_replication_origin WHERE roident::int8 = $1`, int64(slices.Min(ids))).Scan(&name)
	})
	if err != nil {
		return "", false, err
	}
	if name == "" {
		name = failed
	}
	return name, exists, nil
}

// checkFunctionPrivileges fails, naming the GRANTs, when the submitting role may not execute
// every one of functions on node n.
func (r *repairer) checkFunctionPrivileges(ctx context.Context, n *engine.Node, functions []string) error {
	var role string
	var missing []string
	err := n.Pool.QueryRow(ctx, `SELECT r, coalesce(array_agg(f ORDER BY o) FILTER (WHERE NOT has_function_privilege(r, f, 'EXECUTE')), '{}')
		FROM (SELECT coalesce(nullif($1::text, ''), current_user::text) AS r) x, unnest($2::text[]) WITH ORDINALITY AS u(f, o) GROUP BY r`,
		r.opts.Role, functions).Scan(&role, &missing)
	if err != nil {
		return fmt.Errorf("preserve_origin: node %s: check the submitting role's privileges: %w", n.Name, err)
	}
	if len(missing) == 0 {
		return nil
	}
	grants := make([]string, len(missing))
	for i, f := range missing {
		grants[i] = fmt.Sprintf("GRANT EXECUTE ON FUNCTION %s TO %s;", f, engine.Ident(role))
	}
	return fmt.Errorf("preserve_origin writes under a replication origin with the original commit timestamps, and role %s may not execute %s on node %s: "+
		"run %s there as a superuser (or submit as a superuser); nothing was written",
		role, strings.Join(missing, ", "), n.Name, strings.Join(grants, " "))
}

// commitGroup is the planned actions of a batch whose copied versions share one commit
// timestamp; ts is nil for the rest.
type commitGroup struct {
	ts    *time.Time
	plans []planned
}

func groupByCommit(plans []planned) []commitGroup {
	byTS := map[time.Time]int{}
	var groups []commitGroup
	rest := commitGroup{}
	for _, p := range plans {
		if p.commitTS == nil || p.Kind == ActionSkip || p.Kind == ActionDelete {
			rest.plans = append(rest.plans, p)
			continue
		}
		i, ok := byTS[*p.commitTS]
		if !ok {
			i = len(groups)
			byTS[*p.commitTS] = i
			groups = append(groups, commitGroup{ts: p.commitTS})
		}
		groups[i].plans = append(groups[i].plans, p)
	}
	slices.SortFunc(groups, func(a, b commitGroup) int { return a.ts.Compare(*b.ts) })
	if len(rest.plans) > 0 {
		groups = append(groups, rest)
	}
	return groups
}

// applyPreserving applies a batch one commit group at a time, each in a transaction of its own
// that it commits. It returns the actions of the groups it committed, also when a later group
// failed, and leaves the session with an empty transaction open under the repair's own origin.
func (r *repairer) applyPreserving(ctx context.Context, s *repairSession, plans []planned) ([]Action, error) {
	var out []Action
	for _, g := range groupByCommit(plans) {
		actions, err := r.applyGroup(ctx, s, g)
		if err != nil {
			return out, fmt.Errorf("%w (preserve_origin commits each original commit's rows on their own: the rows committed before this stay, "+
				"and ace.repair_rows marks them applied)", err)
		}
		out = append(out, actions...)
	}
	if err := r.switchTx(ctx, s, r.ownOrigin(s)); err != nil {
		return out, err
	}
	return out, nil
}

// applyGroup writes one commit group in a transaction of its own and commits it.
func (r *repairer) applyGroup(ctx context.Context, s *repairSession, g commitGroup) ([]Action, error) {
	origin := r.ownOrigin(s)
	if g.ts != nil {
		origin = r.preserveOrigins[s.node.Name]
	}
	if err := r.switchTx(ctx, s, origin); err != nil {
		return nil, err
	}
	if g.ts != nil {
		if _, err := s.conn.Exec(ctx, `SELECT pg_replication_origin_xact_setup('0/0', $1)`, *g.ts); err != nil {
			return nil, fmt.Errorf("set the commit timestamp %s under origin %s: %w", g.ts.Format(time.RFC3339Nano), origin, err)
		}
	}
	actions, err := r.applyPlans(ctx, s, g.plans)
	if err != nil {
		return nil, err
	}
	if err := r.endTx(ctx, s, "COMMIT"); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	return actions, nil
}

// ownOrigin is the origin the repair writes under when it keeps no other: its own when it
// writes as replication does, none when it writes normally.
func (r *repairer) ownOrigin(s *repairSession) string {
	if r.modes[s.node.Name] == WriteReplica {
		return r.opts.Origin
	}
	return ""
}

// switchTx ends the session's open transaction, which holds nothing (every group commits its
// own), sets the session up with origin, and opens a new transaction.
func (r *repairer) switchTx(ctx context.Context, s *repairSession, origin string) error {
	if s.inTx {
		if err := r.endTx(ctx, s, "ROLLBACK"); err != nil {
			return fmt.Errorf("end the empty transaction: %w", err)
		}
	}
	if err := r.useOrigin(ctx, s, origin); err != nil {
		return err
	}
	return r.begin(ctx, s)
}

// useOrigin sets the session up with replication origin name ("" for none).
func (r *repairer) useOrigin(ctx context.Context, s *repairSession, name string) error {
	if s.origin == name {
		return nil
	}
	if s.origin != "" {
		if _, err := s.conn.Exec(ctx, `SELECT pg_replication_origin_session_reset()`); err != nil {
			return fmt.Errorf("leave replication origin %s: %w", s.origin, err)
		}
		s.origin = ""
	}
	switch name {
	case "":
		return nil
	case r.opts.Origin:
		return r.setupOrigin(ctx, s)
	}
	r.mu.Lock() // the sessions of a batch run at once
	create := r.createOrigins[s.node.Name]
	r.createOrigins[s.node.Name] = false
	r.mu.Unlock()
	if create {
		if _, err := s.conn.Exec(ctx, `SELECT pg_replication_origin_create($1)`, name); err != nil && !isCode(err, pgerrcode.UniqueViolation) {
			return fmt.Errorf("create replication origin %s for the failed node %s: %w", name, r.opts.PreserveOrigin, err)
		}
	}
	if _, err := s.conn.Exec(ctx, `SELECT pg_replication_origin_session_setup($1)`, name); err != nil {
		if isCode(err, pgerrcode.ObjectInUse) {
			return fmt.Errorf("replication origin %s, which stands for the failed node %s here, is in use (by the apply worker of a subscription from it): "+
				"disable that subscription on node %s while the repair runs: %w", name, r.opts.PreserveOrigin, s.node.Name, err)
		}
		return fmt.Errorf("use replication origin %s: %w", name, err)
	}
	s.origin = name
	return nil
}

// markCommittedGroups records, with preserve_origin, that the rows each session committed in
// this batch are applied.
func (r *repairer) markCommittedGroups(ctx context.Context, sessions []*repairSession, results [][]Action) error {
	if !r.preserving() {
		return nil
	}
	for i, s := range sessions {
		if slices.ContainsFunc(results[i], func(a Action) bool { return a.Kind != ActionSkip }) {
			if err := r.markApplied(ctx, s); err != nil {
				return err
			}
		}
	}
	return nil
}
