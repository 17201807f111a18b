package agent

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// events records what the fake services do, in order.
type events struct {
	mu   sync.Mutex
	list []string
}

func (e *events) add(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.list = append(e.list, s)
}

func (e *events) get() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.list...)
}

// fakeService records when its loop starts and when it has returned; it takes a while to stop,
// so that a Stop that did not wait would return before "stopped" is recorded.
type fakeService struct {
	startStop
	name    string
	events  *events
	failing bool // Start fails without starting anything
}

func (f *fakeService) Name() string { return f.name }

func (f *fakeService) Start(ctx context.Context) error {
	if f.failing {
		return errors.New("cannot start")
	}
	return f.start(ctx, func(ctx context.Context) {
		f.events.add(f.name + " running")
		<-ctx.Done()
		time.Sleep(20 * time.Millisecond)
		f.events.add(f.name + " stopped")
	})
}

// waitFor waits until event has been recorded n times.
func (e *events) waitFor(t *testing.T, event string, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		count := 0
		for _, got := range e.get() {
			if got == event {
				count++
			}
		}
		return count == n
	}, 5*time.Second, time.Millisecond, "waiting for %d × %q", n, event)
}

func TestServiceStartStop(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	setup := func() (*fakeService, *events) {
		ev := &events{}
		return &fakeService{name: "s", events: ev}, ev
	}
	t.Run("Stop waits for the loop to return", func(t *testing.T) {
		t.Parallel()
		s, ev := setup()
		require.NoError(t, s.Start(ctx))
		ev.waitFor(t, "s running", 1)
		s.Stop()
		require.Equal(t, []string{"s running", "s stopped"}, ev.get())
	})
	t.Run("Stop of a service never started, or stopped already, does nothing", func(t *testing.T) {
		t.Parallel()
		s, ev := setup()
		s.Stop()
		require.NoError(t, s.Start(ctx))
		ev.waitFor(t, "s running", 1)
		s.Stop()
		s.Stop()
		require.Equal(t, []string{"s running", "s stopped"}, ev.get())
	})
	t.Run("a running service is not started twice", func(t *testing.T) {
		t.Parallel()
		s, ev := setup()
		require.NoError(t, s.Start(ctx))
		require.ErrorIs(t, s.Start(ctx), errRunning)
		ev.waitFor(t, "s running", 1)
		s.Stop()
		require.Equal(t, []string{"s running", "s stopped"}, ev.get())
	})
	t.Run("a stopped service starts again", func(t *testing.T) {
		t.Parallel()
		s, ev := setup()
		require.NoError(t, s.Start(ctx))
		ev.waitFor(t, "s running", 1)
		s.Stop()
		require.NoError(t, s.Start(ctx))
		ev.waitFor(t, "s running", 2)
		s.Stop()
		require.Equal(t, []string{"s running", "s stopped", "s running", "s stopped"}, ev.get())
	})
	t.Run("the loop ends with the context it was started with", func(t *testing.T) {
		t.Parallel()
		s, ev := setup()
		parent, cancel := context.WithCancel(ctx)
		require.NoError(t, s.Start(parent))
		ev.waitFor(t, "s running", 1)
		cancel()
		ev.waitFor(t, "s stopped", 1)
		s.Stop()
		require.Equal(t, []string{"s running", "s stopped"}, ev.get())
	})
}

func TestServicesStartInOrderAndStopInReverse(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	list := func(ev *events, names ...string) []service {
		var services []service
		for _, n := range names {
			services = append(services, &fakeService{name: n, events: ev})
		}
		return services
	}
	t.Run("all start, then stop last first", func(t *testing.T) {
		t.Parallel()
		ev := &events{}
		services := list(ev, "a", "b", "c")
		require.NoError(t, startServices(ctx, services))
		for _, n := range []string{"a", "b", "c"} {
			ev.waitFor(t, n+" running", 1)
		}
		stopServices(services)
		require.Equal(t, []string{"c stopped", "b stopped", "a stopped"}, ev.get()[3:],
			"each service has stopped before the one started before it stops")
	})
	t.Run("one cannot start: those started stop again", func(t *testing.T) {
		t.Parallel()
		ev := &events{}
		services := list(ev, "a", "b")
		services = append(services, &fakeService{name: "c", events: ev, failing: true}, &fakeService{name: "d", events: ev})
		err := startServices(ctx, services)
		require.EqualError(t, err, "start the agent's c: cannot start")
		var running, stopped []string
		for _, e := range ev.get() {
			if strings.HasSuffix(e, " running") {
				running = append(running, e)
			} else {
				stopped = append(stopped, e)
			}
		}
		require.ElementsMatch(t, []string{"a running", "b running"}, running, "d never started")
		require.Equal(t, []string{"b stopped", "a stopped"}, stopped)
	})
}
