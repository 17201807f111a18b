package agent

import (
	"cmp"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// The scheduler fires the due schedules of ace.schedules. Each due time is fired by
// ace.fire_schedule in one transaction of a session logged in as the schedule's owner: a
// compare-and-set moves the schedule's next_due on and the run is inserted as the owner, so
// however many agents try (two on one node, or a crash before the commit), a due time fires once.
// A cluster schedule is run by the leader's agent only (the SQL side asks ace.is_leader()); the
// others move its due time on without a run.
const (
	defaultScheduleInterval = time.Second
	dueBatch                = 100
	// fireTimeout bounds one firing: logging in as the owner, the claim and the insert.
	fireTimeout = 30 * time.Second
	// ownerRetry is how long a schedule whose owner cannot be logged in as is left alone before
	// the next try: one warning and one event per try, not one a second.
	ownerRetry = time.Minute
)

type scheduler struct {
	startStop
	a *Agent

	mu      sync.Mutex
	retryAt map[string]time.Time // owner/name of schedules whose owner's session could not be opened
}

func (s *scheduler) Name() string { return "scheduler" }

func (s *scheduler) Start(ctx context.Context) error { return s.start(ctx, s.run) }

func (s *scheduler) run(ctx context.Context) {
	every(ctx, cmp.Or(s.a.cfg.ScheduleInterval, defaultScheduleInterval), true, s.fireDue)
}

// fireDue fires every schedule due now, oldest due first.
func (s *scheduler) fireDue(ctx context.Context) {
	due, err := sqlapi.DueSchedules(ctx, s.a.pool, dueBatch)
	if err != nil {
		if ctx.Err() == nil {
			s.a.log.Warn("reading the due schedules failed; trying again", "err", err)
		}
		return
	}
	for _, d := range due {
		if ctx.Err() != nil || s.waiting(d) {
			continue
		}
		fireCtx, cancel := context.WithTimeout(ctx, fireTimeout)
		s.fire(fireCtx, d)
		cancel()
	}
}

// fire fires one due time in a session logged in as the schedule's owner, and logs what
// happened; the SQL side records the events.
func (s *scheduler) fire(ctx context.Context, d sqlapi.DueSchedule) {
	log := s.a.log.With("schedule", d.Name, "owner", d.Owner, "due", d.Due)
	session, err := engine.OpenNode(ctx, s.a.asRole(engine.NodeOptions{Name: s.a.cfg.Node, ConnInfo: s.a.cfg.DSN, MaxConns: 1}, d.Owner))
	if err != nil {
		s.ownerUnreachable(ctx, d, err)
		return
	}
	defer session.Close()
	f, err := sqlapi.FireSchedule(ctx, session.Pool, d.Name, d.Due, s.a.cfg.Node)
	switch {
	case err != nil:
		if ctx.Err() == nil {
			log.Warn("firing a schedule failed; the next round tries the same due time again", "err", err)
		}
	case f.Outcome == sqlapi.FireFired:
		log.Info("schedule fired", "task", f.TaskID)
	case f.Outcome == sqlapi.FireSkipped:
		log.Info("schedule skipped: its previous run is still queued or running", "running", f.TaskID)
	case f.Outcome == sqlapi.FireFailed:
		log.Warn("a schedule's run was refused; the schedule goes on", "err", deref(f.Error))
	}
}

// ownerUnreachable records that a schedule's owner could not be logged in as (a role dropped, or
// not mapped for the agent's certificate), and leaves the schedule alone for ownerRetry.
func (s *scheduler) ownerUnreachable(ctx context.Context, d sqlapi.DueSchedule, err error) {
	if ctx.Err() != nil {
		return
	}
	s.mu.Lock()
	if s.retryAt == nil {
		s.retryAt = map[string]time.Time{}
	}
	s.retryAt[d.Owner+"/"+d.Name] = time.Now().Add(ownerRetry)
	s.mu.Unlock()
	reason := fmt.Sprintf("the agent could not log in as %s, the schedule's owner, to start its run: %v", d.Owner, err)
	s.a.log.Warn("a schedule's owner cannot be logged in as; trying again later", "schedule", d.Name, "owner", d.Owner,
		"retry_in", ownerRetry, "err", err)
	_, recErr := sqlapi.RecordEvent(ctx, s.a.pool, sqlapi.Event{Kind: "schedule_failed", NodeName: s.a.cfg.Node,
		Detail: map[string]any{"schedule": d.Name, "owner": d.Owner, "due": d.Due, "error": reason}})
	if recErr != nil {
		s.a.log.Warn("recording a schedule_failed event failed", "err", recErr)
	}
}

// waiting reports whether a schedule is left alone for now after its owner could not be logged
// in as.
func (s *scheduler) waiting(d sqlapi.DueSchedule) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.retryAt[d.Owner+"/"+d.Name]
	if ok && time.Now().After(at) {
		delete(s.retryAt, d.Owner+"/"+d.Name)
		return false
	}
	return ok
}
