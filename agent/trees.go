package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/cdc"
	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/mtree"
)

// Tree upkeep intervals: how often pending changes are folded onto leaves, and how many must
// wait before they are.
const (
	compactInterval = 10 * time.Second
	compactMinRows  = 10_000
)

// streamSettings pin how the change stream renders keys, as engine pins its sessions, so that
// the keys it sends cast back the same everywhere.
var streamSettings = [][2]string{{"DateStyle", "ISO, YMD"}, {"IntervalStyle", "postgres"}, {"TimeZone", "UTC"},
	{"extra_float_digits", "3"}, {"bytea_output", "hex"}}

// trackedTree is what the stream's handler needs of a tree.
type trackedTree struct {
	id      int64
	table   string
	keyCols []string
}

// Backoff of a stream group whose stream stopped with an error that a restart may cure.
const (
	minGroupBackoff = time.Second
	maxGroupBackoff = time.Minute
)

// treeKeeper keeps this node's Merkle trees fresh: it streams the publications of the tracked
// tables into ace.mtree_pending, one stream (and slot) per role that owns publications, so that
// what one user does to her publications (drop them, filter them) can stop only her own trees.
// A stream that can never resume fails its trees and gives its slot up: a slot nobody can read
// must not hold WAL. With no tree it holds no slot.
type treeKeeper struct {
	startStop
	a      *Agent
	local  *engine.Node
	dbOID  uint32
	signal chan string // "trees" or "sync", from LISTEN ace_mtree

	groups map[string]*streamGroup // by slot name
	stops  chan streamStop
}

// streamGroup is one stream: the trees whose publications one role owns, read through that
// role's slot ace_mtree_<database oid>_<role oid>.
type streamGroup struct {
	slot, owner string
	stream      *cdc.Stream // nil while stopped
	cancel      context.CancelFunc
	pubs        []string
	retryAt     time.Time // a stopped stream starts again no sooner
	backoff     time.Duration

	mu    sync.Mutex
	trees map[uint32]trackedTree // by the table's OID; read by the stream's handler
}

// streamStop is a group's stream ending, with what Run returned.
type streamStop struct {
	g      *streamGroup
	stream *cdc.Stream
	err    error
}

func (k *treeKeeper) run(ctx context.Context) error {
	local, err := engine.OpenNode(ctx, engine.NodeOptions{Name: k.a.cfg.Node, ConnInfo: k.a.cfg.DSN, MaxConns: 4})
	if err != nil {
		return err
	}
	defer local.Close()
	k.local = local
	if err := local.Pool.QueryRow(ctx, `SELECT oid FROM pg_database WHERE datname = current_database()`).Scan(&k.dbOID); err != nil {
		return fmt.Errorf("read the database's OID: %w", err)
	}
	defer k.stopAll()
	compact := time.NewTicker(compactInterval)
	defer compact.Stop()
	heartbeat := time.NewTicker(k.a.cfg.HeartbeatInterval)
	defer heartbeat.Stop()
	retry := time.NewTicker(minGroupBackoff)
	defer retry.Stop()
	if err := k.reconcile(ctx); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case s := <-k.signal:
			if s == "sync" {
				k.pokeAll()
				continue
			}
			if err := k.reconcile(ctx); err != nil {
				return err
			}
		case st := <-k.stops:
			if st.g.stream != st.stream {
				continue // a stream the keeper stopped itself
			}
			st.g.stream, st.g.pubs = nil, nil
			k.streamStopped(ctx, st.g, st.err)
			if err := k.reconcile(ctx); err != nil {
				return err
			}
		case <-retry.C:
			if k.retryDue() {
				if err := k.reconcile(ctx); err != nil {
					return err
				}
			}
		case <-heartbeat.C:
			k.beat(ctx)
			// Reconciling checks every tree's publication too: one altered since the build fails
			// its tree even while no diff asks.
			if err := k.reconcile(ctx); err != nil {
				return err
			}
		case <-compact.C:
			if _, err := mtree.Compact(ctx, k.local, compactMinRows); err != nil {
				k.a.log.Warn("compacting pending changes failed", "err", err)
			}
		}
	}
}

func (k *treeKeeper) pokeAll() {
	for _, g := range k.groups {
		if g.stream != nil {
			g.stream.Poke()
		}
	}
}

// retryDue reports whether a stopped group may start its stream again.
func (k *treeKeeper) retryDue() bool {
	for _, g := range k.groups {
		if g.stream == nil && !time.Now().Before(g.retryAt) {
			return true
		}
	}
	return false
}

