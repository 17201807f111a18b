package mtree

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/big"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/diff"
)

// candidates are the keys the change streams delivered for the leaves a diff refreshed: where
// a refreshed leaf differs, its difference is most likely among them. They are only a
// shortcut: a leaf is settled by its candidates alone when no other row of it can differ,
// because
//   - its summaries agreed on every node before the refresh, and every change to it since came
//     with its key (agreedBefore): then the rows that are not candidates are as they were, and
//     alike; or
//   - its lanes, less its candidates' rows, are the same on every node (residualsAgree).
//
// Otherwise it is compared row by row, as a table-diff would.
type candidates struct {
	mu   sync.Mutex
	keys map[string][]string // by engine.KeyString
}

func (c *candidates) add(keys [][]string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.keys == nil {
		c.keys = map[string][]string{}
	}
	for _, k := range keys {
		c.keys[engine.KeyString(k)] = k
	}
}

func (c *candidates) all() [][]string {
	out := make([][]string, 0, len(c.keys))
	for _, k := range c.keys {
		out = append(out, k)
	}
	return out
}

// readCandidates reads the keys pending for the tree on node i that the session's snapshot
// sees, as canonical key texts, before the refresh assigns them to leaves.
func (d *differ) readCandidates(ctx context.Context, i int) error {
	sql := fmt.Sprintf(`SELECT DISTINCT %s FROM ace.mtree_pending p
		WHERE p.tree_id = $1 AND p.key IS NOT NULL AND pg_visible_in_snapshot(p.xid, $2::pg_snapshot)`, d.sub.keys.KeyTextFromRawArray("p.key"))
	rows, err := d.txs[i].Query(ctx, sql, d.trees[i].ID, d.snaps[i])
	if err != nil {
		return fmt.Errorf("read the changed keys: %w", err)
	}
	keys, err := pgx.CollectRows(rows, engine.ScanKey(d.sub.keys.Len()))
	if err != nil {
		return fmt.Errorf("read the changed keys: %w", err)
	}
	d.cands.add(keys)
	return nil
}

// leafHistory is what a node's refresh knew of its leaves before it hashed them again.
type leafHistory struct {
	before  map[int]summary // the stale leaves' summaries as they were stored
	unknown map[int]bool    // leaves changed by transactions whose keys are no longer known
	all     bool            // every leaf was: a TRUNCATE, or a key the stream could not show
}

// readUnknownChanges reads, before the refresh maps the pending keys onto leaves, which leaves
// of node i hold changes whose keys are gone: the stale marks already there (the keys of a
// compaction, or of a transaction an earlier refresh could not see yet), and whether a change
// without a key (a TRUNCATE) stales them all.
func (d *differ) readUnknownChanges(ctx context.Context, i int) error {
	var ids []int
	h := &d.history[i]
	err := d.txs[i].QueryRow(ctx, `SELECT ARRAY(SELECT DISTINCT x.leaf_id FROM ace.mtree_dirty x WHERE x.tree_id = $1),
			EXISTS (SELECT FROM ace.mtree_pending p WHERE p.tree_id = $1 AND p.key IS NULL)`, d.trees[i].ID).Scan(&ids, &h.all)
	if err != nil {
		return fmt.Errorf("read the leaves changed by unknown keys: %w", err)
	}
	h.unknown = make(map[int]bool, len(ids))
	for _, id := range ids {
		h.unknown[id] = true
	}
	return nil
}

// agreedBefore reports whether leaf id was the same on every node before this diff's refresh,
// every change to it since having come with its key: its summaries then, not overflowed, were
// equal, and its range is still what it was. current is each node's summary now, which for a
// node that did not refresh the leaf is also what it was.
func (d *differ) agreedBefore(id int, current []summary) bool {
	if d.reshaped[id] {
		return false
	}
	var first summary
	for i, h := range d.history {
		if h.all || h.unknown[id] {
			return false
		}
		s, ok := h.before[id]
		if !ok {
			s = current[i]
		}
		if s.Overflow || (i > 0 && s != first) {
			return false
		}
		first = s
	}
	return true
}

// keysByLeaf assigns keys to the leaves among ids that hold them (the leaves are the same on
// every node, so node 0's are asked); keys in none of them are left out. Only those leaves'
// bounds are searched, so the cost follows the mismatched leaves, not the tree: a key is in the
// leaf with the greatest lower bound at or below it if it is also below that leaf's upper bound.
func (d *differ) keysByLeaf(ctx context.Context, keys [][]string, ids []int) (map[int][][]string, error) {
	k := d.sub.keys
	names := make([]string, k.Len())
	for i := range names {
		names[i] = fmt.Sprintf("k%d", i)
	}
	args := engine.AppendKeyArrays([]any{d.trees[0].ID, ids}, keys, k.Len())
	arrays := make([]string, k.Len())
	for i := range arrays {
		arrays[i] = fmt.Sprintf("$%d::text[]", i+3)
	}
	sql := fmt.Sprintf(`WITH l AS (SELECT l.leaf_id, l.lo, l.hi FROM ace.mtree_leaves l WHERE l.tree_id = $1 AND l.leaf_id = ANY($2::int[])),
		b AS (SELECT array_agg(%[1]s ORDER BY %[1]s) AS bounds, array_agg(l.leaf_id ORDER BY %[1]s) AS ids FROM l WHERE l.lo IS NOT NULL),
		c AS (SELECT ARRAY[%[3]s] AS key FROM unnest(%[4]s) AS u(%[3]s)),
		w AS (SELECT CASE WHEN w IS NULL OR w = 0 THEN (SELECT l.leaf_id FROM l WHERE l.lo IS NULL) ELSE b.ids[w] END AS leaf_id, c.key
			FROM c CROSS JOIN b CROSS JOIN LATERAL width_bucket(%[2]s, b.bounds) AS w)
		SELECT w.leaf_id, w.key FROM w JOIN l ON l.leaf_id = w.leaf_id WHERE l.hi IS NULL OR %[5]s < %[6]s`,
		k.KeyFromArray("l.lo"), k.KeyFromArray("c.key"), strings.Join(names, ", "), strings.Join(arrays, ", "), k.KeyFromArray("w.key"), k.KeyFromArray("l.hi"))
	rows, err := d.txs[0].Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("assign changed keys to leaves: %w", err)
	}
	out := map[int][][]string{}
	var leafID int
	var key []string
	_, err = pgx.ForEachRow(rows, []any{&leafID, &key}, func() error {
		out[leafID] = append(out[leafID], append([]string(nil), key...))
		return nil
	})
	return out, err
}

