package engine

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// With SetRoleSessions the node sessions log in as the agent and SET ROLE to the submitter, so
// any code that runs in them can RESET ROLE to the agent's login. A table brings code of its own
// into the sessions that read or write it, and ace-agent refuses a table whose code a
// non-superuser owns, naming the object, before it reads or writes anything:
//
//   - on a read (diff, rerun, a repair's reads): row-level security policies that apply to the
//     submitter (a policy belongs to the table's owner);
//   - where values are cast to the column types (a repair, a diff-file import): domains with
//     CHECK constraints behind the columns' types, owned by a non-superuser;
//   - on a write: the triggers that fire in the repair's write mode (ENABLE ALWAYS and ENABLE
//     REPLICA ones when it writes as replication does; ordinary and ENABLE ALWAYS ones when it
//     writes normally or fires triggers), whose function a non-superuser owns; rules of a table
//     a non-superuser owns; and defaults, generated columns, constraints, indexes and partition
//     keys that call a function (or an operator, or cast to a domain) owned by a non-superuser.
//     When the table's owner is not a superuser, the CHECK constraints and trigger WHEN clauses
//     (which may be volatile) may not call built-ins that change settings or run SQL either.
//
// "Owned by a non-superuser": the object's owner (a trigger's function, a domain; a policy's or
// a rule's table) is not a superuser. Code a superuser owns is as trusted as the agent.

// CodeUse says what a task is about to do with a table, for CheckTableCode.
type CodeUse struct {
	Read   bool     // select rows
	Cast   bool     // cast values to the column types
	Write  bool     // insert, update and delete rows
	Firing []string // the trigger states (pg_trigger.tgenabled) that fire while writing
}

// attachedCode is one object of a table that runs code, as a check query returns it.
type attachedCode struct {
	what       string  // e.g. trigger audit on public.v
	owner      string  // the role owning the code
	ownerSuper bool    // whether that role is a superuser
	unsafe     string  // functions, operators and domains it uses that non-superusers own
	qual       *string // an expression (pg_node_tree) owned by a non-superuser, to check for built-ins
}

// codeCheck is one kind of attached code: the query finding it (its $1 is the table), what
// else the query takes, and whether a non-superuser owner alone makes the code unsafe (true for
// code whose text the owner wrote: policies, rules, trigger functions, domains).
type codeCheck struct {
	sql         string
	ownerIsCode bool
	withRole    bool // $2 is the submitting role ('' = current_user)
	withFiring  bool // $2 is the firing trigger states
}

// unsafeDepsSQL lists, for the object classid/objid of the enclosing query, the functions,
// operators (by their function) and domains with CHECK constraints it depends on that a
// non-superuser owns.
const unsafeDepsSQL = `coalesce((SELECT string_agg(DISTINCT u.what, ', ') FROM pg_depend d CROSS JOIN LATERAL (
		SELECT format('function %s owned by %s', p.oid::regprocedure, r.rolname) AS what
		FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner
		WHERE d.refclassid = 'pg_proc'::regclass AND p.oid = d.refobjid AND NOT r.rolsuper
		UNION ALL
		SELECT format('operator %s, whose function is owned by %s', o.oid::regoperator, r.rolname)
		FROM pg_operator o JOIN pg_proc p ON p.oid = o.oprcode JOIN pg_roles r ON r.oid = p.proowner
		WHERE d.refclassid = 'pg_operator'::regclass AND o.oid = d.refobjid AND NOT r.rolsuper
		UNION ALL
		SELECT format('domain %s owned by %s', format_type(t.oid, NULL), r.rolname)
		FROM pg_type t JOIN pg_roles r ON r.oid = t.typowner
		WHERE d.refclassid = 'pg_type'::regclass AND t.oid = d.refobjid AND t.typtype = 'd' AND NOT r.rolsuper
		  AND EXISTS (SELECT 1 FROM pg_constraint k WHERE k.contypid = t.oid AND k.contype = 'c')) u
	WHERE d.classid = {classid} AND d.objid = {objid}), '')`

func unsafeDeps(classid, objid string) string {
	return strings.NewReplacer("{classid}", classid, "{objid}", objid).Replace(unsafeDepsSQL)
}

// familySQL is the table and every table that inherits from it or is one of its partitions:
// a write through the table reaches their triggers and constraints too.
const familySQL = `WITH RECURSIVE fam(oid) AS (SELECT $1::regclass::oid
	UNION SELECT i.inhrelid FROM pg_inherits i JOIN fam ON i.inhparent = fam.oid) `

