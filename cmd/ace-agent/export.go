package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/report"
	"github.com/ace-agent/ace-agent/sqlapi"
)

func newDiffCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "diff",
		Short: "Work with the results of table-diff tasks",
	}
	cmd.AddCommand(newDiffExportCmd(g))
	return cmd
}

type exportOpts struct {
	format string
	output string
}

func newDiffExportCmd(g *globals) *cobra.Command {
	var o exportOpts
	cmd := &cobra.Command{
		Use:   "export TASK_ID",
		Short: "Write a completed table-diff's differing rows as an ACE diff file, an HTML report or CSV",
		Long: `Write a completed table-diff's differing rows in one of these formats:

  json  the diff-file format of pgEdge ACE, for ACE's table-repair and table-rerun or any
        tool that reads them (the default)
  html  one self-contained page for people: a summary, then per node pair the value
        differences (changed parts highlighted) and the missing rows
  csv   one record per row of each node list of the ACE diff file: node_pair, node,
        diff_type, the table's columns, commit timestamp and origin; NULL is \N

The default file name is ACE's: <schema>_<table>_diffs-<YYYYMMDDHHMMSS>.<format> in the
current directory, stamped with the time the diff finished. -o - writes to stdout.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runExport(cmd, g, o, args[0])
		},
	}
	cmd.Flags().StringVar(&o.format, "format", "json", "output format: "+strings.Join(report.Formats, ", "))
	cmd.Flags().StringVarP(&o.output, "output", "o", "", "file to write, or - for stdout (default: ACE's file name)")
	return cmd
}

func runExport(cmd *cobra.Command, g *globals, o exportOpts, idArg string) error {
	if !slices.Contains(report.Formats, o.format) {
		return fmt.Errorf("unsupported format %q: use one of %s", o.format, strings.Join(report.Formats, ", "))
	}
	return onTask(g, func(cmd *cobra.Command, conn *pgx.Conn, id uuid.UUID) error {
		return exportDiff(cmd, conn, id, o)
	})(cmd, []string{idArg})
}

func exportDiff(cmd *cobra.Command, conn *pgx.Conn, id uuid.UUID, o exportOpts) error {
	ctx := cmd.Context()
	task, summary, err := loadCompletedDiff(ctx, conn, id)
	if err != nil {
		return err
	}
	name := o.output
	if name == "" {
		name = defaultExportName(summary, task, o.format)
	}
	rows, err := exportTo(ctx, conn, id, summary, o.format, name, cmd.OutOrStdout())
	if err != nil {
		return err
	}
	if name == "-" {
		name = "stdout"
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "diff written to %s (%d %s)\n", name, rows, report.Plural(rows, "row", "rows"))
	return nil
}

func parseTaskID(s string) (uuid.UUID, error) {
	id, err := uuid.Parse(s)
	if err != nil {
		return uuid.Nil, fmt.Errorf("invalid task id %q: %w", s, err)
	}
	return id, nil
}

// loadCompletedDiff reads a diff task (table-diff or mtree-diff) that completed, and its summary, with the CLI's
// wording and hint.
func loadCompletedDiff(ctx context.Context, q sqlapi.Querier, id uuid.UUID) (sqlapi.Task, *engine.DiffSummary, error) {
	task, s, err := sqlapi.CompletedDiff(ctx, q, id)
	switch {
	case errors.Is(err, sqlapi.ErrNoTask):
		return task, nil, fmt.Errorf("task %s does not exist", id)
	case errors.Is(err, sqlapi.ErrNotCompletedDiff) && task.Type.Exported():
		return task, nil, withHint(fmt.Errorf("task %s is %s, not COMPLETED", id, task.Status),
			"only a completed diff can be exported; 'ace-agent task show "+id.String()+"' shows the task")
	case errors.Is(err, sqlapi.ErrNotCompletedDiff):
		return task, nil, fmt.Errorf("task %s is a %s task, not a table-diff or mtree-diff", id, task.Type)
	}
	return task, s, err
}

// defaultExportName is ACE's file name for a diff: <schema>_<table>_diffs-<YYYYMMDDHHMMSS>.<format>,
// stamped with the time the diff finished, in local time as ACE does.
func defaultExportName(s *engine.DiffSummary, t sqlapi.Task, format string) string {
	at := s.EndTime
	if t.FinishedAt != nil {
		at = *t.FinishedAt
	}
	return report.FileName(s, format, at.Local())
}

// exportTo writes the diff in format to name ("-" = stdout) and returns how many rows differ.
// A file appears only once it is complete.
func exportTo(ctx context.Context, conn *pgx.Conn, id uuid.UUID, s *engine.DiffSummary, format, name string, stdout io.Writer) (int64, error) {
	// One snapshot for the several passes over the rows.
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return 0, fmt.Errorf("read the rows of task %s: %w", id, err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	c := &rowCounter{read: func(fn func(engine.DiffRow) error) error { return sqlapi.ReadDiffRows(ctx, tx, id, fn) }}
	write := func(w io.Writer) error { return report.Write(ctx, w, format, s, c.rows) }
	if name == "-" {
		err = writeBuffered(stdout, write)
	} else {
		err = writeFileAtomic(name, write)
	}
	if err != nil {
		return 0, err
	}
	return c.total()
}

// rowCounter reads the stored rows for report.Write and counts them on the way, so telling
// how many rows differ costs no pass of its own unless the report made no complete pass.
type rowCounter struct {
	read     report.Rows
	complete bool
	n        int64
}

func (c *rowCounter) rows(fn func(engine.DiffRow) error) error {
	var n int64
	err := c.read(func(r engine.DiffRow) error {
		n++
		return fn(r)
	})
	if err == nil && !c.complete {
		c.complete, c.n = true, n
	}
	return err
}

func (c *rowCounter) total() (int64, error) {
	if !c.complete {
		if err := c.rows(func(engine.DiffRow) error { return nil }); err != nil {
			return 0, err
		}
	}
	return c.n, nil
}

func writeBuffered(w io.Writer, fn func(io.Writer) error) error {
	bw := bufio.NewWriterSize(w, 1<<16)
	if err := fn(bw); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write diff: %w", err)
	}
	return nil
}

// writeFileAtomic writes a temporary file beside path and renames it into place. The file is
// readable by its owner only: it holds table data.
func writeFileAtomic(path string, fn func(io.Writer) error) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("create diff file: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err := writeBuffered(tmp, fn); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write diff file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("create diff file: %w", err)
	}
	return nil
}
