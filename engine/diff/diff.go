package diff

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/sourcegraph/conc/pool"

	"github.com/ace-agent/ace-agent/engine"
)

// Defaults for a table-diff's tuning options. A block is hashed by one query per node; a table
// that fits one block is read by one sequential scan with no range predicate, measured to cost
// about a third less than ten index range scans of 100,000 rows each (ACE's default size).
const (
	defaultBlockSize       = 1_000_000
	defaultCompareUnitSize = 100
)

// TableDiffOptions are the inputs of TableDiff.
type TableDiffOptions struct {
	Table           string // schema.table
	BlockSize       int    // rows per initial block, hashed by one query per node
	CompareUnitSize int    // rows per leaf: ranges this small are compared row by row
	TableFilter     string // SQL predicate applied on every node
	MaxDiffRows     int64  // per node pair; 0 = no limit
	Workers         int    // blocks hashed at once
	// AgainstOrigin limits the diff to rows whose last write came from this node (a node name,
	// or a replication origin's name or id): written there, or replicated from it.
	AgainstOrigin string
	// Until limits the diff to rows committed at or before this time; rows without a commit
	// timestamp (frozen, or older than track_commit_timestamp) always count.
	Until *time.Time
	// RecheckAfter, when set, compares the differing keys again after this long, at fresh
	// snapshots, and reports only the differences that persisted.
	RecheckAfter time.Duration
	// SetRoleSessions says the node sessions log in as the agent and SET ROLE to the submitter:
	// code the table runs on a read (row-level security policies) could step back to the
	// agent's login, so a table whose policies are owned by a non-superuser is refused. (The
	// table_filter is held to its allow-list in either mode.)
	SetRoleSessions bool
	// Leaves, when set, are the only ranges compared: already known to differ (a Merkle tree's
	// mismatched leaves, say), so they are narrowed down without planning or hashing the table.
	Leaves []Leaf
	// Keys, with Leaves, are keys compared one by one as well: the keys a Merkle tree knows
	// changed, in leaves whose other rows it has shown to match.
	Keys [][]string
	// Columns, when set, are the only columns compared besides the key: the hashes, the
	// fetched rows and the stored diff cover the key and these alone.
	Columns []string
	// RangeRows stores a range that some nodes hold identically and the others not at all as
	// one row (engine.KindMissingRange) instead of one per key, for a repair that copies it
	// whole (a node's resync). Only for a diff of the whole table and every column, with no
	// limit, fence or recheck (rangeRowsAllowed); otherwise it is ignored.
	RangeRows bool
	// Sessions, when set, are the node sessions to read at, one per node in the order of the
	// nodes sorted by name; the caller opened them and closes them.
	Sessions []*engine.Session
	// ForceSummary, when set, is how every block's leaves are summarised, whatever the nodes'
	// statistics say (SummaryAuto chooses): tests use it to check both kinds find every difference.
	ForceSummary SummaryKind
}

// Leaf is a range known to differ, with each node's row count in it (nodes sorted by name).
type Leaf struct {
	Range  engine.Range
	Counts []int64
}

func (o *TableDiffOptions) setDefaults() {
	if o.BlockSize <= 0 {
		o.BlockSize = defaultBlockSize
	}
	if o.CompareUnitSize <= 0 {
		o.CompareUnitSize = defaultCompareUnitSize
	}
	o.CompareUnitSize = max(o.CompareUnitSize, 2)
	if o.BlockSize < o.CompareUnitSize {
		o.BlockSize = o.CompareUnitSize
	}
	if o.Workers <= 0 {
		o.Workers = max(2, runtime.NumCPU())
	}
}

// errLimitReached stops the search once every node pair has max_diff_rows differences.
var errLimitReached = errors.New("max_diff_rows reached for every node pair")

