package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/ace-agent/ace-agent/engine/repair"
	"github.com/ace-agent/ace-agent/engine/report"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// diffRef names the diff a repair or rerun acts on: a task id, or an ACE diff file to import.
type diffRef struct {
	task  string
	file  string
	quiet bool
}

func (d *diffRef) flags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&d.task, "diff-task", "", "id of a completed table-diff, table-rerun or diff-import task")
	cmd.Flags().StringVarP(&d.file, "diff-file", "f", "", "an ACE diff file (JSON) to import and act on")
	cmd.MarkFlagsMutuallyExclusive("diff-task", "diff-file")
	cmd.MarkFlagsOneRequired("diff-task", "diff-file")
}

// resolve returns the diff task's id, importing the diff file first when one was given.
func (d *diffRef) resolve(ctx context.Context, conn *pgx.Conn, stderr io.Writer) (uuid.UUID, error) {
	if d.file == "" {
		return parseTaskID(d.task)
	}
	raw, err := os.ReadFile(d.file)
	if err != nil {
		return uuid.Nil, fmt.Errorf("read diff file: %w", err)
	}
	if !json.Valid(raw) {
		return uuid.Nil, fmt.Errorf("diff file %s is not JSON", d.file)
	}
	id, err := sqlapi.Submit(ctx, conn, sqlapi.TypeDiffImport, sqlapi.DiffImportArgs{Diff: raw, FileName: filepath.Base(d.file)})
	if err != nil {
		return uuid.Nil, err
	}
	fmt.Fprintf(stderr, "diff-import task %s submitted for %s\n", id, d.file)
	task, err := followTask(ctx, conn, id, d.quiet, stderr)
	if err != nil {
		return uuid.Nil, err
	}
	if task.Status != sqlapi.StatusCompleted {
		return uuid.Nil, errTaskEnded(task)
	}
	return id, nil
}

type tableRepairOpts struct {
	diff           diffRef
	sourceOfTruth  string
	strategy       string
	targetNodes    string
	dryRun         bool
	generateReport bool
	insertOnly     bool
	upsertOnly     bool
	fireTriggers   bool
	bidirectional  bool
	fixNulls       bool
	atomic         bool
	checkUnchanged bool
	repairPlan     string
	recoveryMode   bool
	preserveOrigin bool
	json           bool
}

func newTableRepairCmd(g *globals) *cobra.Command {
	var o tableRepairOpts
	cmd := &cobra.Command{
		Use:   "table-repair [flags] [schema.table] (--diff-task ID | --diff-file FILE)",
		Short: "Repair the differences a diff found",
		Long: `Repair the differences a diff found. The repair is submitted to the local node, whose agent
changes every target node in a transaction of its own (all or none with --atomic), as the role
you connect as. A row is changed only if the node still holds what the diff saw there; rows
that moved on are skipped and listed as changed_since_diff. Writes carry the replication origin
ace_repair and session_replication_role = replica, so they are not echoed by replication.

--diff-file imports an ACE diff file first (as a diff-import task). What each node got is in
SELECT * FROM ace.repair_rows(task_id); --generate-report also writes ACE's repair report to
reports/<date>/repair_report_<time>.json.

Exit codes: 0 fully repaired (a dry run: the plan would repair everything), 1 some rows were
skipped or left unrepaired, 2 error (including a node whose repair failed).`,
		Example: `  ace-agent table-repair --diff-task 109d16d3-5d16-48cd-b94f-fc5edfd6a97c --source-of-truth n1
  ace-agent table-repair public.orders -f public_orders_diffs-20250101120000.json -r n1 --dry-run
  ace-agent table-repair --diff-task 109d16d3-5d16-48cd-b94f-fc5edfd6a97c --strategy latest_commit --atomic`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runTableRepair(cmd, g, &o, args)
		},
	}
	o.diff.flags(cmd)
	f := cmd.Flags()
	f.StringVarP(&o.sourceOfTruth, "source-of-truth", "r", "", "the node whose rows are right")
	f.StringVar(&o.strategy, "strategy", "", "latest_commit: per row, the version committed last wins")
	f.StringVar(&o.targetNodes, "target-nodes", "", "nodes to repair, comma-separated (default: every node of the diff but the source of truth)")
	f.BoolVarP(&o.dryRun, "dry-run", "y", false, "record what would be done, change nothing")
	f.BoolVarP(&o.generateReport, "generate-report", "g", false, "write ACE's repair report JSON under reports/<date>/")
	f.BoolVarP(&o.insertOnly, "insert-only", "i", false, "only insert missing rows")
	f.BoolVarP(&o.upsertOnly, "upsert-only", "P", false, "insert and update, never delete")
	f.BoolVarP(&o.fireTriggers, "fire-triggers", "t", false, "fire triggers (session_replication_role = local)")
	f.BoolVarP(&o.bidirectional, "bidirectional", "Z", false, "insert missing rows on every node from the nodes that have them")
	f.BoolVarP(&o.fixNulls, "fix-nulls", "X", false, "fill NULL columns from the other nodes' values")
	f.BoolVar(&o.atomic, "atomic", false, "repair every node or none (two-phase commit)")
	f.BoolVar(&o.checkUnchanged, "check-unchanged", true, "change a row only if it is still what the diff saw (--check-unchanged=false overwrites)")
	f.StringVarP(&o.repairPlan, "repair-plan", "p", "", "a repair plan: a file (ACE's YAML, or JSON), or the name of one saved with repair-plan import")
	f.BoolVar(&o.recoveryMode, "recovery-mode", false, "repair a diff made with --against-origin or --until (recovery after a node failed)")
	f.BoolVar(&o.preserveOrigin, "preserve-origin", false, "keep the failed node's origin and the rows' commit timestamps (with --recovery-mode)")
	f.BoolVarP(&o.diff.quiet, "quiet", "q", false, "show no progress")
	f.BoolVar(&o.json, "json", false, "print the result as JSON")
	return cmd
}

