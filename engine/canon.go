package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// This file defines ace-agent's two semantics, once, as SQL:
//
//   - Value semantics: two values are the same when their canonical text is the same. Canonical
//     text is PostgreSQL's output under the pinned settings with numeric scale removed at every
//     depth (inside arrays, ranges, composites and jsonb). A row is hashed by encoding it
//     injectively (record_send of a row of canonical values: every field carries its type, its
//     length and a NULL marker) and hashing that with SHA-256. Types whose binary form is a
//     bijection of their canonical text (integers, timestamps, text, uuid, …) are sent as they
//     are, which costs less than rendering them as text; the others are sent as canonical text.
//   - Key semantics: two keys are the same key when the key type's equality says so. Each key
//     column has a canonical text (150 and 150.00 are "150", -0 is "0", an interval is
//     justified), which is how keys travel between nodes and are matched in Go.
//
// No PostgreSQL hash-table function is used: those spread keys over buckets and promise nothing
// about distinct values (the numeric one ignores the sign, the int8 one folds 64 bits into 32).

// typeInfo is what the encoders need to know about a column's type, resolved from the catalog.
type typeInfo struct {
	oid      uint32
	name     string // pg_catalog names bare (int4, _int4), others schema-qualified and quoted
	typtype  byte   // b base, c composite, d domain, e enum, r range, m multirange, p pseudo
	category byte   // pg_type.typcategory: A array, N numeric, …
	base     *typeInfo
	elem     *typeInfo // array element
	sub      *typeInfo // range subtype, or the range of a multirange
	fields   []field   // composite attributes
}

type field struct {
	name string
	typ  *typeInfo
}

// firstNormalOID is where user-created objects start: OIDs below it are the same on every
// PostgreSQL installation, so record_send's embedded type OIDs agree between nodes.
const firstNormalOID = 16384

func (t *typeInfo) builtin() bool { return t.oid < firstNormalOID }

// sendCanonical are built-in scalar types whose binary send form is a bijection of their
// canonical text. Floats are absent (their binary form tells NaNs apart that print alike), as are
// numeric (scale), jsonb (scale inside) and types whose text is the safer definition.
var sendCanonical = map[string]bool{
	"bool": true, "char": true, "name": true, "int2": true, "int4": true, "int8": true, "oid": true,
	"text": true, "varchar": true, "bpchar": true, "bytea": true, "json": true,
	"date": true, "time": true, "timetz": true, "timestamp": true, "timestamptz": true, "interval": true,
	"uuid": true, "inet": true, "cidr": true, "macaddr": true, "macaddr8": true, "money": true,
	"bit": true, "varbit": true, "pg_lsn": true,
	"int4range": true, "int8range": true, "daterange": true, "tsrange": true, "tstzrange": true,
	"int4multirange": true, "int8multirange": true, "datemultirange": true, "tsmultirange": true, "tstzmultirange": true,
}

// resolved is the type behind any domains.
func (t *typeInfo) resolved() *typeInfo {
	for t.typtype == 'd' && t.base != nil {
		t = t.base
	}
	return t
}

// binary reports whether record_send may carry the value as it is: a built-in type (or array of
// one) whose binary form is canonical.
func (t *typeInfo) binary() bool {
	t = t.resolved()
	if t.category == 'A' && t.elem != nil {
		return t.builtin() && t.elem.resolved().binary()
	}
	return t.builtin() && sendCanonical[t.name]
}

// needsCanon reports whether the type's output text can differ for equal values: numeric scale,
// anywhere inside.
func (t *typeInfo) needsCanon() bool {
	t = t.resolved()
	switch {
	case t.name == "numeric" || t.name == "jsonb":
		return true
	case t.elem != nil && t.category == 'A':
		return t.elem.needsCanon()
	case t.sub != nil:
		return t.sub.needsCanon()
	}
	for _, f := range t.fields {
		if f.typ.needsCanon() {
			return true
		}
	}
	return false
}

