package agent

import (
	"context"
	"time"
)

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
