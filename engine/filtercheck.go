package engine

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// A table_filter is the one piece of SQL a user hands the agent. It must be one condition on
// the table's rows that runs nothing but PostgreSQL's own side-effect-free code: with
// SetRoleSessions the node sessions log in as the agent and SET ROLE to the submitter, and code
// the filter reaches could RESET ROLE (or set_config('role', …)) back to the agent's login; in
// either mode a filter that reads other tables, changes anything or gives each node its own
// answer would make a wrong diff.
//
// The check, on every node, before the filter runs:
//
//  1. Parse. SELECT 1 FROM t WHERE (<filter>) IS NOT FALSE is prepared with the extended
//     protocol (one Parse message, which PostgreSQL refuses to hold two statements) in a READ
//     ONLY transaction under a statement timeout, and rolled back. Nothing runs: parse analysis
//     resolves names, overloads and casts but evaluates no function.
//  2. Read the tree. PostgreSQL exposes an analysed query only through the catalog, so the same
//     query becomes a temporary view, beside a template view with the filter replaced by true,
//     in a read-write transaction that is always rolled back (CREATE is refused in a READ ONLY
//     transaction). The statements go through the extended protocol too, so no COMMIT can ride
//     along, and the views never outlive the check. (The other ways to see a parse tree are
//     planning it, which already evaluates immutable calls on constants, and debug_print_parse,
//     which writes every filter's tree to the server log.)
//  3. Shape. Apart from the WHERE clause, the filter's query must be the template's, node for
//     node: a filter that closes the parenthesis to add a UNION, a LIMIT, a HAVING or another
//     table is refused; and its WHERE must be the IS NOT FALSE test around one expression, so
//     a filter like "a) OR (b" cannot escape the parentheses it is embedded in (IS binds tighter
//     than AND and OR).
//  4. Allow-list. Every node of the expression must be of a kind that only computes (columns,
//     constants, function and operator calls, casts, CASE, COALESCE, …: no subquery, aggregate
//     or parameter), and every object it names must be built in:
//     - functions, and the functions behind operators: in pg_catalog, created by initdb (OID
//     below 16384), immutable or stable (volatile ones change things, sleep, lock, or give
//     each node its own answer), not SECURITY DEFINER and without SET clauses, and not one of
//     the stable built-ins that run SQL text or reach files, large objects, settings or other
//     sessions (sqlRunningBuiltins);
//     - types (constants, casts, results): built in and not a domain, or an enum, or an array
//     of an allowed type; a user type with casts of its own is refused, because a built-in
//     such as to_json or text || anyelement would call that cast. A domain is allowed only as
//     a column's own type (reading a column runs no domain check); a cast to a domain is
//     refused, since its CHECK constraints are code;
//     - collations: built in, or the collation of a column the filter reads.
//
// pg_depend cannot do this: since PostgreSQL 15 it records no dependency on built-in (pinned)
// objects, so it would not show set_config or ts_rewrite at all.

// filterCheckTimeout bounds every statement of the filter check.
const filterCheckTimeout = 10 * time.Second

// firstUserOID is PostgreSQL's FirstNormalObjectId: objects below it were created by initdb.
const firstUserOID = 16384

// sqlRunningBuiltins are built-in functions a filter may not call although some are stable or
// immutable: they run SQL text (ts_rewrite, the *_to_xml family), read catalogs through SQL
// (pg_get_*), reach files, large objects, settings, locks or other sessions, or assign a
// transaction id. Most are volatile and refused for that already; the list does not rely on it.
var sqlRunningBuiltins = regexp.MustCompile(`^(ts_rewrite|ts_stat|(query|cursor|table|schema|database)_to_xml\w*|` +
	`pg_get_\w+|pg_stat_\w+|pg_ls_\w+|pg_read_\w+|pg_file_\w+|lo_\w+|pg_\w*advisory\w*|set_config|pg_sleep\w*|pg_notify|` +
	`pg_cancel_backend|pg_terminate_backend|pg_reload_conf|pg_rotate_logfile|txid_\w+|pg_current_xact_id\w*|pg_export_snapshot|` +
	`pg_log_backend_memory_contexts|pg_switch_wal|pg_create_\w+|pg_drop_\w+|pg_replication_\w+|pg_logical_\w+|pg_promote|` +
	`nextval|setval|currval|lastval|pg_import_system_collations|dblink\w*)$`)