// TableDiff compares a table across nodes (at least two) and streams the rows that differ into
// sink. Every node is read at one snapshot. The ranges are the same on every node and open at
// both ends; blocks are hashed with counts and two additive lanes; mismatched leaves are
// narrowed down to keys, and only those rows are fetched.
func TableDiff(ctx context.Context, nodes []*engine.Node, opts TableDiffOptions, sink engine.Sink, progress engine.ProgressFunc) (*engine.DiffSummary, error) {
	if len(nodes) < 2 {
		return nil, fmt.Errorf("table-diff needs at least 2 nodes, got %d", len(nodes))
	}
	opts.setDefaults()
	start := time.Now()
	d := newDiffer(opts, nodes, sink, progress)
	d.holdKeys = opts.RecheckAfter > 0
	defer d.closeSessions(ctx)
	if err := d.prepare(ctx); err != nil {
		return nil, err
	}
	if err := d.run(ctx); err != nil && !errors.Is(err, errLimitReached) {
		return nil, d.explain(err)
	}
	if opts.RecheckAfter > 0 {
		if err := d.recheckPersisting(ctx); err != nil && !errors.Is(err, errLimitReached) {
			return nil, d.explain(err)
		}
	}
	return d.summary(start), nil
}

func newDiffer(opts TableDiffOptions, nodes []*engine.Node, sink engine.Sink, progress engine.ProgressFunc) *differ {
	if progress == nil {
		progress = func(engine.Progress) {}
	}
	return &differ{opts: opts, nodes: sortedNodes(nodes), sink: sink, progress: progress, pairs: map[string]int64{}}
}

func nodeNames(nodes []*engine.Node) []string {
	names := make([]string, len(nodes))
	for i, n := range nodes {
		names[i] = n.Name
	}
	return names
}

