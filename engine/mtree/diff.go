package mtree

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/sourcegraph/conc/pool"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/diff"
)

// DiffOptions are the inputs of Diff: the table-diff options that apply (its Table, filter,
// limits, fences and recheck; not BlockSize, the leaves are the ranges) and how long to wait
// for the nodes' streams to catch up.
type DiffOptions struct {
	Diff       diff.TableDiffOptions
	CDCTimeout time.Duration
}

// lockTimeout bounds the wait for a tree another task is refreshing.
const lockTimeout = "60s"

// treeWorkMem is the work_mem of the agent's transactions that compare and refresh a tree: its
// leaves' summaries are grouped into parents, about 1 kB of memory a leaf.
const treeWorkMem = "64MB"

// Diff compares the table's trees on every node and reports the differing rows as a table-diff
// does. Every node's tree is first brought up to the WAL position the node had when the diff
// began: a tree that has not caught up is never compared.
func Diff(ctx context.Context, nodes []NodeLogins, opts DiffOptions, sink engine.Sink, progress engine.ProgressFunc) (*engine.DiffSummary, error) {
	if len(nodes) < 2 {
		return nil, fmt.Errorf("mtree-diff needs at least 2 nodes, got %d", len(nodes))
	}
	if progress == nil {
		progress = func(engine.Progress) {}
	}
	start := time.Now()
	d := &differ{nodes: sortNodes(nodes), opts: opts, progress: progress, mark: start,
		stats: &engine.MtreeStats{LeavesRefreshed: map[string]int{}, CaughtUpTo: map[string]string{}, PhaseSeconds: map[string]float64{}}}
	defer d.close(ctx)
	leaves, keys, rows, err := d.treeDiff(ctx)
	if err != nil {
		return nil, err
	}
	d.phase("narrowing")
	dopts := opts.Diff
	dopts.Leaves, dopts.Keys, dopts.Sessions = leaves, keys, d.sessions
	// A mismatched leaf holds at most twice leaf_rows once rebalanced: its rows are compared
	// one by one at once, not hashed again in pieces first.
	dopts.CompareUnitSize = max(dopts.CompareUnitSize, d.trees[0].LeafRows)
	if dopts.Leaves == nil {
		dopts.Leaves = []diff.Leaf{}
	}
	summary, err := diff.TableDiff(ctx, dataNodes(d.nodes), dopts, sink, progress)
	if err != nil {
		return nil, err
	}
	d.lap("narrow")
	summary.Mtree = d.stats
	summary.BlockSize, summary.InitialRangesCount, summary.MismatchedRangesCount = d.trees[0].LeafRows, d.stats.Leaves, len(leaves)
	summary.TotalRowsChecked = 0
	for i, n := range d.nodes {
		summary.RowsPerNode[n.Name()] = rows[i]
		summary.TotalRowsChecked = max(summary.TotalRowsChecked, rows[i])
	}
	end := time.Now()
	summary.StartTime, summary.EndTime = start.UTC(), end.UTC()
	summary.TimeTaken, summary.TimeTakenSeconds = end.Sub(start).Round(time.Millisecond).String(), end.Sub(start).Seconds()
	return summary, nil
}

type differ struct {
	nodes    []NodeLogins
	opts     DiffOptions
	progress engine.ProgressFunc
	stats    *engine.MtreeStats
	sub      *subject
	trees    []*tree
	conns    []*pgxpool.Conn
	txs      []pgx.Tx // the agent's transactions, each holding its node's tree lock
	sessions []*engine.Session
	snaps    []string
	cands    candidates
	history  []leafHistory // per node: what its refresh knew of its leaves before it hashed them
	reshaped map[int]bool  // leaves this diff's rebalance split or merged
	mark     time.Time     // when the phase being timed began
}

// leafCount is how many leaves node i's tree has, counted up to limit: a caller that only
// compares it with limit need not count a large tree's leaves.
func (d *differ) leafCount(ctx context.Context, i int, limit int) (int, error) {
	var n int
	err := d.txs[i].QueryRow(ctx, `SELECT count(*) FROM (SELECT FROM ace.mtree_leaves WHERE tree_id = $1 LIMIT $2) l`, d.trees[i].ID, limit).Scan(&n)
	return n, err
}

func (d *differ) phase(p string) { d.progress(engine.Progress{Phase: p}) }

// lap records how long the phase that just ended took.
func (d *differ) lap(name string) {
	d.stats.PhaseSeconds[name] = time.Since(d.mark).Seconds()
	d.mark = time.Now()
}