// WrapFilter is a filter as every query embeds it: in parentheses on lines of their own, so a
// trailing -- comment ends before the closing parenthesis.
func WrapFilter(f string) string { return "(\n" + f + "\n)" }

// filterQuery is the query the check parses: the filter in the WHERE clause of a query on the
// table, inside an IS NOT FALSE test.
func filterQuery(from, wrapped string) string {
	return "SELECT 1 FROM " + from + " WHERE " + wrapped + " IS NOT FALSE"
}

// CheckFilter refuses a filter (as WrapFilter wraps it) on table t that is not one condition on
// the table's rows running only built-in, side-effect-free code: the four steps described above,
// on the node of pool.
func CheckFilter(ctx context.Context, pool *pgxpool.Pool, t *Table, wrapped string) error {
	return CheckCondition(ctx, pool, t, t.Qualified(), wrapped)
}

// CheckCondition is CheckFilter for a condition over from, a FROM list that reads only table t
// (a repair plan's when predicate reads t's row type once per node, under the nodes' names).
func CheckCondition(ctx context.Context, pool *pgxpool.Pool, t *Table, from, wrapped string) error {
	sql := filterQuery(from, wrapped)
	if err := inReadOnlyCheck(ctx, pool, func(tx pgx.Tx) error {
		_, err := tx.Conn().PgConn().Prepare(ctx, "", sql, nil)
		return err
	}); err != nil {
		return fmt.Errorf("PostgreSQL does not read it as one expression on the table's columns: %w", err)
	}
	trees, err := loadFilterTrees(ctx, pool, t, from, sql)
	if err != nil {
		return err
	}
	refs, err := trees.references()
	if err != nil {
		return err
	}
	return inReadOnlyCheck(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, qualifiedNames); err != nil {
			return fmt.Errorf("look up what it refers to: %w", err)
		}
		return refs.check(ctx, tx)
	})
}

// inReadOnlyCheck runs fn in a READ ONLY transaction under the check's statement timeout, and
// rolls it back.
func inReadOnlyCheck(ctx context.Context, pool *pgxpool.Pool, fn func(tx pgx.Tx) error) error {
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, SetCheckTimeout); err != nil {
		return fmt.Errorf("set the check's statement timeout: %w", err)
	}
	return fn(tx)
}

// SetCheckTimeout is the statement that puts a transaction under the filter check's statement
// timeout (SET LOCAL statement_timeout).
var SetCheckTimeout = fmt.Sprintf("SET LOCAL statement_timeout = %d", filterCheckTimeout.Milliseconds())

// filterTrees are the parse trees of the filter's query and of the template, and the OIDs of
// the views that held them and of the table.
type filterTrees struct {
	filter, template         any
	filterView, templateView uint32
	table                    uint32
}

// loadFilterTrees stores the filter's query and the template as temporary views in a
// transaction that is rolled back, and reads their parse trees.
func loadFilterTrees(ctx context.Context, pool *pgxpool.Pool, t *Table, from, sql string) (*filterTrees, error) {
	ft := &filterTrees{}
	tx, err := pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) // nothing of the check may stay behind
	if _, err := tx.Exec(ctx, SetCheckTimeout); err != nil {
		return nil, fmt.Errorf("set the check's statement timeout: %w", err)
	}
	conn := tx.Conn().PgConn()
	for _, v := range []struct{ name, sql string }{{`"?ace_filter?"`, sql}, {`"?ace_template?"`, filterQuery(from, WrapFilter("true"))}} {
		// ExecParams is the extended protocol: one statement, whatever the text holds.
		if _, err := conn.ExecParams(ctx, "CREATE TEMP VIEW "+v.name+" AS "+v.sql, nil, nil, nil, nil).Close(); err != nil {
			return nil, fmt.Errorf("read what it refers to through a temporary view (the role needs the TEMPORARY privilege on the database): %w", err)
		}
	}
	var filterText, templateText string
	err = tx.QueryRow(ctx, `SELECT f.ev_action::text, f.ev_class::oid, t.ev_action::text, t.ev_class::oid, $1::regclass::oid
		FROM pg_rewrite f, pg_rewrite t
		WHERE f.ev_class = 'pg_temp."?ace_filter?"'::regclass AND t.ev_class = 'pg_temp."?ace_template?"'::regclass`, t.Qualified()).
		Scan(&filterText, &ft.filterView, &templateText, &ft.templateView, &ft.table)
	if err != nil {
		return nil, fmt.Errorf("read the parse tree: %w", err)
	}
	if ft.filter, err = parseNodeTree(filterText); err != nil {
		return nil, err
	}
	if ft.template, err = parseNodeTree(templateText); err != nil {
		return nil, err
	}
	return ft, nil
}

