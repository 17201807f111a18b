package diff

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/engine"
)

// fetchBatch bounds how many keys one row-fetch query asks for.
const fetchBatch = 1000

// allPairsLimited reports whether every node pair has reached max_diff_rows.
func (d *differ) allPairsLimited() bool {
	if d.opts.MaxDiffRows <= 0 {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := range d.nodes {
		for j := i + 1; j < len(d.nodes); j++ {
			if d.pairs[pairKey(d.nodes[i].Name, d.nodes[j].Name)] < d.opts.MaxDiffRows {
				return false
			}
		}
	}
	return true
}

// admit counts each key against the node pairs it differs in, and keeps the keys that still
// fit under max_diff_rows for at least one of those pairs.
func (d *differ) admit(diffs []keyDiff) []keyDiff {
	d.mu.Lock()
	defer d.mu.Unlock()
	var kept []keyDiff
	for _, k := range diffs {
		counted := false
		for i := range d.nodes {
			for j := i + 1; j < len(d.nodes); j++ {
				if !k.differs(i, j) {
					continue
				}
				pk := pairKey(d.nodes[i].Name, d.nodes[j].Name)
				if d.opts.MaxDiffRows > 0 && d.pairs[pk] >= d.opts.MaxDiffRows {
					d.limitHit = true
					continue
				}
				d.pairs[pk]++
				counted = true
			}
		}
		if counted {
			kept = append(kept, k)
		}
	}
	d.prog.DifferingKeys += int64(len(kept))
	return kept
}

// reportKeys fetches the full rows of differing keys from every node and hands them to the sink.
// In a first pass before a recheck it only remembers the keys.
func (d *differ) reportKeys(ctx context.Context, diffs []keyDiff) error {
	if d.holdKeys {
		d.mu.Lock()
		for _, k := range diffs {
			d.heldKeys = append(d.heldKeys, k.key)
		}
		d.prog.DifferingKeys += int64(len(diffs))
		d.mu.Unlock()
		d.report()
		return nil
	}
	kept := d.admit(diffs)
	for start := 0; start < len(kept); start += fetchBatch {
		batch := kept[start:min(start+fetchBatch, len(kept))]
		rows, err := d.fetchRows(ctx, batch)
		if err != nil {
			return err
		}
		// Not cancelled with ctx: the pools cancel their siblings on the first error (or on
		// max_diff_rows), and a write cut short could break the sink's connection.
		d.sinkMu.Lock()
		err = d.sink.WriteDiffRows(context.WithoutCancel(ctx), rows)
		d.sinkMu.Unlock()
		if err != nil {
			return fmt.Errorf("store differing rows: %w", err)
		}
		d.report() // the differing keys so far, while a block is still being narrowed
	}
	if len(kept) < len(diffs) && d.allPairsLimited() {
		return errLimitReached
	}
	return nil
}

// fetchedRow is one node's version of a differing row.
type fetchedRow struct {
	pk, pkSort, row json.RawMessage
	meta            *engine.RowMeta
}

func (d *differ) fetchRows(ctx context.Context, diffs []keyDiff) ([]engine.DiffRow, error) {
	keys := make([][]string, len(diffs))
	for i, k := range diffs {
		keys[i] = k.key
	}
	perNode := make([]map[string]fetchedRow, len(d.nodes))
	err := d.onAllNodes(ctx, func(ctx context.Context, i int) error {
		sql, args := d.rowFetchSQL(i, keys)
		return d.sessions[i].Read(ctx, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, sql, args...)
			if err != nil {
				return fmt.Errorf("fetch differing rows: %w", err)
			}
			perNode[i], err = d.collectRows(rows, d.tables[i].CommitTS)
			return err
		})
	})
	if err != nil {
		return nil, err
	}
	out := make([]engine.DiffRow, 0, len(diffs))
	for _, k := range diffs {
		out = append(out, d.diffRow(k, perNode))
	}
	return out, nil
}

// rowFetchSQL selects the given keys' rows on node i, with the commit metadata where the node
// tracks commit timestamps.
func (d *differ) rowFetchSQL(i int, keys [][]string) (string, []any) {
	match, args := d.keys.MatchKeys(keys)
	meta := "NULL::timestamptz, NULL::text"
	if d.tables[i].CommitTS {
		meta = `pg_xact_commit_timestamp(xmin), ` + originNameSQL
	}
	sql := fmt.Sprintf(`SELECT %s, %s, %s, %s, %s FROM %s WHERE %s AND %s`,
		d.keys.KeyText(), engine.JSONObjectExpr(d.table.PK), d.keys.KeySortJSON(), engine.JSONObjectExpr(d.table.Columns), meta,
		d.table.Qualified(), match, d.filterFor(i))
	return sql, args
}

// originNameSQL names the replication origin of the transaction that wrote the row: "local" for
// writes made on the node, else the native subscription's name or the origin's own name.
const originNameSQL = `(SELECT CASE WHEN o.roident = 0 THEN 'local'
	ELSE coalesce((SELECT s.subname::text FROM pg_replication_origin ro JOIN pg_subscription s ON ro.roname = 'pg_' || s.oid::text
	                WHERE ro.roident = o.roident),
	              (SELECT ro.roname FROM pg_replication_origin ro WHERE ro.roident = o.roident),
	              o.roident::text) END
	FROM pg_xact_commit_timestamp_origin(xmin) o WHERE o.timestamp IS NOT NULL)`

func (d *differ) collectRows(rows pgx.Rows, withMeta bool) (map[string]fetchedRow, error) {
	defer rows.Close()
	n := len(d.keys.Columns())
	out := map[string]fetchedRow{}
	for rows.Next() {
		key := make([]string, n)
		dest := make([]any, 0, n+4)
		for i := range key {
			dest = append(dest, &key[i])
		}
		var f fetchedRow
		var ts *time.Time
		var origin *string
		if err := rows.Scan(append(dest, &f.pk, &f.pkSort, &f.row, &ts, &origin)...); err != nil {
			return nil, err
		}
		if withMeta {
			f.meta = &engine.RowMeta{CommitTS: ts, NodeOrigin: origin}
		}
		out[engine.KeyString(key)] = f
	}
	return out, rows.Err()
}

func (d *differ) diffRow(k keyDiff, perNode []map[string]fetchedRow) engine.DiffRow {
	dr := engine.DiffRow{Kind: engine.KindModified, Rows: map[string]json.RawMessage{}, Versions: map[string]int{}}
	ks := engine.KeyString(k.key)
	version := map[string]int{}
	for i, n := range d.nodes {
		f, ok := perNode[i][ks]
		if !ok {
			dr.Kind = engine.KindMissing
			dr.Rows[n.Name] = json.RawMessage("null")
			continue
		}
		dr.PK, dr.PKSort = f.pk, f.pkSort
		dr.Rows[n.Name] = f.row
		v, seen := version[k.hashes[i]]
		if !seen {
			v = len(version) + 1
			version[k.hashes[i]] = v
		}
		dr.Versions[n.Name] = v
		if f.meta != nil {
			if dr.Meta == nil {
				dr.Meta = map[string]engine.RowMeta{}
			}
			dr.Meta[n.Name] = *f.meta
		}
	}
	return dr
}
