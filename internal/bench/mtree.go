package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/internal/localpg"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// MtreeResult is what the Merkle tree measurements add to a run.
type MtreeResult struct {
	BuildSeconds         float64   `json:"build_seconds"`
	BuildRatio           float64   `json:"build_ratio"`                           // to the one pass
	BuildCPURatio        float64   `json:"build_cpu_ratio"`                       // PostgreSQL's CPU seconds, to the one pass's
	Diff100Seconds       []float64 `json:"diff_after_100_updates_seconds"`        // as psql sees it: CALL ace.run_mtree_diff
	Diff100EngineSeconds []float64 `json:"diff_after_100_updates_engine_seconds"` // inside the agent: mtree.Diff
	Diff100ClaimSeconds  []float64 `json:"diff_after_100_updates_claim_seconds"`  // from the insert to the agent's claim
	Diff10kSeconds       float64   `json:"diff_after_10000_updates_seconds"`
	TableDiff10kSeconds  float64   `json:"table_diff_after_10000_updates_seconds"`
	Diff10kRatio         float64   `json:"diff_after_10000_updates_ratio_to_table_diff"`
	LoadChangesPerSec    float64   `json:"cdc_load_changes_per_second"`
	LoadMaxLagBytes      int64     `json:"cdc_load_max_lag_bytes"`
	LoadCatchUpSeconds   float64   `json:"cdc_load_catch_up_seconds"` // after the load stops
	AgentPeakRSSMB       float64   `json:"agent_peak_rss_mb_streaming"`
}

// measureMtree builds the table's tree with an agent on every node, then measures diffs after
// 100 and 10,000 updates on one node, and the change stream under a steady write load.
func measureMtree(ctx context.Context, c *localpg.Cluster, conns []*pgx.Conn, o options, r *Result) error {
	var agents []*agentProc
	for _, n := range c.Nodes {
		a, err := startAgentOn(ctx, o.bin, n.DSN("bench"), n.Name)
		if err != nil {
			return err
		}
		defer a.stop()
		agents = append(agents, a)
	}
	m := &MtreeResult{}
	r.Mtree = m
	if !o.onlyMtree {
		step("undoing the planted differences: the trees start from identical tables")
		if err := unplant(ctx, conns, o); err != nil {
			return err
		}
	}
	step("building the Merkle tree")
	var d time.Duration
	var res string
	cpu, _, err := timed(func() (err error) {
		d, res, err = runTask(ctx, conns[0], sqlapi.TypeMtreeBuild, sqlapi.MtreeBuildArgs{TableName: "public.bench", LeafRows: o.leafRows})
		return err
	})
	if err != nil {
		return err
	}
	m.BuildSeconds, m.BuildRatio, m.BuildCPURatio = d.Seconds(), d.Seconds()/median(r.OnePassSeconds), cpu/median(r.OnePassCPU)
	step("build: %.3fs (%.2f × the one pass) %s", m.BuildSeconds, m.BuildRatio, res)
	if _, _, err := runTask(ctx, conns[0], sqlapi.TypeMtreeDiff, sqlapi.MtreeDiffArgs{DiffArgs: sqlapi.DiffArgs{TableName: "public.bench"}}); err != nil {
		return err
	}
	// Each round drifts n2 by 100 updated rows, diffs, then brings the other nodes level, as a
	// repair would: every diff starts from tables in sync.
	others := append([]*pgx.Conn{conns[0]}, conns[2:]...)
	for i := range o.repeat {
		ids := randomIDs(o.rows, 100)
		if err := updateIDs(ctx, conns[1:2], ids, i); err != nil {
			return err
		}
		t, err := psqlMtreeDiff(ctx, conns[0])
		if err != nil {
			return err
		}
		m.Diff100Seconds = append(m.Diff100Seconds, t.EndToEnd)
		m.Diff100EngineSeconds = append(m.Diff100EngineSeconds, t.Engine)
		m.Diff100ClaimSeconds = append(m.Diff100ClaimSeconds, t.Claim)
		step("mtree diff after 100 updates on n2: %.3fs as psql sees it (CALL ace.run_mtree_diff), engine %.3fs, claimed after %.3fs, %.3fs around the engine; %s",
			t.EndToEnd, t.Engine, t.Claim, t.Around, t.Result)
		if err := updateIDs(ctx, others, ids, i); err != nil {
			return err
		}
		// The trees take the repair in before the next round's drift.
		if _, _, err := runTask(ctx, conns[0], sqlapi.TypeMtreeDiff, sqlapi.MtreeDiffArgs{DiffArgs: sqlapi.DiffArgs{TableName: "public.bench"}}); err != nil {
			return err
		}
	}
	if err := updateIDs(ctx, conns[1:2], randomIDs(o.rows, 10_000), 99); err != nil {
		return err
	}
	if d, res, err = runTask(ctx, conns[0], sqlapi.TypeMtreeDiff, sqlapi.MtreeDiffArgs{DiffArgs: sqlapi.DiffArgs{TableName: "public.bench"}}); err != nil {
		return err
	}
	m.Diff10kSeconds = d.Seconds()
	step("mtree diff after 10,000 updates on n2: %.3fs %s", d.Seconds(), res)
	td, _, err := diffNodes(ctx, conns[0], nil)
	if err != nil {
		return err
	}
	m.TableDiff10kSeconds, m.Diff10kRatio = td.Seconds(), d.Seconds()/td.Seconds()
	if err := measureLoad(ctx, conns[0], c.Nodes[0].DSN("bench"), o.rows, m); err != nil {
		return err
	}
	m.AgentPeakRSSMB = agents[0].peakRSSMB()
	_, _, err = runTask(ctx, conns[0], sqlapi.TypeMtreeTeardown, sqlapi.MtreeTeardownArgs{})
	return err
}