// references checks the filter query's shape against the template's and collects what the
// filter's expression refers to.
func (ft *filterTrees) references() (*filterRefs, error) {
	refs := newFilterRefs()
	ft.otherRelations(ft.filter, refs)
	if len(refs.relations) > 0 {
		return refs, nil // check names them
	}
	fq, tq := topQuery(ft.filter), topQuery(ft.template)
	if fq == nil || tq == nil {
		return nil, errors.New("PostgreSQL does not read it as one query on the table")
	}
	if fq.fields["hasSubLinks"] == "true" {
		return nil, errors.New("it contains a subquery: a filter may refer only to the table's own columns")
	}
	skip := map[string]bool{"location": true, "stmt_location": true, "stmt_len": true, "selectedCols": true, "quals": true}
	sameView := func(field, a, b string) bool {
		return field == "relid" && a == fmt.Sprint(ft.filterView) && b == fmt.Sprint(ft.templateView)
	}
	if d := treeDifference(fq, tq, "query", skip, sameView); d != "" {
		return nil, fmt.Errorf("it is not one condition on the table's rows: PostgreSQL reads it as changing the query itself (%s)", d)
	}
	expr, err := filterExpression(fq, tq)
	if err != nil {
		return nil, err
	}
	return refs, refs.walk(expr)
}

// topQuery is the one Query node of a view's rule.
func topQuery(tree any) *pgNode {
	list, _ := tree.([]any)
	if len(list) != 1 {
		return nil
	}
	q, _ := list[0].(*pgNode)
	if q == nil || q.typ != "QUERY" {
		return nil
	}
	return q
}

// filterExpression is the filter's expression: the argument of the IS NOT FALSE test that
// must be the whole WHERE clause, as it is in the template.
func filterExpression(fq, tq *pgNode) (any, error) {
	quals := func(q *pgNode) *pgNode {
		jt, _ := q.fields["jointree"].(*pgNode)
		if jt == nil {
			return nil
		}
		n, _ := jt.fields["quals"].(*pgNode)
		return n
	}
	f, t := quals(fq), quals(tq)
	if f == nil || t == nil || f.typ != "BOOLEANTEST" || t.typ != "BOOLEANTEST" || f.fields["booltesttype"] != t.fields["booltesttype"] {
		return nil, errors.New("it is not one expression: it reaches outside the parentheses it is put in (write it as one boolean expression)")
	}
	return f.fields["arg"], nil
}

// otherRelations records every table the filter's query reads besides the diffed table (and
// the view itself).
func (ft *filterTrees) otherRelations(v any, refs *filterRefs) {
	switch x := v.(type) {
	case *pgNode:
		if x.typ == "RANGETBLENTRY" {
			if rel := oidField(x, "relid"); rel != 0 && rel != ft.table && rel != ft.filterView {
				refs.relations[rel] = true
			}
		}
		for _, f := range x.fields {
			ft.otherRelations(f, refs)
		}
	case []any:
		for _, it := range x {
			ft.otherRelations(it, refs)
		}
	}
}

// filterRefs is what a filter's expression refers to.
type filterRefs struct {
	relations map[uint32]bool
	funcs     map[uint32]bool
	ops       map[uint32]bool
	types     map[uint32]bool // of constants, casts and results
	colTypes  map[uint32]bool // of the columns it reads
	colls     map[uint32]bool
	colColls  map[uint32]bool // of the columns it reads
}

func newFilterRefs() *filterRefs {
	return &filterRefs{relations: map[uint32]bool{}, funcs: map[uint32]bool{}, ops: map[uint32]bool{}, types: map[uint32]bool{},
		colTypes: map[uint32]bool{}, colls: map[uint32]bool{}, colColls: map[uint32]bool{}}
}

