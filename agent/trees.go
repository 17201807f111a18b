package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
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

// treeKeeper keeps this node's Merkle trees fresh: it is the only consumer of the node's slot,
// streaming the publications of the tracked tables into ace.mtree_pending. With no tree it
// holds no slot.
type treeKeeper struct {
	a      *Agent
	local  *engine.Node
	slot   string
	signal chan string // "trees" or "sync", from LISTEN ace_mtree

	stream  *cdc.Stream
	stopped chan error
	cancel  context.CancelFunc
	pubs    []string

	trees map[uint32]trackedTree // by the table's OID
}

// keepTrees runs the tree keeper until ctx ends.
func (a *Agent) keepTrees(ctx context.Context) {
	k := &treeKeeper{a: a, signal: a.treeSignal}
	for ctx.Err() == nil {
		if err := k.run(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("Merkle tree upkeep failed; retrying", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(a.cfg.PollInterval):
			}
		}
	}
}

func (k *treeKeeper) run(ctx context.Context) error {
	local, err := engine.OpenNode(ctx, engine.NodeOptions{Name: k.a.cfg.Node, ConnInfo: k.a.cfg.DSN, MaxConns: 4})
	if err != nil {
		return err
	}
	defer local.Close()
	k.local = local
	if err := local.Pool.QueryRow(ctx, `SELECT 'ace_mtree_' || oid FROM pg_database WHERE datname = current_database()`).Scan(&k.slot); err != nil {
		return fmt.Errorf("name the slot: %w", err)
	}
	defer k.stopStream()
	compact := time.NewTicker(compactInterval)
	defer compact.Stop()
	heartbeat := time.NewTicker(k.a.cfg.HeartbeatInterval)
	defer heartbeat.Stop()
	if err := k.reconcile(ctx); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case s := <-k.signal:
			if s == "sync" && k.stream != nil {
				k.stream.Poke()
				continue
			}
			if err := k.reconcile(ctx); err != nil {
				return err
			}
		case err := <-k.stopped:
			k.stream, k.stopped = nil, nil
			k.a.log.Warn("change stream stopped", "slot", k.slot, "err", err)
			k.recordError(ctx, err)
			if err := k.reconcile(ctx); err != nil {
				return err
			}
		case <-heartbeat.C:
			k.beat(ctx)
			k.a.collectTreeStatus(ctx, k.local)
		case <-compact.C:
			if _, err := mtree.Compact(ctx, k.local, compactMinRows); err != nil {
				k.a.log.Warn("compacting pending changes failed", "err", err)
			}
		}
	}
}

// reconcile makes the stream match the tracked tables: started, restarted with other
// publications, or stopped with its slot dropped.
func (k *treeKeeper) reconcile(ctx context.Context) error {
	trees, pubs, err := k.loadTrees(ctx)
	if err != nil {
		return err
	}
	k.trees = trees
	if len(pubs) == 0 {
		k.stopStream()
		return k.dropSlot(ctx)
	}
	if k.stream != nil {
		if !slices.Equal(pubs, k.pubs) {
			k.pubs = pubs
			k.stream.SetPublications(pubs)
			k.stream.Poke() // the build waits for the stream to report that it covers the table
		}
		return nil
	}
	return k.startStream(ctx, pubs)
}

