package repair

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/sourcegraph/conc/pool"

	"github.com/ace-agent/ace-agent/engine"
)

// finishTimeout bounds commits and rollbacks, which run even after the context ended.
const finishTimeout = 30 * time.Second

// defaultBatchSize is the keys of one batch: read from the diff, looked up, written and recorded
// by one statement each. Larger batches mean fewer round trips for a node that lost many rows.
const defaultBatchSize = 2000

// repairer is one run of Repair.
type repairer struct {
	opts     Options
	targets  []string
	nodes    map[string]*engine.Node
	sink     Sink
	progress engine.ProgressFunc
	start    time.Time

	table    *engine.Table
	keys     engine.KeyOrder
	writable []engine.Column // columns a repair writes: all but generated ones
	sessions map[string]*repairSession
	modes    map[string]string // target -> WriteReplica or WriteNormal ("" in a dry run)
	// preserveOrigins is, with preserve_origin, the replication origin on each target that stands
	// for the failed node (preserve.go).
	preserveOrigins map[string]string
	createOrigins   map[string]bool // targets where that origin is still to be created

	// With a plan: its sides bound to nodes, and each key's choice (planeval.go).
	rules       *Plan
	sides       sideNames
	choices     map[string]choice
	ruleMatches map[string]int64
	planNode    *engine.Node // where the plan's predicates run, during resolvePlan

	// The key order of the diff's key ranges, over every diff node (ranges.go).
	rangeKeys       engine.KeyOrder
	rangeKeysLoaded bool
	rangeTables     map[string]*engine.Table // each diff node's table
	// rangeRLS names a target whose table has row-level security, which COPY FROM refuses.
	rangeRLS string

	mu       sync.Mutex
	stats    map[string]*NodeRepair
	keysDone int64
	warnings []string
}

// repairSession is a target node's connection and open transaction.
type repairSession struct {
	node      *engine.Node
	conn      *pgxpool.Conn
	inTx      bool
	committed bool
	failed    error
	spock     bool   // Spock is here: every transaction enters its repair mode
	origin    string // the replication origin the session is set up with ("" none)
}

func newRepairer(nodes []*engine.Node, opts Options, sink Sink, progress engine.ProgressFunc) (*repairer, error) {
	if progress == nil {
		progress = func(engine.Progress) {}
	}
	if opts.Origin == "" {
		opts.Origin = defaultRepairOrigin
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = defaultBatchSize
	}
	r := &repairer{opts: opts, nodes: map[string]*engine.Node{}, sink: sink, progress: progress, start: time.Now(),
		sessions: map[string]*repairSession{}, stats: map[string]*NodeRepair{}, modes: map[string]string{}}
	for _, n := range nodes {
		r.nodes[n.Name] = n
	}
	r.targets = slices.Clone(opts.Targets)
	if len(r.targets) == 0 {
		for _, n := range opts.Diff.Nodes {
			if n != opts.SourceOfTruth {
				r.targets = append(r.targets, n)
			}
		}
	}
	slices.Sort(r.targets)
	for _, t := range r.targets {
		if r.nodes[t] == nil {
			return nil, fmt.Errorf("no connection to target node %s", t)
		}
		if !slices.Contains(opts.Diff.Nodes, t) {
			return nil, fmt.Errorf("node %s is not one of the diff's nodes (%s)", t, strings.Join(opts.Diff.Nodes, ", "))
		}
		r.stats[t] = &NodeRepair{SkippedByReason: map[string]int64{}}
	}
	return r, nil
}

// prepare checks that the table still has the diff's shape on every target, then opens a
// transaction on each.
func (r *repairer) prepare(ctx context.Context) error {
	r.report("checking table")
	if err := r.loadTable(ctx); err != nil {
		return err
	}
	if r.opts.Atomic && !r.opts.DryRun {
		if err := r.checkPrepared(ctx); err != nil {
			return err
		}
	}
	if err := r.decideWriteModes(ctx); err != nil {
		return err
	}
	if err := r.preparePreserve(ctx); err != nil {
		return err
	}
	// After the table's code was judged (set_role): a plan's predicates cast the table's types.
	if r.opts.Plan != nil {
		if err := r.resolvePlan(ctx); err != nil {
			return err
		}
	}
	// One node after the other, in name order: two repairs waiting for each other's replication
	// origin sessions always take them in the same order, so they cannot deadlock.
	for _, t := range r.targets {
		s, err := r.openSession(ctx, r.nodes[t])
		if err != nil && r.opts.Atomic {
			r.sessions[t] = &repairSession{node: r.nodes[t], failed: err}
			return nil
		}
		if err != nil {
			s = &repairSession{node: r.nodes[t], failed: err}
		}
		r.sessions[t] = s
	}
	return nil
}