// Every check query returns what, owner, ownerSuper, unsafe, qual.
var (
	policyCheck = codeCheck{ownerIsCode: true, withRole: true, sql: `SELECT format('row-level security policy %I on %s', p.polname, c.oid::regclass),
			o.rolname::text, o.rolsuper, ` + unsafeDeps(`'pg_policy'::regclass`, `p.oid`) + `, NULL::text
		FROM pg_class c JOIN pg_policy p ON p.polrelid = c.oid JOIN pg_roles o ON o.oid = c.relowner
		JOIN pg_roles w ON w.rolname = coalesce(nullif($2::text, ''), current_user)
		WHERE c.oid = $1::regclass AND c.relrowsecurity AND NOT (w.rolsuper OR w.rolbypassrls)
		  AND (c.relforcerowsecurity OR NOT pg_has_role(w.oid, c.relowner, 'USAGE'))
		ORDER BY 1`}
	domainCheck = codeCheck{ownerIsCode: true, sql: `WITH RECURSIVE ty(oid, col) AS (
			SELECT a.atttypid, a.attname::text FROM pg_attribute a
			WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped
			UNION
			SELECT CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.typelem END, ty.col
			FROM ty JOIN pg_type t ON t.oid = ty.oid WHERE t.typtype = 'd' OR (t.typelem <> 0 AND t.typlen = -1))
		SELECT format('CHECK constraint %I of domain %s (behind column %I)', k.conname, format_type(t.oid, NULL), ty.col),
			o.rolname::text, o.rolsuper, ` + unsafeDeps(`'pg_constraint'::regclass`, `k.oid`) + `, NULL::text
		FROM ty JOIN pg_type t ON t.oid = ty.oid AND t.typtype = 'd' JOIN pg_roles o ON o.oid = t.typowner
		JOIN pg_constraint k ON k.contypid = t.oid AND k.contype = 'c'
		ORDER BY 1`}
	triggerCheck = codeCheck{ownerIsCode: true, withFiring: true, sql: familySQL + `SELECT format('trigger %I on %s (function %s)', t.tgname, c.oid::regclass, p.oid::regprocedure),
			fo.rolname::text, fo.rolsuper, ` + unsafeDeps(`'pg_trigger'::regclass`, `t.oid`) + `,
			CASE WHEN NOT o.rolsuper THEN t.tgqual::text END
		FROM fam JOIN pg_class c ON c.oid = fam.oid JOIN pg_roles o ON o.oid = c.relowner
		JOIN pg_trigger t ON t.tgrelid = c.oid JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_roles fo ON fo.oid = p.proowner
		WHERE t.tgenabled::text = ANY($2::text[])
		ORDER BY 1`}
	ruleCheck = codeCheck{ownerIsCode: true, sql: `SELECT format('rule %I on %s', r.rulename, c.oid::regclass),
			o.rolname::text, o.rolsuper, ` + unsafeDeps(`'pg_rewrite'::regclass`, `r.oid`) + `, NULL::text
		FROM pg_class c JOIN pg_rewrite r ON r.ev_class = c.oid JOIN pg_roles o ON o.oid = c.relowner
		WHERE c.oid = $1::regclass AND r.rulename <> '_RETURN'
		ORDER BY 1`}
	expressionCheck = codeCheck{sql: familySQL + `SELECT x.what, o.rolname::text, o.rolsuper, ` + unsafeDeps(`x.classid`, `x.objid`) + `,
			CASE WHEN NOT o.rolsuper THEN x.qual END
		FROM (
			SELECT format('%s of column %I of %s', CASE WHEN a.attgenerated <> '' THEN 'generated expression' ELSE 'default' END,
				a.attname, c.oid::regclass) AS what, c.relowner, 'pg_attrdef'::regclass::oid AS classid, d.oid AS objid, NULL::text AS qual
			FROM fam JOIN pg_class c ON c.oid = fam.oid JOIN pg_attrdef d ON d.adrelid = c.oid
			JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
			UNION ALL
			SELECT format('constraint %I on %s', k.conname, c.oid::regclass), c.relowner, 'pg_constraint'::regclass, k.oid,
				CASE WHEN k.contype = 'c' THEN k.conbin::text END
			FROM fam JOIN pg_class c ON c.oid = fam.oid JOIN pg_constraint k ON k.conrelid = c.oid
			UNION ALL
			SELECT format('index %s', i.indexrelid::regclass), c.relowner, 'pg_class'::regclass, i.indexrelid, NULL
			FROM fam JOIN pg_class c ON c.oid = fam.oid JOIN pg_index i ON i.indrelid = c.oid
			UNION ALL
			SELECT format('partition key of %s', c.oid::regclass), c.relowner, 'pg_class'::regclass, c.oid, NULL
			FROM fam JOIN pg_class c ON c.oid = fam.oid WHERE c.relkind = 'p') x
		JOIN pg_roles o ON o.oid = x.relowner
		ORDER BY 1`}
)

