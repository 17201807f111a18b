package repair

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/diff"
)

// AutoSourceOfTruth is how a recovery_mode repair chose its source of truth (ACE's
// auto_source_of_truth): the survivor that received the most from the failed node.
type AutoSourceOfTruth struct {
	Selected   string              `json:"selected"`
	FailedNode string              `json:"failed_node"`
	LSNProbe   map[string]LSNProbe `json:"lsn_probe"`
}

// LSNProbe is what a survivor holds of the failed node's changes. OriginLSN is the highest
// remote LSN of the replication origins that stand for the failed node (how far the survivor
// applied its WAL): the survivors are ranked by it. SlotLSN is the confirmed position of the
// pglogical or Spock slot the failed node's subscription used on the survivor: a position in the
// survivor's own WAL, so not comparable between survivors, and only reported.
type LSNProbe struct {
	OriginLSN string   `json:"origin_lsn"`
	SlotLSN   string   `json:"slot_lsn"`
	Origins   []string `json:"origins"` // the replication origins read
}

// SelectSurvivor probes every survivor for what it received from the failed node and returns
// the one with the highest origin LSN. A survivor without an origin LSN, or two survivors at the
// highest one, is an error that names the nodes: nothing tells which one has more.
func SelectSurvivor(ctx context.Context, survivors []*engine.Node, failed string) (*AutoSourceOfTruth, error) {
	if len(survivors) == 0 {
		return nil, fmt.Errorf("recovery_mode has no survivor to pick a source of truth from: the diff's nodes are only the failed node %s", failed)
	}
	auto := &AutoSourceOfTruth{FailedNode: failed, LSNProbe: map[string]LSNProbe{}}
	lsns := map[string]pglogrepl.LSN{}
	for _, n := range survivors {
		p, lsn, err := probe(ctx, n, failed)
		if err != nil {
			return nil, fmt.Errorf("recovery_mode: read what node %s received from the failed node %s: %w", n.Name, failed, err)
		}
		auto.LSNProbe[n.Name] = p
		if p.OriginLSN != "" {
			lsns[n.Name] = lsn
		}
	}
	names := make([]string, len(survivors))
	for i, n := range survivors {
		names[i] = n.Name
	}
	slices.SortFunc(names, func(a, b string) int {
		if lsns[a] != lsns[b] {
			return -cmpLSN(lsns[a], lsns[b])
		}
		return strings.Compare(a, b)
	})
	for _, n := range names {
		if _, ok := lsns[n]; !ok {
			return nil, fmt.Errorf("recovery_mode cannot pick a source of truth among %s: node %s has no origin LSN for the failed node %s (%s), "+
				"so nothing tells which survivor received more from it; name the source of truth (source_of_truth => '...') after checking the nodes",
				strings.Join(sortedCopy(names), " and "), n, failed, auto.describe(names))
		}
	}
	if len(names) > 1 && lsns[names[0]] == lsns[names[1]] {
		return nil, fmt.Errorf("recovery_mode cannot pick a source of truth: nodes %s and %s both received the failed node %s's changes up to LSN %s (%s); "+
			"name the source of truth (source_of_truth => '...') after checking the nodes",
			names[0], names[1], failed, lsns[names[0]], auto.describe(names))
	}
	auto.Selected = names[0]
	return auto, nil
}

