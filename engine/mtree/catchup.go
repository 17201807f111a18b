package mtree

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/engine"
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
//
// The tree's publication is checked before and after: one changed since the build may have
// hidden changes from the tree (a false "in sync"), so the tree is failed and the diff refused.
func (d *differ) catchUp(ctx context.Context, i int) error {
	agent, t := d.nodes[i].Agent, d.trees[i]
	timeout := d.opts.CDCTimeout
	if timeout <= 0 {
		timeout = defaultCDCTimeout
	}
	// An agent that has just started may not have taken the tree's stream on yet (or moved a tree
	// onto its owner's slot): the diff waits for it as it waits for the stream to catch up.
	var slot, target string
	started, err := poll(ctx, timeout, func() (bool, error) {
		var err error
		if slot, err = checkStream(ctx, agent, t); err != nil {
			return false, err
		}
		if target, err = d.askPosition(ctx, i, slot); err != nil {
			return false, fmt.Errorf("ask the change stream for its position: %w", err)
		}
		return target != "", nil
	})
	if err != nil {
		return err
	}
	if !started {
		return fmt.Errorf("no change stream: the node's agent has not started one within %s (is ace-agent running there?); build the tree again with ace.mtree_build, or use ace.table_diff", timeout)
	}
	var st streamState
	done, err := poll(ctx, timeout, func() (bool, error) {
		if err := st.read(ctx, agent.Pool, target, slot, t.Publication); err != nil {
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
	if _, err := checkStream(ctx, agent, t); err != nil {
		return err
	}
	d.stats.CaughtUpTo[d.nodes[i].Name()] = target
	return nil
}

// askPosition reads node i's WAL insert position and wakes its agent to ask the server where the
// slot's stream is, in a transaction that writes, so its commit flushes the WAL to there and the
// stream can reach it without waiting for the WAL writer. It returns "" while the node's agent
// records no stream of the slot.
func (d *differ) askPosition(ctx context.Context, i int, slot string) (target string, err error) {
	err = pgx.BeginFunc(ctx, d.nodes[i].Agent.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = local`); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, `UPDATE ace.cdc_state SET updated_at = now() WHERE slot_name = $1
			RETURNING pg_current_wal_insert_lsn()::text`, slot).Scan(&target)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		return d.nodes[i].wake(ctx, tx, PositionWanted)
	})
	return target, err
}

// checkStream returns the slot of the tree's stream, or an error if the tree failed or its
// publication changed since the build; such a tree is failed here, with the agent's login, so
// that every later diff is refused too until it is built again.
func checkStream(ctx context.Context, agent *engine.Node, t *tree) (string, error) {
	var slot, status string
	var failure, problem *string
	var unadopted bool
	err := agent.Pool.QueryRow(ctx, `SELECT coalesce(m.slot_name, ''), m.status, m.error, ace.mtree_publication_problem(m),
			m.slot_name IS NULL AND m.pub_owner IS NULL
		FROM ace.mtrees m WHERE m.tree_id = $1`, t.ID).Scan(&slot, &status, &failure, &problem, &unadopted)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("the Merkle tree of %s was torn down while the diff ran", t.Table)
	}
	if err != nil {
		return "", fmt.Errorf("check the tree's publication: %w", err)
	}
	if unadopted && status != "failed" {
		// A tree of the single-slot release that the node's agent has not yet moved onto its
		// owner's stream (ace.mtree_adopt_trees records the owner then): no stream yet, and no
		// owner to hold the publication to, so the caller waits for the agent.
		return "", nil
	}
	rebuild := fmt.Sprintf("build the tree again with ace.mtree_build(%s), or use ace.table_diff", engine.QuoteLiteral(t.Table))
	if problem != nil {
		msg := fmt.Sprintf("%s since the Merkle tree of %s was built, so the tree may have missed changes and cannot be trusted", *problem, t.Table)
		if _, err := agent.Pool.Exec(ctx, `UPDATE ace.mtrees SET status = 'failed', error = $2 WHERE tree_id = $1`, t.ID, msg+"; "+rebuild); err != nil {
			return "", fmt.Errorf("%s; and recording that failed: %w", msg, err)
		}
		return "", fmt.Errorf("%s; %s", msg, rebuild)
	}
	if status == "failed" {
		return "", fmt.Errorf("the Merkle tree of %s failed%s; %s", t.Table, errorSuffix(failure), rebuild)
	}
	return slot, nil
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
}, target, slot, pub string) error {
	var age *float64
	err := q.QueryRow(ctx, `SELECT s.slot_name, coalesce(s.confirmed_lsn::text, 'nowhere'), coalesce(s.confirmed_lsn >= $1::pg_lsn, false),
			$2 = ANY(s.publications), extract(epoch FROM now() - s.heartbeat_at)::float8, s.last_error,
			r.slot_name IS NOT NULL, coalesce(r.wal_status, '')
		FROM ace.cdc_state s LEFT JOIN pg_replication_slots r ON r.slot_name = s.slot_name WHERE s.slot_name = $3`, target, pub, slot).
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
