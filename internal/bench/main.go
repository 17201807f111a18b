// Command bench measures table-diff against the cost of one hashing pass over each node's
// table (make bench). It starts -nodes local nodes (3 by default), loads identical rows, runs the diff on identical
// tables and again with scattered differences, and reports both as ratios of the one-pass cost
// measured in the same run, with rows per second and the agent's peak RSS.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/internal/localpg"
	"github.com/ace-agent/ace-agent/sqlapi"
)

type options struct {
	rows, diffs, repeat int
	nodes               int
	bin, out            string
	emptyNode, mtree    bool
	onlyMtree           bool
	wait                bool
	leafRows            int // of the Merkle tree; 0: the default
	onlySchema          bool
	resync, onlyResync  bool
	randomOrder         bool
	// The schema diffs: tables and rows in all of the data comparison, tables of the structure one.
	schemaTables, schemaRows, structureTables int
}

// Result is what one benchmark run writes as JSON.
type Result struct {
	Rows             int       `json:"rows"`
	Diffs            int       `json:"diffs"`
	Nodes            int       `json:"nodes"`
	OnePassSeconds   []float64 `json:"one_pass_seconds"`
	IdenticalSeconds []float64 `json:"identical_seconds"`
	DriftSeconds     []float64 `json:"drift_seconds"`
	IdenticalRatio   float64   `json:"identical_ratio"`
	DriftRatio       float64   `json:"drift_ratio"`
	// The CPU seconds PostgreSQL used (all nodes' processes), and the agent, for each measurement.
	OnePassCPU        []float64 `json:"one_pass_cpu_seconds"`
	IdenticalCPU      []float64 `json:"identical_cpu_seconds"`
	DriftCPU          []float64 `json:"drift_cpu_seconds"`
	IdenticalAgentCPU []float64 `json:"identical_agent_cpu_seconds"`
	IdenticalCPURatio float64   `json:"identical_cpu_ratio"`
	DriftCPURatio     float64   `json:"drift_cpu_ratio"`
	RowsPerSecond     float64   `json:"rows_per_second"`
	DifferencesFound  int64     `json:"differences_found"`
	// RandomOrder says the rows were stored in random order, not in key order.
	RandomOrder bool `json:"random_order"`
	// LeafSummary is how the table-diffs summarised their leaves ("ordered" or "lanes").
	LeafSummary    string  `json:"leaf_summary"`
	AgentPeakRSSMB float64 `json:"agent_peak_rss_mb"`
	// EmptyNode* measure a diff of a full node against an empty one: every row differs.
	EmptyNodeSeconds float64 `json:"empty_node_seconds,omitempty"`
	EmptyNodeDiffs   int64   `json:"empty_node_differences,omitempty"`
	EmptyNodeRSSMB   float64 `json:"empty_node_agent_peak_rss_mb,omitempty"`
	// Mtree measures Merkle trees (make bench MTREE=0 leaves them out).
	Mtree *MtreeResult `json:"mtree,omitempty"`
	// SchemaDiff measures schema diffs (-schema-tables 0 leaves them out).
	SchemaDiff *SchemaDiffResult `json:"schema_diff,omitempty"`
	// Wait measures how late ace.wait and the CALL forms see a task's end (-wait=false leaves it out).
	Wait *WaitResult `json:"wait,omitempty"`
	// Resync measures ace.resync_node of an emptied node against a reload by hand (-resync=false
	// leaves it out).
	Resync *ResyncResult `json:"resync,omitempty"`
}

