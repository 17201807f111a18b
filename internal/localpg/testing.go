package localpg

import (
	"context"
	"testing"
	"time"
)

// StartT starts a cluster for a test or benchmark, failing tb on error, and
// stops it (removing its directory) when tb finishes.
func StartT(tb testing.TB, opts Options) *Cluster {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx, opts)
	if err != nil {
		tb.Fatalf("localpg: %v", err)
	}
	tb.Cleanup(func() {
		// tb.Context is already canceled when cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			tb.Errorf("localpg: %v", err)
		}
	})
	return c
}
