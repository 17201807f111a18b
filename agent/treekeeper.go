package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/mtree"
)

// treeChannel is where tree tasks wake the node's agent: the payload "trees" says the set of
// tracked tables changed, "sync" asks the streams to report their positions now.
const treeChannel = "ace_mtree"

// wakeTreeKeeper is the mtree.WakeFunc of the tree tasks this agent runs: a NOTIFY on the node's
// treeChannel, sent on the task's session, inside its transaction when it has one, so that the
// node's tree keeper hears of a change only once it is committed.
func wakeTreeKeeper(ctx context.Context, q engine.Querier, w mtree.Wakeup) error {
	var payload string
	switch w {
	case mtree.TreesChanged:
		payload = "trees"
	case mtree.PositionWanted:
		payload = "sync"
	default:
		return fmt.Errorf("wake the tree keeper: unknown wakeup %d", w)
	}
	_, err := q.Exec(ctx, `SELECT pg_notify($1, $2)`, treeChannel, payload)
	return err
}

// newTreeKeeper makes the tree keeper, the service that keeps this node's Merkle trees fresh
// (trees.go holds how), fed by signal with the listener's tree notifications.
func newTreeKeeper(a *Agent, signal chan string) *treeKeeper {
	return &treeKeeper{a: a, signal: signal, groups: map[string]*streamGroup{}, stops: make(chan streamStop, 16)}
}

func (k *treeKeeper) Name() string { return "tree keeper" }

func (k *treeKeeper) Start(ctx context.Context) error { return k.start(ctx, k.keep) }

// keep runs the keeper until ctx ends; after a failure it starts again, with a session of its own,
// once PollInterval has passed.
func (k *treeKeeper) keep(ctx context.Context) {
	for ctx.Err() == nil {
		if err := k.run(ctx); err != nil && ctx.Err() == nil {
			k.a.log.Warn("Merkle tree upkeep failed; retrying", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(k.a.cfg.PollInterval):
			}
		}
	}
}
