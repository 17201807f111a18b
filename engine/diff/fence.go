package diff

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/engine"
)

// filterFor is the row predicate on node i: the user's table_filter and the commit fences
// (until, against_origin), which differ per node because origin ids are per node.
func (d *differ) filterFor(i int) string {
	parts := []string{d.filter}
	if d.untilSQL != "" {
		parts = append(parts, d.untilSQL)
	}
	if d.originSQL != nil {
		parts = append(parts, d.originSQL[i])
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return "(" + strings.Join(parts, " AND ") + ")"
}

// prepareFences checks that every node tracks commit timestamps when a fence needs them, and
// resolves against_origin to each node's replication origin ids.
func (d *differ) prepareFences(ctx context.Context) error {
	if d.opts.Until == nil && d.opts.AgainstOrigin == "" {
		return nil
	}
	for i, t := range d.tables {
		if !t.CommitTS {
			return fmt.Errorf("until and against_origin need track_commit_timestamp = on, and it is off on node %s: set it and restart that node",
				d.nodes[i].Name)
		}
	}
	if d.opts.Until != nil {
		// Rows frozen before commit timestamps were kept have none: they are older than any fence.
		d.untilSQL = fmt.Sprintf("(pg_xact_commit_timestamp(xmin) IS NULL OR pg_xact_commit_timestamp(xmin) <= %s::timestamptz)",
			engine.QuoteLiteral(d.opts.Until.UTC().Format(time.RFC3339Nano)))
	}
	if d.opts.AgainstOrigin == "" {
		return nil
	}
	d.originSQL = make([]string, len(d.nodes))
	d.originIDs = map[string][]uint32{}
	return d.onAllNodes(ctx, func(ctx context.Context, i int) error {
		ids, err := d.resolveOrigin(ctx, i)
		if err != nil {
			return fmt.Errorf("resolve against_origin %q: %w", d.opts.AgainstOrigin, err)
		}
		d.mu.Lock()
		d.originIDs[d.nodes[i].Name] = ids
		d.mu.Unlock()
		d.originSQL[i] = originPredicate(ids)
		return nil
	})
}

func originPredicate(ids []uint32) string {
	if len(ids) == 0 {
		return "false"
	}
	list := make([]string, len(ids))
	for j, id := range ids {
		list[j] = strconv.FormatUint(uint64(id), 10)
	}
	return "(pg_xact_commit_timestamp_origin(xmin)).roident IN (" + strings.Join(list, ", ") + ")"
}

// originCandidate is a replication origin on a node and the names it can be known by.
type originCandidate struct {
	id    uint32
	names []string // the origin's own name, its native subscription, its pglogical provider node
}

// resolveOrigin finds the origin ids on node i that stand for against_origin (OriginIDs).
func (d *differ) resolveOrigin(ctx context.Context, i int) ([]uint32, error) {
	var ids []uint32
	err := d.sessions[i].Read(ctx, func(tx pgx.Tx) error {
		var err error
		ids, err = OriginIDs(ctx, tx, d.nodes[i].Name, d.opts.AgainstOrigin)
		return err
	})
	return ids, err
}

// OriginIDs finds the commit origin ids on the node tx reads (named localNode) that stand for
// node want: 0 (local writes) on the node of that name, and elsewhere the origins of
// subscriptions from it — matched by origin name or id, native subscription name (as a whole
// word), pglogical or Spock provider node — and, on Spock, want's Spock node id, which Spock
// records as the commit origin of the changes it applies.
func OriginIDs(ctx context.Context, tx pgx.Tx, localNode, want string) ([]uint32, error) {
	var ids []uint32
	if localNode == want {
		ids = append(ids, 0)
	}
	cands, err := originCandidates(ctx, tx)
	if err != nil {
		return nil, err
	}
	word := regexp.MustCompile(`(^|[^A-Za-z0-9])` + regexp.QuoteMeta(want) + `($|[^A-Za-z0-9])`)
	for _, c := range cands {
		if (strconv.FormatUint(uint64(c.id), 10) == want || matchesAny(c.names, want, word)) && !slices.Contains(ids, c.id) {
			ids = append(ids, c.id)
		}
	}
	return ids, nil
}

func matchesAny(names []string, want string, word *regexp.Regexp) bool {
	for j, n := range names {
		// names[0] is the origin's own name: it must match exactly.
		if n == want || (j > 0 && word.MatchString(n)) {
			return true
		}
	}
	return false
}

func originCandidates(ctx context.Context, tx pgx.Tx) ([]originCandidate, error) {
	var hasPglogical bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass('pglogical.subscription') IS NOT NULL`).Scan(&hasPglogical); err != nil {
		return nil, err
	}
	var hasSpock bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass('spock.node') IS NOT NULL`).Scan(&hasSpock); err != nil {
		return nil, err
	}
	pglogical, spock := `NULL::text`, ``
	if hasSpock {
		pglogical = `(SELECT n.node_name::text FROM spock.subscription ss JOIN spock.node n ON n.node_id = ss.sub_origin
		              WHERE ss.sub_slot_name = ro.roname LIMIT 1)`
		spock = ` UNION ALL SELECT n.node_id::int8, n.node_name::text, NULL, NULL FROM spock.node n`
	}
	if hasPglogical {
		pglogical = `(SELECT n.node_name::text FROM pglogical.subscription ps JOIN pglogical.node n ON n.node_id = ps.sub_origin
		              WHERE ps.sub_slot_name = ro.roname LIMIT 1)`
	}
	rows, err := tx.Query(ctx, `SELECT ro.roident::int8, ro.roname,
		(SELECT s.subname::text FROM pg_subscription s WHERE ro.roname = 'pg_' || s.oid::text), `+pglogical+`
		FROM pg_replication_origin ro`+spock)
	if err != nil {
		return nil, fmt.Errorf("list replication origins: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (originCandidate, error) {
		var id int64
		var name string
		var sub, provider *string
		if err := r.Scan(&id, &name, &sub, &provider); err != nil {
			return originCandidate{}, err
		}
		c := originCandidate{id: uint32(id), names: []string{name}}
		for _, n := range []*string{sub, provider} {
			if n != nil {
				c.names = append(c.names, *n)
			}
		}
		return c, nil
	})
}