func (o *tableRepairOpts) args(diff uuid.UUID, table string) (sqlapi.TableRepairArgs, error) {
	name, plan, err := planArg(o.repairPlan)
	if err != nil {
		return sqlapi.TableRepairArgs{}, err
	}
	return sqlapi.TableRepairArgs{
		DiffTask: diff, TableName: table, RepairArgs: sqlapi.RepairArgs{
			SourceOfTruth: o.sourceOfTruth, Strategy: o.strategy, TargetNodes: parseNodes(o.targetNodes),
			DryRun: o.dryRun, UpsertOnly: o.upsertOnly, InsertOnly: o.insertOnly, Bidirectional: o.bidirectional,
			FixNulls: o.fixNulls, FireTriggers: o.fireTriggers, GenerateReport: o.generateReport, Atomic: o.atomic,
			CheckUnchanged: o.checkUnchanged, RepairPlan: name, Plan: plan,
			RecoveryMode: o.recoveryMode, PreserveOrigin: o.preserveOrigin,
		},
	}, nil
}

func runTableRepair(cmd *cobra.Command, g *globals, o *tableRepairOpts, args []string) error {
	stderr := cmd.ErrOrStderr()
	return withConn(cmd, g, func(ctx context.Context, conn *pgx.Conn) error {
		diff, err := o.diff.resolve(ctx, conn, stderr)
		if err != nil {
			return err
		}
		table := ""
		if len(args) == 1 {
			table = args[0]
		}
		repairArgs, err := o.args(diff, table)
		if err != nil {
			return err
		}
		task, err := submitAndFollow(ctx, conn, sqlapi.TypeTableRepair, repairArgs, o.diff.quiet, stderr)
		if err != nil {
			return err
		}
		return reportRepair(cmd.OutOrStdout(), stderr, task, o)
	})
}

// reportRepair prints a finished repair's outcome and returns the error its exit code needs.
func reportRepair(stdout, stderr io.Writer, t sqlapi.Task, o *tableRepairOpts) error {
	if t.Status != sqlapi.StatusCompleted {
		err := errTaskEnded(t)
		if t.Status == sqlapi.StatusFailed {
			return withHint(err, fmt.Sprintf("what each node got: SELECT * FROM ace.repair_rows('%s');", t.ID))
		}
		return err
	}
	var s repair.Summary
	if err := json.Unmarshal(t.Result, &s); err != nil {
		return fmt.Errorf("decode the result of task %s: %w", t.ID, err)
	}
	for _, w := range s.Warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	if o.json {
		if err := printJSON(stdout, t.Result); err != nil {
			return err
		}
	} else {
		printRepair(stdout, t.ID, &s)
	}
	if o.generateReport && len(s.RepairReport) > 0 {
		path, err := writeRepairReport(".", &s)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "repair report written to %s\n", path)
	}
	if s.Unresolved > 0 || (!s.DryRun && !s.FullyRepaired) {
		return errDiffers
	}
	return nil
}

func printRepair(w io.Writer, id uuid.UUID, s *repair.Summary) {
	switch {
	case s.DryRun:
		fmt.Fprintf(w, "DRY RUN: %s (%s), nothing was changed\n", s.TableName, s.Mode)
	case s.FullyRepaired:
		fmt.Fprintf(w, "✔ REPAIRED: %s (%s)\n", s.TableName, s.Mode)
	default:
		fmt.Fprintf(w, "✘ NOT FULLY REPAIRED: %s (%s)\n", s.TableName, s.Mode)
	}
	verb := ""
	if s.DryRun {
		verb = "would be "
	}
	for _, name := range sortedNames(s.Nodes) {
		n := s.Nodes[name]
		fmt.Fprintf(w, "  %s: %d %sinserted, %d %supdated, %d %sdeleted, %d skipped%s\n", name,
			n.Inserted, verb, n.Updated, verb, n.Deleted, verb, n.Skipped, reasons(n.SkippedByReason))
	}
	if len(s.RuleMatches) > 0 {
		// ACE's "Rule usage": the keys each rule of the plan decided.
		fmt.Fprintf(w, "  rule usage (%s): %s\n", s.RepairPlan, strings.TrimSuffix(strings.TrimPrefix(reasons(s.RuleMatches), " ("), ")"))
	}
	if s.Unresolved > 0 {
		fmt.Fprintf(w, "%d %s left unrepaired; run a new diff after looking at them\n", s.Unresolved, report.Plural(s.Unresolved, "row was", "rows were"))
	}
	fmt.Fprintf(w, "see what each node got with: SELECT * FROM ace.repair_rows('%s');\n", id)
}

