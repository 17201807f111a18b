package mtree

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/sourcegraph/conc/pool"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/diff"
)

// BuildOptions are the inputs of Build.
type BuildOptions struct {
	Table    string // schema.table
	LeafRows int    // rows per leaf
	TaskID   string // recorded in the tree, for the record
	User     string // the submitting role, recorded in the tree
	// TrackTimeout bounds the wait for each node's agent to start streaming the table's changes.
	TrackTimeout time.Duration
	// TxWait bounds the wait for the transactions open when the tracking began (0: a minute).
	TxWait time.Duration
	// LeafSummary forces how the leaves are summarised (tests); by default (diff.SummaryAuto)
	// chooseLeaves decides.
	LeafSummary diff.SummaryKind
}

// BuildResult describes a built tree.
type BuildResult struct {
	TableName     string           `json:"table_name"`
	Nodes         []string         `json:"nodes"`
	LeafRows      int              `json:"leaf_rows"`
	Leaves        int              `json:"leaves"`
	ReferenceNode string           `json:"reference_node"`
	RowsPerNode   map[string]int64 `json:"rows_per_node"`
	HashVersion   int              `json:"hash_version"`
	// LeafSummary is how the leaves are summarised: "ordered" digests or additive "lanes".
	LeafSummary diff.SummaryKind `json:"leaf_summary"`
	// PhaseSeconds is how long each phase took: tracking (publishing, and the streams taking
	// the table on), planning (the leaf bounds) and hashing (every node, with storing).
	PhaseSeconds map[string]float64 `json:"phase_seconds"`
	TimeTaken    string             `json:"time_taken"`
	Seconds      float64            `json:"time_taken_seconds"`
}