func sortedNodes(nodes []*engine.Node) []*engine.Node {
	out := append([]*engine.Node(nil), nodes...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

type differ struct {
	opts     TableDiffOptions
	nodes    []*engine.Node
	sessions []*engine.Session
	borrowed bool // sessions belong to the caller
	table    *engine.Table
	tables   []*engine.Table // each node's view, for per-node settings such as CommitTS
	keys     engine.KeyOrder
	mode     engine.HashMode
	hash     engine.RowHash
	filter   string
	untilSQL string
	// originSQL is each node's against_origin predicate; originIDs the ids it resolved to.
	originSQL []string
	originIDs map[string][]uint32
	sink      engine.Sink
	progress  engine.ProgressFunc

	// holdKeys makes a first pass remember differing keys (heldKeys) for a recheck instead of
	// reporting them.
	holdKeys  bool
	heldKeys  [][]string
	transient int64

	mu          sync.Mutex
	sinkMu      sync.Mutex
	prog        engine.Progress
	pairs       map[string]int64
	limitHit    bool
	mismatched  int
	keyRanges   int64       // differing key ranges stored whole (ranges.go)
	summaryKind SummaryKind // how blocks summarise their leaves (chooseSummary)
	// parts is, per node, how many queries hash a block's parts at once (chooseSummary), and
	// pages the table's heap pages there; nil for a table hashed whole without planning.
	parts       []int
	pages       []int64
	rowsPerNode []int64
	blocks      int
	warnings    []string
}

// prepare reads and checks the table on every node, validates the filter and opens the
// snapshots.
func (d *differ) prepare(ctx context.Context) error {
	d.setPhase("checking table")
	tables, mode, err := engine.LoadTables(ctx, d.nodes, d.opts.Table, d.opts.Columns)
	if err != nil {
		return err
	}
	d.mode = mode
	d.table = tables[0]
	d.tables = tables
	if d.keys, err = engine.NewKeyOrder(tables, nodeNames(d.nodes)); err != nil {
		return err
	}
	d.hash = engine.NewRowHash(d.table.Columns, d.mode)
	d.rowsPerNode = make([]int64, len(d.nodes))
	d.filter = "true"
	if f := strings.TrimSpace(d.opts.TableFilter); f != "" {
		d.filter = engine.WrapFilter(f)
	}
	if d.opts.SetRoleSessions {
		if err := d.checkReadCode(ctx); err != nil {
			return err
		}
	}
	if err := d.openSessions(ctx, tables); err != nil {
		return err
	}
	if err := d.prepareFences(ctx); err != nil {
		return err
	}
	return d.checkFilter(ctx)
}

func (d *differ) openSessions(ctx context.Context, tables []*engine.Table) error {
	if d.opts.Sessions != nil {
		if len(d.opts.Sessions) != len(d.nodes) {
			return fmt.Errorf("%d sessions given for %d nodes", len(d.opts.Sessions), len(d.nodes))
		}
		d.sessions, d.borrowed = d.opts.Sessions, true
		return nil
	}
	d.sessions = make([]*engine.Session, len(d.nodes))
	return d.onAllNodes(ctx, func(ctx context.Context, i int) error {
		s, err := engine.OpenSession(ctx, d.nodes[i])
		d.sessions[i] = s
		return err
	})
}

func (d *differ) closeSessions(ctx context.Context) {
	if d.borrowed {
		return
	}
	for _, s := range d.sessions {
		if s != nil {
			s.Close(ctx)
		}
	}
}

// explain names the filter as the culprit when a query failed because something tried to write.
func (d *differ) explain(err error) error {
	var pgErr *pgconn.PgError
	if d.filter != "true" && errors.As(err, &pgErr) && pgErr.Code == pgerrcode.ReadOnlySQLTransaction {
		return fmt.Errorf("table_filter %q tried to write, and diffs only read: %w", d.opts.TableFilter, err)
	}
	return err
}

// checkFilter checks the filter on every node (engine.CheckFilter), then runs the filtered query
// for one row, so an error the filter raises on the table's rows is reported as the filter's.
// That trial runs, as every query of the diff, with the extended protocol in a READ ONLY
// transaction, and under the check's statement timeout: a filter that is slow to match a first
// row is not wrong, so the timeout only ends the trial.
func (d *differ) checkFilter(ctx context.Context) error {
	if d.filter == "true" {
		return nil
	}
	sql := "SELECT 1 FROM " + d.table.Qualified() + " WHERE " + d.filter + " LIMIT 1"
	for i, s := range d.sessions {
		if err := engine.CheckFilter(ctx, d.nodes[i].Pool, d.table, d.filter); err != nil {
			return fmt.Errorf("table_filter %q refused on node %s: %w", d.opts.TableFilter, d.nodes[i].Name, d.explain(err))
		}
		err := s.Read(ctx, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, engine.SetCheckTimeout); err != nil {
				return err
			}
			rows, err := tx.Query(ctx, sql)
			if err != nil {
				return err
			}
			rows.Close()
			if err := rows.Err(); engine.IsStatementTimeout(err) {
				return errTrialTimedOut
			}
			return rows.Err()
		})
		if err != nil && !errors.Is(err, errTrialTimedOut) {
			return fmt.Errorf("invalid table_filter %q: %w", d.opts.TableFilter, d.explain(err))
		}
	}
	return nil
}

// errTrialTimedOut ends a filter's trial that found no first row within the check's timeout.
var errTrialTimedOut = errors.New("the filter's trial query ran out of time")

func (d *differ) run(ctx context.Context) error {
	if d.opts.Leaves != nil {
		d.setPhase("narrowing")
		if err := d.resolveLeaves(ctx, d.opts.Leaves); err != nil {
			return err
		}
		return d.compareKeys(ctx, d.opts.Keys)
	}
	d.setPhase("planning ranges")
	blocks, err := d.planBlocks(ctx)
	if err != nil {
		return err
	}
	if err := d.chooseSummary(ctx, blocks); err != nil {
		return err
	}
	d.mu.Lock()
	d.blocks = len(blocks)
	d.prog.BlocksTotal = len(blocks)
	d.prog.Phase = "hashing"
	d.mu.Unlock()
	d.report()
	p := pool.New().WithErrors().WithContext(ctx).WithCancelOnError().WithMaxGoroutines(d.opts.Workers)
	for _, b := range blocks {
		p.Go(func(ctx context.Context) error {
			if err := d.diffBlock(ctx, b); err != nil {
				return err
			}
			d.blockDone()
			return nil
		})
	}
	return p.Wait()
}