// allowedFilterNodes are the expression nodes a filter may contain: they compute a value from
// their arguments and run no code but the functions, operators and type conversions they name.
var allowedFilterNodes = map[string]bool{
	"VAR": true, "CONST": true, "FUNCEXPR": true, "NAMEDARGEXPR": true, "OPEXPR": true, "DISTINCTEXPR": true,
	"NULLIFEXPR": true, "SCALARARRAYOPEXPR": true, "BOOLEXPR": true, "FIELDSELECT": true, "SUBSCRIPTINGREF": true,
	"RELABELTYPE": true, "COERCEVIAIO": true, "ARRAYCOERCEEXPR": true, "COLLATEEXPR": true, "CASEEXPR": true,
	"CASEWHEN": true, "CASETESTEXPR": true, "ARRAYEXPR": true, "ROWEXPR": true, "ROWCOMPAREEXPR": true,
	"COALESCEEXPR": true, "MINMAXEXPR": true, "SQLVALUEFUNCTION": true, "NULLTEST": true, "BOOLEANTEST": true,
	"COERCETODOMAIN": true, // allowed as a node; the domain is refused as a type
}

// refusedNodeNames say what a refused node is.
var refusedNodeNames = map[string]string{
	"SUBLINK": "a subquery", "AGGREF": "an aggregate", "WINDOWFUNC": "a window function", "PARAM": "a parameter",
	"XMLEXPR": "an XML expression", "NEXTVALUEEXPR": "a sequence", "FIELDSTORE": "a field assignment",
	"CONVERTROWTYPEEXPR": "a row type conversion", "CURRENTOFEXPR": "CURRENT OF", "GROUPINGFUNC": "GROUPING",
}

// Fields of expression nodes that name catalog objects.
var (
	funcFields = map[string]bool{"funcid": true, "opfuncid": true, "hashfuncid": true, "negfuncid": true}
	typeFields = map[string]bool{"consttype": true, "funcresulttype": true, "opresulttype": true, "resulttype": true,
		"casetype": true, "coalescetype": true, "minmaxtype": true, "array_typeid": true, "element_typeid": true,
		"row_typeid": true, "typeId": true, "type": true, "refcontainertype": true, "refelemtype": true, "refrestype": true}
	collFields = map[string]bool{"constcollid": true, "funccollid": true, "inputcollid": true, "opcollid": true,
		"resultcollid": true, "casecollid": true, "coalescecollid": true, "minmaxcollid": true, "array_collid": true,
		"collOid": true, "collation": true, "refcollid": true}
)

// walk refuses nodes that are not on the allow-list and records the objects the others name.
func (r *filterRefs) walk(v any) error {
	switch x := v.(type) {
	case []any:
		for _, it := range x {
			if err := r.walk(it); err != nil {
				return err
			}
		}
	case *pgNode:
		if !allowedFilterNodes[x.typ] {
			what := refusedNodeNames[x.typ]
			if what == "" {
				what = "an expression of kind " + strings.ToLower(x.typ)
			}
			return fmt.Errorf("it contains %s, which a filter may not use: a filter is one condition on the table's own columns", what)
		}
		if x.typ == "VAR" {
			if x.fields["varlevelsup"] != "0" {
				return errors.New("it refers to an outer query, which a filter may not do")
			}
			r.colTypes[oidField(x, "vartype")] = true
			r.colColls[oidField(x, "varcollid")] = true
			return nil
		}
		r.record(x)
		for _, name := range slices.Sorted(maps.Keys(x.fields)) {
			if err := r.walk(x.fields[name]); err != nil {
				return err
			}
		}
	}
	return nil
}

// record notes the functions, operators, types and collations one node names.
func (r *filterRefs) record(n *pgNode) {
	for name, v := range n.fields {
		switch {
		case funcFields[name]:
			r.funcs[oidField(n, name)] = true
		case name == "opno":
			r.ops[oidField(n, name)] = true
		case name == "opnos":
			for _, o := range oidList(v) {
				r.ops[o] = true
			}
		case typeFields[name]:
			r.types[oidField(n, name)] = true
		case collFields[name]:
			r.colls[oidField(n, name)] = true
		case name == "inputcollids":
			for _, c := range oidList(v) {
				r.colls[c] = true
			}
		}
	}
}