// Build builds the table's tree on every node, replacing any earlier one, and starts the
// tracking of its changes: each node publishes the table, its agent adds the publication to
// its stream, and only then is the snapshot taken that the leaves are hashed at, so every
// change after it is in the stream. The leaf boundaries are every LeafRows-th key of the node
// with the most rows, the same on every node. On failure what was made is taken down again.
func Build(ctx context.Context, nodes []NodeLogins, opts BuildOptions, progress engine.ProgressFunc) (*BuildResult, error) {
	start := time.Now()
	nodes = sortNodes(nodes)
	if progress == nil {
		progress = func(engine.Progress) {}
	}
	b := &builder{nodes: nodes, opts: opts, progress: progress}
	// Refused before anything is made or taken down (not even the earlier tree).
	if err := b.onNodes(ctx, func(ctx context.Context, i int) error {
		return checkAccess(ctx, nodes[i], opts.Table, false)
	}); err != nil {
		return nil, err
	}
	res, err := b.build(ctx)
	if err != nil {
		cleanup, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if _, terr := Teardown(cleanup, nodes, opts.Table); terr != nil {
			err = errors.Join(err, fmt.Errorf("and taking down the partly built tree failed too (run ace.mtree_teardown(%s)): %w", engine.QuoteLiteral(opts.Table), terr))
		}
		return nil, err
	}
	res.TimeTaken = time.Since(start).Round(time.Millisecond).String()
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

type builder struct {
	nodes    []NodeLogins
	opts     BuildOptions
	progress engine.ProgressFunc
	sub      *subject
	trees    []*tree
	sessions []*engine.Session
	parts    []int // per node, the queries that hash ordered leaves at once
}

func (b *builder) phase(p string) { b.progress(engine.Progress{Phase: p}) }

func (b *builder) build(ctx context.Context) (*BuildResult, error) {
	b.phase("checking table")
	sub, err := loadSubject(ctx, b.nodes, b.opts.Table)
	if err != nil {
		return nil, err
	}
	b.sub = sub
	if err := b.chooseLeaves(ctx); err != nil {
		return nil, err
	}
	if _, err := Teardown(ctx, b.nodes, b.opts.Table); err != nil {
		return nil, fmt.Errorf("take down the earlier tree: %w", err)
	}
	phases := map[string]float64{}
	mark := time.Now()
	lap := func(name string) {
		phases[name] = time.Since(mark).Seconds()
		mark = time.Now()
	}
	b.phase("starting change tracking")
	b.trees = make([]*tree, len(b.nodes))
	b.sessions = make([]*engine.Session, len(b.nodes))
	defer b.closeSessions(ctx)
	// The leaves of an integer key are planned from each node's key span and row estimate while
	// the streams take the table on: no pass over any table but the hashing one.
	planned := make(chan plan, 1)
	go func() {
		start := time.Now()
		p := b.planFromEstimates(ctx)
		p.seconds = time.Since(start).Seconds()
		planned <- p
	}()
	trackErr := b.onNodes(ctx, b.track)
	p := <-planned
	if trackErr != nil {
		return nil, trackErr
	}
	lap("tracking")
	phases["planning"] = p.seconds
	if p.err != nil {
		return nil, p.err
	}
	bounds, ref := p.bounds, p.ref
	if !p.ok {
		b.phase("planning leaves")
		if bounds, ref, err = b.planAtSnapshot(ctx); err != nil {
			return nil, err
		}
		lap("planning")
	}
	b.phase("hashing")
	leaves := piecesOf(engine.Range{}, bounds)
	rows := make([]int64, len(b.nodes))
	err = b.onNodes(ctx, func(ctx context.Context, i int) error {
		sums, err := sub.summaries(ctx, b.sessions[i], engine.Range{}, bounds, b.parts[i])
		if err != nil {
			return fmt.Errorf("node %s: %w", b.nodes[i].Name(), err)
		}
		for _, s := range sums {
			rows[i] += s.Count
		}
		return b.store(ctx, i, leaves, sums)
	})
	if err != nil {
		return nil, err
	}
	lap("hashing")
	res := &BuildResult{TableName: sub.table.Display(), LeafRows: b.opts.LeafRows, Leaves: len(leaves),
		ReferenceNode: b.nodes[ref].Name(), RowsPerNode: map[string]int64{}, HashVersion: engine.HashVersion, LeafSummary: sub.leaves, PhaseSeconds: phases}
	for i, n := range b.nodes {
		res.Nodes = append(res.Nodes, n.Name())
		res.RowsPerNode[n.Name()] = rows[i]
	}
	return res, nil
}

// onNodes runs fn for every node at once. A node's failure does not cancel the others: a
// statement cut short may still commit (a publication, say), so the cleanup after a failed
// build waits for every node to stop before it looks what to take down.
func (b *builder) onNodes(ctx context.Context, fn func(ctx context.Context, i int) error) error {
	p := pool.New().WithErrors().WithContext(ctx)
	for i := range b.nodes {
		p.Go(func(ctx context.Context) error { return fn(ctx, i) })
	}
	return p.Wait()
}

func (b *builder) closeSessions(ctx context.Context) {
	for _, s := range b.sessions {
		if s != nil {
			s.Close(ctx)
		}
	}
}

// track publishes the table on node i, has the node's agent stream the publication, and opens
// the snapshot the node's leaves are hashed at.
func (b *builder) track(ctx context.Context, i int) error {
	n := b.nodes[i]
	pub, relid, err := b.publish(ctx, n.Data)
	if err != nil {
		return err
	}
	// A transaction older than the publication must not be decoded with it: pgoutput would look
	// the publication up as of the transaction's start and fail.
	if err := waitForOlderTransactions(ctx, n.Data, b.opts.TxWait); err != nil {
		return err
	}
	t, err := b.register(ctx, n, pub, relid)
	if err != nil {
		return err
	}
	b.trees[i] = t
	if err := b.awaitTracking(ctx, n, t); err != nil {
		return err
	}
	// Every transaction the stream passed before it took the table on must be visible to the
	// snapshot, or its change would be in neither.
	if err := waitForOlderTransactions(ctx, n.Data, b.opts.TxWait); err != nil {
		return err
	}
	s, err := engine.OpenSession(ctx, n.Data)
	if err != nil {
		return err
	}
	b.sessions[i] = s
	return nil
}

// publish creates the publication of the table's key columns on a node, as the submitter:
// PostgreSQL lets only the table's owner publish it. It returns the publication and the
// table's OID, resolved in the submitter's session (the agent's login may not even have USAGE
// on the table's schema).
func (b *builder) publish(ctx context.Context, n *engine.Node) (string, uint32, error) {
	var relid uint32
	var ident string
	var identCols []string
	err := n.Pool.QueryRow(ctx, `SELECT c.oid, c.relreplident,
			coalesce((SELECT array_agg(a.attname::text) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
			          WHERE i.indrelid = c.oid AND i.indisreplident), '{}')
		FROM pg_class c WHERE c.oid = $1::regclass`, b.sub.table.Qualified()).Scan(&relid, &ident, &identCols)
	if err != nil {
		return "", 0, fmt.Errorf("node %s: read the replica identity of %s: %w", n.Name, b.sub.table.Display(), err)
	}
	if ident == "n" {
		return "", 0, fmt.Errorf("node %s: table %s has REPLICA IDENTITY NOTHING: publishing it would make PostgreSQL refuse its UPDATEs and DELETEs; ALTER TABLE %s REPLICA IDENTITY DEFAULT there first",
			n.Name, b.sub.table.Display(), b.sub.table.Qualified())
	}
	pub := fmt.Sprintf("ace_mtree_%d", relid)
	// The agent only needs keys. A column list must cover the replica identity, or the table's
	// own UPDATEs would be refused; with REPLICA IDENTITY FULL no list can, so all columns go.
	columns := ""
	if ident != "f" {
		cols := b.sub.table.PKNames()
		for _, c := range identCols {
			if !slices.Contains(cols, c) {
				cols = append(cols, c)
			}
		}
		quoted := make([]string, len(cols))
		for i, c := range cols {
			quoted[i] = engine.Ident(c)
		}
		columns = " (" + strings.Join(quoted, ", ") + ")"
	}
	sql := fmt.Sprintf(`CREATE PUBLICATION %s FOR TABLE %s%s WITH (publish = 'insert, update, delete, truncate', publish_via_partition_root = true)`,
		engine.Ident(pub), b.sub.table.Qualified(), columns)
	if _, err := n.Pool.Exec(ctx, sql); err != nil {
		return "", 0, fmt.Errorf("node %s: publish %s for change tracking (only its owner may): %w", n.Name, b.sub.table.Display(), err)
	}
	return pub, relid, nil
}

// register records the tree as building on a node, with the agent's login, and wakes the
// node's agent to stream its publication. The tree joins the stream of its publication's
// owner (one slot per owner: a publication can stop only its owner's trees), and records what
// the publication looks like now, so that a later change of it is noticed
// (ace.mtree_publication_problem); one already unfit for tracking is refused.
func (b *builder) register(ctx context.Context, n NodeLogins, pub string, relid uint32) (*tree, error) {
	var t *tree
	err := pgx.BeginFunc(ctx, n.Agent.Pool, func(tx pgx.Tx) error {
		var keyCols []string
		for _, c := range b.sub.keys.Columns() {
			keyCols = append(keyCols, c.Name)
		}
		var problem *string
		err := tx.QueryRow(ctx, `INSERT INTO ace.mtrees (table_name, relid, publication, leaf_rows, key_columns, key_collate_c,
				hash_mode, hash_version, leaf_summary, built_by, build_task, pub_owner, slot_name, pub_xmin, pubrel_xmin, pub_columns)
			SELECT $1, $2::oid, $3::text, $4, $5, $6, $7, $8, $11, $9, nullif($10, '')::uuid, p.pubowner,
				format('ace_mtree_%s_%s', d.oid, p.pubowner), p.xmin, r.xmin,
				(SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a WHERE a.attrelid = r.prrelid AND a.attnum = ANY (r.prattrs))
			FROM pg_publication p JOIN pg_database d ON d.datname = current_database()
			LEFT JOIN pg_publication_rel r ON r.prpubid = p.oid AND r.prrelid = $2::oid
			WHERE p.pubname = $3::text
			RETURNING ace.mtree_publication_problem(mtrees)`,
			b.opts.Table, relid, pub, b.opts.LeafRows, keyCols, b.sub.keys.CollateC(),
			string(b.sub.mode), engine.HashVersion, b.opts.User, b.opts.TaskID, string(b.sub.leaves)).Scan(&problem)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("publication %s is gone: it was dropped while the tree was being built; build again", pub)
		}
		if err != nil {
			return err
		}
		if problem != nil {
			return fmt.Errorf("%s while the tree was being built; build again", *problem)
		}
		if t, err = loadTree(ctx, tx, b.opts.Table, false); err != nil {
			return err
		}
		return n.wake(ctx, tx, TreesChanged)
	})
	if err != nil {
		return nil, fmt.Errorf("node %s: record the tree of %s: %w", n.Name(), b.opts.Table, err)
	}
	return t, nil
}