func main() {
	var o options
	flag.IntVar(&o.rows, "rows", 1_000_000, "rows per node")
	flag.IntVar(&o.nodes, "nodes", 3, "nodes of the cluster (at least 3): the diffs compare all of them")
	flag.IntVar(&o.diffs, "diffs", 100, "differences planted, scattered over the key space")
	flag.IntVar(&o.repeat, "repeat", 3, "measurements of each kind; ratios use the medians")
	flag.StringVar(&o.bin, "bin", "bin/ace-agent", "the ace-agent binary")
	flag.StringVar(&o.out, "out", "bench-results/bench.json", "where to write the results")
	flag.BoolVar(&o.emptyNode, "empty-node", true, "also diff a full node against an empty one, with a fresh agent, for its peak RSS")
	flag.BoolVar(&o.mtree, "mtree", true, "also measure Merkle trees: build, diffs after 100 and 10,000 updates, the change stream under load")
	flag.IntVar(&o.leafRows, "leaf-rows", 0, "rows per leaf of the Merkle tree (0: ace.mtree_build's default)")
	flag.BoolVar(&o.onlyMtree, "only-mtree", false, "measure the one pass and the Merkle trees only")
	flag.BoolVar(&o.onlySchema, "only-schema", false, "measure the schema diffs only")
	flag.IntVar(&o.schemaTables, "schema-tables", 200, "tables of the data schema-diff (0: no schema-diff measurements)")
	flag.IntVar(&o.schemaRows, "schema-rows", 1_000_000, "rows of the data schema-diff's tables in all, per node")
	flag.IntVar(&o.structureTables, "structure-tables", 1000, "tables of the structure schema-diff")
	flag.BoolVar(&o.wait, "wait", true, "also measure how late ace.wait and the CALL forms see a task's end")
	flag.BoolVar(&o.resync, "resync", true, "also time ace.resync_node of an emptied node against pg_dump | psql")
	flag.BoolVar(&o.onlyResync, "only-resync", false, "measure the resync of an emptied node only")
	flag.BoolVar(&o.randomOrder, "random-order", false, "store the table's rows in random physical order instead of key order")
	flag.Parse()
	if o.nodes < 3 {
		fmt.Fprintln(os.Stderr, "bench: -nodes must be at least 3: the planted differences touch n1, n2 and n3")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
}

func run(ctx context.Context, o options) error {
	c, err := localpg.Start(ctx, localpg.Options{Nodes: o.nodes, Settings: map[string]string{"shared_buffers": "512MB"}})
	if err != nil {
		return err
	}
	defer c.Stop(context.WithoutCancel(ctx))
	meter = newCPUMeter(c)
	r := Result{Rows: o.rows, Diffs: o.diffs, Nodes: len(c.Nodes), RandomOrder: o.randomOrder}
	if o.onlyResync {
		conns, err := prepare(ctx, c, o)
		if err != nil {
			return err
		}
		if err := measureResync(ctx, c, conns, o, &r); err != nil {
			return err
		}
		return report(r, o.out)
	}
	if !o.onlySchema {
		if err := measureTableDiff(ctx, c, o, &r); err != nil {
			return err
		}
	}
	if o.schemaTables > 0 {
		if err := measureSchemaDiff(ctx, c, o, &r); err != nil {
			return err
		}
	}
	return report(r, o.out)
}

// measureTableDiff measures table-diff on one large table, then how late ace.wait sees a task's
// end, the Merkle trees and the diff against an empty node as asked.
func measureTableDiff(ctx context.Context, c *localpg.Cluster, o options, r *Result) error {
	conns, err := prepare(ctx, c, o)
	if err != nil {
		return err
	}
	agent, err := startAgent(ctx, o.bin, c.Nodes[0].DSN("bench"))
	if err != nil {
		return err
	}
	defer agent.stop()
	meter.agent = func() int { return agent.pid }
	if err := measure(ctx, conns, o, r); err != nil {
		return err
	}
	r.AgentPeakRSSMB = agent.peakRSSMB()
	agent.stop()
	if o.wait {
		if err := measureWait(ctx, c, r); err != nil {
			return err
		}
	}
	if o.mtree {
		if err := measureMtree(ctx, c, conns, o, r); err != nil {
			return err
		}
	}
	if o.emptyNode {
		if err := measureEmptyNode(ctx, c, conns, o, r); err != nil {
			return err
		}
	}
	if o.resync {
		return measureResync(ctx, c, conns, o, r)
	}
	return nil
}

// measureEmptyNode empties n3 and diffs n1 against it with a fresh agent, so its peak RSS is
// that diff's alone.
func measureEmptyNode(ctx context.Context, c *localpg.Cluster, conns []*pgx.Conn, o options, r *Result) error {
	step("emptying n3 for the every-row-differs diff")
	if _, err := conns[2].Exec(ctx, "TRUNCATE public.bench"); err != nil {
		return err
	}
	agent, err := startAgent(ctx, o.bin, c.Nodes[0].DSN("bench"))
	if err != nil {
		return err
	}
	defer agent.stop()
	d, found, err := diffNodes(ctx, conns[0], []string{"n1", "n3"})
	if err != nil {
		return err
	}
	r.EmptyNodeSeconds, r.EmptyNodeDiffs, r.EmptyNodeRSSMB = d.Seconds(), found, agent.peakRSSMB()
	return nil
}

// meter measures the CPU time of each measurement beside its wall-clock time.
var meter = &cpuMeter{agent: func() int { return 0 }}

// timed runs fn and returns the CPU seconds PostgreSQL and the agent used meanwhile.
func timed(fn func() error) (pg, agent float64, err error) {
	pg0, a0 := meter.sample()
	err = fn()
	pg1, a1 := meter.sample()
	return pg1 - pg0, a1 - a0, err
}

func measure(ctx context.Context, conns []*pgx.Conn, o options, r *Result) error {
	// A warm-up pass loads the tables into shared buffers for every measurement alike.
	if _, err := onePass(ctx, conns); err != nil {
		return err
	}
	for range o.repeat {
		var d time.Duration
		cpu, _, err := timed(func() (err error) { d, err = onePass(ctx, conns); return err })
		if err != nil {
			return err
		}
		r.OnePassSeconds = append(r.OnePassSeconds, d.Seconds())
		r.OnePassCPU = append(r.OnePassCPU, cpu)
		if o.onlyMtree {
			continue
		}
		cpu, agentCPU, err := timed(func() (err error) { d, _, r.LeafSummary, err = diff(ctx, conns[0]); return err })
		if err != nil {
			return err
		}
		r.IdenticalSeconds = append(r.IdenticalSeconds, d.Seconds())
		r.IdenticalCPU = append(r.IdenticalCPU, cpu)
		r.IdenticalAgentCPU = append(r.IdenticalAgentCPU, agentCPU)
	}
	if o.onlyMtree {
		return nil
	}
	step("planting %d differences", o.diffs)
	if err := plant(ctx, conns, o); err != nil {
		return err
	}
	for range o.repeat {
		var d time.Duration
		var found int64
		cpu, _, err := timed(func() (err error) { d, found, _, err = diff(ctx, conns[0]); return err })
		if err != nil {
			return err
		}
		r.DriftSeconds = append(r.DriftSeconds, d.Seconds())
		r.DriftCPU = append(r.DriftCPU, cpu)
		r.DifferencesFound = found
	}
	pass := median(r.OnePassSeconds)
	r.IdenticalRatio = median(r.IdenticalSeconds) / pass
	r.DriftRatio = median(r.DriftSeconds) / pass
	r.IdenticalCPURatio = median(r.IdenticalCPU) / median(r.OnePassCPU)
	r.DriftCPURatio = median(r.DriftCPU) / median(r.OnePassCPU)
	r.RowsPerSecond = float64(o.rows*len(conns)) / median(r.IdenticalSeconds)
	return nil
}

func step(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

const tableDDL = `CREATE TABLE public.bench (
    id       bigint PRIMARY KEY,
    customer text,
    email    text,
    amount   numeric(12,2),
    qty      int,
    created  timestamptz,
    active   boolean,
    tags     text[],
    attrs    jsonb,
    note     text
)`

// loadSQL fills the table with rows of about 200 bytes of mixed types.
const loadSQL = `INSERT INTO public.bench
SELECT g, 'customer ' || (g % 100000), 'user' || g || '@example.com', (g % 100000) * 1.37, g % 97,
       '2025-01-01 00:00:00+00'::timestamptz + g * interval '17 seconds', g % 3 = 0,
       ARRAY['tag' || (g % 10), 'tag' || (g % 7)], jsonb_build_object('sku', g % 1000, 'color', 'blue', 'size', g % 5),
       md5(g::text) || ' ' || (g % 1000)
FROM generate_series(1, $1) g`

func prepare(ctx context.Context, c *localpg.Cluster, o options) ([]*pgx.Conn, error) {
	var conns []*pgx.Conn
	for _, n := range c.Nodes {
		admin, err := pgx.Connect(ctx, n.DSN("postgres"))
		if err != nil {
			return nil, err
		}
		_, err = admin.Exec(ctx, "CREATE DATABASE bench")
		admin.Close(ctx)
		if err != nil {
			return nil, err
		}
		conn, err := pgx.Connect(ctx, n.DSN("bench"))
		if err != nil {
			return nil, err
		}
		conns = append(conns, conn)
	}
	for i, conn := range conns {
		step("loading %d rows on %s", o.rows, c.Nodes[i].Name)
		if _, err := sqlapi.Install(ctx, conn); err != nil {
			return nil, err
		}
		for _, n := range c.Nodes {
			if err := sqlapi.AddNode(ctx, conn, sqlapi.RegisteredNode{Name: n.Name, ConnInfo: n.DSN("bench")}); err != nil {
				return nil, err
			}
		}
		// The checkpoint writes the load out now, not during a measurement.
		load := loadSQL
		if o.randomOrder {
			load += " ORDER BY random()"
		}
		for _, sql := range []string{tableDDL, load, "VACUUM ANALYZE public.bench", "CHECKPOINT"} {
			var args []any
			if strings.Contains(sql, "$1") {
				args = append(args, o.rows)
			}
			if _, err := conn.Exec(ctx, sql, args...); err != nil {
				return nil, fmt.Errorf("load %s: %w", c.Nodes[i].Name, err)
			}
		}
	}
	return conns, nil
}

// onePass is the reference cost: on each node in turn, one hashing pass over the table's text.
func onePass(ctx context.Context, conns []*pgx.Conn) (time.Duration, error) {
	start := time.Now()
	for _, conn := range conns {
		var n int64
		var sum string
		if err := conn.QueryRow(ctx, `SELECT count(*), sum(hashtextextended(t::text, 0))::text FROM public.bench t`).Scan(&n, &sum); err != nil {
			return 0, fmt.Errorf("one-pass reference: %w", err)
		}
	}
	d := time.Since(start)
	step("one pass over %d nodes: %.3fs", len(conns), d.Seconds())
	return d, nil
}

// diff runs a table-diff of every node and returns its time, the differing rows it found and
// how it summarised its leaves.
func diff(ctx context.Context, conn *pgx.Conn) (time.Duration, int64, string, error) {
	return diffNodesSummary(ctx, conn, nil)
}

func diffNodes(ctx context.Context, conn *pgx.Conn, nodes []string) (time.Duration, int64, error) {
	d, found, _, err := diffNodesSummary(ctx, conn, nodes)
	return d, found, err
}

func diffNodesSummary(ctx context.Context, conn *pgx.Conn, nodes []string) (time.Duration, int64, string, error) {
	start := time.Now()
	id, err := sqlapi.Submit(ctx, conn, sqlapi.TypeTableDiff, sqlapi.TableDiffArgs{DiffArgs: sqlapi.DiffArgs{TableName: "public.bench", Nodes: nodes}})
	if err != nil {
		return 0, 0, "", err
	}
	t, err := sqlapi.Wait(ctx, conn, id, 50*time.Millisecond, nil)
	if err != nil {
		return 0, 0, "", err
	}
	d := time.Since(start)
	if t.Status != sqlapi.StatusCompleted {
		return 0, 0, "", fmt.Errorf("diff %s ended %s: %v", id, t.Status, deref(t.Error))
	}
	var s struct {
		DifferingKeys int64  `json:"differing_keys"`
		LeafSummary   string `json:"leaf_summary"`
	}
	if err := json.Unmarshal(t.Result, &s); err != nil {
		return 0, 0, "", err
	}
	step("table-diff: %.3fs, %d differing rows, leaves summarised by %q", d.Seconds(), s.DifferingKeys, s.LeafSummary)
	return d, s.DifferingKeys, s.LeafSummary, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// plantedID is the key of the i-th planted difference.
func plantedID(o options, i int) int64 {
	return int64(i)*int64(o.rows)/int64(o.diffs) + 1 + int64(i%7)
}

// unplant makes the planted rows identical on every node again, as loaded.
func unplant(ctx context.Context, conns []*pgx.Conn, o options) error {
	ids := make([]int64, o.diffs)
	for i := range ids {
		ids[i] = plantedID(o, i)
	}
	reload := strings.Replace(loadSQL, "FROM generate_series(1, $1) g", "FROM unnest($1::bigint[]) g", 1)
	for _, conn := range conns {
		if _, err := conn.Exec(ctx, `DELETE FROM public.bench WHERE id = ANY($1)`, ids); err != nil {
			return fmt.Errorf("undo the planted differences: %w", err)
		}
		if _, err := conn.Exec(ctx, reload, ids); err != nil {
			return fmt.Errorf("undo the planted differences: %w", err)
		}
	}
	return nil
}

// plant spreads updates (n2), deletes (n3) and inserts beyond nothing (n1) over the key space.
func plant(ctx context.Context, conns []*pgx.Conn, o options) error {
	for i := range o.diffs {
		id := plantedID(o, i)
		var sql string
		var conn *pgx.Conn
		switch i % 3 {
		case 0:
			conn, sql = conns[1], `UPDATE public.bench SET note = 'drift' WHERE id = $1`
		case 1:
			conn, sql = conns[2], `DELETE FROM public.bench WHERE id = $1`
		default:
			conn, sql = conns[0], `UPDATE public.bench SET amount = amount + 0.01 WHERE id = $1`
		}
		if _, err := conn.Exec(ctx, sql, id); err != nil {
			return fmt.Errorf("plant difference at %d: %w", id, err)
		}
	}
	return nil
}

type agentProc struct {
	cmd *exec.Cmd
	pid int
}

func startAgent(ctx context.Context, bin, dsn string) (*agentProc, error) {
	return startAgentOn(ctx, bin, dsn, "n1")
}

func startAgentOn(ctx context.Context, bin, dsn, node string) (*agentProc, error) {
	cmd := exec.CommandContext(ctx, bin, "run")
	cmd.Env = append(os.Environ(), "ACE_DSN="+dsn, "ACE_NODE="+node, "ACE_POLL_INTERVAL=100ms", "ACE_LOG_LEVEL=warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start agent %s (run make build first): %w", bin, err)
	}
	return &agentProc{cmd: cmd, pid: cmd.Process.Pid}, nil
}

// peakRSSMB reads the agent's high-water resident set size from /proc.
func (a *agentProc) peakRSSMB() float64 {
	raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(a.pid), "status"))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func (a *agentProc) stop() {
	if a.cmd.ProcessState != nil {
		return
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	_ = a.cmd.Wait()
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func report(r Result, out string) error {
	if len(r.OnePassSeconds) > 0 {
		fmt.Printf("rows per node:            %d (%d nodes), %d differences planted, %d found\n", r.Rows, r.Nodes, r.Diffs, r.DifferencesFound)
		fmt.Printf("physical order, leaves:   %s, summarised by %q\n", map[bool]string{false: "key order", true: "random order"}[r.RandomOrder], r.LeafSummary)
		fmt.Printf("one-pass cost (median):   %.3fs   runs %v\n", median(r.OnePassSeconds), fmtSeconds(r.OnePassSeconds))
		fmt.Printf("identical tables:         %.3fs   ratio %.2f   runs %v\n", median(r.IdenticalSeconds), r.IdenticalRatio, fmtSeconds(r.IdenticalSeconds))
		fmt.Printf("scattered differences:    %.3fs   ratio %.2f   runs %v\n", median(r.DriftSeconds), r.DriftRatio, fmtSeconds(r.DriftSeconds))
		fmt.Printf("CPU seconds (PostgreSQL): one pass %.2f, identical %.2f (ratio %.2f), scattered %.2f (ratio %.2f); agent %.2f in an identical diff\n",
			median(r.OnePassCPU), median(r.IdenticalCPU), r.IdenticalCPURatio, median(r.DriftCPU), r.DriftCPURatio, median(r.IdenticalAgentCPU))
		fmt.Printf("rows hashed per second:   %.0f\n", r.RowsPerSecond)
		fmt.Printf("agent peak RSS:           %.1f MB\n", r.AgentPeakRSSMB)
	}
	if m := r.Mtree; m != nil {
		fmt.Printf("mtree build:              %.3fs   ratio %.2f   CPU ratio %.2f\n", m.BuildSeconds, m.BuildRatio, m.BuildCPURatio)
		fmt.Printf("mtree diff, 100 updates:  %.3fs   runs %v as psql sees it; engine %.3fs, claim %.3fs (medians)\n", median(m.Diff100Seconds), fmtSeconds(m.Diff100Seconds), median(m.Diff100EngineSeconds), median(m.Diff100ClaimSeconds))
		fmt.Printf("mtree diff, 10k updates:  %.3fs   ratio to table-diff (%.3fs) %.2f\n", m.Diff10kSeconds, m.TableDiff10kSeconds, m.Diff10kRatio)
		fmt.Printf("change stream under load: %.0f changes/s, largest lag %d bytes, caught up %.3fs after, agent peak RSS %.1f MB\n",
			m.LoadChangesPerSec, m.LoadMaxLagBytes, m.LoadCatchUpSeconds, m.AgentPeakRSSMB)
	}
	if r.EmptyNodeDiffs > 0 {
		fmt.Printf("full node vs empty node:  %.3fs, %d differing rows, agent peak RSS %.1f MB\n", r.EmptyNodeSeconds, r.EmptyNodeDiffs, r.EmptyNodeRSSMB)
	}
	if s := r.Resync; s != nil {
		fmt.Printf("resync of an emptied node: %.3fs (diff %.3fs, repair %.3fs), pg_dump | psql %.3fs, ratio %.2f\n",
			s.ResyncSeconds, s.DiffSeconds, s.RepairSeconds, s.ReloadSeconds, s.Ratio)
	}
	if s := r.SchemaDiff; s != nil {
		fmt.Printf("schema one pass:          %.3fs   %d tables, %d rows in all   runs %v\n", median(s.OnePassSeconds), s.Tables, s.TotalRows, fmtSeconds(s.OnePassSeconds))
		fmt.Printf("schema-diff (data):       %.3fs   ratio %.2f   runs %v\n", median(s.DataSeconds), s.DataRatio, fmtSeconds(s.DataSeconds))
		if s.AceSeconds > 0 {
			fmt.Printf("ACE schema-diff (data):   %.3fs   ratio %.2f   (%s)\n", s.AceSeconds, s.AceRatio, os.Getenv(aceBinEnv))
		} else {
			fmt.Printf("ACE schema-diff (data):   skipped: set %s to ACE's binary to run it on the same tables\n", aceBinEnv)
		}
		if s.StructureTables > 0 {
			fmt.Printf("schema-diff (structure):  %.3fs   %d tables\n", s.StructureSeconds, s.StructureTables)
		}
	}
	if r.Wait != nil {
		reportWait(r.Wait)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	raw, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	fmt.Printf("written to %s\n", out)
	return os.WriteFile(out, append(raw, '\n'), 0o644)
}

func fmtSeconds(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.FormatFloat(x, 'f', 3, 64)
	}
	return "[" + strings.Join(parts, " ") + "]"
}
