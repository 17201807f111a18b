package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// service is one piece of the agent's background work: the heartbeat, the recovery sweep, the
// listener, the tree keeper, the collection of every node's tree status, the retention job, the
// scheduler, the tree tasks' kept pools.
// Agent.Run starts them from one list (Agent.services) and stops them in reverse order. Each
// lives in a file named for it; a new one needs a type that embeds startStop, and a place in
// that list.
type service interface {
	// Name names the service in errors and logs.
	Name() string
	// Start starts the work in the background and returns at once.
	Start(ctx context.Context) error
	// Stop ends the work and returns once it has ended. A service that is not running ignores it.
	Stop()
}

// errRunning is Start's answer for a service that runs already: one loop per service.
var errRunning = errors.New("it is running already")

// startStop is the start and stop that every service shares: embedded in a service, it runs the
// service's loop in a goroutine until Stop, which ends the loop's context and waits for the loop
// to return. A stopped service may be started again.
type startStop struct {
	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{} // nil while not running; closed when the loop returns
}

// start runs loop in the background with a context that Stop ends.
func (s *startStop) start(ctx context.Context, loop func(ctx context.Context)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done != nil {
		return errRunning
	}
	ctx, s.cancel = context.WithCancel(ctx)
	done := make(chan struct{})
	s.done = done
	go func() {
		defer close(done)
		loop(ctx)
	}()
	return nil
}

// Stop ends the loop and waits for it to return.
func (s *startStop) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done == nil {
		return
	}
	s.cancel()
	<-s.done
	s.cancel, s.done = nil, nil
}

// startServices starts the services in order. If one cannot start, those started are stopped
// again and the error says which failed.
func startServices(ctx context.Context, services []service) error {
	for i, s := range services {
		if err := s.Start(ctx); err != nil {
			stopServices(services[:i])
			return fmt.Errorf("start the agent's %s: %w", s.Name(), err)
		}
	}
	return nil
}

// stopServices stops the services in the reverse order of their start, each before the next:
// a service may rely on those started before it until it has stopped.
func stopServices(services []service) {
	for _, s := range slices.Backward(services) {
		s.Stop()
	}
}

// every calls fn every interval until ctx ends, and once at once when first is set: the loop of
// the services that work on a timer.
func every(ctx context.Context, interval time.Duration, first bool, fn func(context.Context)) {
	if first {
		fn(ctx)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn(ctx)
		}
	}
}
