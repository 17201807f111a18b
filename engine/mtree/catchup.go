package mtree

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// defaultCDCTimeout bounds the wait for a node's stream to catch up.
const defaultCDCTimeout = time.Minute

// staleHeartbeat is how long a stream may stay silent before its agent is taken for gone.
const staleHeartbeat = 30 * time.Second

// catchUp waits until node i's agent has recorded every change committed before now. The
// target is the node's WAL insert position (not pg_current_wal_lsn, the write position, which
// trails commits made with synchronous_commit = off), read in a transaction that writes, so
// its commit flushes the WAL to there and the stream can reach it without waiting for the WAL
// writer; the same transaction wakes the agent, which asks the server where its stream is.
func (d *differ) catchUp(ctx context.Context, i int) error {
	agent, t := d.nodes[i].Agent, d.trees[i]
	var target string
	err := pgx.BeginFunc(ctx, agent.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = local`); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `UPDATE ace.cdc_state SET updated_at = now() RETURNING pg_current_wal_insert_lsn()::text`).Scan(&target); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("no change stream: the node's agent has not started one (is ace-agent running there?); build the tree again with ace.mtree_build, or use ace.table_diff")
			}
			return err
		}
		return notify(ctx, tx, "sync")
	})
	if err != nil {
		return fmt.Errorf("ask the change stream for its position: %w", err)
	}
	timeout := d.opts.CDCTimeout
	if timeout <= 0 {
		timeout = defaultCDCTimeout
	}
	var st streamState
	done, err := poll(ctx, timeout, func() (bool, error) {
		if err := st.read(ctx, agent.Pool, target, t.Publication); err != nil {
			return false, err
		}
		return st.caughtUp, st.problem()
	})
	if err != nil {
		return err
	}
	if !done {
		return fmt.Errorf("its change stream has not caught up with WAL position %s within %s (it is at %s%s); is ace-agent running there? Run the diff again once it is, or use ace.table_diff",
			target, timeout, st.confirmed, st.heartbeatNote())
	}
	d.stats.CaughtUpTo[d.nodes[i].Name()] = target
	return nil
}

// streamState is what a node records about its change stream.
type streamState struct {
	slot, confirmed, walStatus string
	slotExists, tracked        bool
	caughtUp                   bool
	heartbeatAge               *time.Duration
	lastError                  *string
}

func (s *streamState) read(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, target, pub string) error {
	var age *float64
	err := q.QueryRow(ctx, `SELECT s.slot_name, coalesce(s.confirmed_lsn::text, 'nowhere'), coalesce(s.confirmed_lsn >= $1::pg_lsn, false),
			$2 = ANY(s.publications), extract(epoch FROM now() - s.heartbeat_at)::float8, s.last_error,
			r.slot_name IS NOT NULL, coalesce(r.wal_status, '')
		FROM ace.cdc_state s LEFT JOIN pg_replication_slots r ON r.slot_name = s.slot_name`, target, pub).
		Scan(&s.slot, &s.confirmed, &s.caughtUp, &s.tracked, &age, &s.lastError, &s.slotExists, &s.walStatus)
	if err != nil {
		return fmt.Errorf("read the change stream's state: %w", err)
	}
	s.caughtUp = s.caughtUp && s.tracked
	if age != nil {
		d := time.Duration(*age * float64(time.Second))
		s.heartbeatAge = &d
	}
	return nil
}

// problem is an error when waiting longer cannot help.
func (s *streamState) problem() error {
	switch {
	case !s.slotExists:
		return fmt.Errorf("its replication slot %s is gone, so changes since then are unknown; build the tree again with ace.mtree_build, or use ace.table_diff", s.slot)
	case s.walStatus == "lost":
		return fmt.Errorf("its replication slot %s was invalidated (it fell behind by more than max_slot_wal_keep_size), so changes are missing; build the tree again with ace.mtree_build, or use ace.table_diff", s.slot)
	case !s.caughtUp && s.heartbeatAge != nil && *s.heartbeatAge > staleHeartbeat:
		return fmt.Errorf("its agent's change stream has not reported for %s (at %s)%s; is ace-agent running there? Run the diff again once it is, or use ace.table_diff",
			s.heartbeatAge.Round(time.Second), s.confirmed, errorSuffix(s.lastError))
	}
	return nil
}

func (s *streamState) heartbeatNote() string {
	note := ""
	if s.heartbeatAge != nil {
		note = fmt.Sprintf(", last heard from %s ago", s.heartbeatAge.Round(time.Millisecond))
	}
	if !s.tracked {
		note += ", not yet streaming this table"
	}
	return note + errorSuffix(s.lastError)
}