func (r *repairer) loadTable(ctx context.Context) error {
	schema, name := r.opts.Diff.Schema, r.opts.Diff.Table
	tables := make([]*engine.Table, len(r.targets))
	for i, t := range r.targets {
		tbl, err := engine.LoadTable(ctx, r.nodes[t], schema, name)
		if err != nil {
			return err
		}
		if err := r.sameAsDiff(tbl, t); err != nil {
			return err
		}
		tables[i] = tbl
	}
	r.table = tables[0]
	names := make([]string, len(r.targets))
	for i, t := range r.targets {
		names[i] = r.nodes[t].Name
	}
	var err error
	if r.keys, err = engine.NewKeyOrder(tables, names); err != nil {
		return err
	}
	generated, err := generatedColumns(ctx, r.nodes[r.targets[0]], r.table)
	if err != nil {
		return err
	}
	for _, c := range r.table.Columns {
		if !generated[c.Name] {
			r.writable = append(r.writable, c)
		}
	}
	return nil
}

// sameAsDiff checks that a node's table still has the columns, types and key the diff saw.
func (r *repairer) sameAsDiff(t *engine.Table, node string) error {
	d := r.opts.Diff
	if len(d.Columns) > 0 && (!slices.Equal(t.ColumnNames(), d.Columns) || (len(d.ColumnTypes) > 0 && !slices.Equal(t.ColumnTypes(), d.ColumnTypes))) {
		return fmt.Errorf("table %s on node %s no longer has the columns the diff saw (now %s; diff: %s): diff it again",
			t.Display(), node, strings.Join(t.ColumnNames(), ", "), strings.Join(d.Columns, ", "))
	}
	if len(d.PrimaryKey) > 0 && !slices.Equal(t.PKNames(), d.PrimaryKey) {
		return fmt.Errorf("table %s on node %s has primary key (%s), the diff (%s): diff it again",
			t.Display(), node, strings.Join(t.PKNames(), ", "), strings.Join(d.PrimaryKey, ", "))
	}
	return nil
}

