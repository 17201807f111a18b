package spockdiff

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/engine"
)

// Member is a table of a replication set (or publication) on one node, with the row filter the
// set replicates it by ("" when the set replicates every row) and its column list (nil when the
// set replicates every column).
type Member struct {
	Table     string // schema.table, quoted as format('%I.%I') quotes it
	RowFilter string
	Columns   []string
}

// SetPlaces names the three places a replication set is looked for, for errors.
const SetPlaces = "spock.replication_set, pglogical.replication_set and pg_publication"

// SetMembers reads the tables of the replication set named set on one node, with their row
// filters, as the session's user. provider is spock, pglogical or native; when empty it is
// detected, and a set the detected catalog lacks is looked for among the node's publications
// too. found is false when the node has no such set.
func SetMembers(ctx context.Context, q engine.Querier, provider, set string) (members []Member, used string, found bool, err error) {
	detected := provider == ""
	if detected {
		if provider, err = Detect(ctx, q); err != nil {
			return nil, "", false, err
		}
	}
	members, found, err = readMembers(ctx, q, provider, set)
	if err == nil && !found && detected && provider != ProviderNative {
		provider = ProviderNative
		members, found, err = readMembers(ctx, q, provider, set)
	}
	if err != nil {
		return nil, "", false, fmt.Errorf("read the tables of replication set %q from %s's catalog: %w", set, provider, err)
	}
	return members, provider, found, nil
}

func readMembers(ctx context.Context, q engine.Querier, provider, set string) ([]Member, bool, error) {
	var exists, members string
	switch provider {
	case ProviderNative:
		exists = `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1)`
		// pg_publication_tables lists FOR ALL TABLES and FOR TABLES IN SCHEMA members too; only a
		// table listed by itself can have a WHERE clause (prqual).
		members = `SELECT format('%I.%I', pt.schemaname, pt.tablename), coalesce(pg_catalog.pg_get_expr(pr.prqual, pr.prrelid), ''),
				CASE WHEN pr.prattrs IS NOT NULL THEN ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
					WHERE a.attrelid = pr.prrelid AND a.attnum = ANY(pr.prattrs) ORDER BY a.attnum) END
			FROM pg_catalog.pg_publication p
			JOIN pg_catalog.pg_publication_tables pt ON pt.pubname = p.pubname
			LEFT JOIN pg_catalog.pg_publication_rel pr ON pr.prpubid = p.oid
				AND pr.prrelid = format('%I.%I', pt.schemaname, pt.tablename)::regclass
			WHERE p.pubname = $1 ORDER BY 1`
	case ProviderSpock, ProviderPglogical:
		s := pgx.Identifier{provider}.Sanitize()
		exists = `SELECT EXISTS (SELECT 1 FROM ` + s + `.replication_set rs JOIN ` + s + `.local_node l ON l.node_id = rs.set_nodeid
			WHERE rs.set_name = $1)`
		members = `SELECT format('%I.%I', n.nspname, c.relname), coalesce(pg_catalog.pg_get_expr(rt.set_row_filter, rt.set_reloid), ''),
				rt.set_att_list
			FROM ` + s + `.replication_set rs
			JOIN ` + s + `.local_node l ON l.node_id = rs.set_nodeid
			JOIN ` + s + `.replication_set_table rt ON rt.set_id = rs.set_id
			JOIN pg_catalog.pg_class c ON c.oid = rt.set_reloid
			JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
			WHERE rs.set_name = $1 ORDER BY 1`
	default:
		return nil, false, fmt.Errorf("unknown provider %q (spock, pglogical or native)", provider)
	}
	var found bool
	if err := q.QueryRow(ctx, exists, set).Scan(&found); err != nil || !found {
		return nil, false, err
	}
	rows, err := q.Query(ctx, members, set)
	if err != nil {
		return nil, false, err
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Member, error) {
		var m Member
		return m, r.Scan(&m.Table, &m.RowFilter, &m.Columns)
	})
	return out, true, err
}
