package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/report"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// writeReport writes a finished diff's report in the task's output format into ACE_REPORT_DIR,
// under ACE's file name followed by the task's id (report.TaskFileName), and records the path in
// the summary. It streams the stored rows, so it needs no memory for them.
func (a *Agent) writeReport(ctx context.Context, run *sqlapi.Run, format string, s *engine.DiffSummary) error {
	if format == "" {
		return nil
	}
	if err := os.MkdirAll(a.cfg.ReportDir, 0o755); err != nil {
		return fmt.Errorf("create report directory %s (set ACE_REPORT_DIR): %w", a.cfg.ReportDir, err)
	}
	path, err := filepath.Abs(filepath.Join(a.cfg.ReportDir, report.TaskFileName(s, format, time.Now(), run.Task.ID)))
	if err != nil {
		return err
	}
	f, err := createReportFile(path)
	if err != nil {
		return err
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
		_ = os.Remove(path) // this task's own file: createReportFile made it
		return fmt.Errorf("write %s report: %w", format, err)
	}
	s.ReportFile = path
	return nil
}

// createReportFile creates a new report file, readable by the agent's user only (reports hold
// table data). It never opens a file that exists: another task's report, or anything else
// someone put there, is left as it is.
func createReportFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("create report %s: a file of that name exists already; it was left alone (move it away, or set another ACE_REPORT_DIR)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("create report %s: %w", path, err)
	}
	return f, nil
}
