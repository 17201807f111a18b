package agent

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/sourcegraph/conc/pool"

	"github.com/ace-agent/ace-agent/engine"
)

// treePoolIdle is how long a node pool of the agent's own login stays open unused between tree
// tasks. A diff after a few changes takes a few hundred milliseconds, of which connecting to
// every node (with certificates, a TLS handshake each) was a good part; diffs come in runs (a
// diff, a repair, the diff that checks it; a schedule over many tables), and 30 s covers the
// gaps of a run without holding a quiet cluster's connection slots for long.
const treePoolIdle = 30 * time.Second

// treePoolMaxAge is how long a pool is kept from its opening, however busy: a pool reads the
// client certificate files its connection string names when it is opened, so a certificate
// rotated on disk is read again within this time.
const treePoolMaxAge = 5 * time.Minute

// treePoolConns bounds each kept pool: a diff holds one connection per node for the tree's lock
// and takes one or two more to catch the tree up.
const treePoolConns = 3

// treePoolsApplicationName tells the kept sessions apart from the agent's others in
// pg_stat_activity, since they now outlive the tasks.
const treePoolsApplicationName = "ace-agent trees"

// treePools keeps the node pools that tree tasks (mtree build, diff, teardown) open with the
// agent's own login, so that a task reuses those of the tasks before it instead of connecting
// to every node again. The submitter's pools are never kept: each task's reads run as its own
// submitter.
//
// A pool is leased by one task at a time: a tree diff holds one connection per node in a
// transaction (the tree's lock) and then asks the pool for more, so tasks sharing a bounded pool
// could each hold what the other waits for. A task that finds no idle pool for a node opens a
// new one, as every task did before.
//
// Kept pools are found by what they were opened with (node, connection string, login and
// certificate): a node re-registered with another connection string gets fresh pools, and the
// old ones close when idle. A pool leased to a task that failed is closed rather than kept, and
// a kept pool is pinged before a task gets it: a node that restarted between two tasks would
// otherwise fail the second one's first query. It is a service: its loop closes the pools idle
// for treePoolIdle, and its Stop closes them all; while it is stopped nothing is kept.
type treePools struct {
	startStop
	a *Agent

	mu      sync.Mutex
	idle    map[treePoolKey][]*keptPool // most recently returned last
	keeping bool                        // between Start and Stop
}

// treePoolKey is what a pool was opened with.
type treePoolKey struct {
	name, conninfo, user string
	certs                string // fingerprint of the client certificates presented
}

// keptPool is one node pool of the agent's login, with its age.
type keptPool struct {
	key       treePoolKey
	node      *engine.Node
	opened    time.Time
	idleSince time.Time
}

// treeLease is the agent-login pools one task holds, one per node, in the order of its names.
type treeLease struct {
	pools []*keptPool
}

// nodes are the leased pools' nodes.
func (l *treeLease) nodes() []*engine.Node {
	nodes := make([]*engine.Node, len(l.pools))
	for i, p := range l.pools {
		nodes[i] = p.node
	}
	return nodes
}

func newTreePools(a *Agent) *treePools {
	return &treePools{a: a, idle: map[treePoolKey][]*keptPool{}}
}

func (t *treePools) Name() string { return "tree task pools" }

// Start keeps returned pools from now on, and closes those idle for treePoolIdle until Stop.
func (t *treePools) Start(ctx context.Context) error {
	t.mu.Lock()
	t.keeping = true
	t.mu.Unlock()
	return t.start(ctx, func(ctx context.Context) {
		every(ctx, treePoolIdle/3, false, func(context.Context) { t.closeIdle(time.Now()) })
	})
}

// Stop ends the loop and closes every kept pool; pools returned after it are closed too.
func (t *treePools) Stop() {
	t.startStop.Stop()
	t.mu.Lock()
	t.keeping = false
	all := t.idle
	t.idle = map[treePoolKey][]*keptPool{}
	t.mu.Unlock()
	for _, kept := range all {
		closeKept(kept)
	}
}

