package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/internal/localpg"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// ResyncResult measures ace.resync_node on a node whose table was emptied, against what a DBA
// does by hand, in the same run: pg_dump --data-only of the table on n1 piped into psql on n3.
type ResyncResult struct {
	Rows          int     `json:"rows"`
	ReloadSeconds float64 `json:"reload_seconds"` // pg_dump | psql
	ResyncSeconds float64 `json:"resync_seconds"` // ace.resync_node, submitted to ended
	DiffSeconds   float64 `json:"diff_seconds"`   // its child table-diff, started to finished
	RepairSeconds float64 `json:"repair_seconds"` // its child table-repair, started to finished
	Inserted      int64   `json:"inserted"`
	KeyRanges     int64   `json:"key_ranges"` // differing key ranges its diff stored whole (each copied with COPY)
	Ratio         float64 `json:"ratio"`      // resync / reload
}

// measureResync makes n2 and n3 copies of n1's table (n2 by an untimed reload), empties n3, times
// the reload by hand, empties n3 again and times ace.resync_node('n3') with a fresh agent on n1.
func measureResync(ctx context.Context, c *localpg.Cluster, conns []*pgx.Conn, o options, r *Result) error {
	step("resync: making n2 a copy of n1")
	if err := emptyAndReload(ctx, c, conns, 1); err != nil {
		return err
	}
	step("resync: reloading the emptied table on n3 with pg_dump | psql")
	start := time.Now()
	if err := emptyAndReload(ctx, c, conns, 2); err != nil {
		return err
	}
	res := &ResyncResult{Rows: o.rows, ReloadSeconds: time.Since(start).Seconds()}
	r.Resync = res
	step("pg_dump | psql: %.3fs", res.ReloadSeconds)
	if _, err := conns[2].Exec(ctx, "TRUNCATE public.bench"); err != nil {
		return err
	}
	agent, err := startAgent(ctx, o.bin, c.Nodes[0].DSN("bench"))
	if err != nil {
		return err
	}
	defer agent.stop()
	step("resync: ace.resync_node('n3') of the emptied table")
	start = time.Now()
	id, err := sqlapi.Submit(ctx, conns[0], sqlapi.TypeNodeResync, sqlapi.NodeResyncArgs{NodeName: "n3", Tables: []string{"public.bench"}})
	if err != nil {
		return err
	}
	t, err := sqlapi.Wait(ctx, conns[0], id, 20*time.Millisecond, nil)
	if err != nil {
		return err
	}
	res.ResyncSeconds = time.Since(start).Seconds()
	if t.Status != sqlapi.StatusCompleted {
		return fmt.Errorf("resync %s ended %s: %v", id, t.Status, deref(t.Error))
	}
	var s struct {
		Inserted      int64 `json:"inserted"`
		FullyResynced bool  `json:"fully_resynced"`
	}
	if err := json.Unmarshal(t.Result, &s); err != nil {
		return err
	}
	if !s.FullyResynced || s.Inserted != int64(o.rows) {
		return fmt.Errorf("resync %s inserted %d of %d rows (fully resynced: %v)", id, s.Inserted, o.rows, s.FullyResynced)
	}
	res.Inserted = s.Inserted
	err = conns[0].QueryRow(ctx, `SELECT
		coalesce(sum(extract(epoch FROM finished_at - started_at)) FILTER (WHERE task_type = 'table-diff'), 0)::float8,
		coalesce(sum(extract(epoch FROM finished_at - started_at)) FILTER (WHERE task_type = 'table-repair'), 0)::float8,
		coalesce(sum((result->>'key_ranges')::bigint) FILTER (WHERE task_type = 'table-diff'), 0)
		FROM ace.tasks WHERE args->>'parent_task' = $1`, id.String()).Scan(&res.DiffSeconds, &res.RepairSeconds, &res.KeyRanges)
	if err != nil {
		return fmt.Errorf("read the resync's child tasks: %w", err)
	}
	res.Ratio = res.ResyncSeconds / res.ReloadSeconds
	step("ace.resync_node: %.3fs (diff %.3fs, repair %.3fs; %d key ranges), %.2f× the reload", res.ResyncSeconds, res.DiffSeconds, res.RepairSeconds, res.KeyRanges, res.Ratio)
	return nil
}

// emptyAndReload empties public.bench on node i and loads n1's rows into it as a DBA would:
// pg_dump --data-only -t public.bench | psql.
func emptyAndReload(ctx context.Context, c *localpg.Cluster, conns []*pgx.Conn, i int) error {
	if _, err := conns[i].Exec(ctx, "TRUNCATE public.bench"); err != nil {
		return err
	}
	dump := exec.CommandContext(ctx, c.Bin("pg_dump"), "--data-only", "-t", "public.bench", "-d", c.Nodes[0].DSN("bench"))
	load := exec.CommandContext(ctx, c.Bin("psql"), "-q", "-v", "ON_ERROR_STOP=1", "-d", c.Nodes[i].DSN("bench"))
	pipe, err := dump.StdoutPipe()
	if err != nil {
		return err
	}
	load.Stdin = pipe
	if err := dump.Start(); err != nil {
		return fmt.Errorf("start pg_dump: %w", err)
	}
	out, loadErr := load.CombinedOutput()
	dumpErr := dump.Wait()
	if loadErr != nil || dumpErr != nil {
		return fmt.Errorf("pg_dump | psql into %s: %v %v: %s", c.Nodes[i].Name, dumpErr, loadErr, out)
	}
	return nil
}
