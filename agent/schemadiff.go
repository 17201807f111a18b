package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/google/uuid"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/schemadiff"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// schemaDiff compares a schema on the nodes: the objects' names, the tables' definitions, or
// (the default) the tables' rows, by one child table-diff per table.
func (a *Agent) schemaDiff(ctx context.Context, run *sqlapi.Run, args *sqlapi.SchemaDiffArgs) (any, error) {
	if err := run.ResetResults(ctx); err != nil {
		return nil, err
	}
	nodes, err := a.openNodes(ctx, run, args.Nodes, 1)
	if err != nil {
		return nil, err
	}
	defer closeNodes(nodes)
	catalogs, err := schemadiff.ReadCatalogs(ctx, nodes, args.SchemaName, schemadiff.ReadOptions{
		Tables: args.Compare != sqlapi.CompareObjects, Privileges: args.ComparePrivileges})
	if err != nil {
		return nil, err
	}
	skipTables(catalogs, args.SkipTables)
	base := schemaDiffResult{Schema: args.SchemaName, Nodes: args.Nodes, Compare: args.Compare}
	switch args.Compare {
	case sqlapi.CompareObjects:
		pairs, findings := schemadiff.Objects(args.SchemaName, args.Nodes, catalogs)
		base.Pairs, base.Findings = pairs, new(len(findings))
		return base, run.WriteSchemaFindings(ctx, findings)
	case sqlapi.CompareStructure:
		findings := schemadiff.Structure(args.SchemaName, args.Nodes, catalogs, schemadiff.Options{IgnoreNames: args.IgnoreNames})
		base.TablesTotal, base.Findings = new(len(schemadiff.TableNames(args.Nodes, catalogs))), new(len(findings))
		return base, run.WriteSchemaFindings(ctx, findings)
	}
	return a.schemaDiffData(ctx, run, args, catalogs, base)
}

// schemaDiffResult is a schema-diff's result; each compare mode fills its own parts.
type schemaDiffResult struct {
	Schema      string                     `json:"schema"`
	Nodes       []string                   `json:"nodes"`
	Compare     string                     `json:"compare"`
	TablesTotal *int                       `json:"tables_total,omitempty"`
	Findings    *int                       `json:"findings,omitempty"` // objects, structure
	Pairs       map[string]schemadiff.Pair `json:"pairs,omitempty"`    // objects
	*TableLists                            // data
}

// TableLists are where a multi-table diff put each table: the result shape repset-diff shares.
type TableLists struct {
	Identical []string        `json:"identical"`
	Differed  []differedTable `json:"differed"`
	Missing   []missingTable  `json:"missing"`
	Failed    []failedTable   `json:"failed"`
	Skipped   []string        `json:"skipped"`
}

type differedTable struct {
	Table         string    `json:"table"`
	TaskID        uuid.UUID `json:"task_id"`
	DifferingKeys int64     `json:"differing_keys"`
}

type missingTable struct {
	Table       string   `json:"table"`
	PresentOn   []string `json:"present_on"`
	MissingFrom []string `json:"missing_from"`
}

type failedTable struct {
	Table string `json:"table"`
	Error string `json:"error"`
}

// schemaDiffData checks each table's columns and key first; tables on every node whose columns
// and key agree each get a child table-diff.
func (a *Agent) schemaDiffData(ctx context.Context, run *sqlapi.Run, args *sqlapi.SchemaDiffArgs,
	catalogs map[string]schemadiff.Catalog, res schemaDiffResult) (any, error) {
	lists := &TableLists{Identical: []string{}, Differed: []differedTable{}, Missing: []missingTable{},
		Failed: []failedTable{}, Skipped: qualifyAll(args.SchemaName, args.SkipTables)}
	var children []sqlapi.Child
	names := schemadiff.TableNames(args.Nodes, catalogs)
	for _, name := range names {
		table := schemadiff.Qualify(args.SchemaName, name)
		present := slices.DeleteFunc(slices.Clone(args.Nodes), func(n string) bool { _, ok := catalogs[n].Tables[name]; return !ok })
		if len(present) < len(args.Nodes) {
			lists.Missing = append(lists.Missing, missingTable{Table: table, PresentOn: present,
				MissingFrom: slices.DeleteFunc(slices.Clone(args.Nodes), func(n string) bool { return slices.Contains(present, n) })})
			continue
		}
		blockers := schemadiff.DataBlockers(schemadiff.CompareTable(args.SchemaName, name, args.Nodes, catalogs, schemadiff.Options{}))
		if len(blockers) > 0 {
			lists.Failed = append(lists.Failed, failedTable{Table: table, Error: blockerReason(blockers)})
			continue
		}
		children = append(children, args.TableDiff(table, args.Nodes))
	}
	res.TablesTotal, res.TableLists = new(len(names)), lists
	outcomes, err := a.runChildren(ctx, run, args.ChildDiffArgs, children)
	if err != nil {
		return nil, err
	}
	for _, o := range outcomes {
		lists.place(o)
	}
	return res, nil
}

