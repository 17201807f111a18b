package engine

import (
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// HashVersion names the row-hash scheme. It changes whenever the encoding of a row's hash
// input changes, so hashes of different versions are never compared.
const HashVersion = 1

// HashMode chooses how a row is turned into its hash.
type HashMode string

const (
	// HashTyped hashes typed values with PostgreSQL's extended hash functions, falling back to
	// text only for types without one. It needs the same major version on every node.
	HashTyped HashMode = "typed"
	// HashText hashes each column's canonical text; it works across major versions.
	HashText HashMode = "text"
)

// typedHashable are base types whose extended hash function agrees with their equality and does
// not depend on anything that differs between nodes. Enums are absent on purpose: their hash is
// of the label's OID, which differs between databases. Collatable types are absent too: they
// are hashed as bytes below, so a non-deterministic collation cannot hide a difference.
var typedHashable = map[string]bool{
	"int2": true, "int4": true, "int8": true, "oid": true, "bool": true, "char": true,
	"float4": true, "float8": true, "numeric": true,
	"date": true, "timestamp": true, "timestamptz": true, "time": true, "timetz": true,
	"uuid": true, "bytea": true, "jsonb": true, "inet": true, "cidr": true, "macaddr": true, "macaddr8": true,
}

// textHashed are string types: hashed as their bytes, with the binary collation.
var textHashed = map[string]bool{"text": true, "varchar": true, "bpchar": true, "name": true}

func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

// columnHashInput is the expression that column c contributes to the row's hash record.
func columnHashInput(c Column, mode HashMode) string {
	col := ident(c.Name)
	if mode == HashTyped {
		switch {
		case typedHashable[c.BaseType]:
			return col + "::" + c.BaseType
		case c.Category == "A" && typedHashable[c.ElemType]:
			return col + "::" + c.ElemType + "[]"
		case textHashed[c.BaseType]:
			return fmt.Sprintf(`hashtextextended(%s::text COLLATE "C", 0)`, col)
		}
		return fmt.Sprintf(`hashtextextended(%s::text COLLATE "C", 0)`, col)
	}
	if c.BaseType == "numeric" {
		// Scale is not part of a numeric's value: 3000.00 = 3000.0.
		return fmt.Sprintf(`hashtextextended(trim_scale(%s)::text, 0)`, col)
	}
	return fmt.Sprintf(`hashtextextended(%s::text COLLATE "C", 0)`, col)
}

// rowHashExpr is a bigint hash of the whole row. Each column's hash input sits in its own
// record field, so NULL (hashed as 0) differs from ” and no separator can be forged by a value.
func rowHashExpr(t *Table, mode HashMode) string {
	parts := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		parts[i] = columnHashInput(c, mode)
	}
	return "hash_record_extended(ROW(" + strings.Join(parts, ", ") + "), " + fmt.Sprint(HashVersion) + ")"
}

// jsonValue renders a column for reports: JSON numbers and booleans where exact, and
// PostgreSQL's own text form (which round-trips) for everything else.
func jsonValue(c Column) string {
	col := ident(c.Name)
	switch c.BaseType {
	case "int2", "int4", "int8", "oid", "float4", "float8", "bool":
		return "to_jsonb(" + col + ")"
	}
	return "to_jsonb(" + col + "::text)"
}

// jsonObjectExpr builds a jsonb object of the given columns. jsonb_build_object takes at most
// 100 arguments, so wide tables are built in chunks.
func jsonObjectExpr(cols []Column) string {
	const perChunk = 50
	var chunks []string
	for start := 0; start < len(cols); start += perChunk {
		end := min(start+perChunk, len(cols))
		var args []string
		for _, c := range cols[start:end] {
			args = append(args, quoteLiteral(c.Name), jsonValue(c))
		}
		chunks = append(chunks, "jsonb_build_object("+strings.Join(args, ", ")+")")
	}
	if len(chunks) == 0 {
		return "'{}'::jsonb"
	}
	return strings.Join(chunks, " || ")
}

