package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/report"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// progressPrinter shows a task's progress: on a terminal as one line rewritten in place, else
// as a plain line per change, at most one a second.
type progressPrinter struct {
	w        io.Writer
	tty      bool
	last     string
	lastAt   time.Time
	throttle time.Duration
}

func newProgressPrinter(w io.Writer) *progressPrinter {
	return &progressPrinter{w: w, tty: isTerminal(w), throttle: time.Second}
}

// update shows the task's current state if it changed.
func (p *progressPrinter) update(t sqlapi.Task) {
	line := progressLine(t)
	if line == "" || line == p.last {
		return
	}
	if p.tty {
		fmt.Fprintf(p.w, "\r%s\x1b[K", line)
	} else {
		if time.Since(p.lastAt) < p.throttle {
			return
		}
		fmt.Fprintln(p.w, line)
	}
	p.last, p.lastAt = line, time.Now()
}

// finish clears the terminal line, so what follows starts on a clean line.
func (p *progressPrinter) finish() {
	if p.tty && p.last != "" {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
}

// progressLine describes a task's state in one line; "" when there is nothing to show.
func progressLine(t sqlapi.Task) string {
	switch {
	case t.Status == sqlapi.StatusQueued:
		return "queued, waiting for an agent"
	case t.Status != sqlapi.StatusRunning:
		return ""
	case len(t.Progress) == 0 || string(t.Progress) == "null":
		return "running"
	}
	var p engine.Progress
	if err := json.Unmarshal(t.Progress, &p); err != nil {
		return "running"
	}
	return formatProgress(p)
}

// formatProgress renders progress like
// "hashing [#####-----] 12/40 blocks, 1,234,567 rows hashed, 3 differing".
func formatProgress(p engine.Progress) string {
	phase := p.Phase
	if phase == "" {
		phase = "running"
	}
	parts := []string{phase}
	if p.BlocksTotal > 0 {
		parts[0] += fmt.Sprintf(" %s %d/%d blocks", bar(p.BlocksDone, p.BlocksTotal, 10), p.BlocksDone, p.BlocksTotal)
	}
	if p.RowsHashed > 0 {
		parts = append(parts, report.GroupDigits(p.RowsHashed)+" rows hashed")
	}
	if p.DifferingKeys > 0 {
		parts = append(parts, report.GroupDigits(p.DifferingKeys)+" differing")
	}
	return strings.Join(parts, ", ")
}

// bar draws done/total as [###-------] width characters wide.
func bar(done, total, width int) string {
	filled := min(max(done*width/total, 0), width)
	return "[" + strings.Repeat("#", filled) + strings.Repeat("-", width-filled) + "]"
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