// check looks the recorded objects up in the catalog and refuses any that is not allowed.
func (r *filterRefs) check(ctx context.Context, tx pgx.Tx) error {
	if len(r.relations) > 0 {
		names, err := lookupNames(ctx, tx, `SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE c.oid = ANY($1::oid[]) ORDER BY 1`, r.relations)
		if err != nil {
			return err
		}
		return fmt.Errorf("it reads %s: a filter may refer only to the table's own columns", strings.Join(names, ", "))
	}
	if err := r.checkOperators(ctx, tx); err != nil {
		return err
	}
	if err := r.checkFunctions(ctx, tx); err != nil {
		return err
	}
	if err := r.checkTypes(ctx, tx); err != nil {
		return err
	}
	return r.checkCollations(ctx, tx)
}

func lookupNames(ctx context.Context, tx pgx.Tx, sql string, oids map[uint32]bool) ([]string, error) {
	rows, err := tx.Query(ctx, sql, oidSlice(oids))
	if err != nil {
		return nil, fmt.Errorf("look up what the filter refers to: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("look up what the filter refers to: %w", err)
	}
	return names, nil
}

func oidSlice(m map[uint32]bool) []uint32 {
	out := make([]uint32, 0, len(m))
	for oid := range m {
		if oid != 0 {
			out = append(out, oid)
		}
	}
	slices.Sort(out)
	return out
}

// checkOperators refuses operators that are not built in, and adds the functions behind the
// others to the functions to check.
func (r *filterRefs) checkOperators(ctx context.Context, tx pgx.Tx) error {
	rows, err := tx.Query(ctx, `SELECT o.oprnamespace::regnamespace::text || '.' || o.oprname,
			o.oprnamespace = 'pg_catalog'::regnamespace AND o.oid < $2, o.oprcode::oid
		FROM pg_operator o WHERE o.oid = ANY($1::oid[]) ORDER BY o.oid`, oidSlice(r.ops), firstUserOID)
	if err != nil {
		return fmt.Errorf("look up the filter's operators: %w", err)
	}
	var name string
	var builtin bool
	var code uint32
	_, err = pgx.ForEachRow(rows, []any{&name, &builtin, &code}, func() error {
		if !builtin {
			return fmt.Errorf("it uses the operator %s, which is not built in: a filter may use only PostgreSQL's own operators", name)
		}
		r.funcs[code] = true
		return nil
	})
	return err
}

// checkFunctions refuses functions that are not built in, are volatile, run with other
// privileges or settings, or are on the list of built-ins that run SQL or reach outside.
func (r *filterRefs) checkFunctions(ctx context.Context, tx pgx.Tx) error {
	rows, err := tx.Query(ctx, `SELECT p.pronamespace::regnamespace::text, p.proname::text,
			p.pronamespace = 'pg_catalog'::regnamespace AND p.oid < $2, p.provolatile::text, p.prosecdef OR p.proconfig IS NOT NULL
		FROM pg_proc p WHERE p.oid = ANY($1::oid[]) ORDER BY p.oid`, oidSlice(r.funcs), firstUserOID)
	if err != nil {
		return fmt.Errorf("look up the filter's functions: %w", err)
	}
	var schema, name, volatility string
	var builtin, privileged bool
	_, err = pgx.ForEachRow(rows, []any{&schema, &name, &builtin, &volatility, &privileged}, func() error {
		switch {
		case !builtin:
			return fmt.Errorf("it calls %s.%s(), which is not built in: a filter may call only PostgreSQL's own functions", schema, name)
		case volatility == "v":
			return fmt.Errorf("it calls %s(), which a filter may not use: it is volatile (it can change something, or answer differently on every node and every call)", name)
		case privileged || sqlRunningBuiltins.MatchString(name):
			return fmt.Errorf("it calls %s(), which a filter may not use: it runs SQL of its own or reaches files, settings, locks or other sessions", name)
		}
		return nil
	})
	return err
}

// typeFacts is what decides whether a filter may use a type.
type typeFacts struct {
	name     string
	kind     string // pg_type.typtype
	builtin  bool
	elem     uint32 // an array's element type
	base     uint32 // a domain's base type
	ownCasts bool   // casts of the type that call a function not built in
}

// checkTypes refuses types that are not built in, enums or arrays of them (and, for the
// columns read, domains over them).
func (r *filterRefs) checkTypes(ctx context.Context, tx pgx.Tx) error {
	facts, err := loadTypeFacts(ctx, tx, r.types, r.colTypes)
	if err != nil {
		return err
	}
	for _, oid := range oidSlice(r.types) {
		if why := typeRefusal(facts, oid, false); why != "" {
			return fmt.Errorf("it uses the type %s, %s", facts[oid].name, why)
		}
	}
	for _, oid := range oidSlice(r.colTypes) {
		if why := typeRefusal(facts, oid, true); why != "" {
			return fmt.Errorf("it reads a column of type %s, %s", facts[oid].name, why)
		}
	}
	return nil
}

// typeRefusal says why a type may not be used, or "" when it may. column is true for a
// column's own type, which may be a domain: reading a column runs no domain check.
func typeRefusal(facts map[uint32]*typeFacts, oid uint32, column bool) string {
	f := facts[oid]
	switch {
	case f == nil:
		return "which does not exist"
	case f.builtin && f.kind != "d":
		return ""
	case f.ownCasts:
		return "which has casts that call functions not built in (a built-in such as to_json could call them): a filter may use only built-in types, enums and arrays of them"
	case f.kind == "e":
		return ""
	case f.elem != 0:
		return typeRefusal(facts, f.elem, column)
	case f.kind == "d" && column:
		return typeRefusal(facts, f.base, column)
	case f.kind == "d":
		return "which is a domain: a cast to it runs its CHECK constraints, which are code a filter may not run (cast to its base type instead)"
	}
	return "which is not built in: a filter may use only built-in types, enums and arrays of them"
}

// loadTypeFacts reads the facts of the types and of the element and base types behind them.
func loadTypeFacts(ctx context.Context, tx pgx.Tx, sets ...map[uint32]bool) (map[uint32]*typeFacts, error) {
	facts := map[uint32]*typeFacts{}
	want := map[uint32]bool{}
	for _, s := range sets {
		for oid := range s {
			want[oid] = true
		}
	}
	for depth := 0; len(want) > 0 && depth < 16; depth++ {
		rows, err := tx.Query(ctx, `SELECT t.oid, format_type(t.oid, NULL), t.typtype::text,
				t.typnamespace = 'pg_catalog'::regnamespace AND t.oid < $2,
				CASE WHEN t.typelem <> 0 AND t.typlen = -1 THEN t.typelem ELSE 0 END, t.typbasetype,
				EXISTS (SELECT 1 FROM pg_cast c WHERE t.oid IN (c.castsource, c.casttarget) AND c.castfunc >= $2)
			FROM pg_type t WHERE t.oid = ANY($1::oid[])`, oidSlice(want), firstUserOID)
		if err != nil {
			return nil, fmt.Errorf("look up the filter's types: %w", err)
		}
		var oid uint32
		var f typeFacts
		_, err = pgx.ForEachRow(rows, []any{&oid, &f.name, &f.kind, &f.builtin, &f.elem, &f.base, &f.ownCasts}, func() error {
			copied := f
			facts[oid] = &copied
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("look up the filter's types: %w", err)
		}
		want = map[uint32]bool{}
		for _, f := range facts {
			for _, next := range []uint32{f.elem, f.base} {
				if next != 0 && facts[next] == nil {
					want[next] = true
				}
			}
		}
	}
	return facts, nil
}

// checkCollations refuses collations that are neither built in nor a column's own.
func (r *filterRefs) checkCollations(ctx context.Context, tx pgx.Tx) error {
	others := map[uint32]bool{}
	for c := range r.colls {
		if !r.colColls[c] {
			others[c] = true
		}
	}
	names, err := lookupNames(ctx, tx, fmt.Sprintf(`SELECT c.oid::regcollation::text FROM pg_collation c
		WHERE c.oid = ANY($1::oid[]) AND NOT (c.collnamespace = 'pg_catalog'::regnamespace AND c.oid < %d) ORDER BY 1`, firstUserOID), others)
	if err != nil {
		return err
	}
	if len(names) > 0 {
		return fmt.Errorf("it uses the collation %s, which is neither built in nor a collation of the table's columns", names[0])
	}
	return nil
}

// IsStatementTimeout reports whether err is a statement cancelled by statement_timeout.
func IsStatementTimeout(err error) bool {
	var pg *pgconn.PgError
	return errors.As(err, &pg) && pg.Code == pgerrcode.QueryCanceled
}

// IsLockTimeout reports whether err is a lock wait that ran out (lock_timeout, or NOWAIT).
func IsLockTimeout(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == pgerrcode.LockNotAvailable
}
