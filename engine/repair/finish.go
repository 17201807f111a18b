package repair

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"github.com/ace-agent/ace-agent/engine"
)

// finish ends every target's transaction: a dry run rolls back; a repair commits each node on
// its own, or with Atomic prepares them all and commits them only if every one prepared.
func (r *repairer) finish(ctx context.Context) error {
	switch {
	case r.opts.DryRun:
		r.rollbackAll(ctx)
		return nil
	case r.opts.Atomic:
		return r.finishAtomic(ctx)
	}
	for _, s := range r.live() {
		if err := r.endTx(ctx, s, "COMMIT"); err != nil {
			s.failed = fmt.Errorf("commit: %w", err)
			continue
		}
		s.committed = true
		if err := r.markApplied(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

func (r *repairer) rollbackAll(ctx context.Context) {
	for _, s := range r.sessions {
		if s.conn != nil && s.inTx {
			_ = r.endTx(ctx, s, "ROLLBACK")
		}
	}
}

// endTx runs COMMIT, ROLLBACK or PREPARE TRANSACTION. It runs even when ctx has ended: a
// transaction half-way through its end must not be left behind.
func (r *repairer) endTx(ctx context.Context, s *repairSession, sql string) error {
	endCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	s.inTx = false
	_, err := s.conn.Exec(endCtx, sql)
	return err
}

func (r *repairer) markApplied(ctx context.Context, s *repairSession) error {
	endCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	if err := r.sink.MarkApplied(endCtx, s.node.Name); err != nil {
		return fmt.Errorf("node %s is repaired, but recording that failed: %w", s.node.Name, err)
	}
	return nil
}

// gid names the prepared transaction of an atomic repair on a node.
func (r *repairer) gid(node string) string {
	return fmt.Sprintf("ace_repair_%s_%s", r.opts.ID, node)
}

// finishAtomic is two-phase commit: PREPARE on every node, then COMMIT PREPARED everywhere, or
// ROLLBACK (PREPARED) everywhere when any node failed before or while preparing.
func (r *repairer) finishAtomic(ctx context.Context) error {
	var prepared []*repairSession
	if !r.aborted() {
		for _, s := range r.live() {
			if err := r.endTx(ctx, s, "PREPARE TRANSACTION "+engine.QuoteLiteral(r.gid(s.node.Name))); err != nil {
				s.failed = fmt.Errorf("prepare transaction: %w", err)
				break
			}
			prepared = append(prepared, s)
		}
	}
	if r.aborted() {
		for _, s := range prepared {
			if err := r.endTx(ctx, s, "ROLLBACK PREPARED "+engine.QuoteLiteral(r.gid(s.node.Name))); err != nil {
				r.warn(fmt.Sprintf("node %s: could not roll back prepared transaction %s (roll it back by hand): %v", s.node.Name, r.gid(s.node.Name), err))
			}
		}
		r.rollbackAll(ctx)
		return nil
	}
	for _, s := range prepared {
		if err := r.endTx(ctx, s, "COMMIT PREPARED "+engine.QuoteLiteral(r.gid(s.node.Name))); err != nil {
			s.failed = fmt.Errorf("commit prepared transaction %s (it is still pending there: COMMIT PREPARED it by hand): %w", r.gid(s.node.Name), err)
			continue
		}
		s.committed = true
		if err := r.markApplied(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

func (r *repairer) warn(msg string) {
	r.mu.Lock()
	r.warnings = append(r.warnings, msg)
	r.mu.Unlock()
}

// summary describes what every target got.
func (r *repairer) summary() *Summary {
	end := time.Now()
	o := r.opts
	s := &Summary{
		TableName: o.Diff.TableName, Mode: o.Mode(), SourceOfTruth: o.SourceOfTruth, DryRun: o.DryRun, Atomic: o.Atomic,
		InsertOnly: o.InsertOnly, UpsertOnly: o.UpsertOnly, FireTriggers: o.FireTriggers, CheckUnchanged: o.CheckUnchanged,
		Nodes: map[string]*NodeRepair{}, RepairedNodes: []string{}, FailedNodes: []string{},
		KeysChecked: r.keysDone, SkippedByReason: map[string]int64{},
		StartTime: r.start.UTC(), EndTime: end.UTC(), TimeTaken: end.Sub(r.start).Round(time.Millisecond).String(),
		TimeTakenSeconds: end.Sub(r.start).Seconds(), Warnings: r.warnings,
	}
	if o.Plan != nil {
		s.RepairPlan, s.RuleMatches = cmp.Or(o.Plan.Name, "inline"), r.ruleMatchCounts()
	}
	if o.Diff.DiffRowLimitReached {
		s.Warnings = append(s.Warnings, "the diff stopped at max_diff_rows, so more rows may differ: diff again after this repair")
	}
	if w := r.writeModeWarning(); w != "" {
		s.Warnings = append(s.Warnings, w)
	}
	for _, t := range r.targets {
		n := r.stats[t]
		sess := r.sessions[t]
		switch {
		case sess != nil && sess.failed != nil:
			*n = NodeRepair{Status: NodeFailed, Error: sess.failed.Error()}
			s.FailedNodes = append(s.FailedNodes, t)
		case o.DryRun:
			n.Status = NodePlanned
		case sess != nil && sess.committed:
			n.Status = NodeRepaired
			s.RepairedNodes = append(s.RepairedNodes, t)
		default:
			*n = NodeRepair{Status: NodeRolledBack}
		}
		n.WriteMode = r.modes[t]
		s.Nodes[t] = n
		s.addNode(n)
	}
	s.FullyRepaired = len(s.FailedNodes) == 0 && s.Unresolved == 0 && !o.DryRun
	return s
}

func (s *Summary) addNode(n *NodeRepair) {
	s.Inserted += n.Inserted
	s.Updated += n.Updated
	s.Deleted += n.Deleted
	s.Skipped += n.Skipped
	for reason, c := range n.SkippedByReason {
		s.SkippedByReason[reason] += c
		if unresolvedReasons[reason] {
			s.Unresolved += c
		}
	}
	if n.SkippedByReason == nil {
		n.SkippedByReason = map[string]int64{}
	}
}