// numericOnly reports whether the type's text holds nothing but numbers and punctuation
// (numeric, its arrays, ranges and multiranges), so numbers in it can be trimmed textually.
func (t *typeInfo) numericOnly() bool {
	t = t.resolved()
	switch {
	case t.name == "numeric":
		return true
	case t.category == 'A' && t.elem != nil:
		return t.elem.numericOnly()
	case t.sub != nil:
		return t.sub.numericOnly()
	}
	return false
}

// Trailing fractional zeros of numbers in a text that holds only numbers (numericTrimRE), or in
// jsonb output, where strings are matched first and kept as they are (jsonbTrimRE).
const (
	numericTrimRE = `(\d\.\d*[1-9])0+(?!\d)|(\d)\.0+(?!\d)`
	jsonbTrimRE   = `("(?:[^"\\]|\\.)*")|(\d\.\d*[1-9])0+(?!\d)|(\d)\.0+(?!\d)`
	trailingZeros = `\d\.\d*0(?!\d)`
)

// textSource yields the text of an expression. At the top of a row it is computed once, in the
// fenced subquery (see hashSource); nested, it is written out where it is used.
type textSource func(expr string) string

func inlineText(expr string) string { return "(" + expr + ")::text" }

// trimmedText is text(expr) with trailing fractional zeros removed by re. The regular expression
// runs only when the text holds a number with a trailing zero, which is rare.
func trimmedText(t string, re, repl string) string {
	return fmt.Sprintf("CASE WHEN strpos(%[1]s, '.') = 0 OR %[1]s !~ %[2]s THEN %[1]s ELSE regexp_replace(%[1]s, %[3]s, %[4]s, 'g') END",
		t, QuoteLiteral(trailingZeros), QuoteLiteral(re), QuoteLiteral(repl))
}

// valueExpr is expr as a value whose send form is canonical: what a row's hash encodes. With
// binary false, types that would be sent in binary form are sent as text instead.
func (t *typeInfo) valueExpr(expr string, text textSource, binary bool) string {
	if t.typtype == 'd' && t.base != nil {
		return t.base.valueExpr("("+expr+")::"+t.base.name, text, binary)
	}
	if !t.needsCanon() {
		if binary && t.binary() {
			return expr
		}
		return inlineText(expr)
	}
	switch {
	case t.name == "numeric":
		return "trim_scale(" + expr + ")"
	case t.name == "jsonb":
		return trimmedText(text(expr), jsonbTrimRE, `\1\2\3`)
	case t.numericOnly():
		return trimmedText(text(expr), numericTrimRE, `\1\2`)
	case len(t.fields) > 0:
		parts := make([]string, len(t.fields))
		for i, f := range t.fields {
			parts[i] = f.typ.valueExpr("("+expr+")."+Ident(f.name), inlineText, binary)
		}
		// A NULL composite is not a composite of NULLs: num_nulls sees the datum itself.
		return fmt.Sprintf("CASE WHEN num_nulls(%s) = 0 THEN ROW(%s) END", expr, strings.Join(parts, ", "))
	case t.category == 'A' && t.elem != nil:
		// The dimensions and lower bounds, then the canonical elements in storage order. unnest
		// in a target list keeps a NULL composite element NULL (in FROM it becomes a row of NULLs).
		return fmt.Sprintf("CASE WHEN %[1]s IS NOT NULL THEN coalesce(array_dims(%[1]s), '') || '=' || ARRAY(SELECT (%[2]s)::text FROM (SELECT unnest(%[1]s) AS v) AS \"?ace_e?\")::text END",
			expr, t.elem.valueExpr(`"?ace_e?".v`, inlineText, false))
	}
	return inlineText(expr) // a range over a composite or jsonb: its text, scale and all
}

// keyText is a key column's canonical text: equal keys (by the type's equality) have equal text,
// and the text casts back to an equal key.
func (t *typeInfo) keyText(expr string) string {
	if t.typtype == 'd' && t.base != nil {
		return t.base.keyText("(" + expr + ")::" + t.base.name)
	}
	switch {
	case t.name == "float4" || t.name == "float8":
		return fmt.Sprintf("((%s) + '0'::%s)::text", expr, t.name) // -0 + 0 is 0
	case t.name == "interval":
		return "justify_interval(" + expr + ")::text" // '24:00:00' = '1 day'
	case strings.HasSuffix(t.name, ".citext"): // the extension's type, in whatever schema

		return "lower((" + expr + ")::text)"
	case t.needsCanon():
		v := t.valueExpr(expr, inlineText, false)
		if t.name == "numeric" {
			return v + "::text"
		}
		return "(" + v + ")::text"
	}
	return inlineText(expr)
}