// treeDiff brings every tree up to date, rebalances them and compares them: the mismatched
// leaves to narrow down, with each node's count there, the changed keys that settle the
// other mismatched leaves, and each node's row count.
func (d *differ) treeDiff(ctx context.Context) ([]diff.Leaf, [][]string, []int64, error) {
	d.phase("checking table")
	sub, err := loadSubject(ctx, d.nodes, d.opts.Diff.Table)
	if err != nil {
		return nil, nil, nil, err
	}
	d.sub = sub
	if err := d.loadTrees(ctx); err != nil {
		return nil, nil, nil, err
	}
	d.lap("prepare")
	d.phase("catching up with the change streams")
	if err := d.onNodes(ctx, d.catchUp); err != nil {
		return nil, nil, nil, err
	}
	d.lap("catch_up")
	d.stats.CatchUpSeconds = d.stats.PhaseSeconds["catch_up"]
	if err := d.lockTrees(ctx); err != nil {
		return nil, nil, nil, err
	}
	if err := d.openSessions(ctx); err != nil {
		return nil, nil, nil, err
	}
	d.lap("lock")
	d.phase("refreshing stale leaves")
	refreshed := make([][]int, len(d.nodes))
	d.history = make([]leafHistory, len(d.nodes))
	err = d.onNodes(ctx, func(ctx context.Context, i int) error {
		ids, err := d.refreshNode(ctx, i)
		refreshed[i] = ids
		d.stats.LeavesRefreshed[d.nodes[i].Name()] = len(ids)
		return err
	})
	if err != nil {
		return nil, nil, nil, err
	}
	d.lap("refresh")
	d.phase("rebalancing leaves")
	if err := d.rebalance(ctx, refreshed); err != nil {
		return nil, nil, nil, fmt.Errorf("rebalance the leaves: %w", err)
	}
	d.lap("rebalance")
	d.phase("comparing trees")
	mismatched, sums, ids, rows, err := d.compare(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	d.stats.MismatchedLeaves = len(mismatched)
	leaves, keys, err := d.settle(ctx, mismatched, sums, ids)
	if err != nil {
		return nil, nil, nil, err
	}
	d.stats.SettledLeaves = len(mismatched) - len(leaves)
	err = d.commit(ctx)
	d.lap("compare")
	return leaves, keys, rows, err
}

func (d *differ) onNodes(ctx context.Context, fn func(ctx context.Context, i int) error) error {
	p := pool.New().WithErrors().WithContext(ctx).WithCancelOnError()
	for i := range d.nodes {
		p.Go(func(ctx context.Context) error {
			if err := fn(ctx, i); err != nil {
				return fmt.Errorf("node %s: %w", d.nodes[i].Name(), err)
			}
			return nil
		})
	}
	return p.Wait()
}

// loadTrees reads every node's tree and checks that they are trees of the same table, built
// together, with the row hash and key order the diff uses.
func (d *differ) loadTrees(ctx context.Context) error {
	d.trees = make([]*tree, len(d.nodes))
	err := d.onNodes(ctx, func(ctx context.Context, i int) error {
		if err := checkAccess(ctx, d.nodes[i], d.opts.Diff.Table, true); err != nil {
			return err
		}
		t, err := loadTree(ctx, d.nodes[i].Agent.Pool, d.opts.Diff.Table, false)
		if errors.Is(err, errNoTree) {
			return fmt.Errorf("there is no Merkle tree of %s; build one with ace.mtree_build(%s), or compare without one with ace.table_diff",
				d.opts.Diff.Table, engine.QuoteLiteral(d.opts.Diff.Table))
		}
		if err != nil {
			return fmt.Errorf("read the tree of %s: %w", d.opts.Diff.Table, err)
		}
		d.trees[i] = t
		return t.usable(d.sub)
	})
	if err != nil {
		return err
	}
	d.sub.useLeaves(d.trees[0].LeafSummary, d.trees[0].LeafRows)
	d.stats.LeafSummary = string(d.trees[0].LeafSummary)
	for i, t := range d.trees[1:] {
		if t.LeafRows != d.trees[0].LeafRows || t.Generation != d.trees[0].Generation || t.LeafSummary != d.trees[0].LeafSummary {
			return fmt.Errorf("the Merkle trees of %s on %s and %s were not built and rebalanced together (an interrupted build or diff); build the tree again with ace.mtree_build(%s)",
				d.opts.Diff.Table, d.nodes[0].Name(), d.nodes[i+1].Name(), engine.QuoteLiteral(d.opts.Diff.Table))
		}
	}
	return nil
}

// usable checks that the tree can be compared with the diff's row hash and key order.
func (t *tree) usable(sub *subject) error {
	rebuild := fmt.Sprintf("build it again with ace.mtree_build(%s)", engine.QuoteLiteral(t.Table))
	switch {
	case t.Status != "ready":
		return fmt.Errorf("the Merkle tree of %s is %s, not ready%s; %s", t.Table, t.Status, errorSuffix(t.Error), rebuild)
	case t.HashVersion != engine.HashVersion:
		return fmt.Errorf("the Merkle tree of %s uses hash version %d, this agent %d; %s", t.Table, t.HashVersion, engine.HashVersion, rebuild)
	case t.HashMode != sub.mode:
		return fmt.Errorf("the Merkle tree of %s hashes in %s mode, the nodes now need %s mode; %s", t.Table, t.HashMode, sub.mode, rebuild)
	case !slices.Equal(t.CollateC, sub.keys.CollateC()):
		return fmt.Errorf("the key collations of %s changed since its Merkle tree was built; %s", t.Table, rebuild)
	}
	return nil
}

func errorSuffix(e *string) string {
	if e == nil {
		return ""
	}
	return " (" + *e + ")"
}

// lockTrees opens the agent's transaction on every node, in name order so two diffs cannot
// deadlock, each holding its tree's row lock until the diff has compared the trees.
func (d *differ) lockTrees(ctx context.Context) error {
	d.conns = make([]*pgxpool.Conn, len(d.nodes))
	d.txs = make([]pgx.Tx, len(d.nodes))
	for i, n := range d.nodes {
		conn, err := n.Agent.Pool.Acquire(ctx)
		if err != nil {
			return fmt.Errorf("node %s: connect as the agent: %w", n.Name(), err)
		}
		d.conns[i] = conn
		// One round trip begins, bounds the wait, and gives the comparison of every leaf room to
		// group them in memory (no arguments: the simple protocol takes all three). With the
		// default work_mem, 40,000 leaves were sorted on disk.
		begin := `BEGIN; SET LOCAL lock_timeout = '` + lockTimeout + `'; SET LOCAL work_mem = '` + treeWorkMem + `'`
		if d.txs[i], err = conn.BeginTx(ctx, pgx.TxOptions{BeginQuery: begin}); err != nil {
			return fmt.Errorf("node %s: begin: %w", n.Name(), err)
		}
		t, err := loadTree(ctx, d.txs[i], d.opts.Diff.Table, true)
		if engine.IsLockTimeout(err) {
			return fmt.Errorf("node %s: another task has held the Merkle tree of %s for over %s; try again when it ends", n.Name(), d.opts.Diff.Table, lockTimeout)
		}
		if err != nil {
			return fmt.Errorf("node %s: lock the tree of %s: %w", n.Name(), d.opts.Diff.Table, err)
		}
		if t.Generation != d.trees[i].Generation || t.Status != "ready" {
			return fmt.Errorf("node %s: the tree of %s changed while the diff started; run it again", n.Name(), d.opts.Diff.Table)
		}
		d.trees[i] = t
	}
	return nil
}

// openSessions opens each node's snapshot, after its tree lock: no refresh of another task can
// fall between the snapshot and this one's.
func (d *differ) openSessions(ctx context.Context) error {
	d.sessions = make([]*engine.Session, len(d.nodes))
	d.snaps = make([]string, len(d.nodes))
	return d.onNodes(ctx, func(ctx context.Context, i int) error {
		s, err := engine.OpenSession(ctx, d.nodes[i].Data)
		if err != nil {
			return err
		}
		d.sessions[i] = s
		d.snaps[i], err = snapshotOf(ctx, s)
		return err
	})
}

func (d *differ) commit(ctx context.Context) error {
	for i, tx := range d.txs {
		if err := tx.Commit(ctx); err != nil {
			return fmt.Errorf("node %s: store the refreshed tree: %w", d.nodes[i].Name(), err)
		}
	}
	d.txs = nil
	return nil
}

func (d *differ) close(ctx context.Context) {
	ctx = context.WithoutCancel(ctx)
	for _, tx := range d.txs {
		if tx != nil {
			_ = tx.Rollback(ctx)
		}
	}
	for _, c := range d.conns {
		if c != nil {
			c.Release()
		}
	}
	for _, s := range d.sessions {
		if s != nil {
			s.Close(ctx)
		}
	}
}
