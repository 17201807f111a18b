package engine

import (
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// HashVersion names the row-hash scheme. It changes whenever the encoding of a row's hash
// input changes, so hashes of different versions are never compared. It names the row digest
// (RowHash.Digest), which stored diffs, repairs and trees rely on; how a table-diff summarises
// a leaf in flight (additive lanes or an ordered digest, both over the same encodings) is not
// stored and is decided anew by every diff. Version 2 hashes an
// injective canonical encoding with SHA-256 (canon.go); version 1 used PostgreSQL's hash-table
// functions, which collide by structure.
const HashVersion = 2

// HashMode chooses how canonical values are encoded for the row hash.
type HashMode string

const (
	// HashBinary sends built-in types whose binary form is canonical as they are, and the rest
	// as canonical text. It needs the same major version on every node.
	HashBinary HashMode = "binary"
	// HashText sends every column as canonical text; it works across major versions.
	HashText HashMode = "text"
)

// Ident quotes name as an SQL identifier.
func Ident(name string) string { return pgx.Identifier{name}.Sanitize() }

// RowHash is how the rows of a table are hashed: a SHA-256 of record_send over a row of
// canonical values. record_send is injective: each field carries its type, its length and a
// NULL marker, so NULL differs from the empty string and from 0, and no value can forge a separator.
type RowHash struct {
	pre []string // text projections computed once per row, in the fenced subquery of Source
	// Encoding is the SQL expression of a row's injective encoding (bytea, record_send of the
	// canonical values), over the columns of Source.
	Encoding string
	// Digest is the SQL expression of a row's 32-byte digest (bytea), over the columns of Source.
	Digest string
}

// NewRowHash is the row hash of a table with columns cols, its values encoded as mode says.
func NewRowHash(cols []Column, mode HashMode) RowHash {
	var h RowHash
	text := func(expr string) string {
		alias := fmt.Sprintf(`"?ace_t%d?"`, len(h.pre))
		h.pre = append(h.pre, inlineText(expr)+" AS "+alias)
		return alias
	}
	parts := make([]string, len(cols))
	for i, c := range cols {
		if fixedScale(c) {
			parts[i] = Ident(c.Name) // every value has the column's scale: no trim needed
			continue
		}
		parts[i] = c.typ.valueExpr(Ident(c.Name), text, mode == HashBinary)
	}
	h.Encoding = "record_send(ROW(" + strings.Join(parts, ", ") + "))"
	h.Digest = "sha256(" + h.Encoding + ")"
	return h
}

// fixedScale reports whether c is a numeric with a declared scale, numeric(p,s), whose values
// are all stored with that scale, so equal values have equal binary forms (the table has the same
// column type on every node).
func fixedScale(c Column) bool {
	return c.BaseType == "numeric" && strings.HasPrefix(c.Type, "numeric(")
}

// Source is a FROM item holding the table's rows that match where, with the text projections
// the hash needs. clock_timestamp(), which nobody reads, keeps the subquery from being
// flattened into its parent, so each projection is computed once per row; it is parallel safe.
func (h RowHash) Source(table, where string) string {
	return h.SourceWith(table, where)
}

// SourceWith is Source whose rows carry the extra columns too (expressions with their aliases,
// such as "xmin AS xmin", which names the row's system column as a column of the source).
func (h RowHash) SourceWith(table, where string, extra ...string) string {
	return h.source(table, where, "", extra)
}

// OrderedSource is Source whose rows come in the order orderBy gives them. The order is the
// subquery's own: a parent's ORDER BY could not see through the subquery that is not flattened,
// and would sort what the index scan already yields in order.
func (h RowHash) OrderedSource(table, where, orderBy string) string {
	return h.source(table, where, orderBy, nil)
}

func (h RowHash) source(table, where, orderBy string, extra []string) string {
	cols := append([]string{"*"}, extra...)
	fence := ""
	if len(h.pre) > 0 {
		cols = append(cols, h.pre...)
		fence = `, clock_timestamp() AS "?ace_f?"`
	}
	if orderBy != "" {
		where += " ORDER BY " + orderBy
	}
	return "(SELECT " + strings.Join(cols, ", ") + fence + " FROM " + table + " WHERE " + where + `) AS "?ace_r?"`
}

// byteSums are the aggregates a summary adds up per row of its digest column "?ace_h?": the
// count, and one sum per byte of the digest's first 16, "?ace_b0?" to "?ace_b15?". Bytes 0 and
// 8, the high bytes of the two lanes, are summed as signed bytes (less 128 per row, added back
// in laneFromBytes), so the lanes come out as the exact sums of signed 64-bit integers.
//
// Summing bytes and weighting the sums once per bucket gives exactly the sums of the 64-bit
// lanes (a sum of weighted terms is the weighted sum of their sums) and costs a third less per
// row than building two int8 lanes from 16 get_byte calls, shifts and ORs and adding those.
func byteSums() string {
	parts := []string{`count(*) AS "?ace_c?"`}
	for i := range 16 {
		b := fmt.Sprintf(`get_byte("?ace_h?", %d)`, i)
		if i%8 == 0 {
			b += " # 128"
		}
		parts = append(parts, fmt.Sprintf(`sum(%s) AS "?ace_b%d?"`, b, i))
	}
	return strings.Join(parts, ", ")
}

// laneFromBytes is, from byteSums' columns, the exact (numeric) sum of the big-endian signed
// 64-bit integers in bytes [off, off+8) of the digests. Byte pairs are combined as int8 (no
// overflow below 10^14 rows a bucket), the four pairs as numeric.
func laneFromBytes(off int) string {
	pair := func(i int) string {
		hi := fmt.Sprintf(`"?ace_b%d?"`, off+i)
		if i == 0 {
			hi = fmt.Sprintf(`("?ace_b%d?" - 128 * "?ace_c?")`, off)
		}
		return fmt.Sprintf(`(%s * 256 + "?ace_b%d?")`, hi, off+i+1)
	}
	return fmt.Sprintf(`(((%s::numeric * 65536 + %s) * 65536 + %s) * 65536 + %s)`, pair(0), pair(2), pair(4), pair(6))
}

// jsonValue renders a column for reports: JSON numbers and booleans where exact, and
// PostgreSQL's own text form (which round-trips) for everything else. Floats are text: as JSON
// numbers, -0 would become 0 and 1e+30 a string of digits.
func jsonValue(c Column) string {
	col := Ident(c.Name)
	switch c.BaseType {
	case "int2", "int4", "int8", "oid", "bool":
		return "to_jsonb(" + col + ")"
	}
	return "to_jsonb(" + col + "::text)"
}

// JSONObjectExpr builds a jsonb object of the given columns. jsonb_build_object takes at most
// 100 arguments, so wide tables are built in chunks.
func JSONObjectExpr(cols []Column) string {
	const perChunk = 50
	var chunks []string
	for start := 0; start < len(cols); start += perChunk {
		end := min(start+perChunk, len(cols))
		var args []string
		for _, c := range cols[start:end] {
			args = append(args, QuoteLiteral(c.Name), jsonValue(c))
		}
		chunks = append(chunks, "jsonb_build_object("+strings.Join(args, ", ")+")")
	}
	if len(chunks) == 0 {
		return "'{}'::jsonb"
	}
	return strings.Join(chunks, " || ")
}

// QuoteLiteral quotes s as an SQL string literal.
func QuoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// KeyOrder describes how primary keys are compared on every node: the same order everywhere, or
// the ranges would not be the same ranges, and one canonical text per key, or equal keys would
// not meet.
type KeyOrder struct {
	cols    []Column
	text    []string // per key column: its canonical text (typeInfo.keyText)
	native  []bool   // per key column: compared in the type's own order, else by text in "C" order
	collate []string // per native key column: ` COLLATE "C"` or ""
}

// NewKeyOrder uses each key column's own ordering where it is the same on every node: built-in
// types, with the column's collation when every node has the same deterministic one in the same
// version (so indexes serve range scans), else the binary collation. Enums, whose label order
// can differ between nodes, and extension types are ordered by canonical text. A key column with
// a nondeterministic collation is refused: keys it calls equal have no one canonical form.
func NewKeyOrder(tables []*Table, nodes []string) (KeyOrder, error) {
	pk := tables[0].PK
	k := KeyOrder{cols: pk, text: make([]string, len(pk)), native: make([]bool, len(pk)), collate: make([]string, len(pk))}
	for i, c := range pk {
		k.text[i] = c.typ.keyText(Ident(c.Name))
		k.native[i] = c.typ.nativeOrder()
		if c.Collate == "" {
			continue
		}
		for j, t := range tables {
			if strings.Contains(t.PK[i].Collate, "/nondeterministic/") {
				return k, fmt.Errorf("key column %q of %s uses the nondeterministic collation %s on node %s: keys that collation calls equal have no single canonical form, so they cannot be matched across nodes; give the key column a deterministic collation on every node",
					c.Name, tables[0].Display(), strings.SplitN(t.PK[i].Collate, "/", 2)[0], nodes[j])
			}
			if t.PK[i].Collate != c.Collate {
				k.collate[i] = ` COLLATE "C"`
			}
		}
	}
	return k, nil
}

// NewKeyOrderFixed is the key order a Merkle tree was built with: collateC[i] says key column i
// is compared in the "C" collation (see NewKeyOrder). A tree keeps its order for its life, so
// its leaves stay ranges of the same keys.
func NewKeyOrderFixed(t *Table, collateC []bool) (KeyOrder, error) {
	pk := t.PK
	if len(collateC) != len(pk) {
		return KeyOrder{}, fmt.Errorf("%s has %d key columns, its tree %d: the primary key changed; build the tree again", t.Display(), len(pk), len(collateC))
	}
	k := KeyOrder{cols: pk, text: make([]string, len(pk)), native: make([]bool, len(pk)), collate: make([]string, len(pk))}
	for i, c := range pk {
		k.text[i] = c.typ.keyText(Ident(c.Name))
		k.native[i] = c.typ.nativeOrder()
		if collateC[i] && c.Collate != "" {
			k.collate[i] = ` COLLATE "C"`
		}
	}
	return k, nil
}

// CollateC reports, per key column, whether it is compared in the "C" collation: what a tree
// stores to rebuild its KeyOrder with NewKeyOrderFixed.
func (k KeyOrder) CollateC() []bool {
	out := make([]bool, len(k.cols))
	for i := range k.cols {
		out[i] = k.collate[i] != ""
	}
	return out
}

// KeyFromArray is a key stored as a text[] of canonical key texts (expr), as KeyExpr compares it.
func (k KeyOrder) KeyFromArray(expr string) string {
	return k.keyFrom(expr, func(i int, elem string) string { return elem })
}

// KeyFromRawArray is a key given as a text[] of each column's text output (as logical
// replication sends it), as KeyExpr compares it.
func (k KeyOrder) KeyFromRawArray(expr string) string {
	return k.keyFrom(expr, func(i int, elem string) string {
		return k.cols[i].typ.keyText("(" + elem + ")::" + k.cols[i].Type)
	})
}

// KeyTextFromRawArray selects the canonical key texts (as KeyText) of a key given as a text[]
// of each column's text output.
func (k KeyOrder) KeyTextFromRawArray(expr string) string {
	parts := make([]string, len(k.cols))
	for i, c := range k.cols {
		parts[i] = c.typ.keyText(fmt.Sprintf("((%s)[%d])::%s", expr, i+1, c.Type))
	}
	return strings.Join(parts, ", ")
}

func (k KeyOrder) keyFrom(expr string, canonical func(i int, elem string) string) string {
	parts := make([]string, len(k.cols))
	for i, c := range k.cols {
		elem := fmt.Sprintf("(%s)[%d]", expr, i+1)
		if k.native[i] {
			parts[i] = "(" + elem + ")::" + c.Type + k.collate[i]
		} else {
			parts[i] = "(" + canonical(i, elem) + `) COLLATE "C"`
		}
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return "ROW(" + strings.Join(parts, ", ") + ")"
}

// colExpr is key column i as compared: the column, or its canonical text in binary order.
func (k KeyOrder) colExpr(i int) string {
	if !k.native[i] {
		return "(" + k.text[i] + `) COLLATE "C"`
	}
	return Ident(k.cols[i].Name) + k.collate[i]
}

// param is key column i given as a text parameter $n, as colExpr compares it.
func (k KeyOrder) param(i, n int) string {
	if !k.native[i] {
		return fmt.Sprintf(`$%d::text COLLATE "C"`, n)
	}
	return fmt.Sprintf("$%d::text::%s%s", n, k.cols[i].Type, k.collate[i])
}

// paramArray is key column i's values given as one text[] parameter $n.
func (k KeyOrder) paramArray(i, n int) string {
	if !k.native[i] {
		return fmt.Sprintf("$%d::text[]", n)
	}
	return fmt.Sprintf("$%d::text[]::%s[]", n, k.cols[i].Type)
}

// Indexable reports whether every key column is compared in its own type's order and its own
// collation, so a range predicate on KeyExpr is served by the primary key's index.
func (k KeyOrder) Indexable() bool {
	for i := range k.cols {
		if !k.native[i] || k.collate[i] != "" {
			return false
		}
	}
	return true
}

// LeafBounds is a FROM item, "?ace_l?", of the leaves between consecutive keys of a list given
// as one text[] per key column from $n: leaf j ("?ace_k?", from 1) runs from key j up to key
// j+1, and the last key starts no leaf. where selects the rows of the current leaf, for a
// LATERAL subquery: a range the key's index serves.
func (k KeyOrder) LeafBounds(n int) (from, where string) {
	var arrays, names, leads []string
	for i := range k.cols {
		arrays = append(arrays, k.paramArray(i, n+i))
		names = append(names, fmt.Sprintf(`"?ace_lo%d?"`, i))
		leads = append(leads, fmt.Sprintf(`lead("?ace_lo%d?") OVER (ORDER BY "?ace_k?") AS "?ace_hi%d?"`, i, i))
	}
	from = fmt.Sprintf(`(SELECT * FROM (SELECT *, %s FROM unnest(%s) WITH ORDINALITY AS "?ace_u?"(%s, "?ace_k?")) "?ace_b?"
		WHERE "?ace_hi0?" IS NOT NULL) AS "?ace_l?"`, strings.Join(leads, ", "), strings.Join(arrays, ", "), strings.Join(names, ", "))
	return from, k.boundsWhere()
}

// RangeList is a FROM item, "?ace_l?", of closed ranges given as one text[] of lower bounds per
// key column from $n, then one text[] of upper bounds per key column: range j ("?ace_k?", from
// 1) runs from lower bound j up to upper bound j. where selects the rows of the current range,
// for a LATERAL subquery: a range the key's index serves. One query plans one index scan for
// any number of ranges, where a UNION of one branch a range is planned branch by branch.
func (k KeyOrder) RangeList(n int) (from, where string) {
	var arrays, names []string
	for _, end := range []string{"lo", "hi"} {
		for i := range k.cols {
			arrays = append(arrays, k.paramArray(i, n+len(arrays)))
			names = append(names, fmt.Sprintf(`"?ace_%s%d?"`, end, i))
		}
	}
	from = fmt.Sprintf(`unnest(%s) WITH ORDINALITY AS "?ace_l?"(%s, "?ace_k?")`, strings.Join(arrays, ", "), strings.Join(names, ", "))
	return from, k.boundsWhere()
}

// boundsWhere selects the rows from "?ace_l?"'s lower bound ("?ace_lo0?"…) up to its upper bound
// ("?ace_hi0?"…), compared as the key's order compares them.
func (k KeyOrder) boundsWhere() string {
	var lo, hi []string
	for i := range k.cols {
		collate := k.collate[i]
		if !k.native[i] {
			collate = ` COLLATE "C"`
		}
		lo = append(lo, fmt.Sprintf(`"?ace_l?"."?ace_lo%d?"%s`, i, collate))
		hi = append(hi, fmt.Sprintf(`"?ace_l?"."?ace_hi%d?"%s`, i, collate))
	}
	row := func(parts []string) string {
		if len(parts) == 1 {
			return parts[0]
		}
		return "ROW(" + strings.Join(parts, ", ") + ")"
	}
	return k.KeyExpr() + " >= " + row(lo) + " AND " + k.KeyExpr() + " < " + row(hi)
}

// Columns is the key's columns, in key order.
func (k KeyOrder) Columns() []Column { return k.cols }

// KeyExpr is the key as one comparable value: the column, or a ROW of the columns.
func (k KeyOrder) KeyExpr() string {
	if len(k.cols) == 1 {
		return k.colExpr(0)
	}
	return "ROW(" + k.OrderBy() + ")"
}

// paramKey is a key given as text parameters starting at $n, as KeyExpr compares it.
func (k KeyOrder) paramKey(n int) string {
	parts := make([]string, len(k.cols))
	for i := range k.cols {
		parts[i] = k.param(i, n+i)
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return "ROW(" + strings.Join(parts, ", ") + ")"
}

// ParamKeyArray is an array of keys given as one text[] parameter per key column from $n.
func (k KeyOrder) ParamKeyArray(n int) string {
	if len(k.cols) == 1 {
		return k.paramArray(0, n)
	}
	var arrays, fields, names []string
	for i := range k.cols {
		arrays = append(arrays, k.paramArray(i, n+i))
		collate := k.collate[i]
		if !k.native[i] {
			collate = ` COLLATE "C"`
		}
		fields = append(fields, fmt.Sprintf("u.k%d%s", i, collate))
		names = append(names, fmt.Sprintf("k%d", i))
	}
	return fmt.Sprintf("ARRAY(SELECT ROW(%s) FROM unnest(%s) AS u(%s))",
		strings.Join(fields, ", "), strings.Join(arrays, ", "), strings.Join(names, ", "))
}

// KeyText selects the key columns' canonical texts, the form keys travel in between nodes.
func (k KeyOrder) KeyText() string { return strings.Join(k.text, ", ") }

// KeySortJSON is the key as a JSON array of its canonical values in key order (DiffRow.PKSort):
// integers as numbers, so keys sort numerically, everything else as canonical text.
func (k KeyOrder) KeySortJSON() string {
	vals := make([]string, len(k.cols))
	for i, c := range k.cols {
		switch c.BaseType {
		case "int2", "int4", "int8":
			vals[i] = "to_jsonb(" + Ident(c.Name) + ")"
		default:
			vals[i] = "to_jsonb(" + k.text[i] + ")"
		}
	}
	return "jsonb_build_array(" + strings.Join(vals, ", ") + ")"
}

// OrderBy is an ORDER BY list for the key.
func (k KeyOrder) OrderBy() string {
	parts := make([]string, len(k.cols))
	for i := range k.cols {
		parts[i] = k.colExpr(i)
	}
	return strings.Join(parts, ", ")
}

// Range is a half-open key range [Lo, Hi). A nil bound is open: the first range has no lower
// bound and the last no upper bound, so rows outside any one node's key span are still seen.
type Range struct {
	Lo, Hi []string // key column values as text
}

// Where renders the range as a predicate, appending its parameters to args.
func (k KeyOrder) Where(r Range, args *[]any) string {
	var conds []string
	if r.Lo != nil {
		conds = append(conds, k.KeyExpr()+" >= "+k.paramKey(len(*args)+1))
		*args = appendKey(*args, r.Lo)
	}
	if r.Hi != nil {
		conds = append(conds, k.KeyExpr()+" < "+k.paramKey(len(*args)+1))
		*args = appendKey(*args, r.Hi)
	}
	if len(conds) == 0 {
		return "true"
	}
	return strings.Join(conds, " AND ")
}

func appendKey(args []any, key []string) []any {
	for _, v := range key {
		args = append(args, v)
	}
	return args
}

// AppendKeyArrays appends one text[] per key column holding the keys' values.
func AppendKeyArrays(args []any, keys [][]string, ncols int) []any {
	for i := 0; i < ncols; i++ {
		col := make([]string, len(keys))
		for j, k := range keys {
			col[j] = k[i]
		}
		args = append(args, col)
	}
	return args
}

// MatchKeys is a predicate selecting exactly the given keys, with its parameters ($1 on).
func (k KeyOrder) MatchKeys(keys [][]string) (string, []any) {
	args := AppendKeyArrays(nil, keys, len(k.cols))
	if len(k.cols) == 1 {
		return k.KeyExpr() + " = ANY(" + k.ParamKeyArray(1) + ")", args
	}
	arrays := make([]string, len(k.cols))
	for i := range k.cols {
		arrays[i] = k.paramArray(i, i+1)
	}
	return "(" + k.OrderBy() + ") IN (SELECT * FROM unnest(" + strings.Join(arrays, ", ") + "))", args
}

// ElemAlias and ElemColumn name, inside statements that read rows from a jsonb array
// (jsonb_array_elements($1::jsonb) AS ElemAlias(ElemColumn)), the element; no table column
// can clash with them.
const (
	ElemAlias  = `"?ace_r?"`
	ElemColumn = `"?ace_v?"`
)

// ElemCast is the value of column c in the current jsonb element (ElemColumn), as c's type.
func ElemCast(c Column) string {
	return fmt.Sprintf("(%s->>%s)::%s", ElemColumn, QuoteLiteral(c.Name), c.Type)
}

// ColumnList lists the key columns, quoted, for ON CONFLICT.
func (k KeyOrder) ColumnList() string {
	names := make([]string, len(k.cols))
	for i, c := range k.cols {
		names[i] = Ident(c.Name)
	}
	return strings.Join(names, ", ")
}

// Len is the number of key columns.
func (k KeyOrder) Len() int { return len(k.cols) }

// SummarySQL summarises the rows of source by bucket: the bucket, the row count and the two lane
// sums of the row digests, as text. Ranges are summarised by their row count and the exact sums
// of two lanes, the big-endian signed 64-bit integers in bytes 0–7 and 8–15 of each digest: 128
// bits of hash, added, so no row can cancel another. The lanes are added up byte by byte
// (byteSums) and weighted once per bucket (laneFromBytes).
//
// The subquery selects clock_timestamp(), which nobody reads, because a subquery with a volatile
// output is not flattened into its parent: flattened, the digest would be computed again for
// every byte the sums read. clock_timestamp() is parallel safe, so the scan can still run in
// parallel workers.
func SummarySQL(bucket string, h RowHash, source string) string {
	return fmt.Sprintf(`SELECT "?ace_k?", "?ace_c?", %s::text, %s::text FROM (
		SELECT "?ace_k?", %s
		FROM (SELECT %s AS "?ace_k?", %s AS "?ace_h?", clock_timestamp() AS "?ace_fence?" FROM %s) s GROUP BY 1) g`,
		laneFromBytes(0), laneFromBytes(8), byteSums(), bucket, h.Digest, source)
}

// LeafDigestSQL summarises the rows of table matching where, one leaf, by their count
// ("?ace_c?") and one SHA-256 over their encodings concatenated in the order orderBy gives them
// ("?ace_d?", NULL for no rows): the key's, on which every node agrees where the key is compared in its own type's
// order (KeyOrder.Indexable), and which the key's index scan yields without a sort. record_send's
// output is self-delimiting (a field count, then each field's type, length and bytes), so the
// concatenation determines the leaf's rows and their order: two leaves of different rows get the
// same digest only through a SHA-256 collision, and nodes that order the same rows differently
// (a key collation that changed under one of them) only see a difference that the comparison of
// the rows then finds is none. One digest a leaf instead of one a row halves the hashing's cost.
//
// The order is the source's (RowHash.OrderedSource), not the aggregate's: PostgreSQL 15 sorts an
// ordered aggregate's input itself even when it comes sorted (measured on the benchmark table: a
// sixth of the digest's cost), and the LIMIT between the two keeps a parallel plan from
// aggregating parts in another order.
//
// Leaves are not additive: a leaf's digest cannot be updated by a row's change, only taken
// again, and two leaves' digests do not make the digest of the two together.
//
// A leaf's encodings are concatenated in the node's memory, and a node can hold far more rows
// in a leaf than the node its bounds were cut at (or in an open first or last leaf): at most
// maxRows+1 rows are read, and a count over maxRows means the leaf overflowed, its digest
// standing for only its first rows. The caller must then treat the leaf as differing.
func LeafDigestSQL(h RowHash, table, where, orderBy string, maxRows int64) string {
	return fmt.Sprintf(`SELECT count(*) AS "?ace_c?", sha256(string_agg("?ace_e?", ''::bytea)) AS "?ace_d?"
		FROM (SELECT %s AS "?ace_e?" FROM %s LIMIT %d) "?ace_s?"`, h.Encoding, h.OrderedSource(table, where, orderBy), maxRows+1)
}

// IntStep says that a span's leaf bounds are Lo+W, Lo+2W, … of an integer key, so a leaf's range
// is computed from its number instead of read from a list of bounds.
type IntStep struct{ Lo, W int64 }

// OrderedLeavesSQL summarises every leaf of r cut at bounds (ascending, strictly inside r) with
// LeafDigestSQL, rows of table matching filter, leaf by leaf in key order: the leaf's number
// (int8, from 0), its count ("?ace_c?") and its digest ("?ace_d?"). The first and the
// last leaf (which may be open) are read on their own, the leaves between them as a LATERAL over
// their numbers (step set: computed from it) or over the list of bounds. Each leaf is a range
// scan of the key's index, so keys must be Indexable. Its parameters are appended to args.
func OrderedLeavesSQL(h RowHash, keys KeyOrder, table string, r Range, bounds [][]string, step *IntStep, filter string, maxRows int64, args *[]any) string {
	leafRange := func(i int) Range {
		out := Range{Lo: r.Lo, Hi: r.Hi}
		if i > 0 {
			out.Lo = bounds[i-1]
		}
		if i < len(bounds) {
			out.Hi = bounds[i]
		}
		return out
	}
	leaf := func(n int, where string) string {
		return fmt.Sprintf(`SELECT %d::int8, "?ace_x?".* FROM (%s) "?ace_x?"`, n,
			LeafDigestSQL(h, table, where+" AND "+filter, keys.OrderBy(), maxRows))
	}
	n := len(bounds)
	parts := []string{leaf(0, keys.Where(leafRange(0), args))}
	if n == 0 {
		return parts[0]
	}
	if n >= 2 {
		var from, where string
		if step != nil {
			k := Ident(keys.Columns()[0].Name)
			first := len(*args) + 1
			*args = append(*args, int64(n-1), step.Lo, step.W)
			from = fmt.Sprintf(`generate_series(1::int8, $%d::int8) AS "?ace_l?"("?ace_k?")`, first)
			where = fmt.Sprintf(`%[1]s >= $%[2]d::int8 + "?ace_l?"."?ace_k?" * $%[3]d::int8 AND %[1]s < $%[2]d::int8 + ("?ace_l?"."?ace_k?" + 1) * $%[3]d::int8`,
				k, first+1, first+2)
		} else {
			from, where = keys.LeafBounds(len(*args) + 1)
			*args = AppendKeyArrays(*args, bounds, keys.Len())
		}
		parts = append(parts, fmt.Sprintf(`SELECT "?ace_l?"."?ace_k?"::int8, "?ace_x?".* FROM %s, LATERAL (%s) "?ace_x?"`,
			from, LeafDigestSQL(h, table, where+" AND "+filter, keys.OrderBy(), maxRows)))
	}
	parts = append(parts, leaf(n, keys.Where(leafRange(n), args)))
	return strings.Join(parts, "\nUNION ALL\n")
}

// KeyCorrelationExpr is an expression for pg_stats' correlation of column col of table (schema,
// name) with the table's physical order: near 1 when the rows are stored in the column's order,
// so a range of keys is read from few pages. NULL when the table was never analysed (or is
// partitioned, whose parent's statistics describe no one heap).
func KeyCorrelationExpr(schema, name, col string) string {
	return `(SELECT s.correlation::float8 FROM pg_stats s WHERE s.schemaname = ` + QuoteLiteral(schema) +
		` AND s.tablename = ` + QuoteLiteral(name) + ` AND s.attname = ` + QuoteLiteral(col) + ` AND NOT s.inherited)`
}

// RowEstimateExpr is an expression for the planner's estimate of the rows of table (a
// qualified name), partitions included: the sum over its partition tree, or, for a table that is
// not partitioned (whose partition tree PostgreSQL reports as empty), its own. A table never
// analysed counts 0. It is an expression so that a query can read it with other facts at once.
func RowEstimateExpr(table string) string {
	rel := QuoteLiteral(table) + "::regclass"
	return `coalesce(
		(SELECT sum(greatest(c.reltuples, 0)) FROM pg_partition_tree(` + rel + `) p JOIN pg_class c ON c.oid = p.relid),
		(SELECT greatest(c.reltuples, 0) FROM pg_class c WHERE c.oid = ` + rel + `), 0)::float8`
}

// String renders a range for error messages.
func (r Range) String() string {
	lo, hi := "-inf", "+inf"
	if r.Lo != nil {
		lo = "(" + strings.Join(r.Lo, ", ") + ")"
	}
	if r.Hi != nil {
		hi = "(" + strings.Join(r.Hi, ", ") + ")"
	}
	return "[" + lo + ", " + hi + ")"
}