// groupWant is what a group should stream, as the trees say.
type groupWant struct {
	owner string
	pubs  []string
	trees map[uint32]trackedTree
}

// reconcile makes the streams match the tracked tables: each group's stream started,
// restarted with other publications, or stopped with its slot dropped.
func (k *treeKeeper) reconcile(ctx context.Context) error {
	if err := mtree.AdoptTrees(ctx, k.local.Pool); err != nil {
		return err
	}
	if err := k.failAlteredPublications(ctx); err != nil {
		return err
	}
	wants, err := k.loadGroups(ctx)
	if err != nil {
		return err
	}
	for slot, g := range k.groups {
		if _, ok := wants[slot]; !ok {
			g.stop()
			delete(k.groups, slot)
		}
	}
	for slot, want := range wants {
		g := k.groups[slot]
		if g == nil {
			g = &streamGroup{slot: slot, backoff: minGroupBackoff}
			k.groups[slot] = g
		}
		g.owner = want.owner
		g.setTrees(want.trees)
		if g.stream != nil {
			if !slices.Equal(want.pubs, g.pubs) {
				g.pubs = want.pubs
				g.stream.SetPublications(want.pubs)
				g.stream.Poke() // the build waits for the stream to report that it covers the table
			}
			continue
		}
		if time.Now().Before(g.retryAt) {
			continue
		}
		if err := k.startStream(ctx, g, want.pubs); err != nil {
			k.streamStopped(ctx, g, err)
		}
	}
	return k.dropUnusedSlots(ctx)
}

// failAlteredPublications fails the trees whose publication changed since their build
// (ace.mtree_publication_problem): such a tree may have missed changes.
func (k *treeKeeper) failAlteredPublications(ctx context.Context) error {
	failed, err := mtree.FailAlteredPublications(ctx, k.local.Pool)
	for _, f := range failed {
		k.a.log.Error("a tree's publication changed since its build: the tree is failed", "table", f.Table, "err", f.Error)
	}
	return err
}

func (k *treeKeeper) loadGroups(ctx context.Context) (map[string]*groupWant, error) {
	rows, err := k.local.Pool.Query(ctx, `SELECT m.relid, m.tree_id, m.table_name, m.key_columns, m.publication, m.slot_name,
			coalesce(m.pub_owner::regrole::text, m.pub_owner::text)
		FROM ace.mtrees m WHERE m.status IN ('building', 'ready') AND m.slot_name IS NOT NULL ORDER BY m.slot_name, m.publication`)
	if err != nil {
		return nil, fmt.Errorf("read the tracked tables: %w", err)
	}
	wants := map[string]*groupWant{}
	var relid uint32
	var t trackedTree
	var pub, slot, owner string
	_, err = pgx.ForEachRow(rows, []any{&relid, &t.id, &t.table, &t.keyCols, &pub, &slot, &owner}, func() error {
		w := wants[slot]
		if w == nil {
			w = &groupWant{owner: owner, trees: map[uint32]trackedTree{}}
			wants[slot] = w
		}
		w.trees[relid] = t
		w.pubs = append(w.pubs, pub)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the tracked tables: %w", err)
	}
	return wants, nil
}

func (g *streamGroup) setTrees(trees map[uint32]trackedTree) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.trees = trees
}

func (g *streamGroup) tree(relid uint32) (trackedTree, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	t, ok := g.trees[relid]
	return t, ok
}

func (k *treeKeeper) startStream(ctx context.Context, g *streamGroup, pubs []string) error {
	if err := k.ensureSlot(ctx, g.slot, pubs); err != nil {
		return err
	}
	if err := mtree.RegisterStream(ctx, k.local.Pool, g.slot, k.a.id); err != nil {
		return err
	}
	conn, err := withSettings(k.a.cfg.DSN)
	if err != nil {
		return err
	}
	g.pubs = pubs
	h := &groupHandler{k: k, g: g}
	// A short batch delay: a diff waits for the stream to report where it is.
	stream := cdc.NewStream(cdc.Options{ConnString: conn, Slot: g.slot, Publications: pubs, Log: k.a.log, BatchDelay: 20 * time.Millisecond}, h)
	h.stream = stream
	streamCtx, cancel := context.WithCancel(ctx)
	g.stream, g.cancel = stream, cancel
	go func() {
		err := stream.Run(streamCtx)
		select {
		case k.stops <- streamStop{g: g, stream: stream, err: err}:
		case <-ctx.Done():
		}
	}()
	stream.Poke() // report a position at once: a build waits for it
	k.a.log.Info("change stream started", "slot", g.slot, "owner", g.owner, "publications", pubs)
	return nil
}