// place puts a child's table into the list its outcome says.
func (l *TableLists) place(o sqlapi.ChildOutcome) {
	switch {
	case o.Err != nil:
		l.Failed = append(l.Failed, failedTable{Table: o.Key, Error: o.Err.Error()})
	case o.Task.Status != sqlapi.StatusCompleted:
		l.Failed = append(l.Failed, failedTable{Table: o.Key, Error: fmt.Sprintf("table-diff task %s %s: %s", o.TaskID, o.Task.Status, deref(o.Task.Error))})
	default:
		var summary struct {
			DifferingKeys int64 `json:"differing_keys"`
		}
		if err := json.Unmarshal(o.Task.Result, &summary); err != nil {
			l.Failed = append(l.Failed, failedTable{Table: o.Key, Error: fmt.Sprintf("read the result of table-diff task %s: %v", o.TaskID, err)})
		} else if summary.DifferingKeys > 0 {
			l.Differed = append(l.Differed, differedTable{Table: o.Key, TaskID: o.TaskID, DifferingKeys: summary.DifferingKeys})
		} else {
			l.Identical = append(l.Identical, o.Key)
		}
	}
}

// runChildren runs a parent task's children: inserted in the submitter's own session on this
// node, waited for while the parent holds no running slot here, cancelled with the parent.
// The children that this agent runs share node sessions the parent holds (childNodes), and wake
// the parent as they end.
func (a *Agent) runChildren(ctx context.Context, run *sqlapi.Run, opts sqlapi.ChildDiffArgs, children []sqlapi.Child) ([]sqlapi.ChildOutcome, error) {
	return a.runChildrenSaying(ctx, run, opts, children, "tables diffed")
}

// runChildrenSaying is runChildren whose progress counts the ended children as done, saying what.
func (a *Agent) runChildrenSaying(ctx context.Context, run *sqlapi.Run, opts sqlapi.ChildDiffArgs, children []sqlapi.Child, done string) ([]sqlapi.ChildOutcome, error) {
	local, err := a.openNodes(ctx, run, []string{a.cfg.Node}, 2)
	if err != nil {
		return nil, fmt.Errorf("open a session as %s to submit the child tasks: %w", run.Task.SubmittedBy, err)
	}
	defer closeNodes(local)
	childOpts, err := sqlapi.DiffArgs{ConcurrencyFactor: opts.ConcurrencyFactor, MaxConnections: opts.MaxConnections}.Options(a.diffSessions())
	if err != nil {
		return nil, err
	}
	shared, release := a.shareNodes(run, int32(childOpts.Workers+1))
	defer release()
	a.setWaiting(run.Task.ID)
	progress, stop := a.progressReporter(ctx, run)
	defer stop()
	progress(engine.Progress{Phase: fmt.Sprintf("0/%d %s", len(children), done)})
	return run.RunChildren(ctx, local[0].Pool, children, shared.ended, func(ended, total int) {
		progress(engine.Progress{Phase: fmt.Sprintf("%d/%d %s", ended, total, done)})
	})
}

// skipTables removes the skipped tables from every catalog.
func skipTables(catalogs map[string]schemadiff.Catalog, skip []string) {
	for _, c := range catalogs {
		for _, t := range skip {
			delete(c.Tables, t)
		}
		c.Objects["tables"] = slices.DeleteFunc(c.Objects["tables"], func(t string) bool { return slices.Contains(skip, t) })
	}
}

func blockerReason(blockers []schemadiff.Finding) string {
	reason := "columns or key differ between the nodes:"
	for i, f := range blockers {
		if i > 0 {
			reason += ";"
		}
		reason += " " + f.Describe()
	}
	return reason
}

func qualifyAll(schema string, names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = schemadiff.Qualify(schema, n)
	}
	return out
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
