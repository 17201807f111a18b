package agent

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/ace-agent/ace-agent/engine/spockdiff"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// repsetDiffResult is a repset-diff's result: schema-diff's table lists, the provider each node
// named the set by, and per table the set's row filter and the filter its child diffed with.
type repsetDiffResult struct {
	Repset      string                 `json:"repset"`
	Nodes       []string               `json:"nodes"`
	Providers   map[string]string      `json:"providers"`
	TablesTotal int                    `json:"tables_total"`
	Tables      map[string]repsetTable `json:"tables"`
	*TableLists
}

// repsetTable is what a member table was diffed with: the set's row filter ("" for every row),
// the table_filter its child table-diff got, and the set's column list, which the child compared
// (with the key) when there is one.
type repsetTable struct {
	RowFilter   string   `json:"row_filter"`
	TableFilter string   `json:"table_filter,omitempty"`
	Columns     []string `json:"columns,omitempty"`
}

// repsetDiff diffs every table of a replication set, as each node's catalog reads it (in the
// submitter's sessions): one child table-diff per table on every node, restricted to the rows
// the set replicates.
func (a *Agent) repsetDiff(ctx context.Context, run *sqlapi.Run, args *sqlapi.RepsetDiffArgs) (any, error) {
	if err := run.ResetResults(ctx); err != nil {
		return nil, err
	}
	nodes, err := a.openNodes(ctx, run, args.Nodes, 1)
	if err != nil {
		return nil, err
	}
	defer closeNodes(nodes)
	res := repsetDiffResult{Repset: args.Repset, Nodes: args.Nodes, Providers: map[string]string{}, Tables: map[string]repsetTable{}}
	members := map[string]map[string]spockdiff.Member{} // node → table → membership
	for _, n := range nodes {
		list, provider, found, err := spockdiff.SetMembers(ctx, n.Pool, args.Provider, args.Repset)
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", n.Name, err)
		}
		members[n.Name] = map[string]spockdiff.Member{}
		if !found {
			continue
		}
		res.Providers[n.Name] = provider
		for _, m := range list {
			// The agent's own schema differs per node by design (a FOR ALL TABLES publication
			// holds it; doctor warns about that): it is not the user's data.
			if !skipped(m.Table, args.SkipTables) && !strings.HasPrefix(m.Table, "ace.") {
				members[n.Name][m.Table] = m
			}
		}
	}
	if len(res.Providers) == 0 {
		return nil, fmt.Errorf("replication set %q was found on no node of %s: looked in %s; check its name (SELECT set_name FROM spock.replication_set, or pubname FROM pg_publication)",
			args.Repset, strings.Join(args.Nodes, ", "), spockdiff.SetPlaces)
	}
	return a.repsetDiffTables(ctx, run, args, members, res)
}

// repsetDiffTables places the tables not on every node's set as missing, those whose row filter
// or column list differs as failed, and runs a child table-diff for each of the others.
func (a *Agent) repsetDiffTables(ctx context.Context, run *sqlapi.Run, args *sqlapi.RepsetDiffArgs,
	members map[string]map[string]spockdiff.Member, res repsetDiffResult) (any, error) {
	lists := &TableLists{Identical: []string{}, Differed: []differedTable{}, Missing: []missingTable{},
		Failed: []failedTable{}, Skipped: slices.Clone(args.SkipTables)}
	if lists.Skipped == nil {
		lists.Skipped = []string{}
	}
	names := map[string]bool{}
	for _, m := range members {
		for t := range m {
			names[t] = true
		}
	}
	var children []sqlapi.Child
	for _, table := range slices.Sorted(maps.Keys(names)) {
		var present, absent []string
		filters, columns := map[string]string{}, map[string][]string{}
		for _, n := range args.Nodes {
			if m, ok := members[n][table]; ok {
				present, filters[n], columns[n] = append(present, n), m.RowFilter, m.Columns
			} else {
				absent = append(absent, n)
			}
		}
		if len(absent) > 0 {
			lists.Missing = append(lists.Missing, missingTable{Table: table, PresentOn: present, MissingFrom: absent})
			continue
		}
		rowFilter := filters[args.Nodes[0]]
		if slices.ContainsFunc(args.Nodes, func(n string) bool { return filters[n] != rowFilter }) {
			lists.Failed = append(lists.Failed, failedTable{Table: table, Error: differentFilters(args.Nodes, filters)})
			res.Tables[table] = repsetTable{RowFilter: rowFilter}
			continue
		}
		cols := columns[args.Nodes[0]]
		if slices.ContainsFunc(args.Nodes, func(n string) bool { return !slices.Equal(columns[n], cols) || (columns[n] == nil) != (cols == nil) }) {
			lists.Failed = append(lists.Failed, failedTable{Table: table, Error: differentColumns(args.Nodes, columns)})
			res.Tables[table] = repsetTable{RowFilter: rowFilter, Columns: cols}
			continue
		}
		child := args.ChildDiffArgs
		child.TableFilter = andFilters(args.TableFilter, rowFilter)
		res.Tables[table] = repsetTable{RowFilter: rowFilter, TableFilter: child.TableFilter, Columns: cols}
		c := child.TableDiff(table, args.Nodes)
		if cols != nil {
			c.Args["columns"] = cols // the key is compared as well: table-diff always compares it
		}
		children = append(children, c)
	}
	res.TablesTotal, res.TableLists = len(names), lists
	outcomes, err := a.runChildren(ctx, run, args.ChildDiffArgs, children)
	if err != nil {
		return nil, err
	}
	for _, o := range outcomes {
		lists.place(o)
	}
	return res, nil
}

// skipped reports whether a member table (schema.table) is one skip_tables names, by schema.table
// or by its bare name.
func skipped(table string, skip []string) bool {
	return slices.ContainsFunc(skip, func(s string) bool {
		return s == table || (!strings.Contains(s, ".") && strings.HasSuffix(table, "."+s))
	})
}

// andFilters ANDs the user's table_filter and the set's row filter, each parenthesised.
func andFilters(filters ...string) string {
	var parts []string
	for _, f := range filters {
		if f != "" {
			parts = append(parts, "("+f+")")
		}
	}
	return strings.Join(parts, " AND ")
}

func differentFilters(nodes []string, filters map[string]string) string {
	var b strings.Builder
	b.WriteString("the set's row filter differs between the nodes, so they replicate different rows:")
	for i, n := range nodes {
		if i > 0 {
			b.WriteString(";")
		}
		f := filters[n]
		if f == "" {
			f = "(every row)"
		}
		fmt.Fprintf(&b, " %s: %s", n, f)
	}
	return b.String()
}

func differentColumns(nodes []string, columns map[string][]string) string {
	var b strings.Builder
	b.WriteString("the set's column list differs between the nodes, so they replicate different columns:")
	for i, n := range nodes {
		if i > 0 {
			b.WriteString(";")
		}
		c := "(every column)"
		if columns[n] != nil {
			c = strings.Join(columns[n], ", ")
		}
		fmt.Fprintf(&b, " %s: %s", n, c)
	}
	return b.String()
}
