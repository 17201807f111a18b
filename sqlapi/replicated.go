package sqlapi

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// publishedAceSQL lists the publications that publish tables of schema ace: FOR ALL TABLES,
// FOR TABLES IN SCHEMA ace and lists naming them alike (pg_publication_tables expands them).
const publishedAceSQL = `
SELECT format('publication %I publishes the ace schema''s tables (%s): %s', p.pubname,
              string_agg(pt.tablename::text, ', ' ORDER BY pt.tablename),
              CASE WHEN p.puballtables
                   THEN 'it is FOR ALL TABLES; publish a list of tables or schemas without ace instead'
                   ELSE format('ALTER PUBLICATION %I DROP TABLE ...; or DROP TABLES IN SCHEMA ace', p.pubname) END)
FROM pg_catalog.pg_publication p JOIN pg_catalog.pg_publication_tables pt ON pt.pubname = p.pubname
WHERE pt.schemaname = 'ace'
GROUP BY p.pubname, p.puballtables
ORDER BY p.pubname`

// repsetAceSQL lists the replication sets of Spock's or pglogical's catalog (schema %[1]s,
// the function that removes a table %[2]s) that hold tables of schema ace.
const repsetAceSQL = `
SELECT format('%[1]s replication set %%I holds the ace schema''s tables (%%s): SELECT %[1]s.%[2]s(%%L, ''ace.<table>''); for each', rs.set_name,
              string_agg(c.relname::text, ', ' ORDER BY c.relname), rs.set_name)
FROM %[1]s.replication_set rs
JOIN %[1]s.replication_set_table rt ON rt.set_id = rs.set_id
JOIN pg_catalog.pg_class c ON c.oid = rt.set_reloid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'ace'
GROUP BY rs.set_name
ORDER BY rs.set_name`

// ReplicationProblems says, one problem per line with its fix, where the ace schema of q's
// database is replicated: in a publication, or in a Spock or pglogical replication set. Each
// node's ace schema is its own (its queue, its results), so none of it may replicate.
func ReplicationProblems(ctx context.Context, q Querier) ([]string, error) {
	problems, err := collectStrings(ctx, q, publishedAceSQL)
	if err != nil {
		return nil, fmt.Errorf("look for publications of schema ace: %w", err)
	}
	for _, provider := range []struct{ schema, remove string }{
		{"spock", "repset_remove_table"}, {"pglogical", "replication_set_remove_table"},
	} {
		var present, readable bool
		err := q.QueryRow(ctx, `SELECT to_regclass($1 || '.replication_set') IS NOT NULL AND to_regclass($1 || '.replication_set_table') IS NOT NULL`,
			provider.schema).Scan(&present)
		if err != nil {
			return nil, fmt.Errorf("look for %s's replication sets: %w", provider.schema, err)
		}
		if !present {
			continue
		}
		err = q.QueryRow(ctx, `SELECT has_table_privilege($1 || '.replication_set', 'SELECT') AND has_table_privilege($1 || '.replication_set_table', 'SELECT')`,
			provider.schema).Scan(&readable)
		if err != nil {
			return nil, fmt.Errorf("look for %s's replication sets: %w", provider.schema, err)
		}
		if !readable {
			problems = append(problems, fmt.Sprintf("cannot tell whether a %[1]s replication set holds the ace schema's tables: GRANT SELECT ON %[1]s.replication_set, %[1]s.replication_set_table TO %s;",
				provider.schema, "the agent's login"))
			continue
		}
		found, err := collectStrings(ctx, q, fmt.Sprintf(repsetAceSQL, provider.schema, provider.remove))
		if err != nil {
			return nil, fmt.Errorf("look for %s replication sets holding schema ace: %w", provider.schema, err)
		}
		problems = append(problems, found...)
	}
	return problems, nil
}

func collectStrings(ctx context.Context, q Querier, sql string) ([]string, error) {
	rows, err := q.Query(ctx, sql)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}