// awaitTracking waits until the node's agent streams the table's publication.
func (b *builder) awaitTracking(ctx context.Context, n NodeLogins, t *tree) error {
	timeout := b.opts.TrackTimeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	var streamErr *string
	lastPoke := time.Now()
	done, err := poll(ctx, timeout, func() (bool, error) {
		if time.Since(lastPoke) > 200*time.Millisecond {
			// An idle stream reports its position when asked.
			lastPoke = time.Now()
			if err := n.wake(ctx, n.Agent.Pool, PositionWanted); err != nil {
				return false, err
			}
		}
		var tracking bool
		var status string
		err := n.Agent.Pool.QueryRow(ctx, `SELECT m.tracking_lsn IS NOT NULL, m.status, coalesce(m.error, s.last_error)
			FROM ace.mtrees m LEFT JOIN ace.cdc_state s ON s.slot_name = m.slot_name WHERE m.tree_id = $1`, t.ID).Scan(&tracking, &status, &streamErr)
		if err == nil && status == "failed" {
			err = fmt.Errorf("its agent failed the tree%s", errorSuffix(streamErr))
		}
		return tracking, err
	})
	if err != nil {
		return fmt.Errorf("node %s: wait for its agent to track %s: %w", n.Name(), b.opts.Table, err)
	}
	if !done {
		msg := fmt.Sprintf("node %s: its agent did not start streaming the changes of %s within %s; is ace-agent running there (see ace.agents)?",
			n.Name(), b.opts.Table, timeout)
		if streamErr != nil {
			msg += " Its change stream reports: " + *streamErr
		}
		return errors.New(msg)
	}
	return nil
}