func generatedColumns(ctx context.Context, n *engine.Node, t *engine.Table) (map[string]bool, error) {
	rows, err := n.Pool.Query(ctx, `SELECT attname::text FROM pg_attribute
		WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated <> ''`, t.Qualified())
	if err != nil {
		return nil, fmt.Errorf("read generated columns of %s on node %s: %w", t.Display(), n.Name, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read generated columns of %s on node %s: %w", t.Display(), n.Name, err)
	}
	out := map[string]bool{}
	for _, name := range names {
		out[name] = true
	}
	return out, nil
}

// checkPrepared makes sure every target can PREPARE TRANSACTION.
func (r *repairer) checkPrepared(ctx context.Context) error {
	for _, t := range r.targets {
		var max int
		if err := r.nodes[t].Pool.QueryRow(ctx, `SELECT current_setting('max_prepared_transactions')::int`).Scan(&max); err != nil {
			return fmt.Errorf("node %s: read max_prepared_transactions: %w", t, err)
		}
		if max == 0 {
			return fmt.Errorf("an atomic repair needs two-phase commit, but max_prepared_transactions is 0 on node %s: "+
				"set it above 0 in postgresql.conf on every node and restart them, or repair without atomic", t)
		}
	}
	return nil
}

// openSession takes a connection to the node, prepares it to write without echoing through
// replication, and opens the repair's transaction on it as the submitting role.
func (r *repairer) openSession(ctx context.Context, n *engine.Node) (*repairSession, error) {
	conn, err := n.Pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	s := &repairSession{node: n, conn: conn}
	if err := r.beginSession(ctx, s); err != nil {
		s.discard(ctx)
		return nil, err
	}
	return s, nil
}

func (r *repairer) beginSession(ctx context.Context, s *repairSession) error {
	switch r.modes[s.node.Name] {
	case WriteReplica:
		var err error
		if s.spock, err = r.setupSession(ctx, s); err != nil {
			return err
		}
	case WriteNormal:
		if err := writeNormally(ctx, s); err != nil {
			return err
		}
	}
	return r.begin(ctx, s)
}

// begin opens a transaction of the repair on the session: read only in a dry run, in Spock's
// repair mode where Spock is, as the submitting role.
func (r *repairer) begin(ctx context.Context, s *repairSession) error {
	begin := "BEGIN"
	if r.opts.DryRun {
		begin = "BEGIN READ ONLY"
	}
	if _, err := s.conn.Exec(ctx, begin); err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	s.inTx = true
	if s.spock {
		if _, err := s.conn.Exec(ctx, "SELECT spock.repair_mode(true)"); err != nil {
			return fmt.Errorf("enter spock repair mode: %w", err)
		}
	}
	if r.opts.Role != "" {
		if _, err := s.conn.Exec(ctx, "SET LOCAL ROLE "+engine.Ident(r.opts.Role)); err != nil {
			return fmt.Errorf("set role %s: %w", r.opts.Role, err)
		}
	}
	return nil
}

// setupSession prepares a session to write as replication does (WriteReplica): it sets
// session_replication_role and the replication origin (both with the login role's privileges,
// before any switch to the submitter), and reports whether Spock is here.
func (r *repairer) setupSession(ctx context.Context, s *repairSession) (spock bool, err error) {
	role := "replica"
	if r.opts.FireTriggers {
		role = "local"
	}
	if _, err := s.conn.Exec(ctx, "SET session_replication_role = "+role); err != nil {
		return false, fmt.Errorf("set session_replication_role = %s (the submitting role may set it, so the session's login must be allowed to as well: "+
			"a superuser, or GRANT SET ON PARAMETER session_replication_role to it): %w", role, err)
	}
	if err := r.setupOrigin(ctx, s); err != nil {
		return false, err
	}
	if err := s.conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'spock')`).Scan(&spock); err != nil {
		return false, fmt.Errorf("look for spock: %w", err)
	}
	return spock, nil
}

// setupOrigin makes the session's writes carry the repair's replication origin. An origin
// serves one session at a time, so a repair waits for another one on the same node.
func (r *repairer) setupOrigin(ctx context.Context, s *repairSession) error {
	_, err := s.conn.Exec(ctx, `SELECT pg_replication_origin_create($1) WHERE pg_replication_origin_oid($1) IS NULL`, r.opts.Origin)
	if err != nil && !isCode(err, pgerrcode.UniqueViolation) {
		return fmt.Errorf("create replication origin %s (a repair that writes as replication does needs EXECUTE on pg_replication_origin_create, "+
			"pg_replication_origin_oid, pg_replication_origin_session_setup and pg_replication_origin_session_reset for the session's login; "+
			"or revoke SET ON PARAMETER session_replication_role from the submitter to have repairs write normally): %w", r.opts.Origin, err)
	}
	for {
		_, err := s.conn.Exec(ctx, `SELECT pg_replication_origin_session_setup($1)`, r.opts.Origin)
		if err == nil || !isCode(err, pgerrcode.ObjectInUse) {
			if err != nil {
				return fmt.Errorf("use replication origin %s: %w", r.opts.Origin, err)
			}
			s.origin = r.opts.Origin
			return nil
		}
		r.report("waiting for another repair on node " + s.node.Name)
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for replication origin %s: %w", r.opts.Origin, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// discard rolls back and closes the session's connection, so no session setting or origin
// outlives the repair.
func (s *repairSession) discard(ctx context.Context) {
	if s.conn == nil {
		return
	}
	endCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	if s.inTx {
		_, _ = s.conn.Exec(endCtx, "ROLLBACK")
		s.inTx = false
	}
	_ = s.conn.Hijack().Close(endCtx)
	s.conn = nil
}

func (r *repairer) close(ctx context.Context) {
	for _, s := range r.sessions {
		s.discard(ctx)
	}
}

// live lists the sessions still able to take changes.
func (r *repairer) live() []*repairSession {
	var out []*repairSession
	for _, t := range r.targets {
		if s := r.sessions[t]; s != nil && s.failed == nil {
			out = append(out, s)
		}
	}
	return out
}

// aborted reports whether an atomic repair already lost a node.
func (r *repairer) aborted() bool {
	return r.opts.Atomic && len(r.live()) < len(r.targets)
}

// run reads the diff's rows in batches and applies each batch to every live target. The next
// batch is read while one is applied, so reading the stored diff overlaps writing the nodes.
func (r *repairer) run(ctx context.Context) error {
	if r.aborted() || len(r.live()) == 0 {
		return nil
	}
	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	batches, readErr := r.readBatches(readCtx)
	for batch := range batches {
		if err := r.processBatch(ctx, batch); err != nil {
			return err
		}
		if r.aborted() || len(r.live()) == 0 {
			return nil // stopReading ends the reader, whose error then means nothing
		}
	}
	return <-readErr
}

// readBatches reads the diff's rows into batches of BatchSize keys on a goroutine of its own,
// one batch ahead of the caller. The channel closes when the rows end or ctx does; the error
// channel then holds the read's outcome.
func (r *repairer) readBatches(ctx context.Context) (<-chan []engine.DiffRow, <-chan error) {
	batches := make(chan []engine.DiffRow, 1)
	readErr := make(chan error, 1)
	send := func(batch []engine.DiffRow) error {
		select {
		case batches <- batch:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	go func() {
		defer close(batches)
		batch := make([]engine.DiffRow, 0, r.opts.BatchSize)
		err := r.opts.Rows(ctx, func(d engine.DiffRow) error {
			if batch = append(batch, d); len(batch) < r.opts.BatchSize {
				return nil
			}
			full := batch
			batch = make([]engine.DiffRow, 0, r.opts.BatchSize)
			return send(full)
		})
		if err == nil && len(batch) > 0 {
			err = send(batch)
		}
		readErr <- err
	}()
	return batches, readErr
}

// processBatch repairs a batch's key ranges (ranges.go), then its keys.
func (r *repairer) processBatch(ctx context.Context, batch []engine.DiffRow) error {
	keys, err := r.repairRanges(ctx, batch)
	if err != nil || len(keys) == 0 {
		return err
	}
	return r.processKeys(ctx, keys)
}

// processKeys plans a batch of keys, applies it on every live target at once, and records the
// actions.
func (r *repairer) processKeys(ctx context.Context, batch []engine.DiffRow) error {
	perNode := map[string][]planned{}
	for _, d := range batch {
		plans, err := r.plan(d)
		if err != nil {
			return err
		}
		for _, p := range plans {
			perNode[p.Node] = append(perNode[p.Node], p)
		}
	}
	live := r.live()
	results := make([][]Action, len(live))
	p := pool.New().WithContext(ctx)
	for i, s := range live {
		p.Go(func(ctx context.Context) error {
			// On an error, only preserve_origin returns actions: those it committed.
			actions, err := r.applyBatch(ctx, s, perNode[s.node.Name])
			if err != nil {
				s.failed = err
			}
			results[i] = actions
			return nil
		})
	}
	_ = p.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	var all []Action
	for i := range live {
		all = append(all, results[i]...)
	}
	r.count(all)
	if err := r.sink.WriteRepairActions(ctx, all); err != nil {
		return fmt.Errorf("record repair actions: %w", err)
	}
	if err := r.markCommittedGroups(ctx, live, results); err != nil {
		return err
	}
	r.mu.Lock()
	r.keysDone += int64(len(batch))
	r.mu.Unlock()
	r.report("repairing")
	return nil
}

func (r *repairer) count(actions []Action) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, a := range actions {
		st := r.stats[a.Node]
		keys := int64(1)
		if a.Range != nil {
			keys = a.Range.Rows
		}
		switch a.Kind {
		case ActionInsert:
			st.Inserted += keys
		case ActionUpdate:
			st.Updated += keys
		case ActionDelete:
			st.Deleted += keys
		case ActionSkip:
			st.Skipped += keys
		}
		if a.Reason != "" {
			st.SkippedByReason[a.Reason] += keys
		}
	}
}

func (r *repairer) report(phase string) {
	r.mu.Lock()
	done := r.keysDone
	r.mu.Unlock()
	if phase == "repairing" {
		verb := "repairing"
		if r.opts.DryRun {
			verb = "planning (dry run)"
		}
		phase = fmt.Sprintf("%s: %d of %d differing keys", verb, done, r.opts.Diff.DifferingKeys)
	}
	r.progress(engine.Progress{Phase: phase})
}
