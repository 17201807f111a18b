package engine

import (
	"context"
	"fmt"
	"regexp"

	"github.com/jackc/pgx/v5"
)

// A table_filter is the one piece of SQL a user hands the agent, and it runs in the agent's
// session. SET ROLE is not a boundary inside that session: code the filter reaches can RESET
// ROLE or set_config('role', …) back to the agent's login. So a filter may use only the table's
// columns, constants, types, and built-in functions and operators that neither change settings
// nor run SQL of their own; subqueries, other tables and user-defined functions are refused.
//
// The check asks PostgreSQL what the filter refers to without running or planning it (planning
// would already evaluate constant calls): the filter becomes a temporary view in a transaction
// that is rolled back, and pg_depend lists the objects the view's rule depends on.

// unsafeBuiltins are built-in functions a filter must not call: they change settings, run SQL
// text, or reach files, large objects or other sessions.
var unsafeBuiltins = regexp.MustCompile(`(?i)\b(set_config|query_to_xml\w*|table_to_xml\w*|cursor_to_xml\w*|schema_to_xml\w*|database_to_xml\w*|` +
	`query_to_xmlschema|pg_read_file|pg_read_binary_file|pg_ls_\w+|pg_stat_file|lo_\w+|pg_terminate_backend|pg_cancel_backend|` +
	`pg_reload_conf|pg_rotate_logfile|pg_promote|pg_switch_wal|pg_create_\w+|pg_drop_replication_slot|pg_replication_origin_\w+|` +
	`pg_advisory\w*|pg_try_advisory\w*|pg_notify|txid_\w+|pg_current_xact_id\w*|nextval|setval|currval|lastval|pg_import_system_collations)\s*\(`)

// stringLiteral matches a SQL string constant as pg_get_viewdef prints it.
var stringLiteral = regexp.MustCompile(`'(?:[^']|'')*'`)

// filterDependency is one object the filter refers to.
type filterDependency struct {
	kind, schema, name string
}

// Built-in objects are pinned: pg_depend does not list them, so the unsafe built-ins are found
// in the view's definition as PostgreSQL prints it.
const builtinKind = "definition"

// checkFilterIsSafe refuses a filter on node i that refers to anything but the table's columns
// and safe built-ins.
func (d *differ) checkFilterIsSafe(ctx context.Context, i int) error {
	deps, err := d.filterDependencies(ctx, i)
	if err != nil {
		return err
	}
	for _, dep := range deps {
		switch {
		case dep.kind == builtinKind:
			code := stringLiteral.ReplaceAllString(dep.name, "''")
			if m := unsafeBuiltins.FindString(code); m != "" {
				return fmt.Errorf("it calls %s), which a filter may not use", m)
			}
		case dep.kind == "relation":
			return fmt.Errorf("it reads %s.%s: a filter may refer only to the table's own columns", dep.schema, dep.name)
		case dep.schema != "pg_catalog":
			return fmt.Errorf("it uses the %s %s.%s, which is not built in: user-defined code would run in the agent's session", dep.kind, dep.schema, dep.name)
		}
	}
	return nil
}

func (d *differ) filterDependencies(ctx context.Context, i int) ([]filterDependency, error) {
	var deps []filterDependency
	err := pgx.BeginFunc(ctx, d.nodes[i].Pool, func(tx pgx.Tx) error {
		defer tx.Rollback(ctx) // nothing of the check may stay behind
		if _, err := tx.Exec(ctx, `CREATE TEMP VIEW "?ace_filter_check?" AS SELECT 1 FROM `+d.table.Qualified()+` WHERE `+d.filter); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, filterDependenciesSQL, d.table.Qualified())
		if err != nil {
			return err
		}
		deps, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (filterDependency, error) {
			var f filterDependency
			return f, r.Scan(&f.kind, &f.schema, &f.name)
		})
		if err != nil {
			return err
		}
		return errRollback
	})
	if err != nil && err != errRollback {
		return nil, err
	}
	return deps, nil
}

var errRollback = fmt.Errorf("rolled back on purpose")

// filterDependenciesSQL lists what the check view refers to: its definition as PostgreSQL
// prints it, and the functions, operators and relations (other than the diffed table and the
// view itself) its rule depends on.
const filterDependenciesSQL = `
WITH dep AS (
    SELECT d.refclassid, d.refobjid
    FROM pg_depend d JOIN pg_rewrite r ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
    WHERE r.ev_class = 'pg_temp."?ace_filter_check?"'::regclass)
SELECT 'definition', 'pg_catalog', pg_get_viewdef('pg_temp."?ace_filter_check?"'::regclass)
UNION ALL
SELECT 'function', p.pronamespace::regnamespace::text, p.proname
FROM dep JOIN pg_proc p ON dep.refclassid = 'pg_proc'::regclass AND p.oid = dep.refobjid
UNION ALL
SELECT 'operator', o.oprnamespace::regnamespace::text, o.oprname
FROM dep JOIN pg_operator o ON dep.refclassid = 'pg_operator'::regclass AND o.oid = dep.refobjid
UNION ALL
SELECT 'relation', c.relnamespace::regnamespace::text, c.relname
FROM dep JOIN pg_class c ON dep.refclassid = 'pg_class'::regclass AND c.oid = dep.refobjid
WHERE c.oid NOT IN ($1::regclass, 'pg_temp."?ace_filter_check?"'::regclass)`
