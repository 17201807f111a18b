package mtree

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/sourcegraph/conc/pool"

	"github.com/ace-agent/ace-agent/engine"
)

// TeardownResult says what a teardown removed, per node.
type TeardownResult struct {
	Tables       map[string][]string `json:"tables"`        // node → tables no longer tracked
	Publications map[string][]string `json:"publications"`  // node → publications dropped
	SlotsDropped []string            `json:"slots_dropped"` // nodes whose slot went with their last tree
}

// streamReleaseTimeout bounds the wait for a node's agent to stop streaming a publication (or
// to drop its slot) before the teardown does it itself.
const streamReleaseTimeout = 15 * time.Second

// Teardown stops tracking table on every node ("" = every table): the tree's rows go, the
// node's agent drops the publication from its stream, the publication is dropped (as the
// submitter: PostgreSQL lets only its owner), and a node left with no tree loses its slot. A
// node whose agent is not running gets the same done for it, so no slot is left behind.
func Teardown(ctx context.Context, nodes []Node, table string) (*TeardownResult, error) {
	res := &TeardownResult{Tables: map[string][]string{}, Publications: map[string][]string{}}
	type nodeResult struct {
		tables, pubs []string
		slot         bool
	}
	out := make([]nodeResult, len(nodes))
	p := pool.New().WithErrors().WithContext(ctx)
	for i, n := range nodes {
		p.Go(func(ctx context.Context) error {
			var err error
			out[i].tables, out[i].pubs, out[i].slot, err = teardownNode(ctx, n, table)
			if err != nil {
				return fmt.Errorf("node %s: %w", n.Name(), err)
			}
			return nil
		})
	}
	err := p.Wait()
	for i, n := range nodes {
		res.Tables[n.Name()] = out[i].tables
		res.Publications[n.Name()] = out[i].pubs
		if out[i].slot {
			res.SlotsDropped = append(res.SlotsDropped, n.Name())
		}
	}
	return res, err
}

type trackedTable struct{ table, publication string }

func teardownNode(ctx context.Context, n Node, table string) (tables, pubs []string, slotDropped bool, err error) {
	tracked, err := trackedTables(ctx, n.Agent, table)
	if err != nil {
		return nil, nil, false, err
	}
	// Refuse before changing anything if the submitter cannot drop a publication.
	for _, t := range tracked {
		if err := checkPublicationOwner(ctx, n.Data, t.publication); err != nil {
			return nil, nil, false, err
		}
	}
	if len(tracked) > 0 {
		if err := untrack(ctx, n.Agent, tracked); err != nil {
			return nil, nil, false, err
		}
	}
	for _, t := range tracked {
		if err := awaitStreamRelease(ctx, n.Agent, t.publication); err != nil {
			return nil, nil, false, err
		}
		if _, err := n.Data.Pool.Exec(ctx, `DROP PUBLICATION IF EXISTS `+engine.Ident(t.publication)); err != nil {
			return nil, nil, false, fmt.Errorf("drop publication %s: %w", t.publication, err)
		}
		tables = append(tables, t.table)
		pubs = append(pubs, t.publication)
	}
	slotDropped, err = dropIdleSlot(ctx, n.Agent)
	return tables, pubs, slotDropped, err
}

// trackedTables lists the trees to take down with their publications, and the publications a
// build made before it failed to record its tree (named after the table's OID).
func trackedTables(ctx context.Context, agent *engine.Node, table string) ([]trackedTable, error) {
	rows, err := agent.Pool.Query(ctx, `SELECT table_name, publication FROM ace.mtrees WHERE $1 = '' OR table_name = $1
		UNION
		SELECT coalesce(nullif($1, ''), p.pubname), p.pubname FROM pg_publication p
		WHERE p.pubname LIKE 'ace\_mtree\_%' AND NOT EXISTS (SELECT 1 FROM ace.mtrees m WHERE m.publication = p.pubname)
		  AND ($1 = '' OR p.pubname = 'ace_mtree_' || to_regclass($1)::oid)
		ORDER BY 1`, table)
	if err != nil {
		return nil, fmt.Errorf("read the tracked tables: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (trackedTable, error) {
		var t trackedTable
		return t, r.Scan(&t.table, &t.publication)
	})
}

func checkPublicationOwner(ctx context.Context, data *engine.Node, pub string) error {
	var owner string
	var may bool
	err := data.Pool.QueryRow(ctx, `SELECT pubowner::regrole::text, pg_has_role(current_user, pubowner, 'USAGE') FROM pg_publication WHERE pubname = $1`, pub).
		Scan(&owner, &may)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up publication %s: %w", pub, err)
	}
	if !may {
		return fmt.Errorf("permission denied: publication %s belongs to %s, and PostgreSQL lets only its owner drop it; run the teardown as %s or a member of it", pub, owner, owner)
	}
	return nil
}

// untrack deletes the trees (with their leaves and pending changes) and wakes the agent.
func untrack(ctx context.Context, agent *engine.Node, tracked []trackedTable) error {
	names := make([]string, len(tracked))
	for i, t := range tracked {
		names[i] = t.table
	}
	err := pgx.BeginFunc(ctx, agent.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM ace.mtrees WHERE table_name = ANY($1)`, names); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM ace.mtree_node_status WHERE table_name = ANY($1)`, names)
		if err != nil {
			return err
		}
		return notify(ctx, tx, "trees")
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

// dropIdleSlot removes the node's slot once it tracks nothing: its agent does that itself when
// it runs; when it does not (or not in time), the slot is dropped here, for a slot nobody reads
// holds WAL on the node forever.
func dropIdleSlot(ctx context.Context, agent *engine.Node) (bool, error) {
	var slot string
	err := agent.Pool.QueryRow(ctx, `SELECT s.slot_name FROM ace.cdc_state s WHERE NOT EXISTS (SELECT 1 FROM ace.mtrees)`).Scan(&slot)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read the change stream's state: %w", err)
	}
	gone, err := poll(ctx, streamReleaseTimeout, func() (bool, error) {
		var exists bool
		err := agent.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, slot).Scan(&exists)
		return !exists, err
	})
	if err != nil {
		return false, err
	}
	if !gone {
		var dropped bool
		err := agent.Pool.QueryRow(ctx, `SELECT count(pg_drop_replication_slot(slot_name)) = 1 FROM pg_replication_slots WHERE slot_name = $1 AND NOT active`, slot).Scan(&dropped)
		if err != nil {
			return false, fmt.Errorf("drop the idle slot %s: %w", slot, err)
		}
		if !dropped {
			return false, fmt.Errorf("slot %s is still being read though no table is tracked; drop it when its reader stops: SELECT pg_drop_replication_slot(%s)", slot, engine.QuoteLiteral(slot))
		}
	}
	_, err = agent.Pool.Exec(ctx, `DELETE FROM ace.cdc_state WHERE slot_name = $1 AND NOT EXISTS (SELECT 1 FROM ace.mtrees)`, slot)
	return true, err
}