func cmpLSN(a, b pglogrepl.LSN) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func sortedCopy(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

// describe lists each node's probe, for an error.
func (a *AutoSourceOfTruth) describe(names []string) string {
	var parts []string
	for _, n := range sortedCopy(names) {
		p := a.LSNProbe[n]
		parts = append(parts, fmt.Sprintf("%s: origin LSN %s, slot LSN %s", n, orNone(p.OriginLSN), orNone(p.SlotLSN)))
	}
	return strings.Join(parts, "; ")
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// probe reads, on one survivor, the origin LSN and slot LSN of the failed node.
func probe(ctx context.Context, n *engine.Node, failed string) (LSNProbe, pglogrepl.LSN, error) {
	var p LSNProbe
	var lsn pglogrepl.LSN
	err := pgx.BeginTxFunc(ctx, n.Pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		ids, err := diff.OriginIDs(ctx, tx, n.Name, failed)
		if err != nil {
			return fmt.Errorf("find the replication origins that stand for %s: %w", failed, err)
		}
		ids = slices.DeleteFunc(ids, func(id uint32) bool { return id == 0 })
		if p.OriginLSN, p.Origins, err = originLSN(ctx, tx, ids); err != nil {
			return err
		}
		p.SlotLSN, err = slotLSN(ctx, tx, failed)
		return err
	})
	if err != nil {
		return p, 0, err
	}
	if p.OriginLSN != "" {
		if lsn, err = pglogrepl.ParseLSN(p.OriginLSN); err != nil {
			return p, 0, fmt.Errorf("parse origin LSN %q: %w", p.OriginLSN, err)
		}
	}
	return p, lsn, nil
}

// originLSN is the highest remote LSN the origins ids have applied, from
// pg_replication_origin_status, and on Spock from spock.progress, which keeps it per remote node.
func originLSN(ctx context.Context, tx pgx.Tx, ids []uint32) (string, []string, error) {
	if len(ids) == 0 {
		return "", nil, nil
	}
	var hasProgress bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass('spock.progress') IS NOT NULL`).Scan(&hasProgress); err != nil {
		return "", nil, err
	}
	spock := ``
	if hasProgress {
		spock = ` UNION ALL SELECT 'spock node ' || p.remote_node_id, p.remote_lsn FROM spock.progress p WHERE p.remote_node_id::int8 = ANY($1)`
	}
	var lsn *string
	var names []string
	err := tx.QueryRow(ctx, `SELECT max(lsn)::text, coalesce(array_agg(DISTINCT name ORDER BY name), '{}') FROM (
		SELECT ro.roname::text AS name, s.remote_lsn AS lsn FROM pg_replication_origin ro
		LEFT JOIN pg_replication_origin_status s ON s.local_id = ro.roident
		WHERE ro.roident::int8 = ANY($1)`+spock+`) o`, toInt8(ids)).Scan(&lsn, &names)
	if isPermissionDenied(err) {
		return "", nil, fmt.Errorf("%w (recovery_mode reads pg_replication_origin_status: GRANT SELECT ON pg_replication_origin_status TO the submitting role, or submit as a superuser)", err)
	}
	if err != nil {
		return "", nil, fmt.Errorf("read the replication origins' LSNs: %w", err)
	}
	if lsn == nil || *lsn == "0/0" {
		return "", names, nil
	}
	return *lsn, names, nil
}

// slotLSN is the confirmed position of the pglogical or Spock slots on this node whose name
// names the failed node (the slots of its subscriptions here).
func slotLSN(ctx context.Context, tx pgx.Tx, failed string) (string, error) {
	var lsn *string
	err := tx.QueryRow(ctx, `SELECT max(confirmed_flush_lsn)::text FROM pg_replication_slots
		WHERE database = current_database() AND plugin IN ('pglogical_output', 'spock_output') AND slot_name ~ $1`,
		`(^|[^A-Za-z0-9])`+regexp.QuoteMeta(failed)+`($|[^A-Za-z0-9])`).Scan(&lsn)
	if err != nil {
		return "", fmt.Errorf("read the replication slots' LSNs: %w", err)
	}
	if lsn == nil {
		return "", nil
	}
	return *lsn, nil
}

func toInt8(ids []uint32) []int64 {
	out := make([]int64, len(ids))
	for i, id := range ids {
		out[i] = int64(id)
	}
	return out
}

func isPermissionDenied(err error) bool {
	return isCode(err, pgerrcode.InsufficientPrivilege)
}
