package schemadiff

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Finding is one thing that differs between the nodes: kind "missing" (absent on some node) or
// "different" (defined differently), with its definition on each node (nil where absent).
type Finding struct {
	ObjectType  string             `json:"object_type"`
	ObjectName  string             `json:"object_name"`
	Detail      string             `json:"detail"`
	Kind        string             `json:"kind"`
	Definitions map[string]*string `json:"definitions"`
}

// The kinds of a finding.
const (
	Missing   = "missing"
	Different = "different"
)

// Options say how strictly tables are compared.
type Options struct {
	// IgnoreNames matches constraints and indexes by definition, so a renamed one is no
	// difference.
	IgnoreNames bool
}

// Structure compares the definition of every table on the nodes (in the order given): a table
// missing on some node is one finding; a table on two or more nodes is compared part by part on
// those.
func Structure(schema string, nodes []string, catalogs map[string]Catalog, o Options) []Finding {
	var out []Finding
	seenTypes := map[string]bool{}
	for _, name := range TableNames(nodes, catalogs) {
		out = append(out, table(schema, name, nodes, catalogs, o, seenTypes)...)
	}
	return out
}

// CompareTable compares one table of the schema, as Structure does.
func CompareTable(schema, name string, nodes []string, catalogs map[string]Catalog, o Options) []Finding {
	return table(schema, name, nodes, catalogs, o, map[string]bool{})
}

func table(schema, name string, nodes []string, catalogs map[string]Catalog, o Options, seenTypes map[string]bool) []Finding {
	var out []Finding
	defs := map[string]*Table{}
	for _, n := range nodes {
		if t, ok := catalogs[n].Tables[name]; ok {
			defs[n] = &t
		}
	}
	qualified := Qualify(schema, name)
	if len(defs) < len(nodes) {
		out = append(out, Finding{ObjectType: "table", ObjectName: qualified, Kind: Missing,
			Definitions: perNode(nodes, func(n string) (string, bool) { return "TABLE " + qualified, defs[n] != nil })})
	}
	if len(defs) >= 2 {
		out = append(out, compareTable(qualified, present(nodes, defs), defs, o, seenTypes)...)
	}
	return out
}

// DataBlockers are the findings that stop a table's rows from being compared: its columns or
// its key differ between the nodes.
func DataBlockers(findings []Finding) []Finding {
	var out []Finding
	for _, f := range findings {
		if (f.ObjectType == "column" && slices.Contains([]string{"", "type"}, f.Detail)) || f.Detail == "primary key" {
			out = append(out, f)
		}
	}
	return out
}

// Describe is a finding in one line, for a failed table's reason.
func (f Finding) Describe() string {
	var parts []string
	for _, n := range slices.Sorted(maps.Keys(f.Definitions)) {
		d := "(missing)"
		if v := f.Definitions[n]; v != nil {
			d = *v
		}
		parts = append(parts, n+": "+d)
	}
	what := strings.TrimSpace(f.ObjectType + " " + f.ObjectName + " " + f.Detail)
	return fmt.Sprintf("%s %s (%s)", what, f.Kind, strings.Join(parts, "; "))
}

// compareTable compares one table on the nodes that have it.
func compareTable(table string, nodes []string, defs map[string]*Table, o Options, seenTypes map[string]bool) []Finding {
	var out []Finding
	out = append(out, compareColumns(table, nodes, defs)...)
	scalar := func(detail string, get func(*Table) *string) {
		out = append(out, compareValues("table", table, detail, nodes, func(n string) (string, bool) {
			if v := get(defs[n]); v != nil {
				return *v, true
			}
			return "", false
		})...)
	}
	scalar("primary key", func(t *Table) *string { return joined(t.Key) })
	scalar("row security", func(t *Table) *string { return t.RowSecurity })
	scalar("replica identity", func(t *Table) *string { return t.ReplicaIdentity })
	scalar("partition key", func(t *Table) *string { return t.PartitionKey })
	scalar("partition of", func(t *Table) *string { return t.PartitionOf })
	scalar("partition bound", func(t *Table) *string { return t.PartitionBound })
	scalar("owner", func(t *Table) *string { return t.Owner })
	scalar("privileges", func(t *Table) *string { return t.ACL })
	out = append(out, compareNamed("constraint", table, nodes, func(n string) map[string]string {
		return defs[n].Constraints
	}, o.IgnoreNames)...)
	out = append(out, compareIndexes(table, nodes, defs, o.IgnoreNames)...)
	out = append(out, compareNamed("trigger", table, nodes, func(n string) map[string]string { return defs[n].Triggers }, false)...)
	out = append(out, compareNamed("policy", table, nodes, func(n string) map[string]string { return defs[n].Policies }, false)...)
	out = append(out, compareColumnTypes(nodes, defs, seenTypes)...)
	return out
}

// compareColumns matches columns by name, so column order does not matter.
func compareColumns(table string, nodes []string, defs map[string]*Table) []Finding {
	var out []Finding
	names := map[string]bool{}
	for _, n := range nodes {
		for c := range defs[n].Columns {
			names[c] = true
		}
	}
	for _, col := range slices.Sorted(maps.Keys(names)) {
		object := table + "." + quoteIdent(col)
		get := func(n string) (Column, bool) { c, ok := defs[n].Columns[col]; return c, ok }
		if slices.ContainsFunc(nodes, func(n string) bool { _, ok := get(n); return !ok }) {
			out = append(out, Finding{ObjectType: "column", ObjectName: object, Kind: Missing,
				Definitions: perNode(nodes, func(n string) (string, bool) { c, ok := get(n); return c.render(), ok })})
			continue
		}
		attr := func(detail string, value func(Column) *string) {
			out = append(out, compareValues("column", object, detail, nodes, func(n string) (string, bool) {
				c, _ := get(n)
				if v := value(c); v != nil {
					return *v, true
				}
				return "", false
			})...)
		}
		attr("type", func(c Column) *string { return &c.Type })
		attr("not null", func(c Column) *string { s := fmt.Sprint(c.NotNull); return &s })
		attr("default", func(c Column) *string { return c.Default })
		attr("collation", func(c Column) *string { return c.Collation })
		attr("identity", func(c Column) *string { return c.Identity })
		attr("generated", func(c Column) *string { return c.Generated })
	}
	return out
}