func (d *differ) setPhase(phase string) {
	d.mu.Lock()
	d.prog.Phase = phase
	d.mu.Unlock()
	d.report()
}

// blockDone counts a finished block (or recheck batch) and reports progress.
func (d *differ) blockDone() {
	d.mu.Lock()
	d.prog.BlocksDone++
	d.mu.Unlock()
	d.report()
}

func (d *differ) report() {
	d.mu.Lock()
	p := d.prog
	d.mu.Unlock()
	d.progress(p)
}

func (d *differ) summary(start time.Time) *engine.DiffSummary {
	end := time.Now()
	s := &engine.DiffSummary{
		Schema: d.table.Schema, Table: d.table.Name, TableName: d.table.Display(), TableFilter: d.opts.TableFilter,
		BlockSize: d.opts.BlockSize, CompareUnitSize: d.opts.CompareUnitSize, MaxDiffRows: d.opts.MaxDiffRows,
		ConcurrencyFactor: float64(d.opts.Workers) / float64(runtime.NumCPU()),
		StartTime:         start.UTC(), EndTime: end.UTC(),
		TimeTaken: end.Sub(start).Round(time.Millisecond).String(), TimeTakenSeconds: end.Sub(start).Seconds(),
		DiffRowsCount: map[string]int64{}, DiffRowLimitReached: d.limitHit, RowsPerNode: map[string]int64{},
		InitialRangesCount: d.blocks, MismatchedRangesCount: d.mismatched,
		PrimaryKey: d.table.PKNames(), Columns: d.table.ColumnNames(), ColumnTypes: d.table.ColumnTypes(),
		DifferingKeys: d.prog.DifferingKeys, HashMode: d.mode, HashVersion: engine.HashVersion, Warnings: d.warnings,
		LeafSummary:   string(d.summaryKind),
		AgainstOrigin: d.opts.AgainstOrigin, OriginIDs: d.originIDs, OriginOnly: d.opts.AgainstOrigin != "",
		Until: d.opts.Until, TransientDiffs: d.transient, CompareColumns: d.opts.Columns, KeyRanges: d.keyRanges,
	}
	if d.opts.RecheckAfter > 0 {
		s.RecheckAfter = d.opts.RecheckAfter.String()
	}
	for i, n := range d.nodes {
		s.Nodes = append(s.Nodes, n.Name)
		s.RowsPerNode[n.Name] = d.rowsPerNode[i]
		s.TotalRowsChecked = max(s.TotalRowsChecked, d.rowsPerNode[i])
		for _, m := range d.nodes[i+1:] {
			s.DiffRowsCount[pairKey(n.Name, m.Name)] = d.pairs[pairKey(n.Name, m.Name)]
		}
	}
	if s.TotalRowsChecked == 0 && d.opts.TableFilter != "" {
		s.Warnings = append(s.Warnings, "the table filter matched no rows on any node")
	}
	return s
}

func pairKey(a, b string) string {
	if b < a {
		a, b = b, a
	}
	return a + "/" + b
}

// checkReadCode refuses, on every node, a table whose reads would run code a non-superuser owns.
func (d *differ) checkReadCode(ctx context.Context) error {
	for i, n := range d.nodes {
		if err := engine.CheckTableCode(ctx, n, d.tables[i], "", engine.CodeUse{Read: true}); err != nil {
			return err
		}
	}
	return nil
}