// runTask submits a task on conn, waits for it, and returns how long it took and its result.
func runTask(ctx context.Context, conn *pgx.Conn, typ sqlapi.TaskType, args any) (time.Duration, string, error) {
	start := time.Now()
	id, err := sqlapi.Submit(ctx, conn, typ, args)
	if err != nil {
		return 0, "", err
	}
	t, err := sqlapi.Wait(ctx, conn, id, 20*time.Millisecond, nil)
	if err != nil {
		return 0, "", err
	}
	d := time.Since(start)
	if t.Status != sqlapi.StatusCompleted {
		return 0, "", fmt.Errorf("%s %s ended %s: %v", typ, id, t.Status, deref(t.Error))
	}
	var s struct {
		DifferingKeys *int64 `json:"differing_keys"`
		Mtree         any    `json:"mtree"`
		Phases        any    `json:"phase_seconds"`
	}
	_ = json.Unmarshal(t.Result, &s)
	if s.DifferingKeys == nil {
		phases, _ := json.Marshal(s.Phases)
		return d, string(phases), nil
	}
	mt, _ := json.Marshal(s.Mtree)
	return d, fmt.Sprintf("(%d differing rows; %s)", *s.DifferingKeys, mt), nil
}

// randomIDs returns n distinct keys of the table.
func randomIDs(rows, n int) []int64 {
	seen := map[int64]bool{}
	out := make([]int64, 0, n)
	for len(out) < n {
		id := 1 + rand.Int64N(int64(rows))
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

// updateIDs updates the rows with the given keys on each node, in one statement per node.
func updateIDs(ctx context.Context, conns []*pgx.Conn, ids []int64, round int) error {
	for _, c := range conns {
		if _, err := c.Exec(ctx, `UPDATE public.bench SET note = 'mtree ' || $2::int || ' ' || id WHERE id = ANY($1)`, ids, round); err != nil {
			return err
		}
	}
	return nil
}

// measureLoad writes at least 5,000 row changes a second to n1 for 20 seconds from two
// connections, sampling the stream's lag behind the WAL, then waits for it to catch up.
func measureLoad(ctx context.Context, conn *pgx.Conn, dsn string, rows int, m *MtreeResult) error {
	const seconds, perStatement = 20, 100
	step("steady write load on n1 for %ds", seconds)
	loadCtx, stop := context.WithTimeout(ctx, seconds*time.Second)
	defer stop()
	var changes atomic.Int64
	var wg sync.WaitGroup
	var loadErr error
	var once sync.Once
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := pgx.Connect(ctx, dsn)
			if err != nil {
				once.Do(func() { loadErr = err })
				return
			}
			defer c.Close(context.WithoutCancel(ctx))
			tick := time.NewTicker(time.Second / 30) // 2 writers × 30/s × 100 rows = 6,000 changes/s
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-loadCtx.Done():
					return
				case <-tick.C:
				}
				start := (i*perStatement*2 + w*perStatement) % (rows - perStatement)
				tag, err := c.Exec(ctx, `UPDATE public.bench SET qty = qty + 1 WHERE id > $1 AND id <= $1 + $2`, start, perStatement)
				if err != nil {
					once.Do(func() { loadErr = err })
					return
				}
				changes.Add(tag.RowsAffected())
			}
		}()
	}
	began := time.Now()
	for loadCtx.Err() == nil {
		lag, err := streamLag(ctx, conn)
		if err != nil {
			return err
		}
		m.LoadMaxLagBytes = max(m.LoadMaxLagBytes, lag)
		time.Sleep(250 * time.Millisecond)
	}
	wg.Wait()
	if loadErr != nil {
		return loadErr
	}
	m.LoadChangesPerSec = float64(changes.Load()) / time.Since(began).Seconds()
	var target string
	if err := conn.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&target); err != nil {
		return err
	}
	caughtUp := time.Now()
	for {
		var done bool
		if err := conn.QueryRow(ctx, `SELECT confirmed_lsn >= $1::pg_lsn FROM ace.cdc_state`, target).Scan(&done); err != nil {
			return err
		}
		if done {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	m.LoadCatchUpSeconds = time.Since(caughtUp).Seconds()
	step("load: %.0f changes/s, largest lag %d bytes, caught up %.3fs after the load stopped", m.LoadChangesPerSec, m.LoadMaxLagBytes, m.LoadCatchUpSeconds)
	return nil
}

func streamLag(ctx context.Context, conn *pgx.Conn) (int64, error) {
	var lag int64
	err := conn.QueryRow(ctx, `SELECT coalesce((pg_current_wal_insert_lsn() - confirmed_lsn)::bigint, 0) FROM ace.cdc_state`).Scan(&lag)
	return lag, err
}

// diffTiming is one mtree diff as a psql user sees it, and where its time went.
type diffTiming struct {
	EndToEnd float64 // the CALL, from sending it to its return
	Engine   float64 // mtree.Diff, from its result's time_taken_seconds
	Claim    float64 // from the task's insert to the agent's claim
	Around   float64 // the rest of the agent's run: sessions opened, result and report written
	Result   string
}

// psqlMtreeDiff runs an mtree diff of the benchmark table as a psql user does, in one statement
// that submits it, commits and waits for it (CALL ace.run_mtree_diff), and times it.
func psqlMtreeDiff(ctx context.Context, conn *pgx.Conn) (diffTiming, error) {
	var t diffTiming
	start := time.Now()
	id, status, summary, err := sqlapi.RunMtreeDiff(ctx, conn, "public.bench")
	t.EndToEnd = time.Since(start).Seconds()
	if err != nil {
		return t, err
	}
	if status != sqlapi.StatusCompleted {
		return t, fmt.Errorf("mtree diff %s ended %s: %s", id, status, summary)
	}
	var run float64
	err = conn.QueryRow(ctx, `SELECT extract(epoch FROM started_at - submitted_at)::float8, extract(epoch FROM finished_at - started_at)::float8,
			(result->>'time_taken_seconds')::float8, jsonb_build_object('differing_keys', result->'differing_keys', 'mtree', result->'mtree')::text
		FROM ace.tasks WHERE task_id = $1`, id).Scan(&t.Claim, &run, &t.Engine, &t.Result)
	t.Around = run - t.Engine
	return t, err
}
