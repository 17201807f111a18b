package agent

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/report"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// writeReport writes a finished diff's report in the task's output format into ACE_REPORT_DIR,
// under ACE's file name, and records the path in the summary. It streams the stored rows, so it
// needs no memory for them.
func (a *Agent) writeReport(ctx context.Context, run *sqlapi.Run, format string, s *engine.DiffSummary) error {
	if format == "" {
		return nil
	}
	if err := os.MkdirAll(a.cfg.ReportDir, 0o755); err != nil {
		return fmt.Errorf("create report directory %s (set ACE_REPORT_DIR): %w", a.cfg.ReportDir, err)
	}
	path, err := filepath.Abs(filepath.Join(a.cfg.ReportDir, report.FileName(s, format, time.Now())))
	if err != nil {
		return err
	}
	// Reports hold table data: readable by the agent's user only.
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("create report %s: %w", path, err)
	}
	w := bufio.NewWriter(f)
	rows := func(fn func(engine.DiffRow) error) error { return sqlapi.ReadDiffRows(ctx, a.pool, run.Task.ID, fn) }
	err = report.Write(ctx, w, format, s, rows)
	if err == nil {
		err = w.Flush()
	}
	if closeErr := f.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("write %s report: %w", format, err)
	}
	s.ReportFile = path
	return nil
}