// nativeOrder reports whether keys of this type can be compared with the type's own ordering on
// every node: built-in types order the same everywhere (collations aside, see KeyOrder). Enums
// (label order can differ between nodes) and extension types are ordered by canonical text.
func (t *typeInfo) nativeOrder() bool {
	t = t.resolved()
	if t.category == 'A' && t.elem != nil {
		return t.builtin() && t.elem.nativeOrder()
	}
	if t.sub != nil {
		return t.builtin() && t.sub.nativeOrder()
	}
	return t.builtin() && len(t.fields) == 0
}

// Querier is what reading and writing functions need: a *pgx.Conn, a pool or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// typeLoader reads type descriptions from one node, each type once.
type typeLoader struct {
	q    Querier
	seen map[uint32]*typeInfo
}

// maxTypeDepth bounds the nesting followed (a composite may contain itself through an array).
const maxTypeDepth = 8

// genbkiTypes caches the descriptions of types whose OIDs PostgreSQL's own catalog data assigns
// (below 10,000): the same type under that OID in every version and on every node. Composite
// types (the catalogs' row types, whose columns change between versions) are left out, as is
// anything built on them. A diff of many small tables describes the same few types for each.
var genbkiTypes sync.Map // uint32 → *typeInfo

// firstGenbkiOID ends the OIDs that PostgreSQL's catalog data assigns by hand.
const firstGenbkiOID = 10000

// fixedForever reports whether t and every type it is built on are described in genbkiTypes'
// sense.
func (t *typeInfo) fixedForever() bool {
	if t.oid >= firstGenbkiOID || t.typtype == 'c' || len(t.fields) > 0 {
		return false
	}
	for _, u := range []*typeInfo{t.base, t.elem, t.sub} {
		if u != nil && !u.fixedForever() {
			return false
		}
	}
	return true
}

func (l *typeLoader) load(ctx context.Context, oid uint32, depth int) (*typeInfo, error) {
	if t, ok := l.seen[oid]; ok {
		return t, nil
	}
	if t, ok := genbkiTypes.Load(oid); ok {
		return t.(*typeInfo), nil
	}
	t, err := l.describe(ctx, oid, depth)
	if err == nil && t.fixedForever() {
		genbkiTypes.Store(oid, t)
	}
	return t, err
}

func (l *typeLoader) describe(ctx context.Context, oid uint32, depth int) (*typeInfo, error) {
	if depth > maxTypeDepth {
		return nil, fmt.Errorf("type %d nests more than %d levels deep", oid, maxTypeDepth)
	}
	t := &typeInfo{oid: oid}
	l.seen[oid] = t
	var typtype, category string
	var baseOID, elemOID, subOID, relid uint32
	err := l.q.QueryRow(ctx, `
		SELECT CASE WHEN n.nspname = 'pg_catalog' THEN t.typname::text ELSE format('%I.%I', n.nspname, t.typname) END,
		       t.typtype::text, t.typcategory::text, t.typbasetype, CASE WHEN t.typcategory = 'A' THEN t.typelem ELSE 0 END,
		       coalesce((SELECT r.rngsubtype FROM pg_range r WHERE r.rngtypid = t.oid),
		                (SELECT r.rngtypid FROM pg_range r WHERE r.rngmultitypid = t.oid), 0),
		       t.typrelid
		FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.oid = $1`, oid).
		Scan(&t.name, &typtype, &category, &baseOID, &elemOID, &subOID, &relid)
	if err != nil {
		return nil, fmt.Errorf("describe type %d: %w", oid, err)
	}
	t.typtype, t.category = typtype[0], category[0]
	for _, link := range []struct {
		oid uint32
		dst **typeInfo
	}{{baseOID, &t.base}, {elemOID, &t.elem}, {subOID, &t.sub}} {
		if link.oid == 0 {
			continue
		}
		if *link.dst, err = l.load(ctx, link.oid, depth+1); err != nil {
			return nil, err
		}
	}
	if t.typtype == 'c' && relid != 0 {
		if t.fields, err = l.loadFields(ctx, relid, depth); err != nil {
			return nil, err
		}
	}
	return t, nil
}