// ensureSlot makes the group's slot. On a node upgraded from one slot for every tree, a group
// whose publications that slot streamed starts as a copy of it (it is where their changes were
// confirmed up to), so the upgrade loses no change; the old slot is dropped once the groups
// started.
func (k *treeKeeper) ensureSlot(ctx context.Context, slot string, pubs []string) error {
	legacy := fmt.Sprintf("ace_mtree_%d", k.dbOID)
	_, err := k.local.Pool.Exec(ctx, `SELECT pg_copy_logical_replication_slot($1, $2)
		WHERE EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database() AND wal_status IS DISTINCT FROM 'lost')
		  AND EXISTS (SELECT 1 FROM ace.cdc_state WHERE slot_name = $1 AND $3::text[] <@ publications)
		  AND NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $2)`, legacy, slot, pubs)
	if err != nil {
		return fmt.Errorf("copy the slot %s of the single stream to %s: %w", legacy, slot, err)
	}
	_, err = cdc.EnsureSlot(ctx, k.a.cfg.DSN, slot)
	return err
}

// withSettings adds the stream's settings to a connection string as runtime parameters.
func withSettings(dsn string) (string, error) {
	if !strings.HasPrefix(dsn, "postgres://") && !strings.HasPrefix(dsn, "postgresql://") {
		for _, s := range streamSettings {
			dsn += fmt.Sprintf(" %s='%s'", s[0], s[1])
		}
		return dsn, nil
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return "", fmt.Errorf("ACE_DSN: %w", err)
	}
	q := u.Query()
	for _, s := range streamSettings {
		q.Set(s[0], s[1])
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

func (g *streamGroup) stop() {
	if g.stream == nil {
		return
	}
	g.cancel()
	g.stream, g.pubs = nil, nil // its stop, when it comes, is not news
}

func (k *treeKeeper) stopAll() {
	for slot, g := range k.groups {
		g.stop()
		delete(k.groups, slot)
	}
}

// streamStopped handles a group's stream ending with err. A stream that can never resume (its
// publication or slot is gone, or the server fails the same change every time) fails the
// group's trees and drops its slot; anything else is retried after a backoff, doubling to a
// minute, so that nothing loops hot.
func (k *treeKeeper) streamStopped(ctx context.Context, g *streamGroup, err error) {
	if err == nil || ctx.Err() != nil {
		return
	}
	k.recordError(ctx, g.slot, err)
	if permanentStreamFailure(err) {
		k.failGroup(ctx, g, err)
		return
	}
	g.retryAt = time.Now().Add(g.backoff)
	k.a.log.Warn("change stream stopped; restarting later", "slot", g.slot, "owner", g.owner, "retry_in", g.backoff, "err", err)
	g.backoff = min(2*g.backoff, maxGroupBackoff)
}

// permanentStreamFailure reports whether err means the stream cannot resume without changes
// being lost: the trees must be built again.
func permanentStreamFailure(err error) bool {
	return errors.Is(err, cdc.ErrPublicationMissing) || errors.Is(err, cdc.ErrSlotMissing) ||
		errors.Is(err, cdc.ErrSlotInvalidated) || errors.Is(err, cdc.ErrDecoding)
}

// failGroup marks the group's trees failed, naming each publication, what went wrong and what
// else is wrong with it, and drops the group's slot: nobody can read it, and it would hold WAL
// without limit. Other groups stream on.
func (k *treeKeeper) failGroup(ctx context.Context, g *streamGroup, cause error) {
	k.a.log.Error("a change stream failed for good: its trees are failed and its slot dropped; they must be built again",
		"slot", g.slot, "owner", g.owner, "err", cause)
	if err := mtree.FailStreamTrees(ctx, k.local.Pool, g.slot, g.owner, cause.Error()); err != nil {
		k.a.log.Warn("recording the failed trees failed", "slot", g.slot, "err", err)
	}
	if err := cdc.DropSlot(ctx, k.a.cfg.DSN, g.slot); err != nil {
		k.a.log.Warn("dropping the failed stream's slot failed", "slot", g.slot, "err", err)
	}
	delete(k.groups, g.slot)
}

// dropUnusedSlots drops this database's ace_mtree_ slots that no group streams (the single
// slot of earlier releases, a group whose trees went), and forgets the state of streams none
// of whose trees is left. Only this database's slots: other databases have agents of their
// own.
func (k *treeKeeper) dropUnusedSlots(ctx context.Context) error {
	rows, err := k.local.Pool.Query(ctx, `SELECT slot_name FROM pg_replication_slots
		WHERE database = current_database() AND slot_type = 'logical' AND slot_name LIKE 'ace\_mtree\_%'`)
	if err != nil {
		return fmt.Errorf("list the slots: %w", err)
	}
	slots, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("list the slots: %w", err)
	}
	for _, slot := range slots {
		if _, used := k.groups[slot]; used {
			continue
		}
		if err := cdc.DropSlot(ctx, k.a.cfg.DSN, slot); err != nil {
			k.a.log.Warn("dropping an unused change stream slot failed", "slot", slot, "err", err)
			continue
		}
		k.a.log.Info("change stream slot dropped: no tree uses it", "slot", slot)
	}
	return mtree.ForgetUnusedStreams(ctx, k.local.Pool)
}

// beat records that the streams' agent is alive, for each stream that streams.
func (k *treeKeeper) beat(ctx context.Context) {
	for _, g := range k.groups {
		if g.stream == nil || !g.stream.Status().Connected {
			continue
		}
		g.backoff = minGroupBackoff
		if err := mtree.StreamHeartbeat(ctx, k.local.Pool, g.slot, k.a.id); err != nil && ctx.Err() == nil {
			k.a.log.Warn("change stream heartbeat failed", "slot", g.slot, "err", err)
		}
	}
}

func (k *treeKeeper) recordError(ctx context.Context, slot string, err error) {
	_ = mtree.RecordStreamError(ctx, k.local.Pool, slot, err.Error())
}

// groupHandler records what one group's stream delivers.
type groupHandler struct {
	k      *treeKeeper
	g      *streamGroup
	stream *cdc.Stream
}

// Apply records a batch of the stream: each changed key (old and new, when an UPDATE changes
// it) as pending for its table's tree, the stream's position, and which trees the stream now
// covers, in one transaction. A large transaction comes in parts (cdc.Txn.Partial): its keys
// are recorded as they come (it has committed: pgoutput sends nothing else), and the position
// moves past it only with its last part. If the agent stops before that, the server sends the
// whole transaction again and its first parts' keys are recorded twice: a pending key only
// marks a leaf to refresh, so a duplicate changes nothing.
func (h *groupHandler) Apply(ctx context.Context, txns []cdc.Txn, upTo pglogrepl.LSN) error {
	var keys []mtree.PendingKey
	for _, txn := range txns {
		for _, c := range txn.Changes {
			t, ok := h.g.tree(c.Rel.ID)
			if !ok {
				continue
			}
			for _, key := range changedKeys(c, t.keyCols) {
				keys = append(keys, mtree.PendingKey{TreeID: t.id, Key: key, Xid: int64(txn.Xid), CommitLSN: txn.CommitLSN.String()})
			}
		}
	}
	return mtree.RecordStreamBatch(ctx, h.k.local.Pool, mtree.StreamBatch{
		Slot: h.g.slot, AgentID: h.k.a.id, Keys: keys, UpTo: upTo.String(), Publications: h.stream.Status().Publications,
	})
}

// changedKeys are the keys a change touches, each a JSON array of the key columns' text, or
// nil when every key may be touched: a TRUNCATE, or a key the stream could not show (an
// unchanged TOASTed key value).
func changedKeys(c cdc.RowChange, keyCols []string) [][]byte {
	switch c.Kind {
	case cdc.Truncate:
		return [][]byte{nil}
	case cdc.Insert:
		return [][]byte{keyOf(c.Rel, c.New, keyCols)}
	case cdc.Delete:
		return [][]byte{keyOf(c.Rel, c.Old, keyCols)}
	}
	newKey := keyOf(c.Rel, c.New, keyCols)
	if c.Old == nil {
		return [][]byte{newKey}
	}
	oldKey := keyOf(c.Rel, c.Old, keyCols)
	if string(oldKey) == string(newKey) {
		return [][]byte{newKey}
	}
	return [][]byte{oldKey, newKey}
}

func keyOf(rel *cdc.Relation, tuple []cdc.Value, keyCols []string) []byte {
	vals := make([]string, len(keyCols))
	for i, name := range keyCols {
		j := slices.Index(rel.Columns, name)
		if j < 0 || j >= len(tuple) || tuple[j].Null || tuple[j].Unchanged {
			return nil
		}
		vals[i] = tuple[j].Text
	}
	b, err := json.Marshal(vals)
	if err != nil {
		return nil
	}
	return b
}
