package mtree

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/sourcegraph/conc/pool"

	"github.com/ace-agent/ace-agent/engine"
)

// TeardownResult says what a teardown removed, per node.
type TeardownResult struct {
	Tables       map[string][]string `json:"tables"`        // node → tables no longer tracked
	Publications map[string][]string `json:"publications"`  // node → publications dropped
	SlotsDropped []string            `json:"slots_dropped"` // nodes where a slot went with the last tree of its stream
	// PublicationsLeft: node → publications the submitter may not drop (they belong to their
	// builder). No stream reads them any more, so they cost nothing; Notices says who can drop
	// them.
	PublicationsLeft map[string][]string `json:"publications_left,omitempty"`
	Notices          []string            `json:"notices,omitempty"`
}

// streamReleaseTimeout bounds the wait for a node's agent to stop streaming a publication (or
// to drop its slot) before the teardown does it itself.
const streamReleaseTimeout = 15 * time.Second

// Teardown stops tracking table on every node ("" = every table): the tree's rows go, the
// node's agent drops the publication from its stream, the publication is dropped if the
// submitter may (PostgreSQL lets only its owner; else it is left and reported), and a stream
// left with no tree loses its slot. A node whose agent is not running gets the same done for
// it, so no slot is left behind. The builder, the table's owner and the ace schema's owner (and
// their members) may tear a tree down; the publication's ownership is not needed.
func Teardown(ctx context.Context, nodes []NodeLogins, table string) (*TeardownResult, error) {
	res := &TeardownResult{Tables: map[string][]string{}, Publications: map[string][]string{}, PublicationsLeft: map[string][]string{}}
	out := make([]nodeTeardown, len(nodes))
	p := pool.New().WithErrors().WithContext(ctx)
	for i, n := range nodes {
		p.Go(func(ctx context.Context) error {
			if err := out[i].run(ctx, n, table); err != nil {
				return fmt.Errorf("node %s: %w", n.Name(), err)
			}
			return nil
		})
	}
	err := p.Wait()
	for i, n := range nodes {
		res.Tables[n.Name()] = out[i].tables
		res.Publications[n.Name()] = out[i].dropped
		if len(out[i].left) > 0 {
			res.PublicationsLeft[n.Name()] = out[i].left
		}
		for _, note := range out[i].notices {
			res.Notices = append(res.Notices, fmt.Sprintf("node %s: %s", n.Name(), note))
		}
		if out[i].slots {
			res.SlotsDropped = append(res.SlotsDropped, n.Name())
		}
	}
	return res, err
}

// nodeTeardown is what a teardown did on one node.
type nodeTeardown struct {
	tables, dropped, left, notices []string
	slots                          bool
}

// trackedTable is a tree to take down, or a publication a failed build left without a tree.
type trackedTable struct {
	table, publication, builder string
	relid                       uint32
}

func (r *nodeTeardown) run(ctx context.Context, n NodeLogins, table string) error {
	relid, err := tableOID(ctx, n.Data, table)
	if err != nil {
		return err
	}
	tracked, err := trackedTables(ctx, n.Agent, table, relid)
	if err != nil {
		return err
	}
	// Refuse before changing anything if the submitter may not take a tree down.
	for _, t := range tracked {
		if _, err := n.Data.Pool.Exec(ctx, `SELECT ace.check_mtree_teardown($1, $2, $3)`, t.table, t.builder, t.relid); err != nil {
			return err
		}
	}
	if len(tracked) > 0 {
		if err := untrack(ctx, n, tracked); err != nil {
			return err
		}
	}
	for _, t := range tracked {
		if err := awaitStreamRelease(ctx, n.Agent, t.publication); err != nil {
			return err
		}
		dropped, owner, err := dropPublication(ctx, n.Data, t.publication)
		if err != nil {
			return err
		}
		r.tables = append(r.tables, t.table)
		switch {
		case dropped:
			r.dropped = append(r.dropped, t.publication)
		case owner != "":
			r.left = append(r.left, t.publication)
			r.notices = append(r.notices, fmt.Sprintf("publication %s belongs to %s; she or a superuser can DROP PUBLICATION %s (no stream reads it any more, so it costs nothing meanwhile)",
				t.publication, owner, engine.Ident(t.publication)))
		}
	}
	r.slots, err = dropIdleSlots(ctx, n.Agent)
	return err
}

// tableOID resolves table in the submitter's session (the agent's login may lack USAGE on its
// schema): 0 for every table, or for a table that is gone or that the submitter cannot see.
func tableOID(ctx context.Context, data *engine.Node, table string) (uint32, error) {
	if table == "" {
		return 0, nil
	}
	var relid *uint32
	err := data.Pool.QueryRow(ctx, `SELECT to_regclass($1)::oid`, table).Scan(&relid)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.InsufficientPrivilege {
		return 0, nil // a tree of a table the submitter cannot name is still found by its name
	}
	if err != nil {
		return 0, fmt.Errorf("look up table %s: %w", table, err)
	}
	if relid == nil {
		return 0, nil
	}
	return *relid, nil
}