// lease gives the task a pool of the agent's login on each named node: a kept one that answers
// where there is one, else a new one. The task gives them back with release.
func (t *treePools) lease(ctx context.Context, names []string) (*treeLease, error) {
	keys, err := t.keys(ctx, names)
	if err != nil {
		return nil, err
	}
	l := &treeLease{pools: make([]*keptPool, len(names))}
	p := pool.New().WithErrors().WithContext(ctx)
	for i, key := range keys {
		p.Go(func(ctx context.Context) (err error) {
			l.pools[i], err = t.take(ctx, key)
			return err
		})
	}
	if err := p.Wait(); err != nil {
		// The pools taken did no work: they are as good as they were.
		t.release(l, nil)
		return nil, fmt.Errorf("%w (the agent logs in to every node as %s to keep its Merkle trees)", err, t.a.user)
	}
	return l, nil
}

// keys are what the named nodes' pools are opened with now: their ace.nodes connection strings
// (the local node's is ACE_DSN), and the agent's login.
func (t *treePools) keys(ctx context.Context, names []string) ([]treePoolKey, error) {
	conninfo, err := t.a.nodeConnInfo(ctx)
	if err != nil {
		return nil, err
	}
	certs := certsFingerprint(t.a.clientCerts)
	keys := make([]treePoolKey, len(names))
	for i, name := range names {
		ci, ok := conninfo[name]
		if !ok {
			return nil, fmt.Errorf("node %s is not registered in ace.nodes any more", name)
		}
		keys[i] = treePoolKey{name: name, conninfo: ci, user: t.a.user, certs: certs}
	}
	return keys, nil
}

// take leases the most recently returned pool kept for key that answers a ping, or opens one.
func (t *treePools) take(ctx context.Context, key treePoolKey) (*keptPool, error) {
	for {
		kept := t.pop(key)
		if kept == nil {
			break
		}
		if err := kept.node.Pool.Ping(ctx); err == nil {
			return kept, nil
		}
		kept.node.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	node, err := engine.OpenNode(ctx, engine.NodeOptions{
		Name: key.name, ConnInfo: key.conninfo, User: key.user, ClientCerts: t.a.clientCerts, MaxConns: treePoolConns,
		Settings: map[string]string{"application_name": treePoolsApplicationName},
	})
	if err != nil {
		return nil, err
	}
	return &keptPool{key: key, node: node, opened: time.Now()}, nil
}

func (t *treePools) pop(key treePoolKey) *keptPool {
	t.mu.Lock()
	defer t.mu.Unlock()
	kept := t.idle[key]
	if len(kept) == 0 {
		return nil
	}
	last := kept[len(kept)-1]
	if len(kept) == 1 {
		delete(t.idle, key)
	} else {
		t.idle[key] = kept[:len(kept)-1]
	}
	return last
}

// release returns a task's pools when it ended well (taskErr nil) and the agent keeps pools;
// otherwise, or once too old, they are closed: a failed task may have left a connection broken,
// or failed because of it.
func (t *treePools) release(l *treeLease, taskErr error) {
	var closing []*keptPool
	t.mu.Lock()
	now := time.Now() // under the lock: each node's idle pools stay in the order of their return
	for _, p := range l.pools {
		switch {
		case p == nil:
		case taskErr != nil || !t.keeping || now.Sub(p.opened) >= treePoolMaxAge:
			closing = append(closing, p)
		default:
			p.idleSince = now
			t.idle[p.key] = append(t.idle[p.key], p)
		}
	}
	t.mu.Unlock()
	closeKept(closing)
}

// closeIdle closes the pools unused since treePoolIdle before now.
func (t *treePools) closeIdle(now time.Time) {
	var closing []*keptPool
	t.mu.Lock()
	for key, kept := range t.idle {
		// Returned in order, so the idle ones come first.
		fresh := slices.IndexFunc(kept, func(p *keptPool) bool { return now.Sub(p.idleSince) < treePoolIdle })
		if fresh < 0 {
			fresh = len(kept)
		}
		closing = append(closing, kept[:fresh]...)
		if fresh == len(kept) {
			delete(t.idle, key)
		} else {
			t.idle[key] = kept[fresh:]
		}
	}
	t.mu.Unlock()
	closeKept(closing)
}

func closeKept(kept []*keptPool) {
	for _, p := range kept {
		p.node.Close()
	}
}

// certsFingerprint identifies the client certificates a login presents.
func certsFingerprint(certs []tls.Certificate) string {
	h := sha256.New()
	for _, c := range certs {
		for _, der := range c.Certificate {
			h.Write(der)
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}
