package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/ace-agent/ace-agent/sqlapi"
)

type schemaDiffOpts struct {
	parentDiffOpts
	ddlOnly           bool
	compare           string
	comparePrivileges bool
	ignoreNames       bool
}

// newSchemaDiffCmd is ACE's schema-diff, with its flags, and the structure comparison beside it.
func newSchemaDiffCmd(g *globals) *cobra.Command {
	var o schemaDiffOpts
	cmd := &cobra.Command{
		Use:   "schema-diff [flags] schema",
		Short: "Compare a schema across the cluster's nodes",
		Long: `Compare a schema across the cluster's nodes. --compare data (the default, as ACE's) checks
each table's columns and key, then diffs every table's rows in a child table-diff task;
--compare structure compares each table's definition (columns, constraints, indexes, triggers,
row security, replica identity, partitioning, enum and domain types; with --compare-privileges
owner and grants); --compare objects (or --ddl-only) compares the objects' names.
Findings stay in the local node's ace schema: SELECT * FROM ace.schema_diff_rows(task_id).

Exit codes: 0 identical, 1 differences (or tables missing on some node), 2 error (or a table
could not be diffed).`,
		Example: `  ace-agent schema-diff public
  ace-agent schema-diff public --compare structure --ignore-names
  ace-agent schema-diff public --ddl-only --nodes n1,n2,n3,n4
  ace-agent schema-diff public -T audit_log,public.sessions`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runSchemaDiff(cmd, g, &o, args[0])
		},
	}
	f := cmd.Flags()
	o.bind(f, "data: ", "data: SQL predicate every table is compared under")
	f.BoolVarP(&o.ddlOnly, "ddl-only", "L", false, "compare the objects' names only (--compare objects)")
	f.StringVar(&o.compare, "compare", "", "objects, structure or data (default data)")
	f.BoolVar(&o.comparePrivileges, "compare-privileges", false, "structure: compare tables' owners and grants too")
	f.BoolVar(&o.ignoreNames, "ignore-names", false, "structure: match constraints and indexes by definition, not name")
	return cmd
}

func runSchemaDiff(cmd *cobra.Command, g *globals, o *schemaDiffOpts, schema string) error {
	if err := o.checkOutput("schema-diff"); err != nil {
		return err
	}
	args, err := o.args(schema)
	if err != nil {
		return err
	}
	return withConn(cmd, g, func(ctx context.Context, conn *pgx.Conn) error {
		task, err := submitAndFollow(cmd.Context(), conn, sqlapi.TypeSchemaDiff, args, o.quiet, cmd.ErrOrStderr())
		if err != nil {
			return err
		}
		if task.Status != sqlapi.StatusCompleted {
			return errTaskEnded(task)
		}
		if err := printFindings(cmd.Context(), cmd.OutOrStdout(), conn, task, o.json); err != nil {
			return err
		}
		return reportSchemaDiff(cmd.OutOrStdout(), task, o.json)
	})
}

// printFindings lists a structure comparison's findings, one line each.
func printFindings(ctx context.Context, w io.Writer, conn *pgx.Conn, task sqlapi.Task, asJSON bool) error {
	var r struct {
		Compare string `json:"compare"`
	}
	if err := json.Unmarshal(task.Result, &r); err != nil || asJSON || r.Compare != sqlapi.CompareStructure {
		return err
	}
	rows, err := conn.Query(ctx, `SELECT kind, object_type, object_name, detail,
		(SELECT string_agg(key || ': ' || coalesce(value #>> '{}', '(missing)'), '; ' ORDER BY key) FROM jsonb_each(definitions))
		FROM ace.schema_diff_rows($1)`, task.ID)
	if err != nil {
		return fmt.Errorf("read the findings of task %s: %w", task.ID, err)
	}
	var kind, typ, name, detail, defs string
	_, err = pgx.ForEachRow(rows, []any{&kind, &typ, &name, &detail, &defs}, func() error {
		_, err := fmt.Fprintf(w, "%-9s %s %s %s\n    %s\n", kind, typ, name, detail, defs)
		return err
	})
	if err != nil {
		return fmt.Errorf("read the findings of task %s: %w", task.ID, err)
	}
	return nil
}

func (o *schemaDiffOpts) args(schema string) (sqlapi.SchemaDiffArgs, error) {
	skip, err := o.skip()
	if err != nil {
		return sqlapi.SchemaDiffArgs{}, err
	}
	return sqlapi.SchemaDiffArgs{
		SchemaName: schema, Nodes: parseNodes(o.nodes), SkipTables: skip, DDLOnly: o.ddlOnly, Compare: o.compare,
		ComparePrivileges: o.comparePrivileges, IgnoreNames: o.ignoreNames, ChildDiffArgs: o.childArgs(),
	}, nil
}

// readSkipFile reads ACE's skip file: one table per line; blank lines are ignored. It is read
// here, on the client: the server never opens a path a caller names.
func readSkipFile(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read --skip-file: %w", err)
	}
	defer f.Close()
	var names []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		if line := strings.TrimSpace(s.Text()); line != "" {
			names = append(names, line)
		}
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("read --skip-file %s: %w", path, err)
	}
	return names, nil
}

// schemaDiffVerdict is what the exit code is made of.
type schemaDiffVerdict struct {
	Compare            string                `json:"compare"`
	Findings           int                   `json:"findings"`
	Pairs              map[string]pairStatus `json:"pairs"`
	Identical, Skipped []string
	Differed, Missing  []json.RawMessage
	Failed             []struct {
		Table string `json:"table"`
		Error string `json:"error"`
	}
}

// reportSchemaDiff prints the result and returns errDiffers on differences, or an error when a
// table could not be diffed.
func reportSchemaDiff(w io.Writer, task sqlapi.Task, asJSON bool) error {
	var v schemaDiffVerdict
	if err := json.Unmarshal(task.Result, &v); err != nil {
		return fmt.Errorf("decode the result of task %s: %w", task.ID, err)
	}
	if asJSON || v.Compare == sqlapi.CompareObjects {
		// ACE prints the ddl-only comparison on stdout.
		if err := printJSON(w, task.Result); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(w, v.describe(task))
	}
	if len(v.Failed) > 0 {
		return fmt.Errorf("schema-diff task %s: %d table(s) could not be diffed, first %s: %s", task.ID, len(v.Failed), v.Failed[0].Table, v.Failed[0].Error)
	}
	mismatch := slices.ContainsFunc(mapValues(v.Pairs), func(s string) bool { return s != "IDENTICAL" })
	if v.Findings > 0 || mismatch || len(v.Differed)+len(v.Missing) > 0 {
		return errDiffers
	}
	return nil
}

func (v schemaDiffVerdict) describe(task sqlapi.Task) string {
	if v.Compare == sqlapi.CompareData {
		return fmt.Sprintf("%d identical, %d differ, %d missing on some node, %d failed, %d skipped (task %s; each differing table's rows: ace.diff_rows(task_id) of its entry in the result, --json)",
			len(v.Identical), len(v.Differed), len(v.Missing), len(v.Failed), len(v.Skipped), task.ID)
	}
	if v.Findings == 0 {
		return "the schemas match"
	}
	return fmt.Sprintf("%d finding(s); see them with SELECT * FROM ace.schema_diff_rows('%s');", v.Findings, task.ID)
}

type pairStatus struct {
	Status string `json:"status"`
}

func mapValues(pairs map[string]pairStatus) []string {
	var out []string
	for _, p := range pairs {
		out = append(out, p.Status)
	}
	return out
}