func (k *treeKeeper) loadTrees(ctx context.Context) (map[uint32]trackedTree, []string, error) {
	rows, err := k.local.Pool.Query(ctx, `SELECT relid, tree_id, table_name, key_columns, publication
		FROM ace.mtrees WHERE status IN ('building', 'ready') ORDER BY publication`)
	if err != nil {
		return nil, nil, fmt.Errorf("read the tracked tables: %w", err)
	}
	trees := map[uint32]trackedTree{}
	var pubs []string
	var relid uint32
	var t trackedTree
	var pub string
	_, err = pgx.ForEachRow(rows, []any{&relid, &t.id, &t.table, &t.keyCols, &pub}, func() error {
		trees[relid] = t
		pubs = append(pubs, pub)
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read the tracked tables: %w", err)
	}
	return trees, pubs, nil
}

func (k *treeKeeper) startStream(ctx context.Context, pubs []string) error {
	if _, err := cdc.EnsureSlot(ctx, k.a.cfg.DSN, k.slot); err != nil {
		return err
	}
	_, err := k.local.Pool.Exec(ctx, `INSERT INTO ace.cdc_state (slot_name, agent_id, heartbeat_at) VALUES ($1, $2, now())
		ON CONFLICT (slot_name) DO UPDATE SET agent_id = excluded.agent_id, heartbeat_at = now()`, k.slot, k.a.id)
	if err != nil {
		return fmt.Errorf("record the change stream: %w", err)
	}
	conn, err := withSettings(k.a.cfg.DSN)
	if err != nil {
		return err
	}
	k.pubs = pubs
	// A short batch delay: a diff waits for the stream to report where it is.
	k.stream = cdc.NewStream(cdc.Options{ConnString: conn, Slot: k.slot, Publications: pubs, Log: k.a.log, BatchDelay: 20 * time.Millisecond}, k)
	streamCtx, cancel := context.WithCancel(ctx)
	k.cancel = cancel
	stopped := make(chan error, 1)
	k.stopped = stopped
	stream := k.stream
	go func() { stopped <- stream.Run(streamCtx) }()
	stream.Poke() // report a position at once: a build waits for it
	k.a.log.Info("change stream started", "slot", k.slot, "publications", pubs)
	return nil
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

func (k *treeKeeper) stopStream() {
	if k.stream == nil {
		return
	}
	k.cancel()
	<-k.stopped
	k.stream, k.stopped, k.pubs = nil, nil, nil
}

// dropSlot drops the slot once nothing is tracked: a slot nobody reads holds WAL forever.
func (k *treeKeeper) dropSlot(ctx context.Context) error {
	var exists bool
	if err := k.local.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, k.slot).Scan(&exists); err != nil {
		return err
	}
	if exists {
		if err := cdc.DropSlot(ctx, k.a.cfg.DSN, k.slot); err != nil {
			return err
		}
		k.a.log.Info("change stream slot dropped: no table is tracked", "slot", k.slot)
	}
	_, err := k.local.Pool.Exec(ctx, `DELETE FROM ace.cdc_state WHERE slot_name = $1`, k.slot)
	return err
}

// beat records that the stream's agent is alive, while it streams.
func (k *treeKeeper) beat(ctx context.Context) {
	if k.stream == nil || !k.stream.Status().Connected {
		return
	}
	if _, err := k.local.Pool.Exec(ctx, `UPDATE ace.cdc_state SET heartbeat_at = now(), connected = true, agent_id = $2 WHERE slot_name = $1`,
		k.slot, k.a.id); err != nil && ctx.Err() == nil {
		k.a.log.Warn("change stream heartbeat failed", "err", err)
	}
}

func (k *treeKeeper) recordError(ctx context.Context, err error) {
	if err == nil {
		return
	}
	_, _ = k.local.Pool.Exec(ctx, `UPDATE ace.cdc_state SET connected = false, last_error = $2, updated_at = now() WHERE slot_name = $1`,
		k.slot, err.Error())
	if errors.Is(err, cdc.ErrSlotInvalidated) || errors.Is(err, cdc.ErrSlotMissing) {
		k.a.log.Error("the change stream's slot is gone or invalidated: the trees miss changes; build them again", "slot", k.slot, "err", err)
	}
}

// Apply records a batch of the stream: each changed key (old and new, when an UPDATE changes
// it) as pending for its table's tree, the stream's position, and which trees the stream now
// covers, in one transaction.
func (k *treeKeeper) Apply(ctx context.Context, txns []cdc.Txn, upTo pglogrepl.LSN) error {
	var ids []int64
	var keys [][]byte
	var xids []int64
	var lsns []string
	for _, txn := range txns {
		for _, c := range txn.Changes {
			t, ok := k.trees[c.Rel.ID]
			if !ok {
				continue
			}
			for _, key := range changedKeys(c, t.keyCols) {
				ids, keys, xids, lsns = append(ids, t.id), append(keys, key), append(xids, int64(txn.Xid)), append(lsns, txn.CommitLSN.String())
			}
		}
	}
	pubs := k.stream.Status().Publications
	return pgx.BeginFunc(ctx, k.local.Pool, func(tx pgx.Tx) error {
		if len(ids) > 0 {
			_, err := tx.Exec(ctx, `INSERT INTO ace.mtree_pending (tree_id, key, xid, lsn)
				SELECT u.t, CASE WHEN u.k IS NULL THEN NULL ELSE ARRAY(SELECT jsonb_array_elements_text(u.k)) END, ace.xid8_of(u.x), u.l::pg_lsn
				FROM unnest($1::bigint[], $2::jsonb[], $3::bigint[], $4::text[]) AS u(t, k, x, l)`, ids, keys, xids, lsns)
			if err != nil {
				return fmt.Errorf("record %d changed keys: %w", len(ids), err)
			}
		}
		_, err := tx.Exec(ctx, `UPDATE ace.cdc_state SET confirmed_lsn = $2::pg_lsn, heartbeat_at = now(), connected = true,
			publications = $3, last_error = NULL, updated_at = now(), agent_id = $4 WHERE slot_name = $1`, k.slot, upTo.String(), pubs, k.a.id)
		if err != nil {
			return fmt.Errorf("record the stream's position: %w", err)
		}
		_, err = tx.Exec(ctx, `UPDATE ace.mtrees SET tracking_lsn = $1::pg_lsn WHERE tracking_lsn IS NULL AND publication = ANY($2)`, upTo.String(), pubs)
		return err
	})
}

// changedKeys are the keys a change touches, each a JSON array of the key columns' text, or
// nil when every key may be touched: a TRUNCATE, or a key the stream could not show (an
// unchanged TOASTed key value).
func changedKeys(c cdc.Change, keyCols []string) [][]byte {
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