// trackedTables lists the trees to take down with their publications, and the publications a
// build made before it failed to record its tree (named after the table's OID, relid: the
// agent never resolves a user's table name itself).
func trackedTables(ctx context.Context, agent *engine.Node, table string, relid uint32) ([]trackedTable, error) {
	rows, err := agent.Pool.Query(ctx, `SELECT table_name, publication, coalesce(built_by::text, ''), relid FROM ace.mtrees WHERE $1 = '' OR table_name = $1
		UNION
		SELECT coalesce(nullif($1, ''), p.pubname), p.pubname, p.pubowner::regrole::text, coalesce(r.prrelid, 0)
		FROM pg_publication p LEFT JOIN pg_publication_rel r ON r.prpubid = p.oid
		WHERE p.pubname LIKE 'ace\_mtree\_%' AND NOT EXISTS (SELECT 1 FROM ace.mtrees m WHERE m.publication = p.pubname)
		  AND ($1 = '' OR p.pubname = 'ace_mtree_' || $2::oid)
		ORDER BY 1`, table, relid)
	if err != nil {
		return nil, fmt.Errorf("read the tracked tables: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (trackedTable, error) {
		var t trackedTable
		return t, r.Scan(&t.table, &t.publication, &t.builder, &t.relid)
	})
}

// dropPublication drops pub as the submitter if the submitter may (PostgreSQL lets only its
// owner); otherwise it names the owner.
func dropPublication(ctx context.Context, data *engine.Node, pub string) (dropped bool, owner string, err error) {
	var may bool
	err = data.Pool.QueryRow(ctx, `SELECT pubowner::regrole::text, pg_has_role(current_user, pubowner, 'USAGE') FROM pg_publication WHERE pubname = $1`, pub).
		Scan(&owner, &may)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, "", nil
	}
	if err != nil {
		return false, "", fmt.Errorf("look up publication %s: %w", pub, err)
	}
	if !may {
		return false, owner, nil
	}
	if _, err := data.Pool.Exec(ctx, `DROP PUBLICATION IF EXISTS `+engine.Ident(pub)); err != nil {
		return false, "", fmt.Errorf("drop publication %s: %w", pub, err)
	}
	return true, "", nil
}

// untrack deletes the trees (with their leaves and pending changes) and wakes the agent.
func untrack(ctx context.Context, n NodeLogins, tracked []trackedTable) error {
	names := make([]string, len(tracked))
	for i, t := range tracked {
		names[i] = t.table
	}
	err := pgx.BeginFunc(ctx, n.Agent.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM ace.mtrees WHERE table_name = ANY($1)`, names); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM ace.mtree_node_status WHERE table_name = ANY($1)`, names)
		if err != nil {
			return err
		}
		return n.wake(ctx, tx, TreesChanged)
	})
	if err != nil {
		return fmt.Errorf("delete the trees: %w", err)
	}
	return nil
}

// awaitStreamRelease waits until no stream reads the publication: a running stream would fail
// on the next change once it is dropped. The node's agent drops it from its stream when told;
// a stream that is not running reads nothing.
func awaitStreamRelease(ctx context.Context, agent *engine.Node, pub string) error {
	_, err := poll(ctx, streamReleaseTimeout, func() (bool, error) {
		var busy bool
		err := agent.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM ace.cdc_state s JOIN pg_replication_slots r ON r.slot_name = s.slot_name
			WHERE r.active AND $1 = ANY(s.publications))`, pub).Scan(&busy)
		return !busy, err
	})
	if err != nil {
		return fmt.Errorf("wait for the agent to stop streaming %s: %w", pub, err)
	}
	return nil
}

// dropIdleSlots removes the slots of streams left with no tree: the node's agent does that
// itself when it runs; when it does not (or not in time), they are dropped here, for a slot
// nobody reads holds WAL on the node forever.
func dropIdleSlots(ctx context.Context, agent *engine.Node) (bool, error) {
	rows, err := agent.Pool.Query(ctx, `SELECT s.slot_name FROM ace.cdc_state s
		WHERE NOT EXISTS (SELECT 1 FROM ace.mtrees m WHERE m.slot_name = s.slot_name)`)
	if err != nil {
		return false, fmt.Errorf("read the change streams' state: %w", err)
	}
	slots, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return false, fmt.Errorf("read the change streams' state: %w", err)
	}
	for _, slot := range slots {
		if err := dropIdleSlot(ctx, agent, slot); err != nil {
			return false, err
		}
	}
	return len(slots) > 0, nil
}

func dropIdleSlot(ctx context.Context, agent *engine.Node, slot string) error {
	gone, err := poll(ctx, streamReleaseTimeout, func() (bool, error) {
		var exists bool
		err := agent.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, slot).Scan(&exists)
		return !exists, err
	})
	if err != nil {
		return err
	}
	if !gone {
		var dropped bool
		err := agent.Pool.QueryRow(ctx, `SELECT count(pg_drop_replication_slot(slot_name)) = 1 FROM pg_replication_slots WHERE slot_name = $1 AND NOT active`, slot).Scan(&dropped)
		if err != nil {
			return fmt.Errorf("drop the idle slot %s: %w", slot, err)
		}
		if !dropped {
			return fmt.Errorf("slot %s is still being read though none of its trees is left; drop it when its reader stops: SELECT pg_drop_replication_slot(%s)", slot, engine.QuoteLiteral(slot))
		}
	}
	_, err = agent.Pool.Exec(ctx, `DELETE FROM ace.cdc_state s WHERE slot_name = $1 AND NOT EXISTS (SELECT 1 FROM ace.mtrees m WHERE m.slot_name = s.slot_name)`, slot)
	return err
}
