package shim

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// hub is the shim's one LISTEN connection to its node, on the agent's own login, shared by every
// event stream: streams hold no database connection of their own, so their number does not
// reach max_connections. A notification is only a wake-up for the streams subscribed to its
// channel; its payload is never read, and anyone may send one, so a stream that wakes re-reads
// on its caller's own login (row-level security decides what it sees) and no more often than
// its minimum interval.
type hub struct {
	dial func(context.Context) (*pgx.Conn, error)
	log  *slog.Logger

	mu      sync.Mutex
	subs    map[string]map[*subscriber]struct{} // channel -> its subscribers
	changed chan struct{}                       // buffered 1: the set of channels changed

	listening map[string]bool // the run goroutine's own: channels LISTENed on the connection
	done      chan struct{}
}

// subscriber is one stream's wake-up: buffered 1, so any number of notifications coalesce
// into one pending wake-up.
type subscriber struct{ wake chan struct{} }

func newSubscriber() *subscriber { return &subscriber{wake: make(chan struct{}, 1)} }

func (s *subscriber) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func newHub(dial func(context.Context) (*pgx.Conn, error), log *slog.Logger) *hub {
	return &hub{dial: dial, log: log, subs: map[string]map[*subscriber]struct{}{},
		changed: make(chan struct{}, 1), done: make(chan struct{})}
}

// subscribe wakes s on each notification of channel.
func (h *hub) subscribe(channel string, s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.subs[channel] == nil {
		h.subs[channel] = map[*subscriber]struct{}{}
		h.signalChanged()
	}
	h.subs[channel][s] = struct{}{}
}

// unsubscribe stops waking s for channel; the last subscriber's leaving UNLISTENs it.
func (h *hub) unsubscribe(channel string, s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs[channel], s)
	if len(h.subs[channel]) == 0 {
		delete(h.subs, channel)
		h.signalChanged()
	}
}

func (h *hub) signalChanged() {
	select {
	case h.changed <- struct{}{}:
	default:
	}
}

// wake pokes the subscribers of channel, or every subscriber if channel is "".
func (h *hub) wake(channel string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch, subs := range h.subs {
		if channel == "" || ch == channel {
			for s := range subs {
				s.poke()
			}
		}
	}
}

// run keeps the connection until ctx ends, reconnecting with a growing pause (streams go on
// polling meanwhile) and waking every stream after a reconnection, as notifications may have
// been missed.
func (h *hub) run(ctx context.Context) {
	defer close(h.done)
	pause := time.Second
	for ctx.Err() == nil {
		conn, err := h.dial(ctx)
		if err == nil {
			pause = time.Second
			h.listening = map[string]bool{}
			h.wake("")
			err = h.serve(ctx, conn)
			_ = conn.Close(context.WithoutCancel(ctx))
		}
		if ctx.Err() != nil {
			return
		}
		h.log.Warn("the event streams' LISTEN connection failed; streams poll until it is back", "error", err, "retry_in", pause)
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
		pause = min(2*pause, 30*time.Second)
	}
}

func (h *hub) serve(ctx context.Context, conn *pgx.Conn) error {
	for {
		if err := h.sync(ctx, conn); err != nil {
			return err
		}
		waitCtx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-h.changed:
				cancel()
			case <-waitCtx.Done():
			}
		}()
		n, err := conn.WaitForNotification(waitCtx)
		interrupted := waitCtx.Err() != nil
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil && interrupted:
			// The channels changed; the next sync reads them. An interrupted wait leaves the
			// connection usable (pgconn closes it only on errors other than timeouts).
		case err != nil:
			return fmt.Errorf("wait for task notifications: %w", err)
		default:
			h.wake(n.Channel)
		}
	}
}

// sync LISTENs to the channels that have subscribers and UNLISTENs the others.
func (h *hub) sync(ctx context.Context, conn *pgx.Conn) error {
	select {
	case <-h.changed:
	default:
	}
	h.mu.Lock()
	want := make(map[string]bool, len(h.subs))
	for ch := range h.subs {
		want[ch] = true
	}
	h.mu.Unlock()
	for ch := range want {
		if !h.listening[ch] {
			if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
				return fmt.Errorf("listen on %s: %w", ch, err)
			}
			h.listening[ch] = true
		}
	}
	for ch := range h.listening {
		if !want[ch] {
			if _, err := conn.Exec(ctx, "UNLISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
				return fmt.Errorf("stop listening on %s: %w", ch, err)
			}
			delete(h.listening, ch)
		}
	}
	return nil
}