// settle splits the mismatched leaves into those their candidates explain, whose candidate
// keys are returned to be compared one by one, and those to compare row by row.
func (d *differ) settle(ctx context.Context, mismatched []diff.Leaf, sums map[int][]summary, ids []int) ([]diff.Leaf, [][]string, error) {
	if len(d.cands.keys) == 0 || len(mismatched) == 0 {
		return mismatched, nil, nil
	}
	byLeaf, err := d.keysByLeaf(ctx, d.cands.all(), ids)
	if err != nil {
		return nil, nil, err
	}
	var narrow, rest []diff.Leaf
	var restIDs []int
	var settled [][]string
	for j, l := range mismatched {
		cands := byLeaf[ids[j]]
		switch {
		case len(cands) == 0:
			narrow = append(narrow, l)
		case d.agreedBefore(ids[j], sums[ids[j]]):
			settled = append(settled, cands...)
		case d.sub.leaves == diff.SummaryLanes:
			rest, restIDs = append(rest, l), append(restIDs, ids[j])
		default: // an ordered digest less some rows is no digest of the others
			narrow = append(narrow, l)
		}
	}
	if len(rest) == 0 {
		return narrow, settled, nil
	}
	var keys [][]string
	for _, id := range restIDs {
		keys = append(keys, byLeaf[id]...)
	}
	digests, err := d.candidateDigests(ctx, keys)
	if err != nil {
		return nil, nil, err
	}
	for j, l := range rest {
		cands := byLeaf[restIDs[j]]
		if residualsAgree(sums[restIDs[j]], cands, digests) {
			settled = append(settled, cands...)
			continue
		}
		narrow = append(narrow, l)
	}
	return narrow, settled, nil
}

// candidateDigests reads the row digests of keys on every node at the diff's snapshots.
func (d *differ) candidateDigests(ctx context.Context, keys [][]string) ([]map[string][]byte, error) {
	out := make([]map[string][]byte, len(d.nodes))
	match, args := d.sub.keys.MatchKeys(keys)
	sql := fmt.Sprintf(`SELECT %s, %s FROM %s`, d.sub.keys.KeyText(), d.sub.hash.Digest, d.sub.hash.Source(d.sub.table.Qualified(), match))
	err := d.onNodes(ctx, func(ctx context.Context, i int) error {
		out[i] = map[string][]byte{}
		return d.sessions[i].Read(ctx, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, sql, args...)
			if err != nil {
				return fmt.Errorf("read the digests of %d changed keys: %w", len(keys), err)
			}
			key := make([]string, d.sub.keys.Len())
			dest := make([]any, 0, len(key)+1)
			for i := range key {
				dest = append(dest, &key[i])
			}
			var digest []byte
			_, err = pgx.ForEachRow(rows, append(dest, &digest), func() error {
				out[i][engine.KeyString(key)] = append([]byte(nil), digest...)
				return nil
			})
			return err
		})
	})
	return out, err
}

// residualsAgree reports whether a leaf's summary less its candidate rows is the same on every
// node: then no row outside the candidates differs.
func residualsAgree(perNode []summary, cands [][]string, digests []map[string][]byte) bool {
	var first [3]*big.Int
	for i, s := range perNode {
		r, ok := residual(s, cands, digests[i])
		if !ok {
			return false
		}
		if i == 0 {
			first = r
			continue
		}
		for j := range r {
			if r[j].Cmp(first[j]) != 0 {
				return false
			}
		}
	}
	return true
}

// residual is a summary's count and lanes less those of the candidate rows the node has. The
// lanes are the signed 64-bit integers engine.SummarySQL adds up.
func residual(s summary, cands [][]string, digests map[string][]byte) ([3]*big.Int, bool) {
	l1, ok1 := new(big.Int).SetString(s.Lane1, 10)
	l2, ok2 := new(big.Int).SetString(s.Lane2, 10)
	if !ok1 || !ok2 {
		return [3]*big.Int{}, false
	}
	count := big.NewInt(s.Count)
	for _, k := range cands {
		d, ok := digests[engine.KeyString(k)]
		if !ok {
			continue
		}
		if len(d) < 16 {
			return [3]*big.Int{}, false
		}
		count.Sub(count, big.NewInt(1))
		l1.Sub(l1, big.NewInt(int64(binary.BigEndian.Uint64(d[0:8]))))
		l2.Sub(l2, big.NewInt(int64(binary.BigEndian.Uint64(d[8:16]))))
	}
	return [3]*big.Int{count, l1, l2}, true
}