// chooseLeaves decides how the tree summarises its leaves, as a table-diff decides for its own
// (diff.OrderedKeyRanges): ordered digests where every node stores the table in about key
// order, so that a leaf is a range scan of few pages, else the lanes. It also sets how many
// queries hash a node's ordered leaves at once: as many as a query there may have processes.
func (b *builder) chooseLeaves(ctx context.Context) error {
	stats := make([]diff.KeyOrderStat, len(b.nodes))
	err := b.onNodes(ctx, func(ctx context.Context, i int) error {
		s, err := diff.ReadKeyOrderStat(ctx, b.nodes[i].Data.Pool, b.sub.tables[i], b.sub.keys)
		stats[i] = s
		if err != nil {
			return fmt.Errorf("node %s: %w", b.nodes[i].Name(), err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	kind := b.opts.LeafSummary
	if kind == diff.SummaryAuto {
		kind = diff.SummaryLanes
		if diff.OrderedKeyRanges(b.sub.keys, stats) {
			kind = diff.SummaryOrdered
		}
	}
	if kind == diff.SummaryOrdered && !b.sub.keys.Indexable() {
		return fmt.Errorf("the leaves of %s cannot be ordered digests: its key is not compared in its index's order", b.opts.Table)
	}
	b.sub.useLeaves(kind, b.opts.LeafRows)
	b.parts = make([]int, len(b.nodes))
	for i, s := range stats {
		b.parts[i] = 1 // the lanes are one pass over the table: more queries would repeat it
		if kind == diff.SummaryOrdered {
			// Index range scans share no parallel workers. One connection of the node's pool
			// holds the build's snapshot.
			b.parts[i] = max(1, min(s.Parallel+1, int(b.nodes[i].Data.Pool.Config().MaxConns)-1))
		}
	}
	return nil
}

// plan is the leaf bounds of a build and the node whose rows they were cut for.
type plan struct {
	bounds  [][]string
	ref     int
	ok      bool // false: the estimates could not plan the leaves
	seconds float64
	err     error
}

// planFromEstimates plans the leaves of an integer key as equal-width ranges of about LeafRows
// rows, from every node's smallest and largest key (read from the key's index) and the
// planner's row estimate: lo+w, lo+2w, … over the span of all nodes, w = span × LeafRows ÷ rows
// of the node with the most. On a dense key with fresh statistics these are exactly the bounds
// that reading every LeafRows-th key would give. It returns ok = false when the key is not an
// integer, the table was never analysed, or the keys are too sparse for equal widths, and the
// caller cuts the leaves at the reference node's keys instead.
func (b *builder) planFromEstimates(ctx context.Context) plan {
	p := plan{}
	if !b.sub.integerKey() {
		return p
	}
	type span struct {
		lo, hi *int64
		est    float64
	}
	spans := make([]span, len(b.nodes))
	k := engine.Ident(b.sub.keys.Columns()[0].Name)
	sql := fmt.Sprintf(`SELECT min(%[1]s)::int8, max(%[1]s)::int8, %[3]s FROM %[2]s`, k, b.sub.table.Qualified(),
		engine.RowEstimateExpr(b.sub.table.Qualified()))
	p.err = b.onNodes(ctx, func(ctx context.Context, i int) error {
		s := &spans[i]
		if err := b.nodes[i].Data.Pool.QueryRow(ctx, sql).Scan(&s.lo, &s.hi, &s.est); err != nil {
			return fmt.Errorf("node %s: read the key span of %s: %w", b.nodes[i].Name(), b.sub.table.Display(), err)
		}
		return nil
	})
	if p.err != nil {
		return p
	}
	var lo, hi int64
	found := false
	for i, s := range spans {
		if s.est > spans[p.ref].est {
			p.ref = i
		}
		if s.lo == nil {
			continue
		}
		if !found || *s.lo < lo {
			lo = *s.lo
		}
		if !found || *s.hi > hi {
			hi = *s.hi
		}
		found = true
	}
	rows := spans[p.ref].est
	if !found || rows < 1 || hi-lo < 0 || hi-lo == math.MaxInt64 { // empty, never analysed, or a span int64 cannot hold
		return p
	}
	leafRows := float64(b.opts.LeafRows)
	w := max(int64(math.Ceil(float64(hi-lo+1)*leafRows/rows)), 1)
	leaves := (hi-lo)/w + 1
	if float64(leaves) > 4*(rows/leafRows+1) {
		return p // the estimate is far off: cut at the keys
	}
	for v := lo + w; v <= hi && v > lo; v += w {
		p.bounds = append(p.bounds, []string{strconv.FormatInt(v, 10)})
	}
	p.ok = true
	return p
}

// planAtSnapshot cuts the leaves at every LeafRows-th key of the node with the most rows, read
// at the build's snapshot.
func (b *builder) planAtSnapshot(ctx context.Context) ([][]string, int, error) {
	ref, err := b.referenceNode(ctx)
	if err != nil {
		return nil, 0, err
	}
	bounds, dense, err := b.sub.denseBounds(ctx, b.sessions[ref], int64(b.opts.LeafRows))
	if err == nil && !dense {
		bounds, err = b.sub.splitKeys(ctx, b.sessions[ref], engine.Range{}, int64(b.opts.LeafRows))
	}
	if err != nil {
		return nil, 0, fmt.Errorf("node %s: plan leaves: %w", b.nodes[ref].Name(), err)
	}
	return bounds, ref, nil
}

// referenceNode is the node with the most rows by the planner's estimate: its keys cut the
// leaves.
func (b *builder) referenceNode(ctx context.Context) (int, error) {
	ref, best := 0, -1.0
	for i, s := range b.sessions {
		var est float64
		err := s.Read(ctx, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, `SELECT `+engine.RowEstimateExpr(b.sub.table.Qualified())).Scan(&est)
		})
		if err != nil {
			return 0, fmt.Errorf("node %s: estimate rows: %w", b.nodes[i].Name(), err)
		}
		if est > best {
			ref, best = i, est
		}
	}
	return ref, nil
}

// store writes node i's leaves and marks its tree ready. Changes the stream delivered that the
// build's snapshot already sees are dropped; the rest stay pending for the next refresh.
func (b *builder) store(ctx context.Context, i int, ranges []engine.Range, sums []summary) error {
	snap, err := snapshotOf(ctx, b.sessions[i])
	if err != nil {
		return err
	}
	leaves := make([]leaf, len(ranges))
	for j, r := range ranges {
		leaves[j] = leaf{ID: j, Range: r, sum: sums[j]}
	}
	t := b.trees[i]
	err = pgx.BeginFunc(ctx, b.nodes[i].Agent.Pool, func(tx pgx.Tx) error {
		if _, err := loadTree(ctx, tx, b.opts.Table, true); err != nil {
			return err
		}
		if err := copyLeaves(ctx, tx, t.ID, leaves); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM ace.mtree_pending WHERE tree_id = $1 AND pg_visible_in_snapshot(xid, $2::pg_snapshot)`, t.ID, snap); err != nil {
			return err
		}
		// The table's owner now is recorded with its OID: a diff refuses the tree of a table that
		// was re-created or given away since.
		_, err := tx.Exec(ctx, `UPDATE ace.mtrees SET status = 'ready', built_at = now(), refreshed_at = now(), next_leaf_id = $2, error = NULL,
				rel_owner = (SELECT c.relowner FROM pg_class c WHERE c.oid = relid)
			WHERE tree_id = $1`, t.ID, len(leaves))
		return err
	})
	if err != nil {
		return fmt.Errorf("node %s: store the tree's leaves: %w", b.nodes[i].Name(), err)
	}
	return nil
}