func reasons(m map[string]int64) string {
	if len(m) == 0 {
		return ""
	}
	var parts []string
	for _, r := range sortedNames(m) {
		parts = append(parts, fmt.Sprintf("%s %d", r, m[r]))
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func sortedNames[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sortStrings(names)
	return names
}

// writeRepairReport writes ACE's repair report where ACE does: under dir,
// reports/<YYYY-MM-DD>/repair_report_<HHMMSS.mmm>.json (dry_run_report_… for a dry run).
func writeRepairReport(dir string, s *repair.Summary) (string, error) {
	at := s.EndTime.Local()
	kind := "repair_report"
	if s.DryRun {
		kind = "dry_run_report"
	}
	reportDir := filepath.Join(dir, "reports", at.Format("2006-01-02"))
	if err := os.MkdirAll(reportDir, 0o750); err != nil {
		return "", fmt.Errorf("create report directory: %w", err)
	}
	path := filepath.Join(reportDir, fmt.Sprintf("%s_%s.json", kind, at.Format("150405.000")))
	err := writeFileAtomic(path, func(w io.Writer) error { return printJSON(w, s.RepairReport) })
	if err != nil {
		return "", err
	}
	return path, nil
}

func newRepairCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "repair",
		Short: "Work with the results of table-repair tasks",
	}
	cmd.AddCommand(newRepairExportCmd(g))
	return cmd
}

func newRepairExportCmd(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "export TASK_ID",
		Short: "Write a repair's actions as ACE's repair report JSON",
		Long: `Write what a table-repair did (or, for a dry run, would do) as pgEdge ACE's repair report JSON.
The default file is ACE's: reports/<YYYY-MM-DD>/repair_report_<HHMMSS.mmm>.json
(dry_run_report_… for a dry run) under the current directory; -o - writes to stdout.`,
		Args: cobra.ExactArgs(1),
		RunE: onTask(g, func(cmd *cobra.Command, conn *pgx.Conn, id uuid.UUID) error {
			return runRepairExport(cmd, conn, id, output)
		}),
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "file to write, or - for stdout (default: ACE's file name)")
	return cmd
}

func runRepairExport(cmd *cobra.Command, conn *pgx.Conn, id uuid.UUID, output string) error {
	ctx := cmd.Context()
	s, err := repairReportOf(ctx, conn, id)
	if err != nil {
		return err
	}
	if output == "-" {
		return printJSON(cmd.OutOrStdout(), s.RepairReport)
	}
	path := output
	if path == "" {
		path, err = writeRepairReport(".", s)
	} else {
		err = writeFileAtomic(path, func(w io.Writer) error { return printJSON(w, s.RepairReport) })
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "repair report written to %s\n", path)
	return nil
}

// repairReportOf builds the ACE report of a finished repair task from its recorded actions.
func repairReportOf(ctx context.Context, conn *pgx.Conn, id uuid.UUID) (*repair.Summary, error) {
	task, err := sqlapi.GetTask(ctx, conn, id)
	if err != nil {
		return nil, err
	}
	if task.Type != sqlapi.TypeTableRepair {
		return nil, fmt.Errorf("task %s is a %s task, not a table-repair", id, task.Type)
	}
	if !task.Status.Terminal() {
		return nil, fmt.Errorf("task %s is still %s", id, task.Status)
	}
	var args sqlapi.TableRepairArgs
	if err := json.Unmarshal(task.Args, &args); err != nil {
		return nil, fmt.Errorf("decode the arguments of task %s: %w", id, err)
	}
	s := &repair.Summary{DryRun: args.DryRun}
	if len(task.Result) > 0 && string(task.Result) != "null" {
		if err := json.Unmarshal(task.Result, s); err != nil {
			return nil, fmt.Errorf("decode the result of task %s: %w", id, err)
		}
	} else if task.StartedAt != nil && task.FinishedAt != nil {
		s.EndTime, s.TimeTakenSeconds = *task.FinishedAt, task.FinishedAt.Sub(*task.StartedAt).Seconds()
	} else {
		s.EndTime = time.Now()
	}
	actions, err := sqlapi.ReadRepairActions(ctx, conn, id)
	if err != nil {
		return nil, err
	}
	if s.RepairReport, err = repair.ACERepairReport(args.ReportArgs(id), s, actions); err != nil {
		return nil, err
	}
	return s, nil
}
