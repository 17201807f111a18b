package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/sourcegraph/conc/pool"

	"github.com/jackc/pgx/v5"
)

// Column is one column of the compared table as a node describes it.
type Column struct {
	Name     string
	Type     string // format_type, e.g. numeric(12,2)
	BaseType string // the type behind domains, schema-qualified when not in pg_catalog
	Category string // pg_type.typcategory of the base type (A = array, E = enum, S = string, …)
	ElemType string // element base type of an array, else ""
	Collate  string // identifies the column's collation, its version and whether it is deterministic; "" when not collatable
	PKPos    int    // 1-based position in the primary key, 0 when not part of it
	TypeOID  uint32
	typ      *typeInfo
}

// Table is the compared table's shape. It must be identical on every node.
type Table struct {
	Schema, Name string
	Columns      []Column
	PK           []Column // primary key columns in key order
	ServerMajor  int
	CommitTS     bool // track_commit_timestamp is on
	// EstimatedRows is the planner's estimate of the table's rows when it was read (reltuples:
	// negative when never analysed, and for a partitioned table), for planning only.
	EstimatedRows float64
}

// Qualified returns the quoted schema-qualified name.
func (t *Table) Qualified() string { return pgx.Identifier{t.Schema, t.Name}.Sanitize() }

// Display returns schema.table as a user wrote it.
func (t *Table) Display() string { return t.Schema + "." + t.Name }

// ColumnNames lists the columns in ordinal order.
func (t *Table) ColumnNames() []string {
	names := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		names[i] = c.Name
	}
	return names
}

// ColumnTypes lists the columns' types in ordinal order.
func (t *Table) ColumnTypes() []string {
	types := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		types[i] = c.Type
	}
	return types
}

// PKNames lists the primary key columns in key order.
func (t *Table) PKNames() []string {
	names := make([]string, len(t.PK))
	for i, c := range t.PK {
		names[i] = c.Name
	}
	return names
}

// errNoTable means the table is missing on a node.
var errNoTable = errors.New("table does not exist")

// SplitTableName splits "schema.table" (either part may be double-quoted) into its parts.
// A name without a schema is taken to be in public.
func SplitTableName(name string) (schema, table string, err error) {
	parts, err := splitIdent(name)
	if err != nil {
		return "", "", fmt.Errorf("table name %q: %w", name, err)
	}
	switch len(parts) {
	case 1:
		return "public", parts[0], nil
	case 2:
		return parts[0], parts[1], nil
	}
	return "", "", fmt.Errorf("table name %q: want schema.table", name)
}

func splitIdent(s string) ([]string, error) {
	var parts []string
	var cur strings.Builder
	quoted, wasQuoted := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quoted && c == '"' && i+1 < len(s) && s[i+1] == '"':
			cur.WriteByte('"')
			i++
		case c == '"':
			quoted = !quoted
			wasQuoted = true
		case !quoted && c == '.':
			parts = append(parts, finishIdent(cur.String(), wasQuoted))
			cur.Reset()
			wasQuoted = false
		default:
			cur.WriteByte(c)
		}
	}
	if quoted {
		return nil, errors.New("unterminated quoted identifier")
	}
	parts = append(parts, finishIdent(cur.String(), wasQuoted))
	for _, p := range parts {
		if p == "" {
			return nil, errors.New("empty identifier")
		}
	}
	return parts, nil
}

// finishIdent folds an unquoted identifier to lower case, as PostgreSQL does.
func finishIdent(s string, quoted bool) string {
	if quoted {
		return s
	}
	return strings.ToLower(strings.TrimSpace(s))
}

// LoadTable reads the table's shape from one node, in one query: the table's row (none when the
// node has no such table) joined to its columns.
func LoadTable(ctx context.Context, n *Node, schema, name string) (*Table, error) {
	t := &Table{Schema: schema, Name: name}
	rows, err := n.Pool.Query(ctx, `
		SELECT r.major, r.commit_ts, r.estimate, a.attname, format_type(a.atttypid, a.atttypmod),
		       CASE WHEN bs.nspname = 'pg_catalog' THEN bt.typname ELSE format('%I.%I', bs.nspname, bt.typname) END,
		       bt.typcategory,
		       coalesce((SELECT CASE WHEN es.nspname = 'pg_catalog' THEN e.typname ELSE format('%I.%I', es.nspname, e.typname) END
		                 FROM pg_type e JOIN pg_namespace es ON es.oid = e.typnamespace WHERE e.oid = bt.typelem AND bt.typcategory = 'A'), ''),
		       CASE WHEN a.attcollation = 0 THEN ''
		            ELSE coalesce((SELECT format('%s/%s/%s/%s/%s', co.collname, co.collprovider, CASE WHEN co.collisdeterministic THEN 'deterministic' ELSE 'nondeterministic' END,
		                                         CASE WHEN co.collname = 'default' THEN d.datcollate ELSE coalesce(co.collcollate, '') END,
		                                         CASE WHEN co.collname = 'default' THEN pg_database_collation_actual_version(d.oid)
		                                              ELSE pg_collation_actual_version(co.oid) END)
		                           FROM pg_collation co, pg_database d WHERE co.oid = a.attcollation AND d.datname = current_database()), '') END,
		       coalesce(array_position(i.indkey::int2[], a.attnum) + 1, 0), a.atttypid
		FROM (SELECT c.oid, current_setting('server_version_num')::int / 10000 AS major,
		             current_setting('track_commit_timestamp') = 'on' AS commit_ts,
		             CASE WHEN c.relkind = 'r' THEN c.reltuples ELSE -1 END::float8 AS estimate
		      FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
		      WHERE s.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')) r
		JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
		JOIN LATERAL (SELECT CASE WHEN t0.typtype = 'd' THEN t0.typbasetype ELSE t0.oid END AS oid FROM pg_type t0 WHERE t0.oid = a.atttypid) b ON true
		JOIN pg_type bt ON bt.oid = b.oid
		JOIN pg_namespace bs ON bs.oid = bt.typnamespace
		LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
		ORDER BY a.attnum`, schema, name)
	if err != nil {
		return nil, fmt.Errorf("read columns of %s on node %s: %w", t.Display(), n.Name, err)
	}
	cols, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Column, error) {
		var c Column
		err := r.Scan(&t.ServerMajor, &t.CommitTS, &t.EstimatedRows,
			&c.Name, &c.Type, &c.BaseType, &c.Category, &c.ElemType, &c.Collate, &c.PKPos, &c.TypeOID)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("read columns of %s on node %s: %w", t.Display(), n.Name, err)
	}
	if len(cols) == 0 {
		// A table has columns, or at least none a diff could compare.
		return nil, fmt.Errorf("%w: %s on node %s", errNoTable, t.Display(), n.Name)
	}
	loader := typeLoader{q: n.Pool, seen: map[uint32]*typeInfo{}}
	for i := range cols {
		if cols[i].typ, err = loader.load(ctx, cols[i].TypeOID, 0); err != nil {
			return nil, fmt.Errorf("read column %q of %s on node %s: %w", cols[i].Name, t.Display(), n.Name, err)
		}
	}
	t.Columns = cols
	t.PK = pkColumns(cols)
	if len(t.PK) == 0 {
		return nil, fmt.Errorf("table %s has no primary key on node %s", t.Display(), n.Name)
	}
	return t, nil
}

