package diff

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ace-agent/ace-agent/engine"
)

// RecheckOptions are the inputs of RecheckKeys.
type RecheckOptions struct {
	Table string
	Keys  [][]string // primary keys as text values in key order (see engine.KeyFromJSON)
	// Ranges are key ranges compared whole (a diff's key ranges, engine.KeyRange): hashed on every
	// node, and their differing keys found as a table-diff finds them.
	Ranges      []engine.Range
	TableFilter string
	MaxDiffRows int64
	Columns     []string // the diff's columns option: the key and these are compared
	// SetRoleSessions says the node sessions log in as the agent and SET ROLE to the submitter:
	// code the table runs on a read could step back to the agent's login, so it is checked as
	// TableDiffOptions.SetRoleSessions says.
	SetRoleSessions bool
}

// RecheckKeys compares exactly the given keys across the nodes, at a fresh snapshot of each, and
// streams the rows that still differ into sink. Keys that now match everywhere are dropped.
func RecheckKeys(ctx context.Context, nodes []*engine.Node, opts RecheckOptions, sink engine.Sink, progress engine.ProgressFunc) (*engine.DiffSummary, error) {
	if len(nodes) < 2 {
		return nil, fmt.Errorf("a recheck needs at least 2 nodes, got %d", len(nodes))
	}
	start := time.Now()
	d := newDiffer(TableDiffOptions{Table: opts.Table, TableFilter: opts.TableFilter, MaxDiffRows: opts.MaxDiffRows,
		Columns: opts.Columns, SetRoleSessions: opts.SetRoleSessions}, nodes, sink, progress)
	d.opts.setDefaults()
	defer d.closeSessions(ctx)
	if err := d.prepare(ctx); err != nil {
		return nil, err
	}
	if err := d.recheck(ctx, opts.Keys); err != nil && !errors.Is(err, errLimitReached) {
		return nil, d.explain(err)
	}
	for _, r := range opts.Ranges {
		if err := d.diffBlock(ctx, block{rng: r}); err != nil && !errors.Is(err, errLimitReached) {
			return nil, d.explain(err)
		}
	}
	return d.summary(start), nil
}

// recheck compares the keys batch by batch and reports those that differ.
func (d *differ) recheck(ctx context.Context, keys [][]string) error {
	d.mu.Lock()
	d.prog = engine.Progress{Phase: "rechecking", BlocksTotal: (len(keys) + fetchBatch - 1) / fetchBatch, RowsHashed: d.prog.RowsHashed}
	if d.blocks == 0 {
		d.blocks = d.prog.BlocksTotal
	}
	d.mu.Unlock()
	d.report()
	return d.compareKeys(ctx, keys)
}

// compareKeys compares the keys batch by batch and reports those that differ.
func (d *differ) compareKeys(ctx context.Context, keys [][]string) error {
	for start := 0; start < len(keys); start += fetchBatch {
		batch := keys[start:min(start+fetchBatch, len(keys))]
		perNode, err := d.keyHashes(ctx, batch)
		if err != nil {
			return err
		}
		if err := d.reportKeys(ctx, differingKeys(perNode)); err != nil {
			return err
		}
		d.blockDone()
	}
	return nil
}

// keyHashes reads the row hashes of the given keys on every node, counting them as checked.
func (d *differ) keyHashes(ctx context.Context, keys [][]string) ([]map[string]keyHash, error) {
	match, args := d.keys.MatchKeys(keys)
	perNode, err := d.rowDigests(ctx, match, args)
	if err != nil {
		return nil, fmt.Errorf("read row hashes of %d keys: %w", len(keys), err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, m := range perNode {
		d.rowsPerNode[i] += int64(len(m))
		d.prog.RowsHashed += int64(len(m))
	}
	return perNode, nil
}

// recheckPersisting waits RecheckAfter, then compares the keys the first pass found at fresh
// snapshots. Differences that replication lag had in flight are gone by then and are counted
// as transient; the ones that persist are reported as drift.
func (d *differ) recheckPersisting(ctx context.Context) error {
	d.setPhase(fmt.Sprintf("waiting %s to recheck %d differing keys", d.opts.RecheckAfter, len(d.heldKeys)))
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d.opts.RecheckAfter):
	}
	// The recheck reads fresh snapshots, even where the first pass read the caller's.
	d.closeSessions(ctx)
	d.opts.Sessions, d.borrowed = nil, false
	if err := d.openSessions(ctx, d.tables); err != nil {
		return err
	}
	keys := d.heldKeys
	firstPass := append([]int64(nil), d.rowsPerNode...)
	d.holdKeys, d.heldKeys = false, nil
	err := d.recheck(ctx, keys)
	d.mu.Lock()
	// Rows checked are the first pass's; the recheck only re-reads the suspects.
	d.rowsPerNode = firstPass
	d.transient = int64(len(keys)) - d.prog.DifferingKeys
	d.mu.Unlock()
	return err
}