// checks lists the kinds of attached code a use of the table runs, triggers first.
func (u CodeUse) checks() []codeCheck {
	var out []codeCheck
	if u.Write {
		out = append(out, triggerCheck, ruleCheck)
	}
	if u.Read {
		out = append(out, policyCheck)
	}
	if u.Cast {
		out = append(out, domainCheck)
	}
	if u.Write {
		out = append(out, expressionCheck)
	}
	return out
}

// CheckTableCode refuses table t on node n when code a non-superuser owns would run in a
// session that SET ROLE to role ("" = the session's current user) and uses the table as u says.
func CheckTableCode(ctx context.Context, n *Node, t *Table, role string, u CodeUse) error {
	for _, c := range u.checks() {
		args := []any{t.Qualified()}
		switch {
		case c.withRole:
			args = append(args, role)
		case c.withFiring:
			args = append(args, u.Firing)
		}
		found, err := findAttachedCode(ctx, n, c.sql, args)
		if err != nil {
			return fmt.Errorf("look for code attached to %s on node %s: %w", t.Display(), n.Name, err)
		}
		for _, a := range found {
			why, err := a.refusal(ctx, n, c.ownerIsCode)
			if err != nil {
				return fmt.Errorf("look for code attached to %s on node %s: %w", t.Display(), n.Name, err)
			}
			if why != "" {
				return fmt.Errorf("%s on node %s %s: the agent runs in set_role mode (ACE_IMPERSONATION=set_role), where the node sessions log in "+
					"as the agent and SET ROLE to the submitter, and such code could RESET ROLE to the agent's login; have a superuser own "+
					"that code, or run the agent in the login mode (ACE_IMPERSONATION=login)", a.what, n.Name, why)
			}
		}
	}
	return nil
}

// findAttachedCode runs a check query with only pg_catalog on the search path, so the objects
// it names come out schema-qualified.
func findAttachedCode(ctx context.Context, n *Node, sql string, args []any) ([]attachedCode, error) {
	var out []attachedCode
	err := pgx.BeginTxFunc(ctx, n.Pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, qualifiedNames); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, sql, args...)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (attachedCode, error) {
			var a attachedCode
			return a, r.Scan(&a.what, &a.owner, &a.ownerSuper, &a.unsafe, &a.qual)
		})
		return err
	})
	return out, err
}

// qualifiedNames makes regclass, regprocedure and format_type name every object with its schema.
const qualifiedNames = "SET LOCAL search_path = pg_catalog"

// refusal says why the code is unsafe, or "" when it is not.
func (a attachedCode) refusal(ctx context.Context, n *Node, ownerIsCode bool) (string, error) {
	switch {
	case ownerIsCode && !a.ownerSuper:
		return fmt.Sprintf("is owned by %s, who is not a superuser", a.owner), nil
	case a.unsafe != "":
		return "uses " + a.unsafe, nil
	case a.qual != nil:
		name, err := unsafeBuiltinIn(ctx, n, *a.qual)
		if err != nil || name == "" {
			return "", err
		}
		return fmt.Sprintf("calls %s(), and its owner %s is not a superuser", name, a.owner), nil
	}
	return "", nil
}

// unsafeBuiltinIn returns a built-in function an expression calls (directly or through an
// operator) that changes settings, runs SQL or is volatile, or "" when there is none.
func unsafeBuiltinIn(ctx context.Context, n *Node, tree string) (string, error) {
	parsed, err := parseNodeTree(tree)
	if err != nil {
		return "", err
	}
	refs := newFilterRefs()
	collectCalls(parsed, refs)
	rows, err := n.Pool.Query(ctx, `SELECT p.proname::text, p.provolatile = 'v' FROM pg_proc p
		WHERE p.oid < $3 AND (p.oid = ANY($1::oid[]) OR p.oid IN (SELECT o.oprcode::oid FROM pg_operator o WHERE o.oid = ANY($2::oid[])))
		ORDER BY 1`, oidSlice(refs.funcs), oidSlice(refs.ops), firstUserOID)
	if err != nil {
		return "", err
	}
	var name string
	var volatile bool
	var found []string
	_, err = pgx.ForEachRow(rows, []any{&name, &volatile}, func() error {
		if volatile || sqlRunningBuiltins.MatchString(name) {
			found = append(found, name)
		}
		return nil
	})
	if err != nil || len(found) == 0 {
		return "", err
	}
	return strings.Join(found, "(), "), nil
}

// collectCalls records every function and operator anywhere in a tree.
func collectCalls(v any, refs *filterRefs) {
	switch x := v.(type) {
	case *pgNode:
		refs.record(x)
		for _, f := range x.fields {
			collectCalls(f, refs)
		}
	case []any:
		for _, it := range x {
			collectCalls(it, refs)
		}
	}
}