func pkColumns(cols []Column) []Column {
	var pk []Column
	for pos := 1; ; pos++ {
		found := false
		for _, c := range cols {
			if c.PKPos == pos {
				pk = append(pk, c)
				found = true
			}
		}
		if !found {
			return pk
		}
	}
}

// SameShape returns an error naming the first difference between two nodes' views of the
// table: column names, order, types or primary key.
func SameShape(a, b *Table, nameA, nameB string) error {
	mismatch := func(format string, args ...any) error {
		return fmt.Errorf("table %s differs between nodes %s and %s: %s", a.Display(), nameA, nameB, fmt.Sprintf(format, args...))
	}
	if len(a.Columns) != len(b.Columns) {
		return mismatch("%d columns (%s) vs %d columns (%s)", len(a.Columns), strings.Join(a.ColumnNames(), ", "),
			len(b.Columns), strings.Join(b.ColumnNames(), ", "))
	}
	for i := range a.Columns {
		ca, cb := a.Columns[i], b.Columns[i]
		if ca.Name != cb.Name {
			return mismatch("column %d is %q on %s but %q on %s", i+1, ca.Name, nameA, cb.Name, nameB)
		}
		if ca.Type != cb.Type {
			return mismatch("column %q is %s on %s but %s on %s", ca.Name, ca.Type, nameA, cb.Type, nameB)
		}
	}
	if strings.Join(a.PKNames(), ",") != strings.Join(b.PKNames(), ",") {
		return mismatch("primary key (%s) on %s but (%s) on %s", strings.Join(a.PKNames(), ", "), nameA,
			strings.Join(b.PKNames(), ", "), nameB)
	}
	return nil
}

// Project keeps only the key and the named columns, in the table's order, so that a diff
// compares, hashes and stores only them. Names the table lacks are an error naming them all.
func (t *Table) Project(names []string, node string) error {
	var unknown []string
	for _, n := range names {
		if !slices.ContainsFunc(t.Columns, func(c Column) bool { return c.Name == n }) {
			unknown = append(unknown, strconv.Quote(n))
		}
	}
	if len(unknown) > 0 {
		return fmt.Errorf("table %s has no column %s on node %s (its columns: %s)", t.Display(), strings.Join(unknown, ", "),
			node, strings.Join(t.ColumnNames(), ", "))
	}
	t.Columns = slices.DeleteFunc(t.Columns, func(c Column) bool { return c.PKPos == 0 && !slices.Contains(names, c.Name) })
	return nil
}

// LoadTables reads the table's shape from every node at once and checks that they agree: all
// columns, or (columns set) the key and those columns, which the tables are projected to. The
// hash mode is binary when every node runs the same major version, else text.
func LoadTables(ctx context.Context, nodes []*Node, table string, columns []string) ([]*Table, HashMode, error) {
	schema, name, err := SplitTableName(table)
	if err != nil {
		return nil, "", err
	}
	tables := make([]*Table, len(nodes))
	p := pool.New().WithErrors().WithContext(ctx)
	for i, n := range nodes {
		p.Go(func(ctx context.Context) error {
			t, err := LoadTable(ctx, n, schema, name)
			if err == nil && columns != nil {
				err = t.Project(columns, n.Name)
			}
			tables[i] = t
			return err
		})
	}
	if err := p.Wait(); err != nil {
		return nil, "", err
	}
	mode := HashBinary
	for i := 1; i < len(tables); i++ {
		if err := SameShape(tables[0], tables[i], nodes[0].Name, nodes[i].Name); err != nil {
			return nil, "", err
		}
		if tables[i].ServerMajor != tables[0].ServerMajor {
			// Binary send forms and built-in type OIDs are only relied on within a major version.
			mode = HashText
		}
	}
	return tables, mode, nil
}