// jsonArrayExpr builds a jsonb array of the given columns' values, in order.
func jsonArrayExpr(cols []Column) string {
	vals := make([]string, len(cols))
	for i, c := range cols {
		vals[i] = jsonValue(c)
	}
	return "jsonb_build_array(" + strings.Join(vals, ", ") + ")"
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// keyOrder describes how primary keys are compared on every node: the same order everywhere, or
// the ranges would not be the same ranges.
type keyOrder struct {
	cols    []Column
	collate []string // per key column: ` COLLATE "C"` or ""
}

// newKeyOrder uses each key column's own collation when every node has the same deterministic
// one (so indexes serve range scans), and the binary collation otherwise.
func newKeyOrder(tables []*Table) keyOrder {
	k := keyOrder{cols: tables[0].PK, collate: make([]string, len(tables[0].PK))}
	for i, c := range tables[0].PK {
		if c.Collate == "" {
			continue
		}
		same := strings.Contains(c.Collate, "/true/")
		for _, t := range tables[1:] {
			same = same && t.PK[i].Collate == c.Collate
		}
		if !same {
			k.collate[i] = ` COLLATE "C"`
		}
	}
	return k
}

// keyExpr is the key as one comparable value: the column, or a ROW of the columns.
func (k keyOrder) keyExpr() string {
	if len(k.cols) == 1 {
		return ident(k.cols[0].Name) + k.collate[0]
	}
	parts := make([]string, len(k.cols))
	for i, c := range k.cols {
		parts[i] = ident(c.Name) + k.collate[i]
	}
	return "ROW(" + strings.Join(parts, ", ") + ")"
}

// paramKey is a key given as text parameters starting at $n, cast to the key's types.
func (k keyOrder) paramKey(n int) string {
	parts := make([]string, len(k.cols))
	for i, c := range k.cols {
		parts[i] = fmt.Sprintf("$%d::text::%s%s", n+i, c.Type, k.collate[i])
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return "ROW(" + strings.Join(parts, ", ") + ")"
}

// paramKeyArray is an array of keys given as one text[] parameter per key column from $n.
func (k keyOrder) paramKeyArray(n int) string {
	if len(k.cols) == 1 {
		c := k.cols[0]
		return fmt.Sprintf("$%d::text[]::%s[]", n, c.Type)
	}
	var arrays, fields []string
	for i, c := range k.cols {
		arrays = append(arrays, fmt.Sprintf("$%d::text[]::%s[]", n+i, c.Type))
		fields = append(fields, fmt.Sprintf("u.k%d%s", i, k.collate[i]))
	}
	names := make([]string, len(k.cols))
	for i := range names {
		names[i] = fmt.Sprintf("k%d", i)
	}
	return fmt.Sprintf("ARRAY(SELECT ROW(%s) FROM unnest(%s) AS u(%s))",
		strings.Join(fields, ", "), strings.Join(arrays, ", "), strings.Join(names, ", "))
}

// keyText selects the key columns as text, the form keys travel in between nodes.
func (k keyOrder) keyText() string {
	parts := make([]string, len(k.cols))
	for i, c := range k.cols {
		parts[i] = ident(c.Name) + "::text"
	}
	return strings.Join(parts, ", ")
}

// orderBy is an ORDER BY list for the key.
func (k keyOrder) orderBy() string {
	parts := make([]string, len(k.cols))
	for i, c := range k.cols {
		parts[i] = ident(c.Name) + k.collate[i]
	}
	return strings.Join(parts, ", ")
}

// Range is a half-open key range [Lo, Hi). A nil bound is open: the first range has no lower
// bound and the last no upper bound, so rows outside any one node's key span are still seen.
type Range struct {
	Lo, Hi []string // key column values as text
}

// where renders the range as a predicate, appending its parameters to args.
func (k keyOrder) where(r Range, args *[]any) string {
	var conds []string
	if r.Lo != nil {
		conds = append(conds, k.keyExpr()+" >= "+k.paramKey(len(*args)+1))
		*args = appendKey(*args, r.Lo)
	}
	if r.Hi != nil {
		conds = append(conds, k.keyExpr()+" < "+k.paramKey(len(*args)+1))
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

// appendKeyArrays appends one text[] per key column holding the keys' values.
func appendKeyArrays(args []any, keys [][]string, ncols int) []any {
	for i := 0; i < ncols; i++ {
		col := make([]string, len(keys))
		for j, k := range keys {
			col[j] = k[i]
		}
		args = append(args, col)
	}
	return args
}

// matchKeys is a predicate selecting exactly the given keys, with its parameters ($1 on).
func (k keyOrder) matchKeys(keys [][]string) (string, []any) {
	args := appendKeyArrays(nil, keys, len(k.cols))
	if len(k.cols) == 1 {
		return k.keyExpr() + " = ANY(" + k.paramKeyArray(1) + ")", args
	}
	arrays := make([]string, len(k.cols))
	for j, c := range k.cols {
		arrays[j] = fmt.Sprintf("$%d::text[]::%s[]", j+1, c.Type)
	}
	return "(" + k.orderBy() + ") IN (SELECT * FROM unnest(" + strings.Join(arrays, ", ") + "))", args
}