// compareIndexes matches indexes by name, or with ignoreNames by their definition without it.
func compareIndexes(table string, nodes []string, defs map[string]*Table, ignoreNames bool) []Finding {
	return compareNamed("index", table, nodes, func(n string) map[string]string {
		m := map[string]string{}
		for name, ix := range defs[n].Indexes {
			if ignoreNames {
				m[name] = ix.Unnamed
			} else {
				m[name] = ix.Def
			}
		}
		return m
	}, ignoreNames)
}

// compareNamed compares a table's objects of one type given as name → definition per node:
// matched by name, or with byDefinition by their definitions (then only missing ones differ).
func compareNamed(objectType, table string, nodes []string, named func(string) map[string]string, byDefinition bool) []Finding {
	keyed := map[string]map[string]string{} // node → key → definition
	label := map[string]string{}            // key → the object's name on the first node that has it
	for _, n := range nodes {
		keyed[n] = map[string]string{}
		for _, name := range slices.Sorted(maps.Keys(named(n))) {
			def := named(n)[name]
			key := name
			if byDefinition {
				key = def
			}
			keyed[n][key] = def
			if _, ok := label[key]; !ok {
				label[key] = name
			}
		}
	}
	var out []Finding
	for _, key := range slices.SortedFunc(maps.Keys(label), func(a, b string) int { return strings.Compare(label[a], label[b]) }) {
		object := table + "." + quoteIdent(label[key])
		out = append(out, compareValues(objectType, object, "", nodes, func(n string) (string, bool) {
			d, ok := keyed[n][key]
			return d, ok
		})...)
	}
	return out
}

// compareColumnTypes compares the enum and domain types the columns use, each type once.
func compareColumnTypes(nodes []string, defs map[string]*Table, seen map[string]bool) []Finding {
	names := map[string]bool{}
	for _, n := range nodes {
		for t := range defs[n].ColumnTypes {
			names[t] = true
		}
	}
	var out []Finding
	for _, typ := range slices.Sorted(maps.Keys(names)) {
		if seen[typ] {
			continue
		}
		seen[typ] = true
		out = append(out, compareValues("type", typ, "", nodes, func(n string) (string, bool) {
			d, ok := defs[n].ColumnTypes[typ]
			return d, ok
		})...)
	}
	return out
}

// compareValues is the one comparison of a thing's definition across nodes: nothing when every
// node has the same (or none has it), "missing" when some lack it, else "different".
func compareValues(objectType, object, detail string, nodes []string, get func(string) (string, bool)) []Finding {
	var first string
	var have, differ int
	for _, n := range nodes {
		v, ok := get(n)
		if !ok {
			continue
		}
		if have == 0 {
			first = v
		} else if v != first {
			differ++
		}
		have++
	}
	if have == 0 || (have == len(nodes) && differ == 0) {
		return nil
	}
	kind := Different
	if have < len(nodes) {
		kind = Missing
	}
	return []Finding{{ObjectType: objectType, ObjectName: object, Detail: detail, Kind: kind, Definitions: perNode(nodes, get)}}
}

// perNode maps each node to its definition, or nil where it has none.
func perNode(nodes []string, get func(string) (string, bool)) map[string]*string {
	m := make(map[string]*string, len(nodes))
	for _, n := range nodes {
		if v, ok := get(n); ok {
			m[n] = &v
		} else {
			m[n] = nil
		}
	}
	return m
}

// TableNames lists the tables of every node's catalog, sorted.
func TableNames(nodes []string, catalogs map[string]Catalog) []string {
	names := map[string]bool{}
	for _, n := range nodes {
		for t := range catalogs[n].Tables {
			names[t] = true
		}
	}
	return slices.Sorted(maps.Keys(names))
}

func present(nodes []string, defs map[string]*Table) []string {
	return slices.DeleteFunc(slices.Clone(nodes), func(n string) bool { return defs[n] == nil })
}

func (c Column) render() string {
	parts := []string{c.Type}
	for _, p := range []*string{c.Collation, c.Identity, c.Generated} {
		if p != nil {
			parts = append(parts, *p)
		}
	}
	if c.NotNull {
		parts = append(parts, "NOT NULL")
	}
	if c.Default != nil {
		parts = append(parts, "DEFAULT "+*c.Default)
	}
	return strings.Join(parts, " ")
}

func joined(names []string) *string {
	if len(names) == 0 {
		return nil
	}
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = quoteIdent(n)
	}
	s := strings.Join(quoted, ", ")
	return &s
}

// Qualify is a table's name as the results show it: schema.table, quoted where needed.
func Qualify(schema, name string) string { return quoteIdent(schema) + "." + quoteIdent(name) }

// quoteIdent quotes a name as PostgreSQL's quote_ident does for the common case: only when it
// is not a plain lower-case identifier.
func quoteIdent(s string) string {
	plain := s != ""
	for i, r := range s {
		if !(r == '_' || (r >= 'a' && r <= 'z') || (i > 0 && r >= '0' && r <= '9')) {
			plain = false
			break
		}
	}
	if plain {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}