func (l *typeLoader) loadFields(ctx context.Context, relid uint32, depth int) ([]field, error) {
	rows, err := l.q.Query(ctx, `SELECT attname::text, atttypid FROM pg_attribute
		WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, relid)
	if err != nil {
		return nil, fmt.Errorf("describe composite type %d: %w", relid, err)
	}
	type attr struct {
		name string
		oid  uint32
	}
	attrs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (attr, error) {
		var a attr
		return a, r.Scan(&a.name, &a.oid)
	})
	if err != nil {
		return nil, fmt.Errorf("describe composite type %d: %w", relid, err)
	}
	fields := make([]field, len(attrs))
	for i, a := range attrs {
		typ, err := l.load(ctx, a.oid, depth+1)
		if err != nil {
			return nil, err
		}
		fields[i] = field{name: a.name, typ: typ}
	}
	return fields, nil
}

// RowDigests hashes rows given as JSON objects (as a diff stores them) the way the table's rows
// are hashed, after casting each value back to its column's type on the node: two documents get
// the same digest exactly when they hold the same values under the value semantics. The result
// is keyed by document; null documents are left out.
func RowDigests(ctx context.Context, q Querier, t *Table, docs []json.RawMessage) (map[string]string, error) {
	seen := map[string]bool{}
	var elems []json.RawMessage
	for _, d := range docs {
		if IsNullRow(d) || seen[string(d)] {
			continue
		}
		seen[string(d)] = true
		elems = append(elems, d)
	}
	out := make(map[string]string, len(elems))
	if len(elems) == 0 {
		return out, nil
	}
	arg, err := json.Marshal(elems)
	if err != nil {
		return nil, fmt.Errorf("encode rows: %w", err)
	}
	casts := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		casts[i] = ElemCast(c) + " AS " + Ident(c.Name)
	}
	h := NewRowHash(t.Columns, HashBinary)
	values := fmt.Sprintf(`(SELECT "?ace_o?", %s FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS %s(%s, "?ace_o?"))`,
		strings.Join(casts, ", "), ElemAlias, ElemColumn)
	rows, err := q.Query(ctx, fmt.Sprintf(`SELECT "?ace_o?", %s FROM %s`, h.Digest, h.Source(values+` AS "?ace_j?"`, "true")), string(arg))
	if err != nil {
		return nil, err
	}
	var ord int
	var digest []byte
	_, err = pgx.ForEachRow(rows, []any{&ord, &digest}, func() error {
		out[string(elems[ord-1])] = string(digest)
		return nil
	})
	return out, err
}

// ScanKey scans a row of n key columns, as text, into a key.
func ScanKey(n int) pgx.RowToFunc[[]string] {
	return func(row pgx.CollectableRow) ([]string, error) {
		key := make([]string, n)
		dest := make([]any, n)
		for i := range key {
			dest[i] = &key[i]
		}
		return key, row.Scan(dest...)
	}
}

// KeyString joins key values into a map key. PostgreSQL text cannot hold NUL, so NUL cannot be
// forged by a value.
func KeyString(key []string) string { return strings.Join(key, "\x00") }

// KeyFromJSON turns a stored key (DiffRow.PKSort: a JSON array of the key's values in key
// order) back into the text values the engine works with.
func KeyFromJSON(pkSort json.RawMessage) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(pkSort))
	dec.UseNumber()
	var vals []any
	if err := dec.Decode(&vals); err != nil {
		return nil, fmt.Errorf("decode key %s: %w", pkSort, err)
	}
	key := make([]string, len(vals))
	for i, v := range vals {
		switch v := v.(type) {
		case string:
			key[i] = v
		case json.Number:
			key[i] = v.String()
		case bool:
			key[i] = fmt.Sprint(v)
		default:
			return nil, fmt.Errorf("decode key %s: value %d is %T, not a key value", pkSort, i+1, v)
		}
	}
	return key, nil
}
